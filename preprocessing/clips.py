"""Which clip to cut from a video: the random decisions both readers take from here (pure numpy).

`decide` returns, for one video, the clip starts, the square crop window and the flip. The tf.data
reader (`preprocessing.dataset`, through `tf.numpy_function`) and the TensorFlow-free reader
(`preprocessing.loader`) both call it, so the two cannot drift: given the same `seed`, `epoch` and
video id they cut the same clips, whatever the order, the sharding or the worker that reads the video.

Training (AssembleNet A.6 / our augmentation, docs/training.md): one clip of `frames` consecutive
frames from a uniformly random start, a random square crop of 80-100 % of the shorter side at a
uniformly random position, and a horizontal flip with probability 1/2.

Evaluation: the centre square of the shorter side, no flip, and `clips` starts either
- `"random"`: uniformly random starts from a fixed seed (AssembleNet A.7: "five random 128 frame
  crops", max-pooled; the fixed seed makes the result repeat run after run), or
- `"even"`: evenly spaced over the video (one clip: the centred one).

`clip_labels` is the numpy twin of the tf.data reader's labels: Charades training clips are multi-hot
over the actions whose interval overlaps the clip's time span [start / fps, (start + frames) / fps);
evaluation clips carry the whole video's labels; Toyota is one-hot of the clip's class.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

MIN_CROP_FRACTION = 0.8
EVAL_STARTS = ("random", "even")


@dataclasses.dataclass(frozen=True)
class Decision:
    """One video's clips: `starts` (clips,) int; the crop window [y0, y0 + side) x [x0, x0 + side); flip."""

    starts: np.ndarray
    y0: int
    x0: int
    side: int
    flip: bool


def video_key(video_id: str | bytes) -> int:
    """A stable 63-bit integer of a video id (blake2b; Python's hash() is salted per process)."""
    data = video_id if isinstance(video_id, bytes) else str(video_id).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def decide(*, num_frames: int, height: int, width: int, frames: int, clips: int, training: bool,
           seed: int, epoch: int, video_id: str | bytes, eval_starts: str = "even") -> Decision:
    """The clips of one video; a function of its arguments only (see the module docstring)."""
    if eval_starts not in EVAL_STARTS:
        raise ValueError(f"eval_starts={eval_starts!r}: expected one of {EVAL_STARTS}")
    num_frames, height, width = int(num_frames), int(height), int(width)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, video_key(video_id)])
    room = max(num_frames - frames, 0)
    short = min(height, width)
    if training:
        starts = rng.integers(0, room + 1, size=clips)
        fraction = rng.uniform(MIN_CROP_FRACTION, 1.0)
        side = max(int(short * fraction), 1)
        y0 = int(rng.integers(0, height - side + 1))
        x0 = int(rng.integers(0, width - side + 1))
        flip = bool(rng.random() < 0.5)
    else:
        if eval_starts == "random":
            starts = np.sort(rng.integers(0, room + 1, size=clips))
        elif clips == 1:
            starts = np.array([room // 2])
        else:
            starts = np.round(np.arange(clips) * (room / (clips - 1)))
        side, y0, x0, flip = short, (height - short) // 2, (width - short) // 2, False
    return Decision(starts=np.asarray(starts, dtype=np.int32), y0=y0, x0=x0, side=side, flip=flip)


def frame_indices(start: int, frames: int, num_frames: int) -> np.ndarray:
    """The stored frames of a clip; a video shorter than the clip repeats its last frame."""
    return np.minimum(int(start) + np.arange(frames), int(num_frames) - 1)


def clip_labels(*, labels, label_start, label_end, fps: float, start: int, frames: int, dataset: str,
                num_classes: int, whole_video: bool) -> np.ndarray:
    """float32 (num_classes,) multi-hot (Charades) or one-hot (Toyota) labels of one clip."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if dataset == "charades" and not whole_video:
        # float32 like the tf.data reader, so clips at an interval's edge agree
        t0 = np.float32(start) / np.float32(fps)
        t1 = np.float32(start + frames) / np.float32(fps)
        overlap = ((np.asarray(label_start, np.float32) < t1) & (np.asarray(label_end, np.float32) > t0))
        labels = labels[overlap]
    out = np.zeros(num_classes, np.float32)
    out[labels[(labels >= 0) & (labels < num_classes)]] = 1.0
    return out
