"""Beam transforms: the per-video DoFn and its counters, the composite transforms, the pipeline and its
runner, and the progress bar drawn from the staged files."""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.preprocess.batching import VideoBatcher
from pipelines.preprocess.config import NAMESPACE, PreprocessConfig, VideoTask, annotation_hash, record_key
from pipelines.preprocess.elements import decode_task, encode_decoded, failure_reason, shard_index
from pipelines.preprocess.files import _join, _write_atomic
from pipelines.preprocess.shards import write_shard
from pipelines.preprocess.staging import list_staged, stage_dead_letter, stage_record


class ProcessVideoFn(beam.DoFn):
    """Decodes each video (`config.decode_threads` at once), runs its flow and masks in batches across the
    videos of the bundle (`batching.VideoBatcher`), encodes it (as many at once, JPEG and PNG: the host's
    largest cost per frame); failures leave through the 'dead_letter' output with their reason.

    The batches run on a thread of their own (`VideoBatcher(background=True)`) while the pools decode the
    next videos and encode the finished ones and this thread hands out the work and stores what is done, so
    an accelerator waits on the host only for what a batch itself needs. A video is emitted once all its
    pairs and frames are done and it is encoded: from `process`, or from `finish_bundle`, which runs the
    last (padded) batches. With `config.staging`, each outcome is also written there at once (see
    pipelines/preprocess/__init__.py).
    """

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self.videos = Metrics.counter(NAMESPACE, "videos_in")
        self.written = Metrics.counter(NAMESPACE, "videos_processed")
        self.dead = Metrics.counter(NAMESPACE, "videos_dead_lettered")
        self.partial = Metrics.counter(NAMESPACE, "videos_partial")
        self.frames = Metrics.counter(NAMESPACE, "frames_written")
        self.segmenter = None
        self.batcher = self.pool = self.decoding = self.encoder = self.encoding = None

    def setup(self):
        from preprocessing.segment import make_segmenter

        if self.config.flow == "tensor":  # before anything compiles in this worker process
            enable_flow_compile_cache(self.config.compile_cache)
        self.segmenter = make_segmenter(self.config.segmenter, videos_dir=self.config.videos_dir,
                                        batch_size=self.config.segment_batch)

    def start_bundle(self):
        from concurrent.futures import ThreadPoolExecutor

        self.batcher = VideoBatcher(self.config, self.segmenter, background=True)
        self.pool = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="decode")
        self.decoding = collections.deque()  # (task, future of its decoded video), in input order
        self.encoder = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="encode")
        self.encoding = collections.deque()  # (task, future of (record, info)), in the order finished

    def process(self, task: VideoTask):
        self.videos.inc()
        self.decoding.append((task, self.pool.submit(decode_task, task, self.config)))
        # Videos go on to the batches in input order; at most twice the threads' videos wait decoded.
        yield from self._decoded(keep=2 * self.config.decode_threads)

    def _decoded(self, keep: int):
        """Hands the decoded videos at the head of the queue to the batcher (waiting while more than
        `keep` are queued); yields the outcomes of the videos that finished."""
        while self.decoding and (len(self.decoding) > keep or self.decoding[0][1].done()):
            task, future = self.decoding.popleft()
            try:
                video = future.result()
            except Exception as error:  # every failure is recorded with its reason, none is silent
                yield self._dead_letter(task, error)
                continue
            finished = self.batcher.add(task, video)
            self._count()
            yield from self._encode(finished)
        # At most twice the threads' videos wait encoded or encoding (their frames are held until then).
        yield from self._encoded(keep=2 * self.config.decode_threads)

    def finish_bundle(self):
        outcomes = list(self._decoded(keep=0))
        self.pool.shutdown()
        finished = self.batcher.flush()
        self.batcher.close()
        self._count()
        outcomes += list(self._encode(finished))
        outcomes += list(self._encoded(keep=0))
        self.encoder.shutdown()
        for out in outcomes:
            # finish_bundle has no input element to take a window from: the job's are all global.
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, _global(out.value))
            else:
                yield _global(out)

    def _count(self):
        flow_stats, segment_stats = self.batcher.take_stats()
        count_flow(flow_stats)
        count_segment(segment_stats)

    def _encode(self, finished):
        """Starts encoding the videos the batcher finished; yields the dead letters of those that failed."""
        for item in finished:
            if item.error is not None:
                yield self._dead_letter(item.task, item.error)
            else:
                self.encoding.append((item.task, self.encoder.submit(
                    encode_decoded, item.task, self.config, item.video, item.flow, item.objects)))

    def _encoded(self, keep: int):
        """Yields the outcomes of the encoded videos at the head of the queue (waiting while more than
        `keep` are queued). Counters and staging stay in this thread: Beam counts per bundle thread."""
        while self.encoding and (len(self.encoding) > keep or self.encoding[0][1].done()):
            task, future = self.encoding.popleft()
            try:
                data, info = future.result()
            except Exception as error:  # every failure is recorded with its reason, none is silent
                yield self._dead_letter(task, error)
                continue
            yield self._outcome(task, data, info)

    def _outcome(self, task: VideoTask, data: bytes, info: dict):
        if self.config.staging:
            stage_record(self.config.staging, task.id, record_key(self.config, task), data,
                         dict(info, annotation=annotation_hash(task)))
        self.written.inc()
        self.partial.inc(int(info["partial"]))
        self.frames.inc(info["frames"])
        return task.id, data

    def _dead_letter(self, task: VideoTask, error: BaseException):
        self.dead.inc()
        reason = failure_reason(error)
        Metrics.counter(NAMESPACE, f"dead_letter_{reason.split(':', 1)[0]}").inc()
        row = {"id": task.id, "path": task.path, "reason": reason}
        if self.config.staging:
            stage_dead_letter(self.config.staging, record_key(self.config, task), row)
        return beam.pvalue.TaggedOutput("dead_letter", row)


def _global(value):
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP
    from apache_beam.utils.windowed_value import WindowedValue

    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


# Counters of the flow stage (summed over videos and workers; `flow_summary` turns them into seconds and
# rates): pairs asked for, pairs run (padding included), compiled calls, shapes compiled, milliseconds in
# flow (compilation included) and in compilation.
FLOW_COUNTERS = ("flow_pairs", "flow_pairs_computed", "flow_calls", "flow_compiled_shapes", "flow_ms",
                 "flow_compile_ms")


def _count(counters: tuple, stats, amount: int) -> None:
    """Adds one stage's stats (`amount` of its items, computed, calls, compiled, seconds, compile seconds)
    to the job's `counters` (nothing when the stage ran no item)."""
    if not amount:
        return
    values = (amount, stats.computed, stats.calls, stats.compiled, round(stats.seconds * 1000),
              round(stats.compile_seconds * 1000))
    for name, value in zip(counters, values, strict=True):
        Metrics.counter(NAMESPACE, name).inc(value)


def _stage_summary(metrics: dict, prefix: str, item: str) -> dict:
    """Where a stage's time went, from the job's `prefix`_ counters: {} when it ran no `item`."""
    amount = metrics.get(f"{prefix}_{item}", 0)
    if not amount:
        return {}
    seconds = metrics.get(f"{prefix}_ms", 0) / 1000
    compile_seconds = metrics.get(f"{prefix}_compile_ms", 0) / 1000
    run = max(seconds - compile_seconds, 1e-9)
    return {item: amount, f"{item}_computed": metrics.get(f"{prefix}_{item}_computed", 0),
            "calls": metrics.get(f"{prefix}_calls", 0), "compiled_shapes": metrics.get(f"{prefix}_compiled_shapes", 0),
            "seconds": round(seconds, 3), "compile_seconds": round(compile_seconds, 3),
            f"{item}_per_s": round(amount / max(seconds, 1e-9), 2), f"{item}_per_s_compiled": round(amount / run, 2)}


def count_flow(stats) -> None:
    """Adds one video's `FlowStats` to the job's counters (nothing when it computed no flow)."""
    _count(FLOW_COUNTERS, stats, stats.pairs)


def flow_summary(metrics: dict) -> dict:
    """Where the flow stage's time went, from the job's counters: {} when no flow was computed.

    `seconds` sums over worker processes (with --workers N it can exceed the job's wall time);
    `pairs_per_s_compiled` is the rate once every shape is compiled.
    """
    return _stage_summary(metrics, "flow", "pairs")


# Counters of the segmentation stage, in the same style: frames asked for, frames run (padding included),
# model calls, shapes compiled, milliseconds in segmentation (compilation included) and in compilation.
SEGMENT_COUNTERS = ("segment_frames", "segment_frames_computed", "segment_calls", "segment_compiled_shapes",
                    "segment_ms", "segment_compile_ms")


def count_segment(stats) -> None:
    """Adds a `preprocessing.segment.SegmentStats` to the job's counters (nothing when no frame was run)."""
    _count(SEGMENT_COUNTERS, stats, stats.frames)


def segment_summary(metrics: dict) -> dict:
    """Where the segmentation stage's time went, from the job's counters ({} when no frame was segmented);
    as `flow_summary`, in frames."""
    return _stage_summary(metrics, "segment", "frames")


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
    root = str(Path(__file__).resolve().parents[2])
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
