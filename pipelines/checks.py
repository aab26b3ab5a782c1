"""Checks that a run fits its data, before any work starts, and the errors a user can fix.

Training, evaluation, evolution and the one-shot search call `check_records` first: the TFRecords
say what they hold (the context keys `dataset` and `num_classes` of preprocessing/schema.py, the
feature lists present, and the preprocessing job's summary.json next to them), and a run that
does not match them fails with one line naming the file and what differs, instead of training a
Toyota run with the Charades loss or dying inside TensorFlow on a missing object mask.

`check_resume` compares what a run directory was started with (config.json, structure.json)
with what a resumed run asks for, before anything in the directory is touched.

`UserError` is the exception for mistakes the user can fix; the CLI (pipelines/cli) prints its
message as one line. It is a ValueError, so library callers that catch ValueError still do.

The records are read through their owner, preprocessing/records.py: the header (the first
record's context) of every file, never a sample, so one foreign shard among many is found. With
`settings` (a run's preprocess.json), the fps, frame size, flow method and segmenter the records
were made with are compared too, so a resumed run, an evaluation or a validation set on records of
other settings fails naming both values.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from preprocessing import records
from preprocessing.records import RecordSettings


class UserError(ValueError):
    """A mistake the user can fix (a bad file, flag or combination); its message is one line."""


# -- reading the records --------------------------------------------------------------------------
# The records folder's owner is preprocessing/records.py; these are its checks as UserErrors.

MODALITY_KEYS = records.MODALITY_KEYS
RecordsInfo = records.RecordHeader  # what one record says about its file


def parse_context(serialized: bytes, where: str) -> RecordsInfo:
    """dataset, num_classes, fps, frame size and modalities of one serialized SequenceExample."""
    with _as_user_error():
        return records.parse_header(serialized, where)


def first_record(path: str) -> bytes | None:
    """The first record of a TFRecord file; None if empty."""
    with _as_user_error():
        return records.first_record(path)


@contextlib.contextmanager
def _as_user_error():
    try:
        yield
    except records.RecordsError as err:
        raise UserError(str(err)) from None


def records_info(data: str, flag: str = "--data") -> RecordsInfo:
    """What the TFRecords of `data` (a directory, file or glob) hold; files that disagree are an error.

    Reads the header (the first record's context) of every file, so one foreign shard among many
    is found: another dataset, label space, set of modalities, fps or frame size."""
    with _as_user_error():
        files, infos = records.headers(data)
    if not infos:
        raise UserError(f"{flag} {data}: every TFRecord file is empty ({len(files)} files)")
    first = infos[0]
    for other in infos[1:]:
        if _identity(first) != _identity(other):
            raise UserError(f"{flag} {data}: mixed records: {first.file} holds {first.describe()}, "
                            f"{other.file} holds {other.describe()}; point --data at one preprocessing output")
    return first


def _identity(info: RecordsInfo) -> tuple:
    return info.modalities, info.settings


def records_settings(data: str, info: RecordsInfo | None = None, flag: str = "--data") -> RecordSettings:
    """The settings the records of `data` were made with: their headers' (dataset, classes, fps, frame
    size, and the flow method and segmenter in records of this version), with what a header lacks from
    the job's summary.json. A summary.json that contradicts the records (shards of another job copied
    into the folder) is an error."""
    info = info or records_info(data, flag)
    with _as_user_error():
        summary = RecordSettings.from_json(records.read_summary(data))
    differences = summary.differences(info.settings)
    if differences:
        path = records.data_folder(data) / records.SUMMARY
        raise UserError(f"{flag} {data}: {info.file} was made with other settings than {path} says "
                        f"({'; '.join(differences)}); point --data at one preprocessing output")
    return summary.merged(info.settings)


def preprocess_summary(data: str) -> dict[str, Any]:
    """The preprocessing job's summary.json next to the records ({} when there is none)."""
    with _as_user_error():
        return records.read_summary(data)


def check_records(data: str, *, dataset: str | None, num_classes: int | None,
                  modalities: Sequence[str], flag: str = "--data", source: str = "the run",
                  settings: RecordSettings | None = None, settings_from: str = "") -> RecordsInfo:
    """Raises UserError when the records of `data` do not fit a run of `dataset`, `num_classes`
    classes and a structure whose stems take `modalities`, or (given `settings`, the preprocessing
    settings of the run's data, read from `settings_from`) were made with other settings; returns
    what the records hold."""
    info = records_info(data, flag)
    problems = []
    if dataset is not None and info.dataset != dataset:
        problems.append(f"they are {info.dataset} records but {source} uses dataset {dataset!r} "
                        f"(pass --dataset {info.dataset}, or {info.dataset} records)")
    if num_classes is not None and info.num_classes != num_classes:
        problems.append(f"they have {info.num_classes} classes but {source} has {num_classes}")
    missing = [m for m in modalities if m not in info.modalities]
    if missing:
        summary = preprocess_summary(data)
        made = []
        if summary and "object" in missing and summary.get("segmenter") in ("none", None, ""):
            made.append("--segmenter none")
        if summary and "flow" in missing and summary.get("flow") in ("none", None):
            made.append("--flow none")
        why = f", made with {' and '.join(made)}" if made else ""
        fix = ("preprocess again with a segmenter" if "object" in missing else "preprocess again with flow")
        problems.append(f"they hold only {'+'.join(info.modalities)}{why}, but the structure's stems need "
                        f"{'+'.join(missing)} ({fix}, or use a structure without those stems)")
    if settings is not None and not problems:
        differences = settings.differences(records_settings(data, info, flag))
        if differences:
            problems.append(f"they were made with other preprocessing settings than {source}'s data "
                            f"({settings_from}): {'; '.join(differences)} (preprocess them with the same "
                            "settings, or start a new run)")
    if problems:
        where = f"{flag} {data}" + ("" if info.file == str(data) else f": {info.file}")
        raise UserError(f"{where}: " + "; ".join(problems))
    return info


def run_settings(path: str | Path) -> RecordSettings | None:
    """The preprocessing settings a run directory's data was made with (its preprocess.json; None if none).

    Written once, by the run's first start (`pipelines.train`), and compared by every later stage."""
    with _as_user_error():
        return records.read_settings(path)


# -- resuming a run directory -----------------------------------------------------------------

def check_resume(config_path: Path, structure_path: Path, config: Mapping[str, Any],
                 structure: Mapping[str, Any], saved_config: Mapping[str, Any]) -> None:
    """Raises UserError when a resumed run asks for another config or another structure than the
    run directory was started with (its config.json and structure.json, `config_path` and
    `structure_path` from pipelines.rundir, both read before either is written). The structure is
    compared by content, not by the path or name it was given as: editing a structure file between
    runs is a change even though the path is the same."""
    changed = {k: (v, config.get(k)) for k, v in saved_config.items()
               if k != "structure" and config.get(k) != v}
    if changed:
        listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise UserError(f"{config_path}: this run directory was started with another config "
                        f"({listed}); use a new --workdir, or the same flags to resume")
    check_same_structure(structure_path, structure,
                         f"use a new --workdir, or pass --structure {structure_path} to resume")


def check_same_structure(path: Path, structure: Mapping[str, Any], remedy: str) -> None:
    """Raises UserError when the run's saved copy `path` (if any) differs from `structure` in content."""
    if not path.exists():
        return
    differences = structure_differences(read_json(path), structure)
    if differences:
        raise UserError(f"{path}: the structure differs from the one this run was started with "
                        f"({'; '.join(differences[:4])}{'; ...' if len(differences) > 4 else ''}); its "
                        f"checkpoints are of that one: {remedy}")


def structure_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two structure JSONs (name ignored), e.g. 'block 5: dilation 1 -> 2'."""
    out = []
    for key in ("repeats", "level_widths"):
        if old.get(key) != new.get(key):
            out.append(f"{key} {old.get(key)} -> {new.get(key)}")
    old_nodes = {n["index"]: n for n in old.get("nodes", [])}
    new_nodes = {n["index"]: n for n in new.get("nodes", [])}
    for index in sorted(old_nodes.keys() | new_nodes.keys()):
        a, b = old_nodes.get(index), new_nodes.get(index)
        if a is None or b is None:
            out.append(f"block {index} {'added' if a is None else 'removed'}")
            continue
        for field in sorted(a.keys() | b.keys()):
            if a.get(field) != b.get(field):
                out.append(f"block {index}: {field} {a.get(field)} -> {b.get(field)}")
    return out


# -- class names that travel with the records ----------------------------------------------------------



def dataset_class_names(dataset: str, classes: str | None, num_classes: int) -> list[str] | None:
    """The names of the label space: Charades from its classes file (`cNNN Name` lines), Toyota
    Smarthome's fixed list; None when unknown or when they do not match `num_classes`."""
    from preprocessing import charades, toyota

    if dataset == "charades":
        names = [name for _, name in charades.read_classes(classes)] if classes else None
    else:
        # Cross-subject: 31 classes; cross-view (CV1, CV2): the authors' 19 (preprocessing.toyota).
        by_size = {len(toyota.CLASSES): toyota.CLASSES, len(toyota.CROSS_VIEW_CLASSES): toyota.CROSS_VIEW_CLASSES}
        names = list(by_size.get(num_classes, ())) or None if dataset == "toyota" else None
    return names if names is not None and len(names) == num_classes else None


# -- reading user files with messages that name them; writing files atomically ----------------------

def read_text(path: str | Path, what: str = "") -> str:
    """The UTF-8 text of `path`; a missing file or non-UTF-8 bytes raise a UserError naming it."""
    label = f"{what} {path}" if what else str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{label}: is a directory, expected a file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{label}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the file "
                        "as UTF-8") from None


def check_structure_file(value: str | None, flag: str = "--structure") -> None:
    """A --structure that names a JSON file: its JSON and its graph are checked here, so a mistake in
    it is reported with the file (and line and column for bad JSON); a structure name such as
    `tiny` is left to get_structure."""
    if value and Path(value).is_file():
        data = read_json(value, flag)
        from model.structure import Structure

        try:
            Structure.from_json(data)
        except (ValueError, TypeError, AttributeError) as err:
            raise UserError(f"{flag} {value}: {err}") from None


def check_utf8(path: str | Path | None, what: str = "") -> None:
    """Raises a UserError naming the file and line when `path` is not UTF-8 text (None: nothing to check)."""
    if path is not None and Path(path).is_file():
        read_text(path, what)


def write_text(path: str | Path, text: str) -> None:
    """Atomic: a reader (or a resumed run) sees the old file or the new one, never half of one.

    The text goes to a temporary file in the same folder (so the rename cannot cross filesystems),
    is fsync-ed, then replaces `path`. The temporary name carries the process and thread ids, so
    processes and threads writing the same folder do not collide; a failed write removes it and
    raises an OSError naming `path`.
    The run directory's module (pipelines/rundir.py) is where callers get this writer from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError):  # a full disk: name the file (the bare error of `write` names none)
            raise OSError(error.errno, error.strerror or str(error), str(path)) from None
        raise


def write_json(path: str | Path, value: Any, *, indent: int = 1, default=None) -> None:
    """`value` as JSON (and a final newline), written atomically by `write_text`.
    `default`: json.dumps's converter for values JSON lacks (e.g. numpy scalars)."""
    write_text(path, json.dumps(value, indent=indent, default=default) + "\n")


def read_json(path: str | Path, what: str = "") -> Any:
    """JSON from `path`; bad JSON raises a UserError naming the file, line and column."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        label = f"{what} {path}" if what else str(path)
        raise UserError(f"{label}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
