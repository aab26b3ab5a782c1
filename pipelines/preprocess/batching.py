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

Memory: a video's decoded frames are held until its last batch has run, so at most about one batch of
pairs (and one of frames) per frame size waits in a worker between calls, plus the videos they belong to.
"""

from __future__ import annotations

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
    last call (a `preprocessing.flow.FlowStats`, a `preprocessing.segment.SegmentStats`)."""

    def __init__(self, config: PreprocessConfig, segmenter=None):
        from preprocessing.flow import FlowStats
        from preprocessing.segment import SegmentStats

        self.config, self.segmenter = config, segmenter
        self.flow_stats, self.segment_stats = FlowStats(), SegmentStats()
        # frame size -> [(video, index)]: pair (index, index + 1), or frame index
        self.flow_queues: dict[tuple[int, int], list] = {}
        self.segment_queues: dict[tuple[int, int], list] = {}
        self._done: list[Finished] = []

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
        for queues, batch, run in self._stages():
            for queue in queues.values():
                while len(queue) >= batch:
                    self._run_batch(queue, batch, run)
        return self._take_done()

    def flush(self) -> list[Finished]:
        """Runs every queued pair and frame (the last batch of each size padded); returns the videos."""
        for queues, batch, run in self._stages():
            for queue in queues.values():
                while queue:
                    self._run_batch(queue, batch, run)
            queues.clear()
        return self._take_done()

    def take_stats(self):
        """(FlowStats, SegmentStats) of the batches run since the last call."""
        from preprocessing.flow import FlowStats
        from preprocessing.segment import SegmentStats

        stats = self.flow_stats, self.segment_stats
        self.flow_stats, self.segment_stats = FlowStats(), SegmentStats()
        return stats

    # -- internals ------------------------------------------------------------------------------------

    def _stages(self):
        return ((self.flow_queues, self.config.flow_batch, self._flow),
                (self.segment_queues, self.config.segment_batch, self._segment))

    def _take_done(self) -> list[Finished]:
        done, self._done = self._done, []
        return done

    def _run_batch(self, queue: list, batch: int, run) -> None:
        """Runs the first `batch` items of `queue`, or each of their videos alone if that fails."""
        items = queue[:batch]
        del queue[:batch]
        try:
            run(items, batch)
        except Exception:  # noqa: BLE001 - find the video that fails: the others must not be lost
            videos = list(dict.fromkeys(video for video, _ in items))
            for video in videos:
                if video.error is not None:
                    continue
                try:
                    run([item for item in items if item[0] is video], batch)
                except Exception as error:  # noqa: BLE001 - reported per video (the dead-letter output)
                    self._fail(video, error)
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

    def _flow(self, items: list, batch: int) -> None:
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
        for (video, i), value in zip(items, quantised, strict=True):
            video.flow[i] = value
            video.left -= 1
        self.flow_stats.add(stats)

    def _segment(self, items: list, batch: int) -> None:
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
        for (video, i), value in zip(items, objects[:n], strict=True):
            video.objects[i] = value
            video.left -= 1
        self.segment_stats.add(stats)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """`array` with its last row repeated up to `size` rows."""
    missing = size - len(array)
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)]) if missing > 0 else array
