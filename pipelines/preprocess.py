"""The Beam preprocessing job: videos (+ annotations) -> TFRecord shards of `preprocessing.schema`.

    videos ──► ListVideos ──► ProcessVideos ─┬─► WriteShards      data-0000k-of-0000n.tfrecord (+ .ids)
                                             └─► WriteDeadLetters dead_letter.jsonl  (id, path, reason)
    then the driver writes summary.json     {input, written, dead_lettered, ...}

Per video (`process_video`, a plain function): decode at `fps` with the shorter side resized to
`size` (preprocessing.video), TV-L1 flow between consecutive frames (preprocessing.flow, stored
quantised like the Charades release), the segmenter's 151-value class maps (preprocessing.segment),
one SequenceExample. Any failure sends the video to the dead-letter output with its reason, so
`input == written + dead_lettered` always; every outcome is a `Metrics.counter` in the
`assemblenet.preprocess` namespace.

Idempotent re-runs: a video goes to shard `md5(id) mod n`; shard names are fixed by `n`, which is
read back from existing shards on a re-run. Ids already in the output (listed in the `.ids` file
next to each shard) are skipped, and a shard that gains videos is rewritten (old records + new, sorted
by id, replaced atomically by rename), so nothing is duplicated or lost. Videos dead-lettered before
are retried; `dead_letter.jsonl` lists the failures of the latest run.

Runners: locally Beam's FnApiRunner is used explicitly (the default runner would try to download a
binary, which fails offline), with a progress bar. `runner="DataflowRunner"` plus the usual GCP
options (`--project --region --temp_location gs://... --setup_file ./setup.py`) runs it on Dataflow;
`out` and `videos` may then be gs:// paths (files are read and written through Beam's FileSystems,
videos are copied to a local temporary file for OpenCV). See docs/real_data.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics

NAMESPACE = "assemblenet.preprocess"
SHARD_PREFIX = "data"
_SHARD_NAME = re.compile(rf"^{SHARD_PREFIX}-(\d{{5}})-of-(\d{{5}})\.tfrecord$")
VIDEOS_PER_SHARD = 50


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
    progress_total: int = 0  # > 0: show a local progress bar over that many videos


@dataclasses.dataclass(frozen=True)
class VideoTask:
    id: str
    path: str
    labels: tuple[int, ...]
    label_start: tuple[float, ...]
    label_end: tuple[float, ...]  # a negative end means "the end of the video" (Toyota clips)


# ---------------------------------------------------------------------------------------------
# Inputs.

def charades_tasks(videos: str, annotations: str, num_classes: int) -> list[VideoTask]:
    from preprocessing import charades

    return [VideoTask(id=v.id, path=_join(videos, f"{v.id}.mp4"),
                      labels=tuple(a.label for a in v.actions),
                      label_start=tuple(a.start for a in v.actions),
                      label_end=tuple(a.end for a in v.actions))
            for v in charades.read_annotations(annotations, num_classes=num_classes)]


def toyota_tasks(videos: str, split: str | None) -> list[VideoTask]:
    from preprocessing import toyota

    return [VideoTask(id=clip.id, path=str(path), labels=(clip.label,), label_start=(0.0,), label_end=(-1.0,))
            for clip, path in toyota.list_clips(videos, split)]


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}" if "://" in directory else str(Path(directory) / name)


# ---------------------------------------------------------------------------------------------
# Per-element logic (plain functions, tested without Beam).

def _local_copy(path: str):
    """OpenCV reads local files only: remote (gs://...) videos are copied to a temporary file."""
    if "://" not in path:
        return None, path
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None, path + ".missing"  # decode_video reports it as missing
    handle = tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1], delete=False)
    with FileSystems.open(path) as source, handle:
        while chunk := source.read(1 << 22):
            handle.write(chunk)
    return handle.name, handle.name


def process_video(task: VideoTask, config: PreprocessConfig, segmenter=None) -> tuple[bytes, int]:
    """One video -> (serialized SequenceExample, number of frames). Raises on any bad input."""
    from preprocessing import flow as flow_lib
    from preprocessing.schema import encode_example, validate_video_id
    from preprocessing.video import decode_video

    validate_video_id(task.id)
    temporary, local = _local_copy(task.path)
    try:
        video = decode_video(local, fps=config.fps, shorter_side=config.size, max_seconds=config.max_seconds)
    finally:
        if temporary:
            os.unlink(temporary)
    flow = None
    if config.flow != "none":
        flow = flow_lib.quantize_flow(flow_lib.compute_flow(video.frames, method=config.flow))
    objects = segmenter(video.frames, video.times, task.id) if segmenter is not None else None
    ends = [video.duration if end < 0 else end for end in task.label_end]
    data = encode_example(video_id=task.id, dataset=config.dataset, fps=video.fps, rgb=video.frames,
                          num_classes=config.num_classes, labels=task.labels, label_start=task.label_start,
                          label_end=ends, flow=flow, objects=objects)
    return data, len(video.frames)


def failure_reason(error: BaseException) -> str:
    """`<tag>: <message>`; the tag is DecodeError's reason or the exception type."""
    tag = getattr(error, "reason", None) or type(error).__name__
    message = str(error)
    return message if message.startswith(f"{tag}:") else f"{tag}: {message}"


def shard_index(video_id: str, num_shards: int) -> int:
    """Deterministic shard of a video (md5, not Python's salted hash)."""
    return int(hashlib.md5(video_id.encode()).hexdigest(), 16) % num_shards


def shard_name(index: int, num_shards: int) -> str:
    return f"{SHARD_PREFIX}-{index:05d}-of-{num_shards:05d}.tfrecord"


# TFRecord framing (the format tf.data.TFRecordDataset reads): length, masked CRC32C of the length,
# data, masked CRC32C of the data. Written here so shards can go through Beam's FileSystems.
def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode_records(records: Iterable[bytes]) -> bytes:
    parts = []
    for data in records:
        length = struct.pack("<Q", len(data))
        parts += [length, struct.pack("<I", _masked_crc(length)), data, struct.pack("<I", _masked_crc(data))]
    return b"".join(parts)


def decode_records(blob: bytes, where: str = "") -> list[bytes]:
    records, offset = [], 0
    while offset < len(blob):
        if offset + 12 > len(blob):
            raise ValueError(f"{where}: truncated TFRecord header at byte {offset}")
        length_bytes = blob[offset:offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        if struct.unpack("<I", blob[offset + 8:offset + 12])[0] != _masked_crc(length_bytes):
            raise ValueError(f"{where}: corrupt TFRecord length at byte {offset}")
        data = blob[offset + 12:offset + 12 + length]
        if len(data) != length or offset + 16 + length > len(blob):
            raise ValueError(f"{where}: truncated TFRecord at byte {offset}")
        records.append(data)
        offset += 16 + length
    return records


def _read_text(path: str) -> str | None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read().decode()


def _write_atomic(path: str, data: bytes) -> None:
    from apache_beam.io.filesystems import FileSystems

    temporary = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(temporary) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def write_shard(out: str, index: int, num_shards: int, new: Iterable[tuple[str, bytes]]) -> list[str]:
    """Merges `new` (id, record) into shard `index`, keeping the records already there; returns its ids.

    Records are sorted by id; a new record replaces an old one with the same id, so a re-run never
    duplicates. The shard, then its `.ids` list, are replaced atomically (write then rename).
    """
    from apache_beam.io.filesystems import FileSystems

    from preprocessing.schema import read_video_id

    path = _join(out, shard_name(index, num_shards))
    records: dict[str, bytes] = {}
    if FileSystems.exists(path):
        with FileSystems.open(path) as f:
            for data in decode_records(f.read(), path):
                records[read_video_id(data)] = data
    records.update(dict(new))
    ids = sorted(records)
    _write_atomic(path, encode_records(records[i] for i in ids))
    _write_atomic(path[:-len(".tfrecord")] + ".ids", ("\n".join(ids) + "\n").encode())
    return ids


def existing_output(out: str) -> tuple[int | None, set[str]]:
    """(num_shards of the shards in `out`, or None; ids they hold, from their .ids lists)."""
    from apache_beam.io.filesystems import FileSystems

    pattern = _join(out, f"{SHARD_PREFIX}-*-of-*.tfrecord")
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # no match / missing directory
        return None, set()
    counts, ids = set(), set()
    for metadata in matches:
        match = _SHARD_NAME.match(metadata.path.rsplit("/", 1)[-1])
        if not match:
            continue
        counts.add(int(match.group(2)))
        text = _read_text(metadata.path[:-len(".tfrecord")] + ".ids")
        ids.update(line for line in (text or "").splitlines() if line)
    if len(counts) > 1:
        raise ValueError(f"{out} holds shards of different counts {sorted(counts)}; use a fresh directory")
    return (counts.pop() if counts else None), ids


# ---------------------------------------------------------------------------------------------
# Beam transforms.

_PROGRESS = None  # the local progress bar (FnApiRunner runs the DoFns in this process)


class ProcessVideoFn(beam.DoFn):
    """Runs `process_video`; failures leave through the 'dead_letter' output with their reason."""

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self.videos = Metrics.counter(NAMESPACE, "videos_in")
        self.written = Metrics.counter(NAMESPACE, "videos_processed")
        self.dead = Metrics.counter(NAMESPACE, "videos_dead_lettered")
        self.frames = Metrics.counter(NAMESPACE, "frames_written")
        self.segmenter = None

    def setup(self):
        from preprocessing.segment import make_segmenter

        self.segmenter = make_segmenter(self.config.segmenter, videos_dir=self.config.videos_dir)

    def process(self, task: VideoTask):
        self.videos.inc()
        try:
            data, frames = process_video(task, self.config, self.segmenter)
        except Exception as error:  # every failure is recorded with its reason, none is silent
            self.dead.inc()
            reason = failure_reason(error)
            Metrics.counter(NAMESPACE, f"dead_letter_{reason.split(':', 1)[0]}").inc()
            row = {"id": task.id, "path": task.path, "reason": reason}
            yield beam.pvalue.TaggedOutput("dead_letter", row)
        else:
            self.written.inc()
            self.frames.inc(frames)
            yield task.id, data
        self._tick()

    def _tick(self):
        global _PROGRESS
        if self.config.progress_total:
            if _PROGRESS is None:
                from tqdm import tqdm

                _PROGRESS = tqdm(total=self.config.progress_total, desc="preprocess", unit="video")
            _PROGRESS.update(1)


class ProcessVideos(beam.PTransform):
    """VideoTask -> `examples` (id, serialized SequenceExample) and `dead_letter` ({id, path, reason})."""

    def __init__(self, config: PreprocessConfig):
        super().__init__()
        self.config = config

    def expand(self, tasks):
        return tasks | "DecodeFlowSegmentEncode" >> beam.ParDo(ProcessVideoFn(self.config)).with_outputs(
            "dead_letter", main="examples")


class WriteShards(beam.PTransform):
    """(id, record) -> shard md5(id) mod n, merged with what it held; outputs the ids each shard holds."""

    def __init__(self, out: str, num_shards: int):
        super().__init__()
        self.out, self.num_shards = out, num_shards

    def expand(self, examples):
        out, n = self.out, self.num_shards
        return (examples
                | "AssignShard" >> beam.Map(lambda kv: (shard_index(kv[0], n), kv))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.FlatMap(lambda item: write_shard(out, item[0], n, item[1])))


class WriteDeadLetters(beam.PTransform):
    """{id, path, reason} -> out/dead_letter.jsonl (sorted by id; empty when nothing failed)."""

    def __init__(self, out: str):
        super().__init__()
        self.out = out

    def expand(self, dead):
        out = self.out
        return (dead
                | "Collect" >> beam.combiners.ToList()
                | "Write" >> beam.Map(lambda rows: write_dead_letters(out, rows)))


def write_dead_letters(out: str, rows: list[dict]) -> int:
    lines = [json.dumps(row, sort_keys=True) for row in sorted(rows, key=lambda r: r["id"])]
    _write_atomic(_join(out, "dead_letter.jsonl"), "".join(line + "\n" for line in lines).encode())
    return len(lines)


def build_pipeline(pipeline, tasks: list[VideoTask], config: PreprocessConfig, out: str, num_shards: int):
    """Adds the job's steps to `pipeline` (kept separate so tests can pass a TestPipeline)."""
    results = (pipeline
               | "ListVideos" >> beam.Create(tasks, reshuffle=len(tasks) > 1)
               | "ProcessVideos" >> ProcessVideos(config))
    results.examples | "WriteShards" >> WriteShards(out, num_shards)
    results.dead_letter | "WriteDeadLetters" >> WriteDeadLetters(out)
    return results


def make_pipeline(runner: str | None, pipeline_args: list[str] | None):
    """FnApiRunner locally (explicitly: the default would download a binary), else the named runner."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(pipeline_args or [])
    if runner in (None, "", "FnApiRunner", "local"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(args))
    return beam.Pipeline(options=PipelineOptions([f"--runner={runner}", *args]))


# ---------------------------------------------------------------------------------------------
# The job.

def run_preprocess(*, dataset: str, videos: str, out: str, annotations: str | None = None,
                   classes: str | None = None, split: str | None = None, fps: float = 6.0, size: int = 256,
                   flow: str = "opencv", segmenter: str = "none", num_shards: int | None = None,
                   max_seconds: float | None = None, runner: str | None = None,
                   pipeline_args: list[str] | None = None, progress: bool = True) -> dict:
    """Runs the Beam job and returns the summary it writes to `out/summary.json`.

    Charades: `annotations` is the split's CSV (Charades_v1_train.csv or _test.csv), `classes`
    the classes file (default: Charades_v1_classes.txt next to the CSV, else the official 157).
    Toyota: labels come from the file names, `split` is one of preprocessing.toyota.SPLITS (None: all).
    """
    from preprocessing import charades, toyota

    if dataset not in ("charades", "toyota"):
        raise ValueError(f"dataset must be 'charades' or 'toyota', got {dataset!r}")
    if flow not in ("opencv", "tensor", "none"):
        raise ValueError(f"flow must be 'opencv', 'tensor' or 'none', got {flow!r}")
    if fps <= 0 or size < 8:
        raise ValueError(f"need fps > 0 and size >= 8, got fps={fps}, size={size}")
    if dataset == "charades":
        if not annotations:
            raise ValueError("Charades needs --annotations (Charades_v1_train.csv or Charades_v1_test.csv)")
        if split:
            raise ValueError("--split is for Toyota; for Charades pass the split's CSV as --annotations")
        if classes is None and (Path(annotations).parent / charades.CLASSES_FILE).exists():
            classes = str(Path(annotations).parent / charades.CLASSES_FILE)
        num_classes = len(charades.read_classes(classes)) if classes else charades.NUM_CLASSES
        tasks = charades_tasks(videos, annotations, num_classes)
    else:
        num_classes = toyota.NUM_CLASSES
        tasks = toyota_tasks(videos, split)
    local = runner in (None, "", "FnApiRunner", "local")
    if "://" not in out:
        Path(out).mkdir(parents=True, exist_ok=True)
    from pipelines.checks import write_class_names  # classes.json, for the run directory and `predict`
    write_class_names(out, dataset=dataset, classes=classes, num_classes=num_classes)

    existing_shards, written_before = existing_output(out)
    shards = existing_shards or num_shards or max(1, math.ceil(len(tasks) / VIDEOS_PER_SHARD))
    todo = [t for t in tasks if t.id not in written_before]
    config = PreprocessConfig(dataset=dataset, num_classes=num_classes, fps=fps, size=size, flow=flow,
                              segmenter=segmenter, videos_dir=str(videos), max_seconds=max_seconds,
                              progress_total=len(todo) if (progress and local) else 0)
    metrics = {}
    if todo:
        global _PROGRESS
        pipeline = make_pipeline(runner, pipeline_args)
        build_pipeline(pipeline, todo, config, out, shards)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        finally:
            if _PROGRESS is not None:
                _PROGRESS.close()
                _PROGRESS = None
        metrics = _counters(result)
    else:
        write_dead_letters(out, [])
    return write_summary(out, tasks, config, shards, skipped=len(tasks) - len(todo), metrics=metrics)


def _counters(result) -> dict:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception:  # some runners do not report metrics
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(counter.committed or 0)
    return totals


def write_summary(out: str, tasks: list[VideoTask], config: PreprocessConfig, num_shards: int, *,
                  skipped: int, metrics: dict) -> dict:
    """Counts from the files themselves, so the summary is true even after a partial earlier run."""
    wanted = {t.id for t in tasks}
    _, ids = existing_output(out)
    text = _read_text(_join(out, "dead_letter.jsonl")) or ""
    dead = [json.loads(line) for line in text.splitlines() if line.strip()]
    dead_ids = {row["id"] for row in dead} & wanted
    written = ids & wanted
    summary = {
        "input": len(tasks),
        "written": len(written),
        "dead_lettered": len(dead_ids),
        "skipped_already_written": skipped,
        "unaccounted": sorted(wanted - written - dead_ids),
        "num_shards": num_shards,
        "dataset": config.dataset,
        "num_classes": config.num_classes,
        "fps": config.fps,
        "size": config.size,
        "flow": config.flow,
        "segmenter": config.segmenter,
        "metrics": metrics,
    }
    _write_atomic(_join(out, "summary.json"), json.dumps(summary, indent=1).encode())
    return summary


def summary_ok(summary: dict) -> bool:
    return summary["input"] == summary["written"] + summary["dead_lettered"] and not summary["unaccounted"]
