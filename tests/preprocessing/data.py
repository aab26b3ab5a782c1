"""Tiny synthetic datasets and broken files shared by the preprocessing and pipeline tests."""

from pathlib import Path

from preprocessing.synthetic import generate

TINY = dict(height=48, width=64, fps=4.0, min_seconds=2.0, max_seconds=3.0)


def make_tiny(format, directory):
    """A few-second dataset: 4 Charades videos or 6 Toyota clips of 48x64 at 4 fps."""
    if format == "charades":
        return generate(directory, format="charades", videos=4, seed=1, **TINY)
    return generate(directory, format="toyota", videos=6, seed=2, **TINY)


def write_bad_videos(directory, good_video):
    """missing / zero-byte / non-video / truncated files next to the good ones; returns {id: reason tag}."""
    directory = Path(directory)
    (directory / "ZEROB.mp4").write_bytes(b"")
    (directory / "TEXTF.mp4").write_text("this is not a video\n" * 50)
    data = Path(good_video).read_bytes()
    (directory / "TRUNC.mp4").write_bytes(data[: len(data) // 2])
    return {"MISSN": "missing", "ZEROB": "empty_file", "TEXTF": "not_a_video", "TRUNC": "not_a_video"}


def write_partly_corrupt_video(path, frames=40, fps=8.0):
    """An mp4 whose middle bytes are overwritten: OpenCV decodes the frames before the damage and stops
    (about half of the `frames` declared by the container)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    rng = np.random.default_rng(0)
    for i in range(frames):
        frame = rng.integers(0, 20, (48, 64, 3), dtype=np.uint8)
        frame[:, (i * 3) % 56:(i * 3) % 56 + 8] = 255
        writer.write(frame)
    writer.release()
    data = bytearray(Path(path).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
