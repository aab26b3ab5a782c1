"""What the run configurations share: the unknown-field check, and the recipe files of configs/."""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def check_fields(cls, data: Mapping[str, Any], *, source: str, noun: str) -> None:
    """Raises one ValueError naming `source` and every key of `data` that is not a field of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {noun} {unknown}; expected some of {sorted(names)}")


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
