"""The controlled benchmark (ablation/benchmark.py): deterministic, and its documented
properties hold: the class is motion x object, the flow is the motion field plus noise, the masks are
noisy at the configured rates, and each modality alone tells only part of the class."""

import dataclasses

import numpy as np
import pytest

from ablation import benchmark as B

SMALL = B.BenchmarkConfig(seed=3, frames=8, size=32, train_clips=72, val_clips=24, test_clips=12)


@pytest.fixture(scope="module")
def bench():
    return B.generate(SMALL, workers=1)


def test_deterministic_and_independent_of_workers(bench):
    again = B.generate_split(SMALL, "train", workers=2)  # two processes, chunks of 64 clips
    for field in dataclasses.fields(B.Split):
        np.testing.assert_array_equal(getattr(again, field.name), getattr(bench.splits["train"], field.name),
                                      err_msg=field.name)
    other = B.generate_split(dataclasses.replace(SMALL, seed=4), "val", workers=1)
    assert not np.array_equal(other.rgb, bench.splits["val"].rgb)
    # Splits are separate streams: more training clips change no validation clip.
    bigger = B.generate_split(dataclasses.replace(SMALL, train_clips=80), "val", workers=1)
    np.testing.assert_array_equal(bigger.rgb, bench.splits["val"].rgb)


def test_layout_and_dtypes_match_the_model_inputs(bench):
    x = bench.inputs("train", np.array([0, 5]))
    assert x["rgb"].shape == (2, 8, 32, 32, 3) and x["rgb"].dtype == np.float32
    assert x["rgb"].min() >= -1 and x["rgb"].max() <= 1
    assert x["flow"].shape == (2, 8, 32, 32, 2) and x["flow"].dtype == np.float32
    assert x["object"].shape == (2, 8, 32, 32) and x["object"].dtype == np.int32
    assert x["object"].max() <= 150
    assert set(bench.inputs("val", [0], ("flow",))) == {"flow"}


def test_class_is_motion_times_object_and_balanced(bench):
    for split in B.SPLITS:
        data = bench.splits[split]
        np.testing.assert_array_equal(data.labels, data.motion * B.NUM_OBJECTS + data.object_type)
        np.testing.assert_array_equal(data.slot_type[:, 0], data.object_type)  # slot 0 is the actor
    counts = np.bincount(bench.labels("train"), minlength=B.NUM_CLASSES)
    assert counts.min() == counts.max() == SMALL.train_clips // B.NUM_CLASSES
    assert len(B.class_names()) == B.NUM_CLASSES


def test_actor_follows_its_motion_and_flow_is_the_motion_field_plus_noise(bench):
    data = bench.splits["train"]
    steps = np.arange(SMALL.frames)
    amplitude = SMALL.amplitude * SMALL.size
    errors, moved = [], []
    for k in range(len(data)):
        world = data.actor_path[k] + steps[:, None] * data.camera[k][None]
        expected = B.actor_offset(int(data.motion[k]), steps, SMALL.frames, amplitude, float(data.actor_phase[k]))
        np.testing.assert_allclose(world - world[0], expected - expected[0], atol=1e-3)
        assert (data.actor_path[k] >= 0).all() and (data.actor_path[k] < SMALL.size).all()
        for t in range(SMALL.frames - 1):
            x, y = np.round(data.actor_path[k, t]).astype(int)
            step = data.actor_path[k, t + 1] - data.actor_path[k, t]
            errors.append(data.flow[k, t, y, x].astype(np.float32) * 20 - step)
            moved.append(np.abs(step).max())
    errors = np.abs(np.array(errors))
    # Gaussian noise of std 0.5 px: mean |error| ~ 0.4 px, while the actor moves ~1-3 px a frame.
    assert errors.mean() < 0.55 and np.mean(moved) > 1.0


def test_masks_are_noisy_at_the_configured_rates(bench):
    data = bench.splits["train"]
    states = data.mask_state[data.mask_state != 255]
    assert abs(np.mean(states == B.MASK_MISSED) - SMALL.miss_rate) < 0.03
    assert abs(np.mean(states == B.MASK_WRONG) - SMALL.wrong_label_rate) < 0.03
    seen = {B.MASK_OK: [], B.MASK_MISSED: [], B.MASK_WRONG: []}
    for k in range(len(data)):
        true_id = B.OBJECT_IDS[data.object_type[k]]
        for t in range(SMALL.frames):
            x, y = np.round(data.actor_path[k, t]).astype(int)
            seen[int(data.mask_state[k, 0, t])].append(int(data.object[k, t, y, x]) == true_id)
    assert np.mean(seen[B.MASK_OK]) > 0.97  # the actor is drawn on top; jitter is 1 px, the radius 2.9
    assert np.mean(seen[B.MASK_MISSED]) < 0.1  # only a same-type distractor beneath could show the id
    assert np.mean(seen[B.MASK_WRONG]) == 0.0


def test_save_load_and_cache(tmp_path, bench):
    path = B.save(bench, tmp_path / "b.npz")
    loaded = B.load(path)
    assert loaded.config == SMALL
    np.testing.assert_array_equal(loaded.splits["test"].object, bench.splits["test"].object)
    cached = B.load_or_generate(SMALL, tmp_path / "cache")
    stamp = (tmp_path / "cache" / f"benchmark-{SMALL.digest()}.npz").stat().st_mtime_ns
    again = B.load_or_generate(SMALL, tmp_path / "cache")
    assert (tmp_path / "cache" / f"benchmark-{SMALL.digest()}.npz").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.splits["train"].rgb, cached.splits["train"].rgb)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="miss_rate"):
        B.BenchmarkConfig(miss_rate=0.7, wrong_label_rate=0.5)
    with pytest.raises(ValueError, match="val_clips"):
        B.BenchmarkConfig(val_clips=0)


def test_oracle_each_modality_alone_is_partial():
    """The linear probe of docs/ablations.md at a small scale: flow tells the motion but not the object
    (it carries no object information by construction), the masks tell the object better than flow."""
    config = dataclasses.replace(SMALL, train_clips=240, val_clips=120, test_clips=12, seed=1)
    oracle = B.oracle_check(B.generate(config, workers=1))
    assert oracle["flow"]["motion_accuracy"] > 0.6  # chance is 1/4; 0.76 with these 240 clips
    assert oracle["flow"]["object_accuracy"] < 0.45  # chance is 1/3
    assert oracle["object"]["object_accuracy"] > oracle["flow"]["object_accuracy"] + 0.1
    assert oracle["flow"]["accuracy"] < 0.5 and oracle["object"]["accuracy"] < 0.5
    assert set(oracle) == {"rgb", "flow", "object", "all"}
