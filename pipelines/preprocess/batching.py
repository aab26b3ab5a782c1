"""Cross-video batching of the job's accelerator stages: TV-L1 flow (AssembleNet §3.1's flow input) and
the per-frame segmentation of AssembleNet++ §3.2, run on batches drawn from several videos.

A worker decodes each video on its own (`elements.decode_task`), then hands it to a `VideoBatcher`:
its frame pairs join the flow queue of its frame size, its frames the segmentation queue of the size the
segmenter sees them at (a fixed model input, such as SegFormer's 512 x 512, takes frames of every size).
Whenever a queue holds `config.flow_batch` pairs (`config.segment_batch` frames) they run as one call,
and a video is returned as soon as all its pairs and frames are done. `flush()` runs what is left at the
end of a bundle, padded to the same batch size where a compiled program runs it (`--flow tensor`, a Keras
segmenter), so each frame size is compiled once per worker; padding never reaches a record.

Every pair's flow and every frame's class map is computed on its own, by a program compiled for the batch
shape: at one batch size the records are byte-identical however the videos fall into batches (their order,
their neighbours, where a batch splits them, the padding). Programs compiled for other batch sizes may round
differently in the last bits on some devices (XLA on a CPU: TV-L1 at 48 x 72 px, 5 vs 16 pairs a call, left
1 of 124,416 stored flow values one quantisation step apart), so records made with other `--flow-batch` or
`--segment-batch` values are byte-identical only where the device's arithmetic does not depend on the batch
shape (tests/pipelines/test_preprocess.py checks 1, 5 and 64 pairs at 24 px; benchmarks/preprocess_job.py
reports it for the device it runs on).

Failures stay per video: when a batch raises, each of its videos is run again alone (still padded to
the batch size); a video that fails alone is returned with its error and its other queued pairs and
frames are dropped, and the other videos go on.

In the job (`background=True`) the batches run in order on one thread of their own, so the worker's thread
decodes, encodes and writes while the accelerator works; the results are stored back in the worker's
thread, and the batches are the same as when each runs inside `add`.

Memory: a video's decoded frames are held until its last batch has run, so at most about one batch of
pairs (and one of frames) per frame size waits in a worker between calls, plus the videos they belong to
and the batches in flight (`in_flight`, 2, waiting behind the one running).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from pipelines.preprocess.config import PreprocessConfig, VideoTask


@dataclasses.dataclass(eq=False)
class Finished:
    """A video whose stages are all done: its flow (uint8 (T-1, H, W, 2), quantised) and class maps
    (uint8 (T, H, W)) where the job computes them, or the error that stopped it."""

    task: VideoTask
    video: object  # preprocessing.video.DecodedVideo
    flow: np.ndarray | None
    objects: np.ndarray | None
    error: BaseException | None = None
    left: int = 0  # pairs and frames not computed yet


class VideoBatcher:
    """Runs the flow and segmentation of the videos it is given on batches across videos (see the module
    docstring). `add` and `flush` return the videos they finished; `take_stats` the work done since the
    last call (a `preprocessing.flow.FlowStats`, a `preprocessing.segment.SegmentStats`).

    `background`: the batches run in order on one thread of their own, at most `in_flight` of them waiting
    there, while the caller decodes and encodes; their results are stored by the caller's thread, in
    `add` and `flush`. Without it each batch runs inside `add` (or `flush`). The batches, so the records,
    are the same either way; `close()` ends the thread."""

    def __init__(self, config: PreprocessConfig, segmenter=None, *, background: bool = False, in_flight: int = 2):
        from preprocessing.flow import FlowStats
        from preprocessing.segment import SegmentStats

        self.config, self.segmenter = config, segmenter
        self.flow_stats, self.segment_stats = FlowStats(), SegmentStats()
        # frame size -> [(video, index)]: pair (index, index + 1), or frame index
        self.flow_queues: dict[tuple[int, int], list] = {}
        self.segment_queues: dict[tuple[int, int], list] = {}
        self._done: list[Finished] = []
        self.in_flight = in_flight
        self._pool = None
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="batches")
        self._pending = collections.deque()  # (stage, items, future of _compute's result), in submission order

    def add(self, task: VideoTask, video) -> list[Finished]:
        """Queues a decoded video; runs every batch that is full. Returns the videos finished by now."""
        frames = video.frames
        size = tuple(frames.shape[1:3])
        item = Finished(task, video, None, None)
        if self.config.flow != "none":
            item.flow = np.empty((len(frames) - 1, *size, 2), np.uint8)
            self.flow_queues.setdefault(size, []).extend((item, i) for i in range(len(frames) - 1))
            item.left += len(frames) - 1
        if self.segmenter is not None:
            item.objects = np.empty((len(frames), *size), np.uint8)
            # A segmenter with a fixed input size (SegFormer: 512 x 512) batches frames of every size together.
            key = self.segmenter.input_size(*size) if hasattr(self.segmenter, "input_size") else size
            self.segment_queues.setdefault(key, []).extend((item, i) for i in range(len(frames)))
            item.left += len(frames)
        if item.left == 0:
            self._done.append(item)
        for stage, queues, batch in self._stages():
            for queue in queues.values():
                while len(queue) >= batch:
                    self._run_batch(stage, queue, batch)
        self._collect(keep=self.in_flight)
        return self._take_done()

    def flush(self) -> list[Finished]:
        """Runs every queued pair and frame (the last batch of each size padded); returns the videos."""
        for stage, queues, batch in self._stages():
            for queue in queues.values():
                while queue:
                    self._run_batch(stage, queue, batch)
            queues.clear()
        self._collect(keep=0)
        return self._take_done()

    def take_stats(self):
        """(FlowStats, SegmentStats) of the batches stored since the last call."""
        from preprocessing.flow import FlowStats
        from preprocessing.segment import SegmentStats

        stats = self.flow_stats, self.segment_stats
        self.flow_stats, self.segment_stats = FlowStats(), SegmentStats()
        return stats

    def close(self) -> None:
        """Ends the background thread (after the batches it has)."""
        if self._pool is not None:
            self._pool.shutdown()

    # -- internals ------------------------------------------------------------------------------------

    def _stages(self):
        return (("flow", self.flow_queues, self.config.flow_batch),
                ("objects", self.segment_queues, self.config.segment_batch))

    def _take_done(self) -> list[Finished]:
        done, self._done = self._done, []
        return done

    def _run_batch(self, stage: str, queue: list, batch: int) -> None:
        """Runs (or, in the background, starts) the first `batch` items of `queue` (`stage`: "flow" or
        "objects", the field of `Finished` the results go to)."""
        items = queue[:batch]
        del queue[:batch]
        run = self._flow if stage == "flow" else self._segment
        if self._pool is None:
            self._store(stage, items, self._compute(items, batch, run))
        else:
            self._pending.append((stage, items, self._pool.submit(self._compute, items, batch, run)))
            self._collect(keep=self.in_flight)

    def _collect(self, keep: int) -> None:
        """Stores the background batches that are done, in order, waiting while more than `keep` are."""
        while self._pending and (len(self._pending) > keep or self._pending[0][2].done()):
            stage, items, future = self._pending.popleft()
            self._store(stage, items, future.result())

    @staticmethod
    def _compute(items: list, batch: int, run) -> tuple[list, list]:
        """`run` on the items, or on each of their videos alone if that fails: (ran, failed), a list of
        (items, values, stats) and one of (video, error) for each video that fails alone.
        Touches no video: the results are stored by `_store`, in the caller's thread."""
        try:
            return [(items, *run(items, batch))], []
        except Exception:  # noqa: BLE001 - find the video that fails: the others must not be lost
            ran, failed = [], []
            for video in dict.fromkeys(video for video, _ in items):
                own = [item for item in items if item[0] is video]
                try:
                    ran.append((own, *run(own, batch)))
                except Exception as error:  # noqa: BLE001 - reported per video (the dead-letter output)
                    failed.append((video, error))
            return ran, failed

    def _store(self, stage: str, items: list, result: tuple[list, list]) -> None:
        ran, failed = result
        for video, error in failed:
            if video.error is None:
                self._fail(video, error)
        totals = self.flow_stats if stage == "flow" else self.segment_stats
        for own, values, stats in ran:
            for (video, i), value in zip(own, values, strict=True):
                if video.error is None:  # a video failed in another batch keeps nothing
                    getattr(video, stage)[i] = value
                    video.left -= 1
            totals.add(stats)
        for video in dict.fromkeys(video for video, _ in items):
            if video.left == 0 and video.error is None:
                self._done.append(video)

    def _fail(self, video: Finished, error: BaseException) -> None:
        video.error, video.left = error, 0
        video.flow = video.objects = None
        for queues in (self.flow_queues, self.segment_queues):
            for queue in queues.values():
                queue[:] = [item for item in queue if item[0] is not video]
        self._done.append(video)

    def _flow(self, items: list, batch: int):
        """The quantised flow of the items' pairs (one compiled call, padded) and its stats."""
        from preprocessing import flow as flow_lib

        first = np.stack([video.video.frames[i] for video, i in items])
        second = np.stack([video.video.frames[i + 1] for video, i in items])
        n = len(items)
        if self.config.flow == "tensor":  # one compiled shape: pad with the last pair, dropped below
            first, second = _pad(first, batch), _pad(second, batch)
        stats = flow_lib.FlowStats()
        quantised = flow_lib.flow_pairs(first, second, method=self.config.flow, batch_size=batch, stats=stats,
                                        quantized=True)[:n]
        stats.pairs = n  # the padding is counted in `computed`
        return quantised, stats

    def _segment(self, items: list, batch: int):
        """The class maps of the items' frames (one call, padded where compiled) and its stats."""
        from preprocessing.segment import SegmentStats

        frames = [video.video.frames[i] for video, i in items]
        if len({frame.shape for frame in frames}) == 1:
            frames = np.stack(frames)
        times = np.array([video.video.times[i] for video, i in items])
        ids = [video.task.id for video, _ in items]
        n = len(items)
        if getattr(self.segmenter, "fixed_batch", False):  # one compiled shape: pad with the last frame
            frames = list(frames) + [frames[-1]] * (batch - n)
            frames = np.stack(frames) if len({frame.shape for frame in frames}) == 1 else frames
            times, ids = _pad(times, batch), ids + ids[-1:] * (batch - n)
        stats = SegmentStats()
        objects = self.segmenter.segment_frames(frames, times, ids, stats)
        stats.frames = n  # the padding is counted in `computed`
        return objects[:n], stats


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """`array` with its last row repeated up to `size` rows."""
    missing = size - len(array)
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)]) if missing > 0 else array
