"""Training: recipe pieces, the run directory, resume after SIGKILL, and learning on synthetic data."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

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
    # A recipe or config.json can hold NaN / Infinity (Python's json reads them): refused by name.
    with pytest.raises(ValueError, match=r"^TrainConfig.learning_rate=nan: must be a finite number$"):
        TrainConfig.from_json(json.loads('{"learning_rate": NaN}'))
    with pytest.raises(ValueError, match=r"^TrainConfig.weight_decay=inf: must be a finite number$"):
        TrainConfig(weight_decay=float("inf"))
    # AssembleNet A.6: 25.6 at batch 128, scaled linearly by default.
    assert TrainConfig(batch_size=16).peak_learning_rate == pytest.approx(3.2)
    assert TrainConfig(batch_size=16, learning_rate=0.5).peak_learning_rate == 0.5


def test_cli_flags_cover_every_config_field_with_its_default():
    import argparse

    from pipelines import cli

    fields = {name: value for name, value in TrainConfig().to_json().items() if name != "structure"}
    train = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {a.dest: a for a in train.choices["train"]._actions if a.dest in fields}
    assert set(flags) == set(fields)
    for name, action in flags.items():
        assert action.option_strings == [f"--{name.replace('_', '-')}"]
        assert action.default is None  # unset: the --config file's value, else TrainConfig's
        if isinstance(fields[name], bool):
            assert action.const is True
            continue
        shown_default = action.help.rsplit("(default: ", 1)[1].rstrip(")")
        assert shown_default == str(fields[name]), f"--{name}: help {shown_default}, TrainConfig {fields[name]}"
        if action.choices:
            assert fields[name] in action.choices


def test_a_bad_config_value_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "config.json"
    for value, message in (('"sixteen"', "expected an integer"), ("0", r"expected an integer in \[1, 4096\]"),
                           ("16.5", "expected an integer")):
        path.write_text(f'{{"frames": {value}}}')
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: TrainConfig.frames=.*: {message}$"):
            TrainConfig.from_json(path)
    path.write_text('{"attention": "selfie"}')
    with pytest.raises(ValueError, match=r"^.*config.json: TrainConfig.attention='selfie': expected one of"):
        TrainConfig.from_json(path)
    path.write_text('{"steps": 10, "steps_per_epoch": 3}')  # the config's own check, naming the file
    with pytest.raises(ValueError, match=r"^.*config.json: TrainConfig.steps=10 must be a multiple"):
        TrainConfig.from_json(path)


def test_cli_builds_the_config_from_flags(monkeypatch, tmp_path):
    from pipelines import cli

    seen = {}

    def fake_train(*, config, data, workdir, eval_data, classes, verbose, input_pipeline="auto",
                   input_workers=None, recipe=None):
        seen.update(config=config, data=data, workdir=workdir, eval_data=eval_data,
                    reader=(input_pipeline, input_workers), recipe=recipe)
        return {"steps": config.steps}

    monkeypatch.setattr("pipelines.train.train", fake_train)
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"frames": 4, "size": 32, "seed": 3}))
    assert cli.main(["train", "--structure", "tiny", "--data", "d/*.tfrecord", "--workdir",
                     str(tmp_path / "run"), "--config", str(base), "--steps", "40", "--steps-per-epoch", "10",
                     "--restarts", "1", "--learning-rate", "0.05", "--precision", "bf16", "--quiet",
                     "--input-pipeline", "native", "--input-workers", "3"]) == 0
    assert seen["reader"] == ("native", 3)  # not part of the config: a run may resume under the other
    assert seen["config"] == TrainConfig(structure="tiny", frames=4, size=32, seed=3, steps=40,
                                         steps_per_epoch=10, restarts=1, learning_rate=0.05, precision="bf16")
    assert seen["data"] == "d/*.tfrecord" and seen["eval_data"] is None
    assert seen["recipe"] is None  # a plain TrainConfig file is no recipe: the run keeps none


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


@pytest.mark.parametrize("damaged", ["model.weights.h5", "optimizer.npz", "state.json"])
def test_a_corrupt_newest_checkpoint_is_named_and_the_one_before_is_resumed(tmp_path, capsys, damaged):
    import keras

    from pipelines.checks import UserError
    from pipelines.train import restore_checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    model = _small_compiled_model()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    save_checkpoint(model, tmp_path, epoch=1)
    saved = [keras.ops.convert_to_numpy(v).copy() for v in model.weights + model.optimizer.variables]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    save_checkpoint(model, tmp_path, epoch=2)
    newest = tmp_path / "epoch-000002" / damaged
    newest.write_bytes(newest.read_bytes()[:len(newest.read_bytes()) // 2])  # a full disk cut it short

    fresh = _small_compiled_model()
    assert restore_checkpoint(fresh, tmp_path) == 1
    restored = [keras.ops.convert_to_numpy(v) for v in fresh.weights + fresh.optimizer.variables]
    for a, b in zip(saved, restored, strict=True):
        np.testing.assert_array_equal(a, b)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {newest}: truncated or corrupt checkpoint (") and err.count("\n") == 1
    assert err.endswith("; trying the one before\n")

    older = tmp_path / "epoch-000001" / damaged
    older.write_bytes(b"")
    with pytest.raises(UserError, match=rf"^{newest}: truncated or corrupt checkpoint \(.*\): no intact "
                                        "checkpoint to resume from; use a new --workdir$"):
        restore_checkpoint(_small_compiled_model(), tmp_path)


def test_a_full_disk_while_checkpointing_names_the_folder_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import errno

    from pipelines.train import restore_checkpoint, save_checkpoint

    model = _small_compiled_model()
    save_checkpoint(model, tmp_path, epoch=1)
    latest = (tmp_path / "latest.json").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file named

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError) as err:
        save_checkpoint(model, tmp_path, epoch=2)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(tmp_path / "epoch-000002"))
    assert err.value.strerror == ("No space left on device while writing the checkpoint of epoch 2; the "
                                  f"checkpoint {tmp_path / 'latest.json'} names is kept: free space and run "
                                  "the same command again to resume")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000001", "latest.json"]  # the partial one freed
    assert (tmp_path / "latest.json").read_text() == latest
    monkeypatch.undo()
    assert restore_checkpoint(_small_compiled_model(), tmp_path) == 1


# -- end to end on synthetic Charades -----------------------------------------------------
# Shared with test_predict.py / test_export.py: built once per session under pytest's base temp.

SYNTHETIC = dict(videos=100, seed=0, num_classes=10, min_seconds=2.0, max_seconds=3.0, height=48, width=64)
PREPROCESS = dict(fps=4.0, size=32, flow="opencv", segmenter="oracle")
RECIPE = TrainConfig(structure="tiny", frames=8, size=32, batch_size=8, steps=200, steps_per_epoch=40,
                     learning_rate=0.4, warmup_steps=10)
EVAL_CLIPS = 3


def synthetic_charades(base: Path) -> Path:
    """Synthetic Charades-format videos -> TFRecords (records/train, records/test) via the Beam job."""
    from pipelines.preprocess import run_preprocess, summary_ok
    from preprocessing.synthetic import generate

    root = base / "synthetic_charades"
    if (root / "ready").exists():
        return root
    generate(root, format="charades", **SYNTHETIC)
    for split in ("train", "test"):
        summary = run_preprocess(dataset="charades", videos=str(root / "videos"),
                                 out=str(root / "records" / split),
                                 annotations=str(root / f"Charades_v1_{split}.csv"), progress=False,
                                 **PREPROCESS)
        assert summary_ok(summary) and summary["dead_lettered"] == 0, summary
    (root / "ready").write_text("")
    return root


def trained_run(base: Path) -> Path:
    """`tiny` trained with RECIPE on the synthetic train split, then evaluated on the test split."""
    from pipelines.evaluate import evaluate_model
    from pipelines.train import train

    root = synthetic_charades(base)
    run = base / "trained_tiny"
    if (run / "metrics.json").exists():
        return run
    train(config=RECIPE, data=str(root / "records" / "train"), workdir=run, verbose=0)
    evaluate_model(run_dir=run, data=str(root / "records" / "test" / "*.tfrecord"), dataset="charades",
                   clips=EVAL_CLIPS, batch_size=8)
    return run


def test_labels(root: Path) -> np.ndarray:
    from preprocessing import charades

    videos = charades.read_annotations(root / "Charades_v1_test.csv", num_classes=SYNTHETIC["num_classes"])
    labels = np.zeros((len(videos), SYNTHETIC["num_classes"]))
    for i, video in enumerate(videos):
        for action in video.actions:
            labels[i, action.label] = 1
    return labels


test_labels.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return synthetic_charades(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_end_to_end_preprocess_train_evaluate_report(run_dir, synthetic):
    import keras

    import model.assemblenet  # noqa: F401  (custom layers)
    from model.structure import get_structure
    from pipelines.report import build_report

    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_classes"] == SYNTHETIC["num_classes"]  # read from the TFRecords
    assert TrainConfig.from_json(config) == TrainConfig(**{**RECIPE.to_json(), "num_classes": 10})
    assert json.loads((run_dir / "structure.json").read_text()) == get_structure("tiny").to_json()
    lines = (synthetic / "Charades_v1_classes.txt").read_text().splitlines()
    names = [line.split(" ", 1)[1] for line in lines]
    assert json.loads((run_dir / "classes.json").read_text()) == names
    assert json.loads((run_dir / "preprocess.json").read_text())["fps"] == PREPROCESS["fps"]

    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert [int(float(r["step"])) for r in rows] == [40, 80, 120, 160, 200]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3  # cosine decay to ~0
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"

    trained = keras.models.load_model(run_dir / "model.keras")
    assert int(keras.ops.convert_to_numpy(trained.optimizer.iterations)) == RECIPE.steps
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] == trained.count_params() and summary["flops"] > 0
    assert summary["structure"] == "tiny" and summary["attention"] == "none"
    weights = json.loads((run_dir / "connection_weights.json").read_text())
    structure = get_structure("tiny")
    assert weights.keys() == {str(n.index) for n in structure.blocks}
    for node in structure.blocks:
        assert list(weights[str(node.index)]) == [str(j) for j in node.inputs]
        assert all(0 < v < 1 for v in weights[str(node.index)].values())
    assert not (run_dir / "attention_weights.json").exists()  # only search models have one

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_videos"] == int(test_labels(synthetic).any(axis=1).sum())
    html = build_report(run_dir).read_text()
    assert html.count("<img") >= 2 and "mAP" in html  # training curves, per-class AP, connectivity, ...
    assert (run_dir / "report" / "report.md").exists()


@pytest.mark.slow
def test_short_training_learns_above_random_scores(run_dir, synthetic):
    """AssembleNet++ claims aside, the minimum: a short run beats random scores on the same test set."""
    from pipelines.metrics import charades_map

    achieved = json.loads((run_dir / "metrics.json").read_text())["mAP"]
    labels = test_labels(synthetic)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes without positives in the small test split
        random_maps = np.array([charades_map(rng.random(labels.shape), labels).mAP for _ in range(500)])
    mean, p99 = random_maps.mean(), np.percentile(random_maps, 99)
    assert achieved > p99 and achieved > mean + 0.1, (
        f"trained tiny ({RECIPE.steps} steps) mAP {achieved:.3f} vs random scores mAP {mean:.3f} "
        f"(99th percentile {p99:.3f}) on the same {len(labels)} test videos")


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_no_epoch(synthetic, tmp_path):
    import keras

    import model.assemblenet  # noqa: F401  (custom layers)

    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "pipelines.cli", "train", "--structure", "tiny",
               "--data", str(synthetic / "records" / "train"), "--workdir", str(workdir),
               "--frames", "8", "--size", "32", "--batch-size", "4", "--steps", "12",
               "--steps-per-epoch", "3", "--learning-rate", "0.1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    latest = workdir / "checkpoints" / "latest.json"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while not latest.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = json.loads(latest.read_text())["epoch"]
    assert 1 <= killed_at < 4, f"the kill came after epoch {killed_at}: nothing left to resume"

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = json.loads(second.stdout[second.stdout.rindex("\n{") + 1:])
    assert result["initial_epoch"] == killed_at and result["steps"] == 12
    with (workdir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3], rows
    assert [int(float(r["step"])) for r in rows] == [3, 6, 9, 12]
    trained = keras.models.load_model(workdir / "model.keras")
    assert int(keras.ops.convert_to_numpy(trained.optimizer.iterations)) == 12
    assert json.loads(latest.read_text()) == {"checkpoint": "epoch-000004", "epoch": 4, "step": 12}


@pytest.mark.parametrize("strategy, expected", [("cpu", "OneDeviceStrategy"), ("mirrored", "MirroredStrategy"),
                                                ("auto", "_DefaultDistributionStrategy")])
def test_strategies_build_and_fit_inside_their_scope(strategy, expected):
    """TensorFlow backend (this suite's): the strategy's scope holds the variables and runs fit."""
    import keras
    import tensorflow as tf

    from pipelines.train import distribution_scope

    with distribution_scope(strategy) as chosen:
        assert type(chosen).__name__ == expected
        model = _small_compiled_model()
        assert model.distribute_strategy is chosen
        assert all(chosen.extended.variable_created_in_scope(v.value) for v in model.weights)
        data = tf.data.Dataset.from_tensor_slices((np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")))
        model.fit(data.batch(4), epochs=1, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2
