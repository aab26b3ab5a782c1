"""Training: recipe pieces, the run directory, resume after SIGKILL, and learning on synthetic data."""

import csv
import json
import math

import numpy as np
import pytest

from pipelines.commands import train as train_command
from pipelines.train import TrainConfig, WarmupCosine, _truncate_history

# -- config --------------------------------------------------------------------------------

def test_config_json_round_trip_and_validation(tmp_path):
    config = TrainConfig(structure="tiny", attention="peer", dataset="toyota", num_classes=31, frames=8,
                         size=32, batch_size=2, steps=20, steps_per_epoch=5, restarts=1, precision="bf16")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_json()))
    assert TrainConfig.from_json(path) == config
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learnig_rate'\]"):
        TrainConfig.from_json({"learnig_rate": 0.1})
    with pytest.raises(ValueError, match="multiple of steps_per_epoch=3"):
        TrainConfig(steps=10, steps_per_epoch=3)
    with pytest.raises(ValueError, match="attention='selfie'"):
        TrainConfig(attention="selfie")
    with pytest.raises(ValueError, match="needs TrainConfig.tpu"):
        TrainConfig(strategy="tpu")
    # AssembleNet A.6: 25.6 at batch 128, scaled linearly by default.
    assert TrainConfig(batch_size=16).peak_learning_rate == pytest.approx(3.2)
    assert TrainConfig(batch_size=16, learning_rate=0.5).peak_learning_rate == 0.5


def test_cli_flags_cover_every_config_field_with_its_default():
    fields = {name: value for name, value in TrainConfig().to_json().items() if name != "structure"}
    assert set(train_command.FLAGS) == set(fields)
    for name, (_, choices, shown_default, _) in train_command.FLAGS.items():
        assert shown_default == fields[name], f"--{name}: help {shown_default}, TrainConfig {fields[name]}"
        if choices:
            assert fields[name] in choices


def test_cli_builds_the_config_from_flags(monkeypatch, tmp_path):
    from pipelines import cli

    seen = {}

    def fake_train(*, config, data, workdir, eval_data, classes, verbose):
        seen.update(config=config, data=data, workdir=workdir, eval_data=eval_data)
        return {"steps": config.steps}

    monkeypatch.setattr("pipelines.train.train", fake_train)
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"frames": 4, "size": 32, "seed": 3}))
    assert cli.main(["train", "--structure", "tiny", "--data", "d/*.tfrecord", "--workdir",
                     str(tmp_path / "run"), "--config", str(base), "--steps", "40", "--steps-per-epoch", "10",
                     "--restarts", "1", "--learning-rate", "0.05", "--precision", "bf16", "--quiet"]) == 0
    assert seen["config"] == TrainConfig(structure="tiny", frames=4, size=32, seed=3, steps=40,
                                         steps_per_epoch=10, restarts=1, learning_rate=0.05, precision="bf16")
    assert seen["data"] == "d/*.tfrecord" and seen["eval_data"] is None


# -- learning-rate schedule ----------------------------------------------------------------

def _lr(schedule, step):
    return float(np.asarray(schedule(step)))


def test_warmup_then_cosine_decay():
    schedule = WarmupCosine(2.0, 10, 110)
    assert _lr(schedule, 0) == 0.0
    assert _lr(schedule, 5) == pytest.approx(1.0)
    assert _lr(schedule, 10) == pytest.approx(2.0)
    assert _lr(schedule, 60) == pytest.approx(1.0, abs=1e-5)  # half-way through the cosine
    assert _lr(schedule, 35) == pytest.approx(1.0 + math.cos(math.pi / 4), abs=1e-5)
    assert _lr(schedule, 110) == pytest.approx(0.0, abs=1e-6)
    assert _lr(schedule, 500) == pytest.approx(0.0, abs=1e-6)


def test_warm_restarts_follow_sgdr():
    # AssembleNet++ §4.3: two equal cycles restart at the peak half-way.
    two = WarmupCosine(1.0, 0, 100, restarts=1)
    assert [round(_lr(two, s), 4) for s in (0, 25, 50, 75)] == [1.0, 0.5, 1.0, 0.5]
    assert _lr(two, 49) < 0.01 and _lr(two, 99) < 0.01
    # SGDR with T_mult = 2: cycles of 10, 20, 40 steps.
    grow = WarmupCosine(1.0, 0, 70, restarts=2, multiplier=2.0)
    assert grow.first_cycle == pytest.approx(10.0)
    assert [round(_lr(grow, s), 4) for s in (0, 5, 10, 20, 30, 50)] == [1.0, 0.5, 1.0, 0.5, 1.0, 0.5]


# -- history bookkeeping -------------------------------------------------------------------

def test_history_is_cut_back_to_the_checkpointed_epochs(tmp_path):
    path = tmp_path / "history.csv"
    # Epoch 2 was logged but not checkpointed; the kill tore the row of epoch 3.
    path.write_text("epoch,loss,lr,step\n0,1.0,0.1,5\n1,0.9,0.1,10\n2,0.8,0.1,15\n3,0.7,0.")
    _truncate_history(path, initial_epoch=2)
    with path.open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    _truncate_history(path, initial_epoch=0)
    assert path.read_text() == ""


# -- checkpoints ---------------------------------------------------------------------------

def _small_compiled_model():
    import keras

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoint_restores_weights_momentum_and_step_and_ignores_torn_writes(tmp_path):
    import keras

    from pipelines.train import restore_checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    model = _small_compiled_model()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 2 steps: momentum slots are non-zero
    save_checkpoint(model, tmp_path, epoch=1)
    saved = [keras.ops.convert_to_numpy(v).copy() for v in model.weights + model.optimizer.variables]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    # A kill while writing epoch 2 leaves a half-written folder that latest.json does not name.
    torn = tmp_path / ".epoch-000002.tmp"
    torn.mkdir()
    (torn / "model.weights.h5").write_bytes(b"\x89HDF torn")

    fresh = _small_compiled_model()
    assert restore_checkpoint(fresh, tmp_path) == 1
    restored = [keras.ops.convert_to_numpy(v) for v in fresh.weights + fresh.optimizer.variables]
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 2
    for a, b in zip(saved, restored, strict=True):
        np.testing.assert_array_equal(a, b)
    assert restore_checkpoint(_small_compiled_model(), tmp_path / "none") == 0
