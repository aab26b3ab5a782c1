"""The end-to-end job's own logic: splits, run folders, Beam options, configs, retry-safe rounds.

The stages themselves run for real in tests/dags/test_end_to_end_dag.py (through Airflow).
"""

import json
import math
import os
from pathlib import Path

import pytest

from model import evolution
from model.structure import Structure
from pipelines import evolve
from pipelines.orchestration import end_to_end


def test_validation_ids_are_a_deterministic_share_independent_of_order():
    ids = [f"V{i:04d}" for i in range(20)]
    held_out = end_to_end.validation_ids(ids, 0.25)
    assert len(held_out) == 5 and held_out <= set(ids)
    assert end_to_end.validation_ids(list(reversed(ids)), 0.25) == held_out
    # At least one held out, never all of them.
    assert len(end_to_end.validation_ids(ids[:3], 0.01)) == 1
    assert len(end_to_end.validation_ids(ids[:3], 0.99)) == 2
    with pytest.raises(ValueError, match="need >= 2"):
        end_to_end.validation_ids(ids[:1], 0.5)


def test_run_folder_is_keyed_by_the_run_unless_given(tmp_path):
    folder = end_to_end.run_folder("", "assemblenet_end_to_end", "manual__2026-01-02T03:04:05+00:00")
    assert folder == str(end_to_end.PROJECT_ROOT / "runs" / "assemblenet_end_to_end"
                         / "manual__2026-01-02T03_04_05_00_00")
    assert end_to_end.run_folder(str(tmp_path), "d", "r") == str(tmp_path)
    assert end_to_end.run_folder("runs/x", "d", "r") == str(end_to_end.PROJECT_ROOT / "runs" / "x")
    assert end_to_end.resolve("gs://bucket/data") == "gs://bucket/data"


def test_beam_pipeline_args():
    assert end_to_end.beam_pipeline_args("FnApiRunner", project="p", extra=["--x=1"]) == ["--x=1"]
    with pytest.raises(ValueError, match=r"\['region', 'temp_location'\]"):
        end_to_end.beam_pipeline_args("DataflowRunner", project="p")
    args = end_to_end.beam_pipeline_args("DataflowRunner", project="p", region="us-central1",
                                         temp_location="gs://b/tmp")
    assert args == ["--project=p", "--region=us-central1", "--temp_location=gs://b/tmp",
                    f"--setup_file={end_to_end.PROJECT_ROOT / 'setup.py'}"]


def test_config_rejects_typos_and_uneven_budgets():
    config = end_to_end.EndToEndConfig.from_params({"videos": 8, "train_steps": 40})
    assert (config.videos, config.train_steps, config.proxy_steps) == (8, 40, 20)
    assert config.train_fields()["steps_per_epoch"] == 20
    with pytest.raises(ValueError, match="unknown parameter.*'vidoes'"):
        end_to_end.EndToEndConfig.from_params({"vidoes": 8})
    with pytest.raises(ValueError, match="train_steps=30 must be a multiple of steps_per_epoch=20"):
        end_to_end.EndToEndConfig(train_steps=30)


def _fake_evaluate(structure, workdir: Path):
    edges = structure.edges()
    return float(len(edges)), {e: 1 / (1 + math.exp(-(e[0] - e[1]))) for e in edges}


def test_a_fast_path_round_is_one_task_that_trains_its_children_in_one_process(tmp_path, monkeypatch):
    space = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)
    plain, fast = tmp_path / "plain", tmp_path / "fast"
    evolve.init_search(plain, evolve.EvolutionConfig(population_size=3, rounds=0, seed=1, space=space))
    evolve.init_search(fast, evolve.EvolutionConfig(population_size=3, rounds=0, seed=1, space=space,
                                                    fast_path=True))
    children = end_to_end.next_children(str(plain), 3)
    assert end_to_end.round_tasks(str(plain), children) == [["c0000"], ["c0001"], ["c0002"]]
    assert end_to_end.round_tasks(str(fast), end_to_end.next_children(str(fast), 3)) == [children]
    assert end_to_end.round_tasks(str(fast), []) == []  # a spent budget: no task
    seen = []

    def recording(structure, workdir):  # stands in for the process's FastChildren
        seen.append((Path(workdir).name, os.getpid()))
        return _fake_evaluate(structure, workdir)

    monkeypatch.setattr(evolve, "stored_evaluator", lambda state_dir: recording)
    fitness = end_to_end.evaluate_children(str(fast), children)
    assert seen == [(child, os.getpid()) for child in children]
    assert fitness == [json.loads((fast / "children" / c / "result.json").read_text())["fitness"] for c in children]
    assert fitness == [float(len(Structure.from_json(json.loads(
        (fast / "children" / c / "spec.json").read_text())["structure"]).edges())) for c in children]


def test_a_retried_round_picks_up_its_children_instead_of_proposing_more(tmp_path):
    space = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)
    evolve.init_search(tmp_path, evolve.EvolutionConfig(population_size=2, rounds=2, seed=1, space=space))
    first = end_to_end.next_children(str(tmp_path), 2)
    assert first == ["c0000", "c0001"]
    # The round's task ran again (a retry): the same children come back, none is added.
    assert end_to_end.next_children(str(tmp_path), 2) == first
    for child in first:
        evolve.evaluate_child(tmp_path, child, _fake_evaluate)
    # The next round integrates the finished ones, then proposes children of the population.
    second = end_to_end.next_children(str(tmp_path), 2)
    assert second == ["c0002", "c0003"]
    state = evolve.load_state(tmp_path)
    assert sorted(state["population"]) == first
    assert state["pending"] == second
    for child in second:
        evolve.evaluate_child(tmp_path, child, _fake_evaluate)
    assert end_to_end.next_children(str(tmp_path), 2) == []  # the budget is spent
    assert end_to_end.finish_evolution(str(tmp_path)) == str(tmp_path / "best_structure.json")
    assert len(evolve.load_state(tmp_path)["history"]) == 4
