"""Decoding videos with OpenCV at a target frame rate (AssembleNet A.6: 6 fps Charades, 12.5 fps MiT).

Container metadata lies in real datasets (Charades files declare wrong frame counts and fps), so
the decoder never uses the declared frame count and uses the declared fps only as a last resort:
it reads frames sequentially and takes each frame's presentation time from
`CAP_PROP_POS_MSEC`, then samples the target times `k / fps` by holding the most recent source
frame (frame i covers [t_i, t_{i+1})). When the container gives no usable timestamps (all zero, or
not increasing) the times fall back to `index / nominal fps`, and to 30 fps when even that is
missing; `DecodedVideo.timestamps_source` records which one was used.

A file corrupt in the middle decodes up to the corruption and then stops (OpenCV's reader gives up
at the first undecodable frame): the frames before it are kept, and `DecodedVideo.partial` says that
decoding ended well before the container's declared frame count (`PARTIAL_TOLERANCE`), so the
preprocessing job can count and flag the video instead of silently storing a shorter one. The
declared count is only compared, never trusted for sampling; containers whose count is slightly
off are not flagged.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

FALLBACK_FPS = 30.0
# The highest decode rate accepted: beyond any camera's, so a larger value is a mistake (sampling above
# the source's rate repeats frames, and 1e9 fps would hold a billion frames per second of video).
MAX_FPS = 240.0
# A decode that ends more than this fraction (and more than 2 frames) short of the container's declared
# frame count is flagged as partial. Real containers' counts are off by a frame or two (Charades).
PARTIAL_TOLERANCE = 0.05


class DecodeError(ValueError):
    """A video that cannot be decoded; `reason` is a short machine-friendly tag."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # uint8 (T, H, W, 3), RGB
    times: np.ndarray  # float64 (T,), seconds: k / fps
    fps: float  # the target fps the frames are sampled at
    source_frames: int  # frames actually decoded from the file
    duration: float  # seconds covered by the decoded source frames
    timestamps_source: str  # "container" | "nominal_fps" | "fallback_fps"
    declared_frames: int = 0  # the container's frame count (0: unknown); compared, never trusted
    partial: bool = False  # decoding stopped well before the declared end (corrupt data): frames lost


def is_partial(source_frames: int, declared_frames: int) -> bool:
    """Whether a decode that ran to the reader's end lost frames: fewer than declared, beyond tolerance."""
    return declared_frames > 0 and declared_frames - source_frames > max(2, PARTIAL_TOLERANCE * declared_frames)


VIDEO_SUFFIXES = (".mp4",)  # matched case-insensitively: `.MP4` files are videos too


def find_videos(videos_dir, suffixes: tuple[str, ...] = VIDEO_SUFFIXES) -> list[Path]:
    """Every video file under `videos_dir`, sub-folders included, extension matched case-insensitively.

    Datasets get unpacked into nested folders and some tools write `.MP4`: both are found rather
    than silently skipped. Hidden files and folders (`.x`) are ignored. Sorted by path.
    """
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise ValueError(f"--videos {videos_dir}: no such directory")
    found = []
    for path in videos_dir.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(videos_dir).parts)
        if path.suffix.lower() in suffixes and not hidden and path.is_file():
            found.append(path)
    return sorted(found)


def resize_shorter_side(frame: np.ndarray, size: int | None) -> np.ndarray:
    """Resizes so the shorter side is `size` (aspect kept; INTER_AREA when shrinking)."""
    import cv2

    if not size:
        return frame
    h, w = frame.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) == (h, w):
        return frame
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, (new_w, new_h), interpolation=interpolation)


def _sample(capture, fps: float, shorter_side: int | None, max_seconds: float | None,
            clock: float | None) -> tuple[list[np.ndarray], int, float] | None:
    """One sequential pass: sample-and-hold the source frame on screen at each time `k / fps`.

    Source times come from CAP_PROP_POS_MSEC, or from `index / clock` when `clock` is given.
    Returns None as soon as container timestamps stop increasing (the caller then re-reads with a
    clock). Only the sampled frames are kept (resized), so long videos do not fill memory.
    """
    import cv2

    out: list[np.ndarray] = []
    previous, previous_time, first_msec, count, steps = None, 0.0, None, 0, []

    def emit_until(limit: float) -> None:
        while len(out) / fps < limit - 1e-9 and (max_seconds is None or len(out) / fps < max_seconds):
            out.append(resize_shorter_side(cv2.cvtColor(previous, cv2.COLOR_BGR2RGB), shorter_side))

    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            break
        if clock is None:
            msec = capture.get(cv2.CAP_PROP_POS_MSEC)
            first_msec = msec if first_msec is None else first_msec
            now = (msec - first_msec) / 1000.0
            if count > 0 and now <= previous_time:
                return None
        else:
            now = count / clock
        if previous is not None:
            steps.append(now - previous_time)
            emit_until(now)
        previous, previous_time, count = frame, now, count + 1
        if max_seconds is not None and len(out) / fps >= max_seconds:
            break
    if previous is None:
        return out, 0, 0.0
    duration = previous_time + (float(np.median(steps)) if steps else 1.0 / fps)
    emit_until(duration)
    return out, count, duration


def decode_video(path, *, fps: float, shorter_side: int | None = None, max_seconds: float | None = None,
                 min_frames: int = 2) -> DecodedVideo:
    """Decodes `path` to RGB frames at `fps`, resized so the shorter side is `shorter_side`.

    Raises DecodeError with reason `missing`, `empty_file`, `not_a_video` (OpenCV cannot open it) or
    `too_few_frames` (fewer than `min_frames` frames at `fps`, e.g. a truncated file).
    A file whose end is corrupt keeps the frames decoded before the corruption.
    """
    import cv2

    path = Path(path)
    if not 0 < fps <= MAX_FPS:  # also refuses nan
        raise ValueError(f"fps must be in (0, {MAX_FPS:g}], got {fps}")
    if not path.exists():
        raise DecodeError("missing", f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty_file", f"{path} is empty (0 bytes)")
    result, source, declared = None, "container", 0
    for clock in (None, "nominal"):
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise DecodeError("not_a_video", f"OpenCV cannot open {path} as a video (not a video, or a "
                                  "truncated or corrupt container)")
            count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            declared = int(count) if count and np.isfinite(count) and count > 0 else 0
            if clock is not None:
                nominal = capture.get(cv2.CAP_PROP_FPS)
                valid = nominal and np.isfinite(nominal) and 0 < nominal < 1000
                clock, source = (nominal, "nominal_fps") if valid else (FALLBACK_FPS, "fallback_fps")
            result = _sample(capture, fps, shorter_side, max_seconds, clock)
        finally:
            capture.release()
        if result is not None:
            break
    frames, count, duration = result
    if len(frames) < max(1, min_frames):
        raise DecodeError("too_few_frames", f"{len(frames)} frame(s) at {fps} fps from {count} decoded "
                          f"frame(s) of {path}, need {min_frames} (truncated or corrupt file?)")
    # With max_seconds the decode stops on purpose: only a decode of the whole file can be partial.
    partial = max_seconds is None and is_partial(count, declared)
    return DecodedVideo(frames=np.stack(frames), times=np.arange(len(frames)) / fps, fps=float(fps),
                        source_frames=count, duration=duration, timestamps_source=source,
                        declared_frames=declared, partial=partial)
