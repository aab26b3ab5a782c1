"""The records folder as one owner: its TFRecord files, each file's header, and the settings the
records were made with.

A records folder is what `assemblenet preprocess` writes (shards, `summary.json`, `classes.json`);
train, evaluate, evolve and the searches read it. Everything they need to know before reading the
frames comes from here:

- `tfrecord_files(data)`: the TFRecord files of a folder, a file or a glob;
- `read_header(path)`: the first record's context (dataset, label space, fps, frame size) and the
  feature lists it holds (its modalities). Only the context and the names of the feature lists are
  read; the frames are skipped over, so checking every file of a folder costs a few KB per file;
- `RecordSettings`: the settings a record was made with (dataset, classes, fps, frame size, flow
  method, segmenter), as one typed value: read from the records (those of older versions lack the
  flow method and segmenter) and the job's `summary.json`,
  written into a run directory as `preprocess.json` and read back from there.

The headers are read with a small protobuf wire-format reader rather than TensorFlow, so the checks
run on the TF-free input path too. Errors are `RecordsError` (a ValueError) naming the file.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from preprocessing.schema import MODALITY_KEYS  # which feature lists hold each model modality

SUMMARY = "summary.json"  # the folder's settings, counts and digest (written last)
CLASSES = "classes.json"  # the class names, in label order


class RecordsError(ValueError):
    """A records file or folder that cannot be used; the message names it and is one line."""


# -- listing -------------------------------------------------------------------------------------

def tfrecord_files(data: str) -> list[str]:
    """The TFRecord files of `data`: a glob, a file, or a directory (its *.tfrecord, *.tfrecord-* files).

    Local paths need no TensorFlow; a URL (gs://...) is globbed with tf.io.gfile.
    """
    path = Path(data)
    patterns = [str(path / "*.tfrecord"), str(path / "*.tfrecord-*")] if path.is_dir() else [str(data)]
    if "://" in str(data):
        import tensorflow as tf

        found = [f for pattern in patterns for f in tf.io.gfile.glob(pattern)]
    else:
        found = [f for pattern in patterns for f in glob.glob(pattern) if os.path.isfile(f)]
    files = sorted({f for f in found if not f.endswith(".ids")})
    if not files:
        raise RecordsError(f"--data {data}: no TFRecord files match {patterns}")
    return files


def data_folder(data: str) -> Path:
    """The folder of a records directory, file or glob (where summary.json and classes.json are)."""
    return Path(data) if Path(data).is_dir() else Path(data).parent


# -- the settings a record was made with -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RecordSettings:
    """What a record was made with; None: not known (e.g. records without the job's summary.json).

    `size` is the shorter side of the stored frames (`preprocess --size`). Every record's context
    holds them all (`flow` and `segmenter` only in records of this version: for older ones they
    come from the job's summary.json)."""

    dataset: str | None = None
    num_classes: int | None = None
    fps: float | None = None
    size: int | None = None
    flow: str | None = None
    segmenter: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The known settings (what RUN_DIR/preprocess.json holds)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordSettings:
        """The settings of a preprocess.json or summary.json (other keys are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    def merged(self, other: RecordSettings) -> RecordSettings:
        """These settings, with the ones only `other` knows filled in."""
        return dataclasses.replace(self, **{k: v for k, v in other.to_json().items()
                                            if getattr(self, k) is None})

    def differences(self, other: RecordSettings) -> list[str]:
        """'--fps 6 -> 12' for each setting both know and that differs (fps compared as float32)."""
        out = []
        for field in dataclasses.fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if a is None or b is None or _same(a, b):
                continue
            out.append(f"{_LABELS[field.name]} {_show(a)} -> {_show(b)}")
        return out


# How a difference is named to the user: the preprocess flag where there is one.
_LABELS = {"dataset": "dataset", "num_classes": "classes", "fps": "--fps", "size": "--size", "flow": "--flow",
           "segmenter": "--segmenter"}


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        # Records store fps as float32: 29.97 comes back as 29.969999...
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    return a == b


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def read_summary(data: str) -> dict[str, Any]:
    """The preprocessing job's summary.json next to the records ({} when there is none)."""
    path = data_folder(data) / SUMMARY
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordsError(f"{path}: not valid JSON ({err})") from None
    return value if isinstance(value, dict) else {}


def read_settings(path: str | Path) -> RecordSettings | None:
    """A run's preprocess.json (None when there is none)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return RecordSettings.from_json(json.loads(path.read_text()))
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as err:
        raise RecordsError(f"{path}: not a preprocess.json ({err})") from None


# -- one file's header ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RecordHeader:
    """What the first record of a file says about it: the dataset, label space, modalities, fps, size."""

    file: str
    dataset: str
    num_classes: int
    modalities: tuple[str, ...]
    fps: float | None = None
    height: int | None = None
    width: int | None = None
    flow: str | None = None  # the context's flow_method and segmenter (absent from older records)
    segmenter: str | None = None

    @property
    def settings(self) -> RecordSettings:
        size = min(self.height, self.width) if self.height and self.width else None
        return RecordSettings(dataset=self.dataset, num_classes=self.num_classes,
                              fps=None if self.fps is None else float(self.fps), size=size, flow=self.flow,
                              segmenter=self.segmenter)

    def describe(self) -> str:
        text = f"{self.dataset} records with {self.num_classes} classes and {'+'.join(self.modalities)}"
        settings = self.settings
        if settings.fps is not None:
            text += f" at {settings.fps:g} fps"
        if settings.size is not None:
            text += f", shorter side {settings.size}"
        if settings.flow is not None:
            text += f", --flow {settings.flow}"
        if settings.segmenter is not None:
            text += f", --segmenter {settings.segmenter}"
        return text


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


def _header(context: memoryview, lists: set[str], where: str) -> RecordHeader:
    try:
        entries = _map_entries(context)
        values = {key: _feature_value(entries[key]) for key in entries}
    except (ValueError, UnicodeDecodeError) as err:
        raise RecordsError(f"{where}: not a tf.train.SequenceExample ({err})") from None
    missing = [key for key in ("dataset", "num_classes") if values.get(key) is None]
    if missing:
        raise RecordsError(f"{where}: the record has no context key(s) {missing}: not written by "
                           "`assemblenet preprocess` (preprocessing/schema.py)")
    return RecordHeader(file=where, dataset=str(values["dataset"]), num_classes=int(values["num_classes"]),
                        modalities=tuple(m for m, keys in MODALITY_KEYS.items() if set(keys) <= lists),
                        fps=values.get("fps"), height=values.get("height"), width=values.get("width"),
                        flow=values.get("flow_method"), segmenter=values.get("segmenter"))


def parse_header(serialized: bytes, where: str) -> RecordHeader:
    """The header of one serialized SequenceExample (its context and the names of its feature lists)."""
    try:
        parts = {number: value for number, wire, value in _fields(memoryview(serialized)) if wire == 2}
        lists = set(_map_entries(parts.get(2, memoryview(b""))))
    except (ValueError, UnicodeDecodeError) as err:
        raise RecordsError(f"{where}: not a tf.train.SequenceExample ({err})") from None
    return _header(parts.get(1, memoryview(b"")), lists, where)


def _open(path: str):
    if "://" in path:
        import tensorflow as tf

        return tf.io.gfile.GFile(path, "rb")
    return open(path, "rb")


def first_record(path: str) -> bytes | None:
    """The first record of a TFRecord file (uncompressed framing: length, crc, data, crc); None if empty."""
    with _open(path) as f:
        length = _frame_length(f, path)
        if length is None:
            return None
        chunks, size = [], 0
        while size < length:  # in chunks: a corrupt length (up to 2**64 - 1) reads what is there
            chunk = f.read(min(length - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    if len(data) < length:
        raise RecordsError(f"{path}: truncated TFRecord file (the first record needs {length} bytes, "
                           f"{len(data)} are there)")
    return data


def _frame_length(f, path: str) -> int | None:
    header = f.read(12)
    if not header:
        return None
    if len(header) < 12:
        raise RecordsError(f"{path}: truncated TFRecord file ({len(header)} bytes)")
    return struct.unpack("<Q", header[:8])[0]


class _Stream:
    """Reads a protobuf message of `length` bytes from a file, skipping what is not needed by seeking."""

    def __init__(self, f, length: int, path: str):
        self.f, self.left, self.path, self.length = f, length, path, length

    def read(self, size: int) -> bytes:
        if size > self.left:
            raise ValueError("a field runs past the end of the record")
        data = self.f.read(size)
        if len(data) < size:
            raise RecordsError(f"{self.path}: truncated TFRecord file (the first record needs {self.length} "
                               "bytes, fewer are there)")
        self.left -= size
        return data

    def skip(self, size: int) -> None:
        if size > self.left:
            raise ValueError("a field runs past the end of the record")
        self.f.seek(size, os.SEEK_CUR)
        self.left -= size

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.read(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("bad varint")

    def skip_field(self, wire: int) -> None:
        if wire == 0:
            self.varint()
        elif wire == 1:
            self.skip(8)
        elif wire == 2:
            self.skip(self.varint())
        elif wire == 5:
            self.skip(4)
        else:
            raise ValueError(f"unsupported wire type {wire}")


def read_header(path: str) -> RecordHeader | None:
    """The header of the first record of `path` (None for an empty file), reading only the context and
    the names of the feature lists: the frames are skipped, so a header costs a few KB whatever the video."""
    with _open(path) as f:
        length = _frame_length(f, path)
        if length is None:
            return None
        stream = _Stream(f, length, path)
        context, lists = b"", set()
        try:
            while stream.left:
                key = stream.varint()
                number, wire = key >> 3, key & 7
                if wire != 2 or number not in (1, 2):
                    stream.skip_field(wire)
                elif number == 1:
                    context = stream.read(stream.varint())
                else:
                    lists |= _list_names(stream, stream.varint())
            if len(f.read(4)) < 4:  # the record's data CRC: a file cut inside the skipped frames ends early
                raise RecordsError(f"{path}: truncated TFRecord file (the first record needs {length} bytes, "
                                   "fewer are there)")
        except (ValueError, IndexError) as err:
            if isinstance(err, RecordsError):
                raise
            raise RecordsError(f"{path}: not a tf.train.SequenceExample ({err})") from None
    return _header(memoryview(context), lists, path)


def _list_names(stream: _Stream, size: int) -> set[str]:
    """The keys of a FeatureLists message of `size` bytes, its values skipped."""
    end, names = stream.left - size, set()
    while stream.left > end:
        key = stream.varint()
        if key != (1 << 3 | 2):  # not a map entry
            stream.skip_field(key & 7)
            continue
        entry_size = stream.varint()
        entry_end = stream.left - entry_size  # counted after the entry's length is read
        while stream.left > entry_end:
            field = stream.varint()
            if field == (1 << 3 | 2):
                names.add(stream.read(stream.varint()).decode())
            else:
                stream.skip_field(field & 7)
    return names


def headers(data: str) -> tuple[list[str], list[RecordHeader]]:
    """(every TFRecord file of `data`, the header of every non-empty one)."""
    files = tfrecord_files(data)
    found = [header for header in map(read_header, files) if header is not None]
    return files, found

