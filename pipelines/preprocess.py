"""The Beam preprocessing job: videos (+ annotations) -> TFRecord shards of `preprocessing.schema`.

    videos ──► ListVideos ──► ProcessVideos ──► ShardOfNew ──┐   (each video also staged at once in
                                                              │    OUT/_staging/<id>.<key>.rec|.dead)
    staged by a killed run ──► StagedBefore ─────────────────┴─► AllShardIds ──► WriteShards
                                                                   data-0000k-of-0000n.tfrecord (+ .ids, .records.json)
    then the driver writes dead_letter.jsonl and summary.json, and clears OUT/_staging/

Per video (`process_video`, a plain function): decode at `fps` with the shorter side resized to
`size` (preprocessing.video), TV-L1 flow between consecutive frames (preprocessing.flow, stored
quantised like the Charades release), the segmenter's 151-value class maps (preprocessing.segment),
one SequenceExample. Any failure sends the video to the dead-letter output with its reason, so
`input == written + dead_lettered` always; every outcome is a `Metrics.counter` in the
`assemblenet.preprocess` namespace. A video decoded only up to a corruption is written, counted and
listed in summary.json (`partial`).

What each record was made with (so that an output folder never mixes settings or hides stale labels):
  OUT/manifest.json                   the job's settings (`SETTINGS_KEYS`) and shard count
  OUT/data-0000k-of-0000n.records.json per record of the shard: `key` (hash of the settings and the
                                      annotation row), `annotation` (hash of the row: labels and
                                      intervals), frame counts, `partial`
  OUT/classes.json                    the class names of the label space (what training reads)
Re-running into an existing OUT:
  - same settings, same rows: nothing is redone;
  - a corrected annotation row (another label or interval for the same id): that video is redone;
  - other settings (fps, size, flow, segmenter, dataset, classes, max_seconds), records of videos
    that are no longer in the input, or an OUT made without a manifest: refused with a message, since
    redoing is costly (flow) and could be a typo; `replace=True` (`--replace`) makes OUT match
    this command exactly (records of other settings are deleted and redone, stale ones removed).

A kill loses no finished video: each video is written to `OUT/_staging/<id>.<key>.rec` (or
`.dead`) as soon as it is done, atomically (write, then rename). A re-run takes staged videos of
the same key as done, processes only the rest, then merges everything into the shards. Shards hold
their records sorted by id, and their count is fixed in manifest.json by the first run, so the
output is byte-for-byte the output of one uninterrupted run (summary.json's `this_run` part says
what this particular run did). A video goes to shard `md5(id) mod n`; each shard is replaced
atomically, then its `.ids` and `.records.json`.

Runners: locally Beam's FnApiRunner is used explicitly (the default runner would try to download a
binary, which fails offline), in this process or, with `workers > 1`, in that many local worker
processes (`--direct_running_mode=multi_processing --direct_num_workers=N`); the progress bar is
drawn by this process from the staged files, so it counts every worker's videos.
`runner="DataflowRunner"` plus the usual GCP options (`--project --region --temp_location gs://...
--setup_file ./setup.py`) runs it on Dataflow; `out` and `videos` may then be gs:// paths (files are
read and written through Beam's FileSystems, videos are copied to a local temporary file for
OpenCV). See docs/real_data.md.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines import locks

# TFRecord framing as bytes: shards go through Beam's FileSystems (pipelines/holdout.py uses them too).
from preprocessing.loader import decode_records, encode_records

NAMESPACE = "assemblenet.preprocess"
SHARD_PREFIX = "data"
_SHARD_NAME = re.compile(rf"^{SHARD_PREFIX}-(\d{{5}})-of-(\d{{5}})\.tfrecord$")
VIDEOS_PER_SHARD = 50
MANIFEST = "manifest.json"
CLASSES_FILE = "classes.json"
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
    staging: str = ""  # a folder: each finished video is written there at once (see the module doc)
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


# ---------------------------------------------------------------------------------------------
# Inputs.

class EmptyInputError(ValueError):
    """The job's inputs hold no video to process (a mistyped path, an empty CSV, nothing in a split)."""


def charades_tasks(videos: str, annotations: str, num_classes: int) -> list[VideoTask]:
    """One task per row of the CSV; `<id>.mp4` is looked up under `videos`, sub-folders included and
    the extension in any case (`<id>.MP4`); a row without a video is dead-lettered as missing."""
    from preprocessing import charades

    rows = charades.read_annotations(annotations, num_classes=num_classes)
    if not rows:
        raise EmptyInputError(f"{annotations}: no video rows (only the header); nothing to preprocess")
    paths = _video_index(videos)
    return [VideoTask(id=v.id, path=paths.get(v.id) or _join(videos, f"{v.id}.mp4"),
                      labels=tuple(a.label for a in v.actions),
                      label_start=tuple(a.start for a in v.actions),
                      label_end=tuple(a.end for a in v.actions))
            for v in rows]


def _video_index(videos: str) -> dict[str, str]:
    """{id: path} of the local videos under `videos` (empty for remote folders: those are joined)."""
    from preprocessing.video import find_videos

    if "://" in videos:
        return {}
    index: dict[str, str] = {}
    for path in find_videos(videos):
        if path.stem in index:
            raise ValueError(f"{path}: video {path.stem} is also at {index[path.stem]}; keep one copy")
        index[path.stem] = str(path)
    if not index:
        raise EmptyInputError(f"--videos {videos}: no .mp4 file (sub-folders and .MP4 included)")
    return index


def toyota_inputs(videos: str, split: str | None) -> tuple[list[VideoTask], list[dict]]:
    """(tasks of the split, dead-letter rows of its clips whose activity is outside the protocol)."""
    from preprocessing import toyota

    clips, rejected = toyota.scan_clips(videos, split)
    if not clips and not rejected:
        found = len(toyota.find_videos(videos))
        raise EmptyInputError(f"--videos {videos}: no .mp4 clip (sub-folders and .MP4 included)" if not found
                              else f"--videos {videos}: none of its {found} clips is in split {split}")
    tasks = [VideoTask(id=clip.id, path=str(path), labels=(clip.label,), label_start=(0.0,), label_end=(-1.0,))
             for clip, path in clips]
    return tasks, [{"id": i, "path": str(path), "reason": reason} for i, path, reason in rejected]


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


def encode_video(task: VideoTask, config: PreprocessConfig, segmenter=None,
                 flow_stats=None) -> tuple[bytes, dict]:
    """One video -> (serialized SequenceExample, info). Raises on any bad input.

    info: `frames` stored, `source_frames` decoded, `declared_frames` (the container's count) and
    `partial` (decoding stopped at a corruption well before the declared end; frames were lost).
    `flow_stats`: a `preprocessing.flow.FlowStats` the flow's pairs, time and compilations are added to.
    """
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
        flow = flow_lib.quantize_flow(flow_lib.compute_flow(video.frames, method=config.flow, stats=flow_stats))
    objects = segmenter(video.frames, video.times, task.id) if segmenter is not None else None
    ends = [video.duration if end < 0 else end for end in task.label_end]
    data = encode_example(video_id=task.id, dataset=config.dataset, fps=video.fps, rgb=video.frames,
                          num_classes=config.num_classes, labels=task.labels, label_start=task.label_start,
                          label_end=ends, flow=flow, objects=objects, flow_method=config.flow,
                          segmenter=config.segmenter)
    data = canonical_example(data)
    info = {"frames": len(video.frames), "source_frames": video.source_frames,
            "declared_frames": video.declared_frames, "partial": video.partial}
    return data, info


def canonical_example(data: bytes) -> bytes:
    """The same SequenceExample serialized deterministically (context map entries sorted by key).

    Protobuf writes map entries in an order that differs between processes, so the same video
    encoded by two worker processes (or by a run and its resumption) would give different bytes.
    """
    from preprocessing import schema

    if hasattr(schema, "messages"):  # the TensorFlow-free protos, where schema.py has them
        message = schema.messages()["SequenceExample"]
    else:
        from tensorflow.core.example.example_pb2 import SequenceExample as message
    return message.FromString(data).SerializeToString(deterministic=True)


def process_video(task: VideoTask, config: PreprocessConfig, segmenter=None) -> tuple[bytes, int]:
    """One video -> (serialized SequenceExample, number of frames). Raises on any bad input."""
    data, info = encode_video(task, config, segmenter)
    return data, info["frames"]


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


def _read_bytes(path: str) -> bytes | None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read()


def _read_text(path: str) -> str | None:
    data = _read_bytes(path)
    return None if data is None else data.decode()


def _write_atomic(path: str, data: bytes) -> None:
    """Write then rename, so a reader (or a re-run after a kill) sees the old file or the new one.

    A failed local write (a full disk) removes its temporary file and raises an OSError naming `path`
    (the bare error of `write` names no file)."""
    if "://" not in path:
        temporary = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise OSError(error.errno, error.strerror or str(error), path) from None
        return
    from apache_beam.io.filesystems import FileSystems

    temporary = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(temporary) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def _delete(paths: list[str]) -> None:
    from apache_beam.io.filesystems import FileSystems

    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


def _list(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # no match / missing directory
        return []


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# Staging: one file per finished video, so a killed job keeps its work.

def staged_path(staging: str, video_id: str, key: str, dead: bool = False) -> str:
    return _join(staging, f"{video_id}.{key}.{'dead' if dead else 'rec'}")


def stage_record(staging: str, video_id: str, key: str, data: bytes, info: dict) -> None:
    _write_atomic(staged_path(staging, video_id, key), encode_records([_json_bytes(info), data]))


def stage_dead_letter(staging: str, key: str, row: dict) -> None:
    _write_atomic(staged_path(staging, row["id"], key, dead=True), _json_bytes(row))


def read_staged_record(staging: str, video_id: str, key: str) -> tuple[bytes, dict]:
    path = staged_path(staging, video_id, key)
    info, data = decode_records(_read_bytes(path) or b"", path)
    return data, json.loads(info)


def list_staged(staging: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """({(id, key)} of staged records, {(id, key)} of staged dead letters); temporary files ignored."""
    records, dead = set(), set()
    for path in _list(_join(staging, "*")):
        name = path.rsplit("/", 1)[-1]
        stem, _, kind = name.rpartition(".")
        video_id, _, key = stem.rpartition(".")
        if kind in ("rec", "dead") and video_id:
            (records if kind == "rec" else dead).add((video_id, key))
    return records, dead


# ---------------------------------------------------------------------------------------------
# Shards.

def _sidecar(out: str, index: int, num_shards: int, suffix: str) -> str:
    return _join(out, shard_name(index, num_shards))[:-len(".tfrecord")] + suffix


def write_shard(out: str, index: int, num_shards: int, new: Iterable[str], staging: str,
                keys: dict[str, str], remove: Iterable[str] = ()) -> list[str]:
    """Merges the staged records of the ids `new` into shard `index`; drops the ids `remove`.

    Records are sorted by id; a new record replaces an old one with the same id, so a re-run never
    duplicates. The shard, then its `.ids` list, then its `.records.json` (key and info per record)
    are each replaced atomically: a kill in between leaves ids whose `.records.json` entry does not
    match, which the next run merges again from the staging folder.
    """
    from preprocessing.schema import read_video_id

    path = _join(out, shard_name(index, num_shards))
    records: dict[str, bytes] = {}
    for data in decode_records(_read_bytes(path) or b"", path):
        records[read_video_id(data)] = data
    entries = json.loads(_read_text(_sidecar(out, index, num_shards, ".records.json")) or "{}")
    for video_id in set(remove):
        records.pop(video_id, None)
        entries.pop(video_id, None)
    for video_id in set(new) - {None}:
        data, info = read_staged_record(staging, video_id, keys[video_id])
        records[video_id] = data
        entries[video_id] = dict(info, key=keys[video_id])
    ids = sorted(records)
    entries = {i: entries[i] for i in ids if i in entries}
    _write_atomic(path, encode_records(records[i] for i in ids))
    _write_atomic(_sidecar(out, index, num_shards, ".ids"), "".join(f"{i}\n" for i in ids).encode())
    _write_atomic(_sidecar(out, index, num_shards, ".records.json"), _json_bytes(entries))
    return ids


def existing_output(out: str) -> tuple[int | None, set[str]]:
    """(num_shards of the shards in `out`, or None; ids they hold, from their .ids lists)."""
    num_shards, entries = existing_records(out)
    return num_shards, set(entries)


def existing_records(out: str) -> tuple[int | None, dict[str, dict]]:
    """(num_shards of the shards in `out`, or None; {id: its `.records.json` entry, {} if none})."""
    counts, entries = set(), {}
    for path in _list(_join(out, f"{SHARD_PREFIX}-*-of-*.tfrecord")):
        match = _SHARD_NAME.match(path.rsplit("/", 1)[-1])
        if not match:
            continue
        counts.add(int(match.group(2)))
        base = path[:-len(".tfrecord")]
        known = json.loads(_read_text(base + ".records.json") or "{}")
        for line in (_read_text(base + ".ids") or "").splitlines():
            if line:
                entries[line] = known.get(line, {})
    if len(counts) > 1:
        raise ValueError(f"{out} holds shards of different counts {sorted(counts)}; use a fresh directory")
    return (counts.pop() if counts else None), entries


# ---------------------------------------------------------------------------------------------
# Beam transforms.

class ProcessVideoFn(beam.DoFn):
    """Runs `encode_video`; failures leave through the 'dead_letter' output with their reason.

    With `config.staging`, each outcome is also written there at once (see the module doc).
    """

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self.videos = Metrics.counter(NAMESPACE, "videos_in")
        self.written = Metrics.counter(NAMESPACE, "videos_processed")
        self.dead = Metrics.counter(NAMESPACE, "videos_dead_lettered")
        self.partial = Metrics.counter(NAMESPACE, "videos_partial")
        self.frames = Metrics.counter(NAMESPACE, "frames_written")
        self.segmenter = None

    def setup(self):
        from preprocessing.segment import make_segmenter

        if self.config.flow == "tensor":  # before anything compiles in this worker process
            enable_flow_compile_cache(self.config.compile_cache)
        self.segmenter = make_segmenter(self.config.segmenter, videos_dir=self.config.videos_dir)

    def process(self, task: VideoTask):
        from preprocessing.flow import FlowStats

        self.videos.inc()
        staging, key = self.config.staging, record_key(self.config, task)
        flow_stats = FlowStats()
        try:
            data, info = encode_video(task, self.config, self.segmenter, flow_stats)
        except Exception as error:  # every failure is recorded with its reason, none is silent
            count_flow(flow_stats)
            self.dead.inc()
            reason = failure_reason(error)
            Metrics.counter(NAMESPACE, f"dead_letter_{reason.split(':', 1)[0]}").inc()
            row = {"id": task.id, "path": task.path, "reason": reason}
            if staging:
                stage_dead_letter(staging, key, row)
            yield beam.pvalue.TaggedOutput("dead_letter", row)
        else:
            count_flow(flow_stats)
            if staging:
                stage_record(staging, task.id, key, data, dict(info, annotation=annotation_hash(task)))
            self.written.inc()
            self.partial.inc(int(info["partial"]))
            self.frames.inc(info["frames"])
            yield task.id, data


# Counters of the flow stage (summed over videos and workers; `flow_summary` turns them into seconds and
# rates): pairs asked for, pairs run (padding included), compiled calls, shapes compiled, milliseconds in
# flow (compilation included) and in compilation.
FLOW_COUNTERS = ("flow_pairs", "flow_pairs_computed", "flow_calls", "flow_compiled_shapes", "flow_ms",
                 "flow_compile_ms")


def count_flow(stats) -> None:
    """Adds one video's `FlowStats` to the job's counters (nothing when it computed no flow)."""
    if not stats.pairs:
        return
    values = (stats.pairs, stats.computed, stats.calls, stats.compiled, round(stats.seconds * 1000),
              round(stats.compile_seconds * 1000))
    for name, value in zip(FLOW_COUNTERS, values, strict=True):
        Metrics.counter(NAMESPACE, name).inc(value)


def flow_summary(metrics: dict) -> dict:
    """Where the flow stage's time went, from the job's counters: {} when no flow was computed.

    `seconds` sums over worker processes (with --workers N it can exceed the job's wall time);
    `pairs_per_s_compiled` is the rate once every shape is compiled.
    """
    pairs = metrics.get("flow_pairs", 0)
    if not pairs:
        return {}
    seconds, compile_seconds = metrics.get("flow_ms", 0) / 1000, metrics.get("flow_compile_ms", 0) / 1000
    run = max(seconds - compile_seconds, 1e-9)
    return {"pairs": pairs, "pairs_computed": metrics.get("flow_pairs_computed", 0),
            "calls": metrics.get("flow_calls", 0), "compiled_shapes": metrics.get("flow_compiled_shapes", 0),
            "seconds": round(seconds, 3), "compile_seconds": round(compile_seconds, 3),
            "pairs_per_s": round(pairs / max(seconds, 1e-9), 2), "pairs_per_s_compiled": round(pairs / run, 2)}


def enable_flow_compile_cache(folder: str) -> str | None:
    """The worker's persistent XLA cache for --flow tensor ("": the default folder, "none": off); a folder
    that cannot be made only costs the compilations (a warning, never a failed job)."""
    import warnings

    from preprocessing import flow as flow_lib

    folder = folder or flow_lib.default_compile_cache()
    try:
        return flow_lib.enable_compile_cache(folder)
    except OSError as error:
        warnings.warn(f"--compile-cache {folder}: {error}; compiling without a persistent cache", stacklevel=2)
        return None


class ProcessVideos(beam.PTransform):
    """VideoTask -> `examples` (id, serialized SequenceExample) and `dead_letter` ({id, path, reason})."""

    def __init__(self, config: PreprocessConfig):
        super().__init__()
        self.config = config

    def expand(self, tasks):
        return tasks | "DecodeFlowSegmentEncode" >> beam.ParDo(ProcessVideoFn(self.config)).with_outputs(
            "dead_letter", main="examples")


class WriteShards(beam.PTransform):
    """(shard, id or None) -> shard files merged from the staged records; None only triggers a rewrite
    (dropping `remove`). Outputs the ids each written shard holds."""

    def __init__(self, out: str, num_shards: int, staging: str, keys: dict[str, str],
                 remove: frozenset[str] = frozenset()):
        super().__init__()
        self.out, self.num_shards, self.staging, self.keys, self.remove = out, num_shards, staging, keys, remove

    def expand(self, shard_ids):
        out, n, staging, keys, remove = self.out, self.num_shards, self.staging, self.keys, self.remove
        return (shard_ids
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.FlatMap(lambda item: write_shard(out, item[0], n, item[1], staging, keys,
                                                                       remove)))


def write_dead_letters(out: str, rows: list[dict]) -> int:
    lines = [json.dumps(row, sort_keys=True) for row in sorted(rows, key=lambda r: r["id"])]
    _write_atomic(_join(out, "dead_letter.jsonl"), "".join(line + "\n" for line in lines).encode())
    return len(lines)


def build_pipeline(pipeline, tasks: list[VideoTask], config: PreprocessConfig, out: str, num_shards: int, *,
                   staged: Iterable[str] = (), keys: dict[str, str] | None = None,
                   rewrite: Iterable[int] = (), remove: frozenset[str] = frozenset()):
    """Adds the job's steps to `pipeline`: process `tasks` (staging each), then merge into the shards
    the new records, the `staged` ids of an earlier killed run, and rewrite the shards `rewrite`."""
    keys = dict(keys or {})
    keys.update({t.id: record_key(config, t) for t in tasks})
    results = (pipeline
               | "ListVideos" >> beam.Create(tasks, reshuffle=len(tasks) > 1)
               | "ProcessVideos" >> ProcessVideos(config))
    new = results.examples | "ShardOfNew" >> beam.Map(lambda kv: (shard_index(kv[0], num_shards), kv[0]))
    before = sorted((shard_index(i, num_shards), i) for i in staged) + [(s, None) for s in sorted(set(rewrite))]
    earlier = pipeline | "StagedBefore" >> beam.Create(before, reshuffle=False)
    ((new, earlier) | "AllShardIds" >> beam.Flatten()
     | "WriteShards" >> WriteShards(out, num_shards, config.staging, keys, remove))
    return results


def make_pipeline(runner: str | None, pipeline_args: list[str] | None, workers: int = 1):
    """FnApiRunner locally (explicitly: the default would download a binary), else the named runner.

    `workers > 1` runs the FnApiRunner with that many local SDK worker processes.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(pipeline_args or [])
    if is_local(runner):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        if workers > 1:
            args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
            _make_importable_in_workers()
        return beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(args))
    return beam.Pipeline(options=PipelineOptions([f"--runner={runner}", *args]))


def is_local(runner: str | None) -> bool:
    return runner in (None, "", "FnApiRunner", "local")


def _make_importable_in_workers() -> None:
    """Worker processes unpickle our DoFns: put this checkout on their PYTHONPATH (an installed
    package already is)."""
    root = str(Path(__file__).resolve().parents[1])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, paths)])


class StagingProgress:
    """A progress bar over the videos of this run, drawn by the launching process from the files the
    workers stage (so it counts every worker process, unlike a bar ticked inside a DoFn)."""

    def __init__(self, staging: str, todo: dict[str, str], interval: float = 0.5):
        self.staging, self.todo, self.interval = staging, todo, interval
        self._stop = threading.Event()
        self._thread = None
        self.bar = None

    def count(self) -> int:
        records, dead = list_staged(self.staging)
        return sum(1 for video_id, key in records | dead if self.todo.get(video_id) == key)

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=len(self.todo), desc="preprocess", unit="video", file=sys.stderr)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(self.interval):
            self._update()

    def _update(self):
        self.bar.update(self.count() - self.bar.n)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


# ---------------------------------------------------------------------------------------------
# The job.

@locks.writes("out", "records folder")
def run_preprocess(*, dataset: str, videos: str, out: str, annotations: str | None = None,
                   classes: str | None = None, split: str | None = None, fps: float = 6.0, size: int = 256,
                   flow: str = "opencv", segmenter: str = "none", num_shards: int | None = None,
                   max_seconds: float | None = None, runner: str | None = None,
                   pipeline_args: list[str] | None = None, progress: bool = True, workers: int = 1,
                   replace: bool = False, compile_cache: str | None = None) -> dict:
    """Runs the Beam job and returns the summary it writes to `out/summary.json`.

    Charades: `annotations` is the split's CSV (Charades_v1_train.csv or _test.csv), `classes`
    the classes file (default: Charades_v1_classes.txt next to the CSV, else the official 157).
    Toyota: labels come from the file names, `split` is one of preprocessing.toyota.SPLITS (None: all);
    the cross-view splits use the 19 cross-view classes. `workers`: local worker processes.
    `replace`: make `out` match this command (see the module doc) instead of refusing.
    `compile_cache`: with flow="tensor", the persistent XLA cache folder (None: $ASSEMBLENET_COMPILE_CACHE or
    ~/.cache/assemblenet/xla, resolved by each worker; "none": off).
    Raises EmptyInputError when there is nothing to process, and ValueError when no video was
    written (after writing dead_letter.jsonl and summary.json).
    """
    from preprocessing import charades, toyota

    if dataset not in ("charades", "toyota"):
        raise ValueError(f"dataset must be 'charades' or 'toyota', got {dataset!r}")
    if flow not in ("opencv", "tensor", "none"):
        raise ValueError(f"flow must be 'opencv', 'tensor' or 'none', got {flow!r}")
    from preprocessing.video import MAX_FPS

    # `not a <= x` rather than `x < a`: nan fails every comparison and must be refused too.
    if not 0 < fps <= MAX_FPS or not 8 <= size:
        raise ValueError(f"need 0 < fps <= {MAX_FPS:g} and size >= 8, got fps={fps}, size={size}")
    if max_seconds is not None and not 0 < max_seconds < math.inf:
        raise ValueError(f"max_seconds must be a positive number, got {max_seconds}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and not is_local(runner):
        raise ValueError(f"--workers is for the local runner; {runner} takes its own worker options after `--`")
    listing_dead: list[dict] = []
    if dataset == "charades":
        if not annotations:
            raise ValueError("Charades needs --annotations (Charades_v1_train.csv or Charades_v1_test.csv)")
        if split:
            raise ValueError("--split is for Toyota; for Charades pass the split's CSV as --annotations")
        if classes is None and (Path(annotations).parent / charades.CLASSES_FILE).exists():
            classes = str(Path(annotations).parent / charades.CLASSES_FILE)
        class_names = tuple(name for _, name in charades.read_classes(classes)) if classes else ()
        num_classes = len(class_names) or charades.NUM_CLASSES
        tasks = charades_tasks(videos, annotations, num_classes)
    else:
        class_names = toyota.protocol_classes(split)
        num_classes = len(class_names)
        tasks, listing_dead = toyota_inputs(videos, split)
    local = is_local(runner)
    if "://" not in out:
        Path(out).mkdir(parents=True, exist_ok=True)
    staging = _join(out, STAGING)
    config = PreprocessConfig(dataset=dataset, num_classes=num_classes, fps=fps, size=size, flow=flow,
                              segmenter=segmenter, videos_dir=str(videos), max_seconds=max_seconds,
                              class_names=class_names, staging=staging, compile_cache=compile_cache or "")
    settings = settings_of(config)
    wanted = {t.id for t in tasks} | {row["id"] for row in listing_dead}

    _delete(_list(_join(out, "*.tmp-*")))  # half-written files of a killed run (never read)
    existing_shards, entries = existing_records(out)
    manifest = json.loads(_read_text(_join(out, MANIFEST)) or "null")
    problem = _output_problem(out, manifest, settings, existing_shards, set(entries) - wanted)
    removed: set[str] = set()
    if problem and not replace:
        raise ValueError(f"{problem}; pass --replace to make {out} match this command (its records are "
                         "deleted or redone), or choose another --out")
    if problem and (manifest is None or manifest.get("version") != MANIFEST_VERSION
                    or manifest.get("settings") != settings):
        clear_output(out)
        existing_shards, entries, manifest = None, {}, None
    elif problem:
        removed = set(entries) - wanted
    shards = ((manifest or {}).get("num_shards") or existing_shards or num_shards
              or max(1, math.ceil(len(wanted) / VIDEOS_PER_SHARD)))
    _write_atomic(_join(out, MANIFEST), _json_bytes({"version": MANIFEST_VERSION, "settings": settings,
                                                      "num_shards": shards}))
    if class_names:
        _write_atomic(_join(out, CLASSES_FILE), _json_bytes(list(class_names)))

    keys = {t.id: record_key(config, t) for t in tasks}
    done = {i for i, key in keys.items() if entries.get(i, {}).get("key") == key}
    staged_records, staged_dead = list_staged(staging)
    staged = {i for i, key in staged_records if keys.get(i) == key} - done
    dead_before = {i for i, key in staged_dead if keys.get(i) == key}
    todo = [t for t in tasks if t.id not in done and t.id not in staged and t.id not in dead_before]
    # Records made from another annotation row leave their shard; the redone record (if the video
    # still decodes) takes their place, so a stale label never survives a failed redo.
    outdated = {i for i in keys if i in entries and i not in done}
    removed_or_outdated = removed | outdated
    rewrite = {shard_index(i, shards) for i in removed_or_outdated}
    metrics = {}
    started = time.perf_counter()
    if todo or staged or rewrite:
        pipeline = make_pipeline(runner, pipeline_args, workers)
        build_pipeline(pipeline, todo, config, out, shards, staged=sorted(staged), keys=keys,
                       rewrite=rewrite, remove=frozenset(removed_or_outdated))
        watch = StagingProgress(staging, {t.id: keys[t.id] for t in todo}) if progress and local and todo \
            else contextlib.nullcontext()
        with watch:
            try:
                result = pipeline.run()
                result.wait_until_finish()
            except Exception as error:  # the runner wraps what failed in a worker: raise that instead
                raise job_error(error, staging) from None
        metrics = _counters(result)
    _, staged_dead = list_staged(staging)
    dead_rows = list(listing_dead)
    for video_id, key in sorted(staged_dead):
        if keys.get(video_id) == key:
            dead_rows.append(json.loads(_read_text(staged_path(staging, video_id, key, dead=True))))
    write_dead_letters(out, dead_rows)
    this_run = {"skipped_already_written": len(done), "resumed_from_staging": len(staged) + len(dead_before),
                "processed": len(todo), "removed_stale": sorted(removed), "metrics": metrics,
                "seconds": round(time.perf_counter() - started, 3)}
    if flow_stage := flow_summary(metrics):
        this_run["flow"] = flow_stage
    summary = write_summary(out, tasks, config, shards, listing_dead=listing_dead, this_run=this_run, keys=keys)
    clear_staging(staging)
    if summary["written"] == 0:
        raise ValueError(no_video_message(out, videos, dead_rows))
    return summary


_OS_ERROR = re.compile(r"\[Errno (\d+)\] ([^:\[\]]+?)(?:: '([^']*)')?(?: \[while running|$)", re.MULTILINE)


def job_error(error: Exception, staging: str) -> Exception:
    """What to raise for a failed job: the OSError a worker hit (a full disk, a folder it cannot write),
    as one line naming its path and saying that the finished videos are kept, or the ValueError it
    raised, rather than the runner's wrapper (a RuntimeError holding the worker's traceback). Any
    other failure is returned unchanged.

    The in-process runner chains the worker's exception; worker processes send only its text."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, (OSError, ValueError)):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ValueError) and cause is not error:
        return cause  # a setting a worker refused (e.g. the segmenter): its own one-line message
    if isinstance(cause, OSError) and cause.errno is not None:
        number, reason, path = cause.errno, cause.strerror or str(cause), cause.filename
    elif match := _OS_ERROR.search(str(error)):
        number, reason, path = int(match.group(1)), match.group(2).strip(), match.group(3)
    else:
        return error
    records, dead = list_staged(staging)
    kept = (f"; the {len(records) + len(dead)} video(s) finished so far are kept in {staging} and the "
            "shards already written are untouched: run the same command again to resume")
    return OSError(number, f"{reason}{kept}", path or staging)


def _output_problem(out: str, manifest: dict | None, settings: dict, existing_shards: int | None,
                    stale: set[str]) -> str | None:
    """Why `out` cannot simply be continued with these settings, or None."""
    if manifest is None:
        return (f"{out} holds records without {MANIFEST} (made by an older version): their settings are "
                "unknown") if existing_shards else None
    if manifest.get("version") != MANIFEST_VERSION:
        return f"{out}/{MANIFEST}: version {manifest.get('version')}, this toolkit writes {MANIFEST_VERSION}"
    before = manifest.get("settings", {})
    changed = [f"{k}={before.get(k)!r} (now {settings[k]!r})" for k in SETTINGS_KEYS if before.get(k) != settings[k]]
    if changed:
        return f"{out} holds records made with other settings: {', '.join(changed)}"
    if stale:
        examples = ", ".join(sorted(stale)[:3])
        return (f"{out} holds {len(stale)} record(s) of videos that are not in this input (e.g. {examples}); "
                "another split or annotation file into the same folder?")
    return None


def clear_output(out: str) -> None:
    """Deletes what the job writes in `out` (shards and their lists, manifest, summaries, staging)."""
    names = [f"{SHARD_PREFIX}-*-of-*.tfrecord", f"{SHARD_PREFIX}-*-of-*.ids", f"{SHARD_PREFIX}-*-of-*.records.json",
             MANIFEST, CLASSES_FILE, "summary.json", "dead_letter.jsonl"]
    _delete([path for name in names for path in _list(_join(out, name))])
    clear_staging(_join(out, STAGING))


def clear_staging(staging: str) -> None:
    _delete(_list(_join(staging, "*")))
    if "://" not in staging and os.path.isdir(staging):
        os.rmdir(staging)


def no_video_message(out: str, videos: str, dead_rows: list[dict]) -> str:
    reasons = collections.Counter(row["reason"].split(":", 1)[0] for row in dead_rows)
    listed = ", ".join(f"{reason} x{count}" for reason, count in reasons.most_common())
    hint = f"; is --videos {videos} right?" if set(reasons) == {"missing"} else ""
    return (f"{out}: no video was written: all {len(dead_rows)} failed ({listed}); "
            f"reasons in {_join(out, 'dead_letter.jsonl')}{hint}")


def _counters(result) -> dict:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception:  # some runners do not report metrics
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(counter.committed or 0)
    return dict(sorted(totals.items()))


def write_summary(out: str, tasks: list[VideoTask], config: PreprocessConfig, num_shards: int, *,
                  listing_dead: list[dict] = (), this_run: dict | None = None,
                  keys: dict[str, str] | None = None) -> dict:
    """Counts from the files themselves, so the summary describes the records truly.

    Everything but `this_run` depends only on the output folder's content, so it is the same
    however many runs (or kills) it took to make it.
    """
    wanted = {t.id for t in tasks} | {row["id"] for row in listing_dead}
    _, entries = existing_records(out)
    text = _read_text(_join(out, "dead_letter.jsonl")) or ""
    dead = [json.loads(line) for line in text.splitlines() if line.strip()]
    dead_ids = {row["id"] for row in dead} & wanted
    written = set(entries) & wanted
    if keys is not None:  # only records made with these settings from these rows count as written
        written = {i for i in written if entries[i].get("key") == keys.get(i)}
    partial = sorted(i for i in written if entries[i].get("partial"))
    summary = {
        "input": len(wanted),
        "written": len(written),
        "dead_lettered": len(dead_ids),
        "partial": len(partial),
        "partial_videos": partial,
        "unaccounted": sorted(wanted - written - dead_ids),
        "num_shards": num_shards,
        **{key: value for key, value in settings_of(config).items() if key != "class_names"},
        "class_names": list(config.class_names),
        "frames_written": sum(entries[i].get("frames", 0) for i in written),
        "this_run": this_run or {},
    }
    _write_atomic(_join(out, "summary.json"), json.dumps(summary, indent=1).encode())
    return summary


def summary_ok(summary: dict) -> bool:
    return summary["input"] == summary["written"] + summary["dead_lettered"] and not summary["unaccounted"]
