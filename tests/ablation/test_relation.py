"""The relation variant of the controlled benchmark: deterministic from its seed, the class is the
relation between two glyphs far apart in space and time, the local cue is right on the stated fraction."""

import numpy as np
import pytest

from ablation import benchmark as B

SMALL = B.versioned("relation", seed=5, train_clips=64, val_clips=40, test_clips=24)


def decode_glyph(rgb: np.ndarray, config, corner: int) -> int:
    """The glyph in `corner` of one frame (uint8 rgb): the template whose on-cells are brightest."""
    top, left, side = B.glyph_box(config, corner)
    cell = config.size // 16
    patch = rgb[top:top + side, left:left + side].astype(np.float64).mean(-1)
    cells = patch.reshape(3, cell, 3, cell).mean(axis=(1, 3))
    scores = [cells[np.asarray(g, bool)].mean() - cells[~np.asarray(g, bool)].mean() for g in B.GLYPHS]
    return int(np.argmax(scores[:config.patterns]))


def test_relation_variant_is_deterministic_from_its_seed_and_keeps_older_digests():
    a, b = B.generate(SMALL), B.generate(SMALL)
    other = B.generate(B.versioned("relation", seed=6, train_clips=64, val_clips=40, test_clips=24))
    for split in B.SPLITS:
        np.testing.assert_array_equal(a.splits[split].rgb, b.splits[split].rgb)
        np.testing.assert_array_equal(a.splits[split].pattern, b.splits[split].pattern)
        assert not np.array_equal(a.splits[split].rgb, other.splits[split].rgb)
    assert a.num_classes == 2 and a.splits["train"].rgb.shape == (64, 16, 32, 32, 3)
    assert SMALL.digest() != B.versioned("relation", seed=5, train_clips=64, val_clips=40, test_clips=24,
                                         cue_accuracy=0.7).digest()
    # The relation fields stay out of v1's and v2's digests (their cache files keep their names).
    assert B.BenchmarkConfig().digest() == "beb91735853c"
    inputs = a.inputs("train", [0, 3], ("rgb", "flow", "object"))
    assert inputs["rgb"].shape == (2, 16, 32, 32, 3) and inputs["rgb"].min() >= -1
    assert inputs["flow"].shape == (2, 16, 32, 32, 2) and not inputs["flow"].any() and not inputs["object"].any()
    with pytest.raises(ValueError, match="asked for"):
        a.inputs("train", [0], ("rgb", B.DECOY_STREAM))
    with pytest.raises(ValueError, match="relation_window"):
        B.versioned("relation", frames=4, relation_window=2)


def test_labels_are_the_relation_of_the_two_glyphs_and_the_cue_is_right_on_the_stated_fraction():
    bench = B.generate(SMALL)
    for split in B.SPLITS:
        data, n = bench.splits[split], SMALL.clips(split)
        # Balanced classes; the cue right on exactly round(0.6 n) clips.
        assert np.bincount(data.labels).tolist() == [n // 2, n - n // 2]
        assert int(np.sum(data.cue == data.labels)) == round(0.6 * n)
        early, late = data.pattern[:, 0], data.pattern[:, 1]
        np.testing.assert_array_equal(data.labels, (early != late).astype(int))
        for k in range(n):
            corner, w = int(data.corner[k]), SMALL.relation_window
            # The pixels show the recorded glyphs: early in `corner` in the first frames, late opposite
            # in the last ones, and neither glyph in the other window (no frame holds both).
            for t in range(w):
                assert decode_glyph(data.rgb[k, t], SMALL, corner) == early[k]
                assert decode_glyph(data.rgb[k, -1 - t], SMALL, 3 - corner) == late[k]
            middle = data.rgb[k, w:-w].astype(float)
            for c in (corner, 3 - corner):
                top, left, side = B.glyph_box(SMALL, c)
                assert middle[:, top:top + side, left:left + side].mean() < 127.5 * (1 - 0.2)  # background
            top, left, side = B.cue_box(SMALL)
            red, blue = data.rgb[k, :, top:top + side, left:left + side, [0, 2]].mean(axis=(1, 2, 3))
            assert (red > blue) == (data.cue[k] == 0)


def test_swapping_the_late_glyph_flips_the_label_and_changes_only_the_late_corner():
    config = SMALL
    same = B.render_relation_clip(config, np.random.default_rng(11), 2, 2, 1, cue=0)
    differ = B.render_relation_clip(config, np.random.default_rng(11), 2, 3, 1, cue=0)
    assert B.relation_label(2, 2) == 0 and B.relation_label(2, 3) == 1
    changed = np.argwhere(np.any(same != differ, axis=-1))
    top, left, side = B.glyph_box(config, 3 - 1)
    assert len(changed) > 0
    assert changed[:, 0].min() >= config.frames - config.relation_window  # only the late frames
    assert changed[:, 1].min() >= top and changed[:, 1].max() < top + side
    assert changed[:, 2].min() >= left and changed[:, 2].max() < left + side


def test_each_glyph_alone_says_nothing_about_the_class():
    """Over many clips, the early (or late) glyph's distribution is the same in both classes."""
    data = B.generate_relation_split(B.versioned("relation", seed=1, train_clips=4000, size=16, frames=6), "train")
    for column in (0, 1):
        counts = np.stack([np.bincount(data.pattern[data.labels == c, column], minlength=4) for c in (0, 1)])
        shares = counts / counts.sum(1, keepdims=True)
        assert np.abs(shares - 0.25).max() < 0.035  # uniform in each class (binomial sd 0.01)


def test_oracle_probes_stop_at_the_cue_without_the_relation_and_pass_it_with_it():
    """A linear probe told where the glyphs are: additive in the two glyphs (what local features allow)
    it does no better than the cue; given |early - late| it solves the task."""
    bench = B.generate(B.versioned("relation", seed=2, train_clips=1536, val_clips=400, test_clips=4))
    oracle = B.oracle_check(bench)
    assert oracle["cue"]["accuracy"] == 0.6
    # No better than the cue (400 clips: binomial sd 0.025); were a glyph alone informative, it would be.
    assert oracle["additive"]["accuracy"] <= 0.6 + 0.05
    assert oracle["relational"]["accuracy"] > 0.95
