"""The preprocessing job's settings (`PreprocessConfig`), its unit of work (`VideoTask`), the output folder's
file names, and the keys that say what a record was made from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from preprocessing import records

NAMESPACE = "assemblenet.preprocess"
SHARD_PREFIX = "data"
_SHARD_NAME = re.compile(rf"^{SHARD_PREFIX}-(\d{{5}})-of-(\d{{5}})\.tfrecord$")
VIDEOS_PER_SHARD = 50
MANIFEST = "manifest.json"
CLASSES_FILE = records.CLASSES  # the records folder's names are preprocessing.records'
STAGING = "_staging"
MANIFEST_VERSION = 1
# What a record depends on besides its annotation row; a change of any of these changes every record.
SETTINGS_KEYS = ("dataset", "num_classes", "class_names", "fps", "size", "flow", "segmenter", "max_seconds")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    dataset: str  # "charades" | "toyota"
    num_classes: int
    fps: float = 6.0  # AssembleNet A.6: 6 fps for Charades
    size: int = 256  # shorter side of the stored frames (A.7 evaluates at 256)
    flow: str = "opencv"  # "opencv" | "tensor" | "none"
    segmenter: str = "none"  # see preprocessing.segment.make_segmenter
    videos_dir: str = ""  # where the oracle segmenter looks for ../masks
    max_seconds: float | None = None
    class_names: tuple[str, ...] = ()  # the label space's names, when known (part of the settings)
    staging: str = ""  # a folder: each finished video is written there at once (see pipelines/preprocess/__init__.py)
    # --flow tensor: the persistent XLA cache folder ("": preprocessing.flow.default_compile_cache() of the
    # worker; "none": off). Not a setting: the compiled programs, hence the records, are the same either way.
    compile_cache: str = ""


@dataclasses.dataclass(frozen=True)
class VideoTask:
    id: str
    path: str
    labels: tuple[int, ...]
    label_start: tuple[float, ...]
    label_end: tuple[float, ...]  # a negative end means "the end of the video" (Toyota clips)


def settings_of(config: PreprocessConfig) -> dict:
    return {key: list(v) if isinstance(v := getattr(config, key), tuple) else v for key in SETTINGS_KEYS}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def annotation_hash(task: VideoTask) -> str:
    """Hash of what the record takes from its annotation row: the labels and their intervals."""
    return _digest({"labels": list(task.labels), "label_start": list(task.label_start),
                    "label_end": list(task.label_end)})


def record_key(config: PreprocessConfig, task: VideoTask) -> str:
    """Hash of everything a record is made from: the job's settings and the video's annotation row."""
    return _digest({"settings": settings_of(config), "annotation": annotation_hash(task)})
