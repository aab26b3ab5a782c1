"""`assemblenet_end_to_end` runs to success with `airflow dags test` on tiny synthetic data.

The real stages run (Beam FnApiRunner, TV-L1, evolution, one-shot search, training, evaluation,
report) with the smallest budgets: 8 short videos, 2 evolution rounds of 1 child, a few steps.
A second DAG run into the same folder (what a retried or repeated run does) must succeed on the
first run's leftovers and change nothing that was finished.
"""

import json
from pathlib import Path

import pytest

from model.structure import Structure
from pipelines.demo import run_dag

TINY = {"videos": 8, "min_seconds": 2.5, "max_seconds": 3.5, "fps": 4.0, "frame_size": 32,
        "population": 1, "children_per_round": 1, "proxy_steps": 2, "search_steps": 2, "train_steps": 4,
        "steps_per_epoch": 2, "clips": 2}


def _log_tail(tmp_path: Path) -> str:
    return (tmp_path / "airflow" / "dags_test.log").read_text()[-5000:]


def _ids(split_dir: Path) -> set[str]:
    return {line for ids in split_dir.glob("*.ids") for line in ids.read_text().split()}


@pytest.mark.slow
def test_end_to_end_dag_runs_to_success_and_again(tmp_path):
    workdir = tmp_path / "run"
    conf = {**TINY, "workdir": str(workdir)}
    assert run_dag(conf, tmp_path / "airflow", echo=False) == 0, _log_tail(tmp_path)

    # Preprocessing: three disjoint splits holding every generated video.
    splits = {name: _ids(workdir / "data" / name) for name in ("train", "val", "test")}
    for name, ids in splits.items():
        summary = json.loads((workdir / "data" / name / "summary.json").read_text())
        assert summary["written"] == summary["input"] == len(ids) > 0, name
    assert sum(len(ids) for ids in splits.values()) == len(set().union(*splits.values())) == TINY["videos"]

    # Evolution: one random child, then one child of the population (tournament + mutation).
    history = json.loads((workdir / "evolution" / "history.json").read_text())
    assert [(h["child"], h["phase"], h["parent"]) for h in history] == [("c0000", "initial", None),
                                                                       ("c0001", "child", "c0000")]
    best = Structure.from_json(workdir / "evolution" / "best_structure.json")
    assert best.name == f"evolved_{max(history, key=lambda h: h['fitness'])['child']}"

    # One-shot search over the evolved layout, pruned to a structure with one peer per block.
    final = Structure.from_json(workdir / "search" / "final_structure.json")
    searched = Structure.from_json(workdir / "search" / "structure.json")
    assert set(final.edges()) <= set(searched.edges())
    assert all(node.peer is not None for node in final.blocks)
    assert [n.level for n in final.nodes] == [n.level for n in best.nodes]

    # The full training trained that structure with peer attention; evaluation scored the test split.
    config = json.loads((workdir / "config.json").read_text())
    assert (config["structure"], config["attention"], config["steps"]) == (
        str(workdir / "search" / "final_structure.json"), "peer", TINY["train_steps"])
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["clips"] == 2
    predicted = {line.split()[0] for line in (workdir / "predictions.txt").read_text().splitlines()}
    assert predicted == splits["test"]
    report = (workdir / "report" / "index.html").read_text()
    assert "Evolution" in report and "One-shot search" in report

    # Run it again: every stage finds its outputs and finishes without redoing the work.
    model_before = (workdir / "model.keras").stat().st_mtime_ns
    assert run_dag(conf, tmp_path / "airflow", echo=False) == 0, _log_tail(tmp_path)
    assert len(json.loads((workdir / "evolution" / "history.json").read_text())) == 2
    assert json.loads((workdir / "config.json").read_text())["steps"] == TINY["train_steps"]
    history_rows = (workdir / "history.csv").read_text().splitlines()
    assert len(history_rows) == 1 + TINY["train_steps"] // TINY["steps_per_epoch"]
    assert (workdir / "model.keras").stat().st_mtime_ns >= model_before
