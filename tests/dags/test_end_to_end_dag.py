"""`assemblenet_end_to_end` under Airflow's scheduler and LocalExecutor (what `make demo` runs), with a
task process killed mid-task, on tiny synthetic data.

The real stages run (Beam FnApiRunner, TV-L1, evolution, one-shot search, training, evaluation,
report) with the smallest budgets: 8 short videos, 2 evolution rounds of 1 child, a few steps.
While the run goes, the process of an evolution child and then that of the full training (after
its first checkpoint) are killed with SIGKILL: Airflow retries both, and the run must end with
every output exactly once (no child trained twice, no epoch lost or repeated). A second DAG run
into the same folder (what a repeated run does) must succeed on the first run's outputs and
redo nothing that was finished.
"""

import json
import os
import signal
from pathlib import Path

import pytest

from model.structure import Structure
from pipelines.orchestration.airflow_local import LocalAirflow
from pipelines.orchestration.demo import DAG_ID, airflow_env

TINY = {"videos": 8, "min_seconds": 2.5, "max_seconds": 3.5, "fps": 4.0, "frame_size": 32,
        "population": 1, "children_per_round": 1, "proxy_steps": 4, "search_steps": 2, "train_steps": 12,
        "steps_per_epoch": 2, "clips": 2}


def _ids(split_dir: Path) -> set[str]:
    return {line for ids in split_dir.glob("*.ids") for line in ids.read_text().split()}


def _epochs(workdir: Path) -> int:
    history = workdir / "history.csv"
    return max(0, len(history.read_text().splitlines()) - 1) if history.exists() else 0


def _failure(airflow: LocalAirflow, run_id: str) -> str:
    """The last lines of the failed tasks' logs, for the assertion message."""
    lines = []
    for ti in airflow.task_instances(DAG_ID, run_id):
        if ti["state"] not in ("success", "skipped"):
            log = airflow.task_log(DAG_ID, run_id, ti["task_id"], ti["map_index"], max(1, ti["try_number"]))
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            lines.append(f"{ti['task_id']} {ti['state']}:\n{tail}")
    return "\n".join(lines)[-8000:]


@pytest.mark.slow
def test_end_to_end_dag_under_the_scheduler_survives_killed_tasks_and_reruns(tmp_path):
    workdir = tmp_path / "run"
    conf = {**TINY, "workdir": str(workdir)}
    home = tmp_path / "airflow"
    killed: dict[str, int] = {}

    def kill_mid_task(instances: list[dict]) -> None:
        for ti in instances:
            if ti["state"] != "running" or ti["try_number"] != 1 or not ti["pid"] or ti["task_id"] in killed:
                continue
            child_run = workdir / "evolution" / "children" / "c0000" / "run"
            child_started = ti["task_id"] == "round_1.evaluate_child" and (child_run / "config.json").exists()
            training_started = ti["task_id"] == "train_final" and 1 <= _epochs(workdir) < 5
            if child_started or training_started:
                os.kill(ti["pid"], signal.SIGKILL)
                killed[ti["task_id"]] = ti["pid"]

    with LocalAirflow(home, parallelism=2, pools={"gpu": 2}, env=airflow_env(home), echo=None) as airflow:
        airflow.trigger(DAG_ID, conf, "first")
        state = airflow.wait_for_run(DAG_ID, "first", timeout=3600, on_poll=kill_mid_task)
        assert state == "success", _failure(airflow, "first")
        first = {ti["task_id"]: ti for ti in airflow.task_instances(DAG_ID, "first")}

        # Both kills happened mid-task and Airflow ran the task again.
        assert set(killed) == {"round_1.evaluate_child", "train_final"}
        for task_id in killed:
            assert (first[task_id]["state"], first[task_id]["try_number"]) == ("success", 2), task_id
        # Where each task ran: GPU queue and pool for the model tasks, CPU queue for the rest.
        for task_id, ti in first.items():
            gpu = task_id.endswith("evaluate_child") or task_id in ("one_shot_search", "train_final", "evaluate")
            assert (ti["queue"], ti["pool"]) == (("gpu", "gpu") if gpu else ("cpu", "default_pool")), task_id

        # Preprocessing: three disjoint splits holding every generated video.
        splits = {name: _ids(workdir / "data" / name) for name in ("train", "val", "test")}
        for name, ids in splits.items():
            summary = json.loads((workdir / "data" / name / "summary.json").read_text())
            assert summary["written"] == summary["input"] == len(ids) > 0, name
        assert sum(len(ids) for ids in splits.values()) == len(set().union(*splits.values())) == TINY["videos"]

        # Evolution: one random child, then one child of the population (tournament + mutation), each
        # once although the first child's process was killed.
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

        # The full training, killed after its first checkpoint, resumed: every epoch exactly once.
        config = json.loads((workdir / "config.json").read_text())
        assert (config["structure"], config["attention"], config["steps"]) == (
            str(workdir / "search" / "final_structure.json"), "peer", TINY["train_steps"])
        rows = (workdir / "history.csv").read_text().splitlines()
        epochs = [int(row.split(",")[0]) for row in rows[1:]]
        assert epochs == list(range(len(epochs))) and len(epochs) == TINY["train_steps"] // TINY["steps_per_epoch"]
        metrics = json.loads((workdir / "metrics.json").read_text())
        assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["clips"] == 2
        predicted = [line.split()[0] for line in (workdir / "predictions.txt").read_text().splitlines()]
        assert sorted(predicted) == sorted(splits["test"])
        report = (workdir / "report" / "index.html").read_text()
        assert "Evolution" in report and "One-shot search" in report

        # Run it again: every stage finds its outputs and finishes without redoing the work.
        model_before = (workdir / "model.keras").stat().st_mtime_ns
        airflow.trigger(DAG_ID, conf, "second")
        assert airflow.wait_for_run(DAG_ID, "second", timeout=2400) == "success", _failure(airflow, "second")
        assert len(json.loads((workdir / "evolution" / "history.json").read_text())) == 2
        assert json.loads((workdir / "config.json").read_text())["steps"] == TINY["train_steps"]
        assert (workdir / "history.csv").read_text().splitlines() == rows
        assert (workdir / "model.keras").stat().st_mtime_ns >= model_before

        # A mistyped key in a run's conf fails the run at its first task, naming the key, without a retry
        # ("step" for "steps" would otherwise train the default 16 steps); also inside proxy_train.
        typos = {"assemblenet_search_and_train": ({"step": 50000, "workdir": str(tmp_path / "typo")},
                                                  "one_shot_search", "unknown param(s) ['step']"),
                 "assemblenet_evolution": ({"state_dir": str(tmp_path / "typo_evolution"),
                                            "proxy_train": {"steps": 2, "step_per_epoch": 2}},
                                           "start_evolution", "unknown TrainConfig field(s) ['step_per_epoch']")}
        for dag_id, (typo_conf, _, _) in typos.items():
            airflow.trigger(dag_id, typo_conf, "typo")
        for dag_id, (_, first_task, message) in typos.items():
            assert airflow.wait_for_run(dag_id, "typo", timeout=1200) == "failed"
            states = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in airflow.task_instances(dag_id, "typo")}
            assert states[first_task] == ("failed", 1), states
            assert {state for task, (state, _) in states.items() if task != first_task} == {"upstream_failed"}
            assert message in airflow.task_log(dag_id, "typo", first_task).read_text()
        assert not (tmp_path / "typo").exists() and not (tmp_path / "typo_evolution").exists()

    assert airflow.leftover_processes() == []
