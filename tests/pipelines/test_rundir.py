"""The run directory's owner, pipelines/rundir.py: its file names are the ones a real run writes and
docs/CONTRACTS.md lists, its writer is atomic, and a missing or broken file is one line naming it."""

import errno
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from pipelines import rundir
from pipelines.checks import UserError
from pipelines.rundir import RunDir, read_json, write_json
from tests.pipelines.test_checks import write_records

ROOT = Path(__file__).resolve().parents[2]


# -- the names -------------------------------------------------------------------------------------

def _contract_names() -> set[str]:
    """The RUN_DIR/<name> entries of docs/CONTRACTS.md's run-directory listing."""
    text = (ROOT / "docs" / "CONTRACTS.md").read_text()
    section = text[text.index("## Run directory"):]
    listing = section[section.index("```") + 3:]
    listing = listing[:listing.index("```")]
    names = set()
    for entry in re.findall(r"^RUN_DIR/(\S+)", listing, flags=re.MULTILINE):
        first, *others = entry.rstrip("/").split("|")
        names.add(first)
        names.update(first.rsplit(".", 1)[0] + other for other in others)  # predictions.txt|.csv
    return names


def test_the_constants_are_the_files_the_contract_lists():
    assert _contract_names() == {
        "config.json", "structure.json", "checkpoints", "logs", "history.csv", "model.keras",
        "connection_weights.json", "attention_weights.json", "summary.json", "classes.json", "preprocess.json",
        "recipe.json", "metrics.json", "predictions.txt", "predictions.csv", ".assemblenet.lock"}
    assert set(rundir.FILES) == _contract_names() and len(rundir.FILES) == len(set(rundir.FILES))
    run = RunDir("runs/x")
    for constant in ("CONFIG", "STRUCTURE", "CHECKPOINTS", "LOGS", "HISTORY", "MODEL", "CONNECTION_WEIGHTS",
                     "ATTENTION_WEIGHTS", "SUMMARY", "CLASSES", "PREPROCESS", "RECIPE", "METRICS",
                     "CHARADES_PREDICTIONS", "TOYOTA_PREDICTIONS", "LOCK"):
        assert getattr(run, constant.lower()) == Path("runs/x") / getattr(rundir, constant)
    assert os.fspath(run) == "runs/x" and RunDir(Path("runs/x")) == run


@pytest.mark.slow
def test_a_real_run_writes_exactly_the_files_the_module_names(tmp_path):
    """train (a one-shot search model, from a recipe, with class names), then `evaluate run`, list the
    folder: every file is one of rundir.FILES, and together with Toyota's predictions and the lock
    they are all of them."""
    from model.oneshot import over_connected
    from model.structure import tiny
    from pipelines import locks
    from pipelines.evaluate import evaluate_model, evaluate_run
    from pipelines.train import TrainConfig, train

    data = write_records(tmp_path / "records" / "a.tfrecord", videos=4)
    names = ["walk", "sit", "eat", "read"]
    (tmp_path / "records" / "classes.json").write_text(json.dumps(names))
    layout = tmp_path / "supernet.json"
    over_connected(tiny()).save(layout)  # attention="search" also writes attention_weights.json
    config = TrainConfig(structure=str(layout), attention="search", frames=4, size=16, batch_size=2, steps=2,
                         steps_per_epoch=1, seed=1)
    recipe = {"name": "rundir-test", "train": {"steps": 2}, "evaluate": {"clips": 1}}
    run = RunDir(tmp_path / "run")
    train(config=config, data=str(data.parent), workdir=run.path, verbose=0, recipe=recipe)
    trained = {p.name for p in run.path.iterdir()}
    assert trained == {rundir.CONFIG, rundir.STRUCTURE, rundir.CHECKPOINTS, rundir.LOGS, rundir.HISTORY,
                       rundir.MODEL, rundir.CONNECTION_WEIGHTS, rundir.ATTENTION_WEIGHTS, rundir.SUMMARY,
                       rundir.CLASSES, rundir.PREPROCESS, rundir.RECIPE}
    assert TrainConfig.from_json(run.read(rundir.CONFIG)) == TrainConfig(**{**config.to_json(), "num_classes": 4})
    assert run.read(rundir.STRUCTURE) == over_connected(tiny()).to_json()
    assert run.read(rundir.CLASSES) == names and run.read(rundir.RECIPE) == recipe
    assert run.read(rundir.PREPROCESS)["dataset"] == "charades"
    assert run.read(rundir.SUMMARY)["attention"] == "search"
    assert run.history.read_text().splitlines()[0].startswith("epoch,")

    result = evaluate_run(run.path, str(data))  # the recipe's protocol: 1 clip
    evaluated = {p.name for p in run.path.iterdir()} - trained
    assert evaluated == {rundir.METRICS, rundir.CHARADES_PREDICTIONS}
    assert run.read(rundir.METRICS) == json.loads(json.dumps(result)) and result["recipe"] == "rundir-test"

    toyota = RunDir(tmp_path / "toyota")  # Toyota's predictions: a run's config and structure, any model
    toyota.write(rundir.CONFIG, {"dataset": "toyota", "frames": 4, "size": 16, "num_classes": 3})
    tiny().save(toyota.structure)
    toyota_data = write_records(tmp_path / "toyota_records" / "a.tfrecord", dataset="toyota", num_classes=3)
    evaluate_model(run_dir=toyota.path, data=str(toyota_data), dataset="toyota", clips=1, num_classes=3,
                   model=lambda inputs, training=False: np.zeros((len(inputs["rgb"]), 3), np.float32),
                   input_pipeline="native", input_workers=0)
    toyota_files = {p.name for p in toyota.path.iterdir()} - {rundir.CONFIG, rundir.STRUCTURE}
    assert toyota_files == {rundir.METRICS, rundir.TOYOTA_PREDICTIONS}

    with locks.writer_lock(run.path, "run directory"):
        locked = {p.name for p in run.path.iterdir()} - trained - evaluated
    assert locked == {rundir.LOCK}
    assert trained | evaluated | toyota_files | locked == set(rundir.FILES)


# -- the atomic writer ------------------------------------------------------------------------------

def test_a_write_leaves_only_the_file_with_the_whole_value(tmp_path):
    path = tmp_path / "run" / rundir.METRICS  # the folder is created
    first = {"values": list(range(50_000))}
    write_json(path, first)
    assert [p.name for p in path.parent.iterdir()] == [rundir.METRICS]
    assert json.loads(path.read_text()) == first
    second = {"values": ["x"] * 10}  # shorter: a file written in place would keep the old tail
    write_json(path, second, indent=2)
    assert [p.name for p in path.parent.iterdir()] == [rundir.METRICS]
    assert path.read_text() == json.dumps(second, indent=2) + "\n"
    assert RunDir(path.parent).write(rundir.SUMMARY, {"params": 3}) == path.parent / rundir.SUMMARY
    assert (path.parent / rundir.SUMMARY).read_text() == '{\n  "params": 3\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == [rundir.METRICS, rundir.SUMMARY]


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / rundir.CONFIG
    write_json(path, {"steps": 1})
    before = path.read_bytes()
    synced = []

    def full_disk(fd):  # the data is written but cannot reach the disk
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as err:
        write_json(path, {"steps": 2, "padding": "x" * 100_000})
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(path))  # names the file, not the temp
    assert len(synced) == 1 and Path(synced[0]).parent == tmp_path.resolve()  # a temporary file beside it
    assert Path(synced[0]).name != path.name
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [rundir.CONFIG]


def test_a_reader_never_sees_half_a_file(tmp_path):
    path = tmp_path / rundir.CONNECTION_WEIGHTS
    values = [{"block": ["a" * 64] * 4000}, {"block": ["b" * 64] * 2000, "other": 1}]
    write_json(path, values[0])
    seen, stop = [], threading.Event()

    def writer():
        for k in range(60):
            write_json(path, values[k % 2])
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while True:
        seen.append(json.loads(path.read_text()))  # a half file would be a JSONDecodeError or another value
        if stop.is_set():
            break
    thread.join()
    assert seen and all(value in values for value in seen)
    assert [p.name for p in tmp_path.iterdir()] == [rundir.CONNECTION_WEIGHTS]


# -- one-line errors naming the file ---------------------------------------------------------------------

def test_a_missing_or_broken_file_is_one_line_naming_it(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(UserError) as err:
        run.read(rundir.CONFIG)
    assert str(err.value) == f"{run.config}: no such file"
    run.path.mkdir()
    run.config.write_text('{"steps": 2,\n "size": }\n')
    with pytest.raises(UserError) as err:
        run.read(rundir.CONFIG)
    assert str(err.value) == f"{run.config}:2:10: not valid JSON (Expecting value)"
    with pytest.raises(UserError) as err:
        run.read_if_exists(rundir.CONFIG)  # present but broken: still an error
    assert str(err.value).startswith(f"{run.config}:2:10: ")
    assert run.read_if_exists(rundir.METRICS, {}) == {}
    with pytest.raises(UserError) as err:
        read_json(run.config, "--config")
    assert str(err.value) == f"--config {run.config}:2:10: not valid JSON (Expecting value)"
    with pytest.raises(UserError) as err:
        run.require(rundir.CONFIG, rundir.MODEL, why=" (train the run first)")
    assert str(err.value) == f"{run.path}: no model.keras (train the run first)"


def test_the_cli_prints_a_broken_run_file_as_one_line(tmp_path, capsys):
    from pipelines import cli

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.model.write_bytes(b"")
    run.config.write_text("{\n")
    assert cli.main(["evaluate", "run", str(run.path), "--data", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (
        "", f"assemblenet evaluate: error: {run.config}:2:1: not valid JSON (Expecting property name enclosed "
            "in double quotes)\n")
    run.model.unlink()
    assert cli.main(["evaluate", "run", str(run.path), "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"assemblenet evaluate: error: {run.path}: no model.keras (train the run first)\n"
