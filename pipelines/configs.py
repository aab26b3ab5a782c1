"""What the run configurations share: each setting declared once, the flags and reading made from it,
and the recipe files of configs/.

A config is a frozen dataclass whose fields are declared with `setting(default, help, choices=...,
type=...)`: the field's type, default, help text, choices and range (`type`: a `Range` or another
argparse type) in one place. From those fields:

    add_flags(parser, TrainConfig, names)       # one argparse flag per field (dashes for underscores)
    add_flag_like(parser, PreprocessConfig, "fps", None, help)  # a field's flag, its own default and help
    flag_values(TrainConfig, args, names)       # {field: value} of the flags given on the command line
    from_args(SearchConfig, args, names)        # the config of the flags (unset ones: the field's default)
    load(TrainConfig, data, source=...)         # a dict or JSON file, every value checked, naming the field
    json_schema(TrainConfig, "frames")          # type, enum, minimum/maximum: a DAG Param (dags/_common.py)

`like(TrainConfig, "frames", 8, help)` declares a field of another config that holds the same setting
(its type, choices and range) under its own default and help. This module imports no Keras: the CLI
builds its flags from it without loading a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from preprocessing.video import MAX_FPS

# -- numbers: the one way their ranges are declared -------------------------------------------------

MAX_SIDE = 4096  # frame side in pixels
MAX_COUNT = 10**9  # steps, videos, shards: large enough for any run, small enough to catch a typo
MAX_SEED = 2**32 - 1  # numpy's seeds


class Range:
    """An argparse `type`: a finite `kind` (int or float) in [low, high] (an end is excluded when
    `low_open` / `high_open`; None: unbounded on that side)."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False):
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = kind.__name__  # argparse names the type in its own messages

    def contains(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return (f"{noun} in {'(' if self.low_open else '['}{_show(self.low)}, "
                    f"{_show(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_show(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {_show(self.high)}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def __call__(self, text: str):
        value = self.kind(text)  # not a number at all: argparse's own "invalid int value: 'abc'"
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    def __repr__(self) -> str:
        return f"Range({self.describe()})"


def _show(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def positive(kind: type = int, high: float | None = MAX_COUNT) -> Range:
    """> 0 (ints: >= 1)."""
    return Range(kind, 1, high) if kind is int else Range(kind, 0.0, high, low_open=True)


def non_negative(kind: type = int, high: float | None = MAX_COUNT) -> Range:
    return Range(kind, 0 if kind is int else 0.0, high)


def fraction(*, low_open: bool = False, high_open: bool = False) -> Range:
    """A number in [0, 1] (ends excluded as asked)."""
    return Range(float, 0.0, 1.0, low_open=low_open, high_open=high_open)


def comma_list(kind: type):
    """An argparse `type`: comma-separated `kind`s ("2,4") as a tuple."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, e.g. 2,4; "
                                             f"got {text!r}") from None
    parse.__name__ = f"{kind.__name__} list"
    return parse


SIDE = Range(int, 8, MAX_SIDE)
SEED = Range(int, 0, MAX_SEED)
FPS = Range(float, 0.0, MAX_FPS, low_open=True)  # MAX_FPS: the decoder's

# -- settings: a dataclass field that carries its help text, choices and range -----------------------

_NO_FLAG_DEFAULT = object()
REQUIRED = dataclasses.MISSING  # `setting(REQUIRED, ...)`: a field without a default, a required flag


def setting(default: Any, help: str | None, *, choices: tuple | None = None, type: Any = None,
            flag: bool = True, flag_default: Any = _NO_FLAG_DEFAULT, metavar: str | None = None,
            flag_name: str | None = None):
    """A config field declared once: `default` (REQUIRED: none, the flag is required), `help` (None: a
    flag without help text), `choices`, `type` (a `Range`, or a parser of the flag's text such as a
    comma-separated list). `flag=False`: no command-line flag is made from it (set in code or config
    files only). `flag_default`: what the flag's parser holds when the flag is absent, where that
    differs from `default` (the command resolves it). `flag_name`: the flag's name where it is not the
    field's (`population` for `population_size`; it is also the parsed argument's name).

    `model/` imports nothing of pipelines, so its dataclasses (model.evolution.SearchSpace) declare their
    settings as plain field metadata that this module reads the same way: `help`, `choices`, `flag_name`,
    `minimum` / `maximum` (an inclusive range, as `Range`) and `item` (a tuple field's element type: the
    flag takes a comma-separated list)."""
    metadata = {"help": help, "choices": None if choices is None else tuple(choices), "type": type,
                "flag": flag, "metavar": metavar, "flag_name": flag_name}
    if flag_default is not _NO_FLAG_DEFAULT:
        metadata["flag_default"] = flag_default
    return dataclasses.field(default=default, metadata=metadata)


def like(cls, name: str, default: Any, help: str, **changes):
    """A field that holds the same setting as field `name` of `cls` (its type, choices and range), with
    its own default and help text: e.g. the end-to-end job's `frames`, which every training takes."""
    field = _field(cls, name)
    same = {"choices": field.metadata.get("choices"), "type": _declared_type(field),
            "metavar": field.metadata.get("metavar")}
    return setting(default, help, **{**same, **changes})


def settings(cls, names=None) -> list[dataclasses.Field]:
    """The fields of `cls` named in `names` (in that order), or every field that has a flag."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if names is None:
        return [f for f in fields.values() if f.metadata.get("flag", True)]
    return [fields[name] for name in names]


def _dest(field: dataclasses.Field) -> str:
    """The parsed argument's name of a field's flag."""
    return field.metadata.get("flag_name") or field.name


def flag_name(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _bounds(field: dataclasses.Field) -> Range | None:
    """The field's range: its `Range` type, or the plain `minimum` / `maximum` of model/'s metadata."""
    meta = field.metadata
    if isinstance(meta.get("type"), Range):
        return meta["type"]
    if meta.get("minimum") is not None or meta.get("maximum") is not None:
        return Range(_base_type(field), meta.get("minimum"), meta.get("maximum"))
    return None


def _declared_type(field: dataclasses.Field):
    """The parser of the field's flag its metadata declares (a type, a range, a list's items), or None."""
    meta = field.metadata
    if meta.get("type") is not None:
        return meta["type"]
    if meta.get("item") is not None:
        return comma_list(meta["item"])
    return _bounds(field)


def _flag_type(field: dataclasses.Field):
    declared = _declared_type(field)
    if declared is not None:
        return declared
    kind = _base_type(field)
    return None if kind in (str, bool) else kind


def add_flags(parser, cls, names=None, *, overrides: bool = False) -> None:
    """One flag per field of `cls` (`names`, in order; default: every field with a flag).

    `overrides=False`: a flag holds its field's default when absent (a field without one, REQUIRED: a
    required flag), a bool field is a switch (store_true) and the help is the field's own.
    `overrides=True` (flags laid over a config file): every flag holds None when absent, so only the
    flags given override the file, a bool field is a switch that sets True, and the help ends with the
    field's default ("(default: 16)")."""
    for field in settings(cls, names):
        _add_flag(parser, field, overrides)


def add_flag_like(parser, cls, name: str, default: Any, help: str, **changes) -> None:
    """One flag holding the setting of field `name` of `cls` (its type, choices and range, as `like`)
    under its own default and help text: e.g. `predict --fps`, whose default None means the run's own
    preprocessing (`changes`: as `setting`, e.g. fewer `choices`)."""
    field = like(cls, name, default, help, **changes)
    field.name, field.type = name, _field(cls, name).type  # what the dataclass machinery sets on a field
    _add_flag(parser, field, overrides=False)


def _field(cls, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _add_flag(parser, field: dataclasses.Field, overrides: bool) -> None:
    meta, dest = field.metadata, _dest(field)
    flag = flag_name(dest)
    text = meta.get("help")
    extra = {"metavar": meta["metavar"]} if meta.get("metavar") else {}
    if _base_type(field) is bool:
        if overrides:
            parser.add_argument(flag, dest=dest, action="store_const", const=True, default=None, help=text)
        else:
            parser.add_argument(flag, dest=dest, action="store_true", help=text)
        return
    if overrides:
        default, text = None, f"{text} (default: {field.default})"
    else:
        default = meta.get("flag_default", field.default)
    if default is REQUIRED:
        extra["required"], default = True, None
    kind = _flag_type(field)
    if overrides and kind is None:
        kind = str
    parser.add_argument(flag, dest=dest, type=kind, choices=meta.get("choices"), default=default,
                        help=text, **extra)


def flag_values(cls, args, names=None) -> dict[str, Any]:
    """{field: value} of the flags of `cls` that hold a value (None: absent, see `add_flags`)."""
    return {f.name: getattr(args, _dest(f)) for f in settings(cls, names) if getattr(args, _dest(f)) is not None}


def from_args(cls, args, names=None, **fields):
    """The `cls` of the parsed flags (`names`; absent ones take the field's default) and `fields`."""
    return cls(**{**flag_values(cls, args, names), **fields})


def json_schema(cls, name: str) -> dict[str, Any]:
    """The JSON-schema keywords of field `name` of `cls` (what an Airflow Param validates): its type
    (with null when the field may be None), its choices (`enum`) and its range (`minimum`, ...)."""
    field = _field(cls, name)
    meta = field.metadata
    if meta.get("choices"):
        return {"enum": list(meta["choices"])}
    kind = {bool: ["boolean"], int: ["integer"], float: ["number", "integer"], str: ["string"],
            tuple: ["array"], dict: ["object"]}.get(_base_type(field), [])
    schema: dict[str, Any] = {}
    if kind:
        kinds = (["null"] if _optional(field) else []) + kind
        schema["type"] = kinds[0] if len(kinds) == 1 else kinds
    bounds = _bounds(field)
    if bounds is not None:
        if bounds.low is not None:
            schema["exclusiveMinimum" if bounds.low_open else "minimum"] = bounds.low
        if bounds.high is not None:
            schema["exclusiveMaximum" if bounds.high_open else "maximum"] = bounds.high
    return schema


# -- reading a config back: every value checked, naming the source and the field ---------------------

def check_fields(cls, data: Mapping[str, Any], *, source: str, noun: str) -> None:
    """Raises one ValueError naming `source` and every key of `data` that is not a field of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {noun} {unknown}; expected some of {sorted(names)}")


def _base_type(field: dataclasses.Field):
    """int, float, str, bool, tuple or dict: the field's type without `| None`."""
    hint = field.type
    if isinstance(hint, str):
        text = hint.replace(" | None", "").replace("None | ", "").strip()
        for name, kind in (("tuple", tuple), ("dict", dict), ("bool", bool), ("int", int), ("float", float),
                           ("str", str)):
            if text == name or text.startswith(f"{name}["):
                return kind
        return object
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [k for k in typing.get_args(hint) if k is not type(None)]
        hint = kinds[0] if len(kinds) == 1 else object
        origin = typing.get_origin(hint)
    return origin or hint


def _optional(field: dataclasses.Field) -> bool:
    hint = field.type
    if isinstance(hint, str):
        return "None" in hint
    return type(None) in typing.get_args(hint)


def _value_error(cls, field: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with `value` for `field` (None: nothing): its type, choices, range, or a number that
    is not finite (a recipe or config.json may hold NaN or Infinity, which Python's json reads)."""
    if value is None:
        return None if _optional(field) else "expected a value, got null"
    kind, meta = _base_type(field), field.metadata
    if isinstance(value, numbers.Real) and not math.isfinite(value):  # numpy's floats too
        return "must be a finite number"
    if kind is bool and not isinstance(value, bool):
        return "expected true or false"
    # numbers.Integral / Real: numpy's scalars too (numbers.Real includes the integers).
    if kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        return "expected an integer"
    if kind is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        return "expected a number"
    if kind is str and not isinstance(value, str):
        return "expected a string"
    if kind is tuple and not isinstance(value, (list, tuple)):
        return "expected a list"
    if kind is dict and not isinstance(value, dict):
        return "expected an object"
    if meta.get("choices") and value not in meta["choices"]:
        return f"expected one of {meta['choices']}"
    bounds = _bounds(field)
    if bounds is not None and not bounds.contains(value):
        return f"expected {bounds.describe()}"
    return None


def check(config) -> None:
    """Refuses the first field of `config` whose value is not of the field's type, not among its
    choices, outside its range or not finite: one ValueError naming the field and the value
    (`TrainConfig.frames=0: expected an integer in [1, 4096]`). Each config's `__post_init__` calls it,
    so a config made in code is held to what its flags and files are; the rules between fields stay
    there, written by hand. (`load` adds the file's name.)"""
    check_values(type(config), {f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


def check_values(cls, values: Mapping[str, Any]) -> None:
    """`check` of some settings of `cls` before its config can be made (a job checks its arguments
    before it reads its inputs): the first bad value is one ValueError naming `cls`'s field."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in values.items():
        problem = _value_error(cls, fields[name], value)
        if problem:
            raise ValueError(f"{cls.__name__}.{name}={value!r}: {problem}")


def load(cls, data: Mapping[str, Any] | str | Path, *, source: str | None = None, noun: str | None = None):
    """A `cls` from a dict or a JSON file: unknown keys, and values of the wrong type, outside the
    field's choices or range, are one ValueError naming `source` (the file) and the field; so is
    whatever the config's own validation refuses (naming the file when `data` is one; from a dict its
    message is the config's own). Lists become tuples for tuple fields."""
    from pipelines.checks import read_json  # names the file, line and column of bad JSON

    name, from_file = cls.__name__, isinstance(data, (str, Path))
    if from_file:
        source = source or str(data)
        data = read_json(data)
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object of {name} fields, got {type(data).__name__}")
    source = source or name
    check_fields(cls, data, source=source, noun=noun or f"{name} field(s)")
    prefix = "" if source == name else f"{source}: "
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(data)
    for key, value in data.items():
        problem = _value_error(cls, fields[key], value)
        if problem:
            raise ValueError(f"{prefix}{name}.{key}={value!r}: {problem}")
        if _base_type(fields[key]) is tuple and isinstance(value, list):
            values[key] = tuple(value)
    try:
        return cls(**values)
    except ValueError as error:
        if not from_file or str(error).startswith(prefix):
            raise
        raise ValueError(f"{prefix}{error}") from None


# -- recipe files (configs/*.json) ----------------------------------------------------------------

# configs/ sits beside pipelines/ in the source tree and in an installed package (setup.py ships it).
RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs"
RECIPE_SECTIONS = ("name", "description", "sources", "preprocess", "train", "evaluate")
# The settings of `assemblenet preprocess` a recipe may fix, and of `assemblenet evaluate run`.
PREPROCESS_KEYS = ("dataset", "split", "fps", "size", "flow", "segmenter")
EVALUATE_KEYS = ("clips", "size", "crops")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path, or the name of one shipped in configs/ (`charades_assemblenet50`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.json"
    if shipped.is_file():
        return shipped
    raise ValueError(f"--config {name_or_path}: no such file, and not a shipped recipe; expected a JSON "
                     f"path or one of {recipe_names()}")


def load_config_file(name_or_path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig fields, the whole file) of a `--config` file.

    Two shapes are read: a recipe (configs/*.json: sections `train`, `preprocess`, `evaluate`,
    `name`, `description`, `sources`) or a plain TrainConfig JSON such as a run directory's
    config.json. Unknown sections and unknown preprocess/evaluate keys fail naming the key; unknown
    TrainConfig fields fail when the TrainConfig is made (`check_fields`).
    """
    from pipelines.checks import read_json  # names the file, line and column of bad JSON

    path = recipe_path(name_or_path)
    data = read_json(path, "--config")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if "train" not in data:
        return dict(data), data
    unknown = sorted(set(data) - set(RECIPE_SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown recipe section(s) {unknown}; expected some of {list(RECIPE_SECTIONS)}")
    for section, keys in (("preprocess", PREPROCESS_KEYS), ("evaluate", EVALUATE_KEYS)):
        bad = sorted(set(data.get(section, {})) - set(keys))
        if bad:
            raise ValueError(f"{path}: unknown {section} key(s) {bad}; expected some of {list(keys)}")
    if not isinstance(data["train"], dict):
        raise ValueError(f"{path}: 'train' must be an object of TrainConfig fields")
    return dict(data["train"]), data


def recipe_of(name_or_path: str | Path | None) -> dict[str, Any] | None:
    """The whole recipe file of a `--config` (None when it is a plain TrainConfig JSON or not given)."""
    if not name_or_path:
        return None
    _, whole = load_config_file(name_or_path)
    return whole if "train" in whole else None


def run_recipe(run_dir: str | Path) -> dict[str, Any] | None:
    """The recipe a run was trained from (RUN_DIR/recipe.json, which `train` keeps so that `evaluate run`
    follows its `evaluate` section), or None."""
    from pipelines.rundir import RECIPE, RunDir

    return RunDir(run_dir).read_if_exists(RECIPE)
