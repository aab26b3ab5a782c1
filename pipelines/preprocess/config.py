"""The preprocessing job's settings (`PreprocessConfig`), its unit of work (`VideoTask`), the output folder's
file names, and the keys that say what a record was made from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from pipelines import configs
from pipelines.configs import FPS, REQUIRED, SIDE, positive, setting
from pipelines.train_config import DATASETS
from preprocessing import records
from preprocessing.flow import METHODS

NAMESPACE = "assemblenet.preprocess"
SHARD_PREFIX = "data"
_SHARD_NAME = re.compile(rf"^{SHARD_PREFIX}-(\d{{5}})-of-(\d{{5}})\.tfrecord$")
VIDEOS_PER_SHARD = 50
MANIFEST = "manifest.json"
CLASSES_FILE = records.CLASSES  # the records folder's names are preprocessing.records'
STAGING = "_staging"
MANIFEST_VERSION = 1
FLOWS = (*METHODS, "none")  # preprocessing.flow's TV-L1 backends, or no flow
# What a record depends on besides its annotation row; a change of any of these changes every record.
SETTINGS_KEYS = ("dataset", "num_classes", "class_names", "fps", "size", "flow", "segmenter", "max_seconds")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """One preprocessing job's settings. `assemblenet preprocess` makes its --dataset, --fps, --size,
    --flow, --segmenter, --max-seconds and --compile-cache flags from these fields (pipelines.configs);
    the fields without a flag are filled in by the job (`run_preprocess`)."""

    dataset: str = setting(REQUIRED, None, choices=DATASETS)
    num_classes: int = setting(REQUIRED, "classes of the label space (from the annotations)", type=positive(),
                               flag=False)
    fps: float = setting(6.0, "target frame rate (AssembleNet A.6: 6 for Charades)", type=FPS)
    # A.7 evaluates at 256.
    size: int = setting(256, "shorter side of the stored frames", type=SIDE)
    flow: str = setting("opencv", "TV-L1 backend", choices=FLOWS)
    segmenter: str = setting(  # see preprocessing.segment.make_segmenter
        "none", "none | oracle[:DIR] | a .keras file | a keras-hub preset name or directory")
    videos_dir: str = setting("", "where the oracle segmenter looks for ../masks", flag=False)
    max_seconds: float | None = setting(None, "decode at most this much of each video", type=positive(float, None))
    class_names: tuple[str, ...] = setting(
        (), "the label space's names, when known (part of the settings)", flag=False)
    staging: str = setting("", "a folder: each finished video is written there at once "
                           "(see pipelines/preprocess/__init__.py)", flag=False)
    # "": preprocessing.flow.default_compile_cache() of each worker (the flag's None). Not one of
    # SETTINGS_KEYS: the compiled programs, hence the records, are the same either way.
    compile_cache: str = setting(
        "", "--flow tensor: folder of the persistent XLA compilation cache, so a later job or another worker "
        "loads the compiled TV-L1 programs instead of compiling them (default: $ASSEMBLENET_COMPILE_CACHE, "
        "else ~/.cache/assemblenet/xla; 'none': off)", flag_default=None, metavar="DIR")
    # Not SETTINGS_KEYS either: every pair and frame is computed on its own, so the batch sizes change no record
    # beyond the last-bit rounding of another compiled batch shape on some devices (pipelines/preprocess/batching.py).
    flow_batch: int = setting(
        256, "--flow tensor: frame pairs per TV-L1 call, drawn from several videos; every call has this one "
        "shape (the last of a bundle is padded), so it is compiled once per frame size. 256: where the "
        "batched TV-L1 reaches its peak rate on an H200 (BENCHMARKS.md); about 1 MB of input per pair at 224 px",
        type=positive(), metavar="PAIRS")
    segment_batch: int = setting(
        32, "frames per segmentation call, drawn from several videos; a Keras segmenter's calls all have "
        "this shape (the last of a bundle is padded). 32: a sixth of a 30 s Charades video at 6 fps, few "
        "enough frames at 512 px for SegFormer-B0's activations to fit a CPU host's memory",
        type=positive(), metavar="FRAMES")
    decode_threads: int = setting(
        4, "videos each worker decodes at once, in threads (OpenCV decodes outside Python's lock), so the "
        "batched flow and segmentation do not wait on one decoder; as many are encoded at once; 4: about a "
        "batch of 256 pairs of 30 s videos at 6 fps in flight, while a 2-core host is not oversubscribed much",
        type=positive(),
        metavar="N")

    def __post_init__(self):
        configs.check(self)  # each field's type, choices and range (finite numbers only)


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
