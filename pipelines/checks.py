"""Checks that a run fits its data, before any work starts, and the errors a user can fix.

Training, evaluation, evolution and the one-shot search call `check_records` first: the TFRecords
say what they hold (the context keys `dataset` and `num_classes` of preprocessing/schema.py, the
feature lists present, and the preprocessing job's summary.json next to them), and a run that
does not match them fails with one line naming the file and what differs, instead of training a
Toyota run with the Charades loss or dying inside TensorFlow on a missing object mask.

`check_resume` compares what a run directory was started with (config.json, structure.json)
with what a resumed run asks for, before anything in the directory is touched.

`UserError` is the exception for mistakes the user can fix; the CLI (pipelines/cli.py) prints its
message as one line. It is a ValueError, so library callers that catch ValueError still do.

The first record of a file is read with a small protobuf wire-format reader rather than
TensorFlow, so the checks run on the TF-free input path too and cost one record per file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class UserError(ValueError):
    """A mistake the user can fix (a bad file, flag or combination); its message is one line."""


# -- reading the records --------------------------------------------------------------------------

# Which feature lists hold each model modality (as preprocessing.schema.MODALITY_KEYS).
MODALITY_KEYS = {"rgb": ("rgb",), "flow": ("flow_x", "flow_y"), "object": ("object",)}
FILES_CHECKED = 4  # first record (one video, a few MB) of at most this many files, spread over the list


@dataclasses.dataclass(frozen=True)
class RecordsInfo:
    """What one record says about its file: the dataset, label space and modalities."""

    file: str
    dataset: str
    num_classes: int
    modalities: tuple[str, ...]
    fps: float | None = None
    height: int | None = None
    width: int | None = None


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview):
    """(field number, wire type, value) of one protobuf message, in order."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        yield number, wire, value


def _map_entries(buf: memoryview) -> dict[str, memoryview]:
    """A `map<string, Message>` field 1 (Features.feature, FeatureLists.feature_list)."""
    entries = {}
    for number, wire, entry in _fields(buf):
        if number != 1 or wire != 2:
            continue
        key, value = "", memoryview(b"")
        for n, w, v in _fields(entry):
            if n == 1 and w == 2:
                key = bytes(v).decode()
            elif n == 2 and w == 2:
                value = v
        entries[key] = value
    return entries


def _feature_value(feature: memoryview):
    """The first value of a tf.train.Feature (bytes, float or int), or None when empty."""
    for kind, _, values in _fields(feature):  # 1 bytes_list, 2 float_list, 3 int64_list
        for _, wire, value in _fields(values):
            if kind == 1:
                return bytes(value).decode(errors="replace")
            if kind == 2:
                return struct.unpack("<f", bytes(value[:4]))[0]  # packed (wire 2) or single (wire 5)
            if kind == 3:
                return _varint(value, 0)[0] if wire == 2 else value
    return None


def parse_context(serialized: bytes, where: str) -> RecordsInfo:
    """dataset, num_classes, fps, frame size and modalities of one serialized SequenceExample."""
    try:
        parts = {number: value for number, wire, value in _fields(memoryview(serialized)) if wire == 2}
        context = _map_entries(parts.get(1, memoryview(b"")))
        lists = set(_map_entries(parts.get(2, memoryview(b""))))
        values = {key: _feature_value(context[key]) for key in context}
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: not a tf.train.SequenceExample ({err})") from None
    missing = [key for key in ("dataset", "num_classes") if values.get(key) is None]
    if missing:
        raise UserError(f"{where}: the record has no context key(s) {missing}: not written by "
                        "`assemblenet preprocess` (preprocessing/schema.py)")
    return RecordsInfo(file=where, dataset=str(values["dataset"]), num_classes=int(values["num_classes"]),
                       modalities=tuple(m for m, keys in MODALITY_KEYS.items() if set(keys) <= lists),
                       fps=values.get("fps"), height=values.get("height"), width=values.get("width"))


def _open(path: str):
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def first_record(path: str) -> bytes | None:
    """The first record of a TFRecord file (uncompressed framing: length, crc, data, crc); None if empty."""
    with _open(path) as f:
        header = f.read(12)
        if not header:
            return None
        if len(header) < 12:
            raise UserError(f"{path}: truncated TFRecord file ({len(header)} bytes)")
        (length,) = struct.unpack("<Q", header[:8])
        data = f.read(length)
    if len(data) < length:
        raise UserError(f"{path}: truncated TFRecord file (the first record needs {length} bytes, "
                        f"{len(data)} are there)")
    return data


def records_info(data: str, flag: str = "--data") -> RecordsInfo:
    """What the TFRecords of `data` (a directory, file or glob) hold; files that disagree are an error.

    Reads the first record of up to FILES_CHECKED files spread over the sorted list."""
    from pipelines.train import tfrecord_files

    files = tfrecord_files(data)
    step = max(1, len(files) // FILES_CHECKED)
    sample = files[::step][:FILES_CHECKED - 1] + ([files[-1]] if len(files) > 1 else [])
    infos = []
    for path in dict.fromkeys(sample):
        serialized = first_record(path)
        if serialized is not None:
            infos.append(parse_context(serialized, path))
    if not infos:
        raise UserError(f"{flag} {data}: every TFRecord file is empty ({len(files)} files)")
    first = infos[0]
    for other in infos[1:]:
        a, b = (first.dataset, first.num_classes, first.modalities), (other.dataset, other.num_classes,
                                                                       other.modalities)
        if a != b:
            raise UserError(f"{flag} {data}: mixed records: {first.file} holds {_describe(first)}, "
                            f"{other.file} holds {_describe(other)}; point --data at one preprocessing output")
    return first


def _describe(info: RecordsInfo) -> str:
    return f"{info.dataset} records with {info.num_classes} classes and {'+'.join(info.modalities)}"


def preprocess_summary(data: str) -> dict[str, Any]:
    """The preprocessing job's summary.json next to the records ({} when there is none)."""
    folder = Path(data) if Path(data).is_dir() else Path(data).parent
    path = folder / "summary.json"
    if not path.is_file():
        return {}
    return read_json(path)


def check_records(data: str, *, dataset: str | None, num_classes: int | None,
                  modalities: Sequence[str], flag: str = "--data", source: str = "the run") -> RecordsInfo:
    """Raises UserError when the records of `data` do not fit a run of `dataset`, `num_classes`
    classes and a structure whose stems take `modalities`; returns what the records hold."""
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
    if problems:
        where = f"{flag} {data}" + ("" if info.file == str(data) else f": {info.file}")
        raise UserError(f"{where}: " + "; ".join(problems))
    return info


# -- resuming a run directory -----------------------------------------------------------------

def check_resume(workdir: Path, config: Mapping[str, Any], structure: Mapping[str, Any],
                 saved_config: Mapping[str, Any]) -> None:
    """Raises UserError when a resumed run asks for another config or another structure than the
    run directory was started with (config.json and structure.json, both read before either is
    written). The structure is compared by content, not by the path or name it was given as:
    editing a structure file between runs is a change even though the path is the same."""
    changed = {k: (v, config.get(k)) for k, v in saved_config.items()
               if k != "structure" and config.get(k) != v}
    if changed:
        listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise UserError(f"{workdir / 'config.json'}: this run directory was started with another config "
                        f"({listed}); use a new --workdir, or the same flags to resume")
    path = workdir / "structure.json"
    check_same_structure(path, structure, f"use a new --workdir, or pass --structure {path} to resume")


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

CLASSES_JSON = "classes.json"


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


# -- reading user files with messages that name them -------------------------------------------------

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


def write_json(path: str | Path, value: Any, *, indent: int = 1, default=None) -> None:
    """Atomic: a reader (or a resumed run) sees the old file or the new one, never half of one; the
    temporary name carries the process id, so processes writing the same folder do not collide.
    `default`: json.dumps's converter for values JSON lacks (e.g. numpy scalars)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=indent, default=default) + "\n")
    os.replace(tmp, path)


def read_json(path: str | Path, what: str = "") -> Any:
    """JSON from `path`; bad JSON raises a UserError naming the file, line and column."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        label = f"{what} {path}" if what else str(path)
        raise UserError(f"{label}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
