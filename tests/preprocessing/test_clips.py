"""Clip sampling against the protocol written out independently: the training crop's full support, the
A.7 evaluation clips, the short-video rule and the labels of a clip's time span."""

import numpy as np
import pytest

from preprocessing import clips


def _training(height, width, video_id, epoch=0, num_frames=20, frames=8):
    return clips.decide(num_frames=num_frames, height=height, width=width, frames=frames, clips=1,
                        training=True, seed=5, epoch=epoch, video_id=video_id)


def test_training_crop_takes_every_position_including_the_bottom_right_edge():
    # 10 x 13 frames: sides int(10 · U(0.8, 1)) ∈ {8, 9}; for each side, y0 ranges over 0..10 - side and
    # x0 over 0..13 - side, both ends included (a crop flush with the bottom/right edge is a valid crop).
    seen: dict[int, tuple[set, set]] = {}
    for v in range(400):
        d = _training(10, 13, f"v{v}")
        ys, xs = seen.setdefault(d.side, (set(), set()))
        ys.add(d.y0)
        xs.add(d.x0)
    assert set(seen) == {8, 9}
    for side, (ys, xs) in seen.items():
        assert ys == set(range(10 - side + 1)), side
        assert xs == set(range(13 - side + 1)), side


def test_training_start_takes_every_start_including_the_last():
    starts = {int(_training(16, 16, "v", epoch=e, num_frames=14, frames=8).starts[0]) for e in range(200)}
    assert starts == set(range(14 - 8 + 1))


def test_training_crop_side_is_80_to_100_percent_of_the_short_side():
    sides = {_training(20, 50, f"v{v}").side for v in range(300)}
    assert sides == set(range(16, 20))  # int(20 · U), U uniform on [0.8, 1): 16..19


@pytest.mark.parametrize("num_frames, frames, expected", [
    (40, 8, [0, 8, 16, 24, 32]),
    (15, 8, [0, 2, 4, 5, 7]),    # room 7: 0, 1.75, 3.5, 5.25, 7 rounded (half to even: 3.5 → 4)
    (13, 8, [0, 1, 2, 4, 5]),    # room 5: 0, 1.25, 2.5 → 2, 3.75, 5
    (6, 8, [0, 0, 0, 0, 0]),     # shorter than a clip: every clip starts at 0
])
def test_even_evaluation_starts_are_evenly_spaced_and_rounded(num_frames, frames, expected):
    room = max(num_frames - frames, 0)
    assert np.round(np.linspace(0, room, 5)).astype(int).tolist() == expected  # the independent rule
    d = clips.decide(num_frames=num_frames, height=30, width=50, frames=frames, clips=5, training=False,
                     seed=0, epoch=0, video_id="v", eval_starts="even")
    assert d.starts.tolist() == expected


def test_one_even_clip_is_the_centred_one_and_the_eval_crop_is_the_centre_square():
    d = clips.decide(num_frames=41, height=31, width=50, frames=8, clips=1, training=False, seed=0, epoch=3,
                     video_id="v", eval_starts="even")
    assert d.starts.tolist() == [(41 - 8) // 2]
    assert (d.y0, d.x0, d.side, d.flip) == (0, (50 - 31) // 2, 31, False)
    tall = clips.decide(num_frames=41, height=40, width=25, frames=8, clips=1, training=False, seed=0, epoch=0,
                        video_id="v")
    assert (tall.y0, tall.x0, tall.side) == ((40 - 25) // 2, 0, 25)


def test_a7_random_evaluation_clips_are_five_sorted_starts_over_the_whole_range_fixed_by_the_seed():
    # AssembleNet A.7: five random clips of each video, from a fixed seed: the same every evaluation;
    # together the videos' starts cover 0..room, both ends included.
    room = 12 - 8
    seen = set()
    for v in range(60):
        a = clips.decide(num_frames=12, height=8, width=8, frames=8, clips=5, training=False, seed=1, epoch=0,
                         video_id=f"v{v}", eval_starts="random")
        b = clips.decide(num_frames=12, height=8, width=8, frames=8, clips=5, training=False, seed=1, epoch=0,
                         video_id=f"v{v}", eval_starts="random")
        assert a.starts.tolist() == b.starts.tolist() == sorted(a.starts.tolist())
        assert len(a.starts) == 5 and not a.flip
        seen |= set(a.starts.tolist())
    assert seen == set(range(room + 1))


def test_frame_indices_repeat_the_last_frame_of_a_short_video():
    assert clips.frame_indices(3, 5, 100).tolist() == [3, 4, 5, 6, 7]
    assert clips.frame_indices(0, 6, 4).tolist() == [0, 1, 2, 3, 3, 3]


def test_clip_labels_are_the_actions_overlapping_the_half_open_clip_span():
    # Clip of 8 frames from frame 16 at 8 fps: [2 s, 3 s). An action overlaps when start < 3 and end > 2.
    labels = [0, 1, 2, 3, 4]
    label_start = [0.0, 2.5, 3.0, 1.0, 2.99]
    label_end = [2.0, 2.6, 4.0, 2.01, 10.0]
    expected = np.zeros(6, np.float32)
    for c, t0, t1 in zip(labels, label_start, label_end, strict=True):
        if t0 < 3.0 and t1 > 2.0:
            expected[c] = 1.0
    assert expected.tolist() == [0, 1, 0, 1, 1, 0]  # ends at 2 s and starts at 3 s touch, do not overlap
    got = clips.clip_labels(labels=labels, label_start=label_start, label_end=label_end, fps=8.0, start=16,
                            frames=8, dataset="charades", num_classes=6, whole_video=False)
    np.testing.assert_array_equal(got, expected)
    whole = clips.clip_labels(labels=labels, label_start=label_start, label_end=label_end, fps=8.0, start=16,
                              frames=8, dataset="charades", num_classes=6, whole_video=True)
    np.testing.assert_array_equal(whole, [1, 1, 1, 1, 1, 0])
    toyota = clips.clip_labels(labels=[4], label_start=[0.0], label_end=[9.0], fps=8.0, start=160, frames=8,
                               dataset="toyota", num_classes=6, whole_video=False)
    np.testing.assert_array_equal(toyota, [0, 0, 0, 0, 1, 0])


def test_video_key_is_63_bits_of_blake2b_and_the_same_for_str_and_bytes():
    import hashlib

    digest = hashlib.blake2b(b"AB12C", digest_size=8).digest()
    expected = int.from_bytes(digest, "little") >> 1
    assert clips.video_key("AB12C") == clips.video_key(b"AB12C") == expected < 2**63


def test_decisions_differ_by_seed_and_wrap_the_seed_to_32_bits():
    def decision(seed, video_id="v"):
        d = clips.decide(num_frames=90, height=40, width=60, frames=8, clips=3, training=True, seed=seed,
                         epoch=0, video_id=video_id)
        return d.starts.tolist(), d.y0, d.x0, d.side, d.flip

    assert decision(3) == decision(3 + 2**32) != decision(4)
    d = clips.decide(num_frames=90, height=40, width=60, frames=8, clips=3, training=True, seed=0, epoch=0,
                     video_id="v")
    assert d.starts.dtype == np.int32 and isinstance(d.flip, bool)
    flips = [clips.decide(num_frames=9, height=8, width=8, frames=8, clips=1, training=True, seed=0, epoch=e,
                          video_id="v").flip for e in range(200)]
    assert 70 < sum(flips) < 130  # probability 1/2
    with pytest.raises(ValueError, match=r"^eval_starts='middle': expected one of \('random', 'even'\)$"):
        clips.decide(num_frames=9, height=8, width=8, frames=8, clips=1, training=False, seed=0, epoch=0,
                     video_id="v", eval_starts="middle")


def test_random_evaluation_starts_differ_between_videos():
    starts = {tuple(clips.decide(num_frames=40, height=8, width=8, frames=8, clips=5, training=False, seed=0,
                                 epoch=0, video_id=f"v{v}", eval_starts="random").starts) for v in range(5)}
    assert len(starts) > 1


def test_a_one_pixel_video_gets_a_one_pixel_crop():
    d = clips.decide(num_frames=9, height=1, width=5, frames=8, clips=1, training=True, seed=0, epoch=0,
                     video_id="v")
    assert (d.side, d.y0) == (1, 0)


def test_clip_labels_edges_compare_in_float32_and_ignore_out_of_range_ids():
    # Clip from frame 3 at 30 fps: t0 = float32(3) / float32(30). An action ending a quarter of a float32
    # step after t0 rounds to t0 in float32: it does not overlap (as in the tf.data reader), though it
    # would in float64.
    t0 = np.float32(3) / np.float32(30)
    end = float(t0) + float(np.spacing(t0)) / 4
    assert end > float(t0) and np.float32(end) == t0

    def labels(**kwargs):
        common = dict(labels=[1], label_start=[0.0], label_end=[end], fps=30.0, start=3, frames=8,
                      dataset="charades", num_classes=6, whole_video=False)
        return clips.clip_labels(**{**common, **kwargs})

    got = labels()
    assert got.dtype == np.float32 and got.tolist() == [0] * 6
    start = float(np.float32(11) / np.float32(30)) - float(np.spacing(np.float32(11 / 30))) / 4
    assert labels(label_start=[start], label_end=[9.0]).tolist() == [0] * 6  # starts at t1 in float32
    assert labels(labels=[-1, 6, 7, 2], label_start=[0.0] * 4, label_end=[9.0] * 4).tolist() == [0, 0, 1, 0, 0, 0]
    toyota = clips.clip_labels(labels=3, label_start=0.0, label_end=9.0, fps=30.0, start=0, frames=8,
                               dataset="toyota", num_classes=6, whole_video=False)
    assert toyota.tolist() == [0, 0, 0, 1, 0, 0]
