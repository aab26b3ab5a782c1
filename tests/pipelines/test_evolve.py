"""The evolution driver: state on disk, the orchestrator steps, resume after SIGKILL, workers.

A deterministic fake scorer stands in for proxy training (the end-to-end test in test_search.py
trains for real): every edge gets a fixed quality q(e) from a hash of what it connects; the
fitness is the sum of q over the edges, and the "learned" weight of an edge is sigmoid(3 q(e)).
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from model import evolution
from model.structure import Structure, get_structure
from pipelines import evolve, locks
from pipelines.evolve import EvolutionConfig

SPACE = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)
ROOT = Path(__file__).resolve().parents[2]


def _quality(structure: Structure, j: int, i: int) -> float:
    a, b = structure.node(j), structure.node(i)
    key = f"{a.level}-{a.inputs if a.is_stem else a.dilation}-{b.level}-{b.dilation}".encode()
    return zlib.crc32(key) / 2**32 * 2 - 1


def fake_evaluate(structure: Structure, workdir: Path) -> tuple[float, dict]:
    """Logs `start <child>` to STATE_DIR/evaluations.log, sleeps FAKE_SLEEP seconds, scores."""
    workdir = Path(workdir)
    with open(workdir.parents[1] / "evaluations.log", "a") as log:
        log.write(f"start {workdir.name}\n")
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    return fake_score(structure)


def fake_score(structure: Structure) -> tuple[float, dict]:
    q = {(j, i): _quality(structure, j, i) for j, i in structure.edges()}
    return sum(q.values()), {e: 1 / (1 + math.exp(-3 * v)) for e, v in q.items()}


def _config(**kwargs) -> EvolutionConfig:
    return EvolutionConfig(**{"population_size": 6, "rounds": 10, "seed": 3, "space": SPACE, **kwargs})


def _starts(out: Path) -> list[str]:
    log = out / "evaluations.log"
    return [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_evolution_writes_every_output(tmp_path):
    config = _config()
    summary = evolve.run_evolution(tmp_path, config, evaluate=fake_evaluate, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["round"] for h in history] == list(range(1, 17))
    assert [h["child"] for h in history] == [f"c{k:04d}" for k in range(16)]
    assert [h["phase"] for h in history] == ["initial"] * 6 + ["child"] * 10
    assert all(h["parent"] is None for h in history[:6])
    for k, h in enumerate(history[6:], start=6):
        assert h["parent"] in {g["child"] for g in history[:k]}  # a parent was scored before
        assert h["info"]["strategy"] == "guided"
    # The kept edge weights are the child's own edges (they guide its children).
    for h in history:
        s = Structure.from_json(h["structure"])
        fitness, weights = fake_score(s)
        assert evolution.parse_edge_weights(h["edge_weights"]) == pytest.approx(weights)
        assert h["fitness"] == pytest.approx(fitness)
    # Population: the 6 fittest of everything evaluated (the worst leaves each round).
    state = evolve.load_state(tmp_path)
    fittest = sorted(history, key=lambda h: -h["fitness"])[:6]
    assert set(state["population"]) == {h["child"] for h in fittest}
    assert state["pending"] == []
    # Mean of the top 3 never drops once the population is full, and matches a recomputation.
    for k, h in enumerate(history):
        assert h["top3_mean"] == pytest.approx(np.mean(sorted((g["fitness"] for g in history[:k + 1]),
                                                              reverse=True)[:3]))
    best = max(history, key=lambda h: h["fitness"])
    assert summary["best_child"] == best["child"] and summary["evaluations"] == 16
    loaded = get_structure(str(tmp_path / "best_structure.json"))
    assert loaded.to_json()["nodes"] == best["structure"]["nodes"]
    assert (tmp_path / "fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(_starts(tmp_path)) == [f"c{k:04d}" for k in range(16)]  # each evaluated once


def test_guided_evolution_improves_on_its_initial_population(tmp_path):
    evolve.run_evolution(tmp_path, _config(rounds=30), evaluate=fake_evaluate, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[-1]["top3_mean"] > history[5]["top3_mean"]


def test_same_seed_gives_the_same_search(tmp_path):
    a = evolve.run_evolution(tmp_path / "a", _config(), evaluate=fake_evaluate, progress=False)
    b = evolve.run_evolution(tmp_path / "b", _config(), evaluate=fake_evaluate, progress=False)
    assert a == b
    history_a, history_b = (evolve.load_state(tmp_path / d)["history"] for d in "ab")
    assert _strip(history_a) == _strip(history_b)


@pytest.mark.parametrize("strategy", ["random-edges", "random-search"])
def test_baseline_strategies(tmp_path, strategy):
    evolve.run_evolution(tmp_path, _config(strategy=strategy, rounds=4), evaluate=fake_evaluate,
                         progress=False)
    children = evolve.load_state(tmp_path)["history"][6:]
    if strategy == "random-search":
        assert all(h["parent"] is None and h["info"]["strategy"] == "random" for h in children)
    else:
        assert all(h["parent"] is not None and h["info"]["strategy"] == "random-edges" for h in children)


def test_orchestrator_steps_and_idempotent_evaluation(tmp_path):
    evolve.init_search(tmp_path, _config(population_size=3, rounds=2))
    ids = evolve.propose_children(tmp_path, 5)
    assert ids == ["c0000", "c0001", "c0002"]  # nothing scored yet: no parent for a 4th child
    assert all((tmp_path / "children" / c / "spec.json").exists() for c in ids)
    for child in reversed(ids):  # any order, as parallel tasks finish
        evolve.evaluate_child(tmp_path, child, fake_evaluate)
    assert evolve.integrate_results(tmp_path) == ids

    def must_not_run(structure, workdir):
        raise AssertionError("a finished child was evaluated again")

    assert evolve.evaluate_child(tmp_path, "c0001", must_not_run)["child"] == "c0001"
    more = evolve.propose_children(tmp_path, 5)
    assert more == ["c0003", "c0004"]  # the budget: 3 + 2
    assert evolve.propose_children(tmp_path, 1) == []
    evolve.evaluate_child(tmp_path, "c0004", fake_evaluate)
    assert evolve.integrate_results(tmp_path) == ["c0004"]  # c0003 still running
    state = evolve.load_state(tmp_path)
    assert state["pending"] == ["c0003"] and len(state["population"]) == 3
    with pytest.raises(ValueError, match="no such child"):
        evolve.evaluate_child(tmp_path, "c0099", fake_evaluate)


def test_resume_refuses_another_config_but_extends_rounds(tmp_path):
    evolve.run_evolution(tmp_path, _config(rounds=2), evaluate=fake_evaluate, progress=False)
    with pytest.raises(ValueError, match="another config"):
        evolve.run_evolution(tmp_path, _config(rounds=2, seed=4), evaluate=fake_evaluate, progress=False)
    summary = evolve.run_evolution(tmp_path, _config(rounds=4), evaluate=fake_evaluate, progress=False)
    assert summary["evaluations"] == 10


_SCRIPT = """
import sys
from pathlib import Path
from tests.pipelines import test_evolve as t
from pipelines import evolve, locks
evolve.run_evolution(Path(sys.argv[1]), t._config(population_size=4, rounds=10), evaluate=t.fake_evaluate,
                     progress=False)
"""


def test_resume_after_sigkill_repeats_no_finished_evaluation(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "FAKE_SLEEP": "0.2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(out)], env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while len(list(out.glob("children/*/result.json"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("children/*/result.json")}
    assert 6 <= len(finished) < 14, "the search must be killed in the middle"
    assert len(evolve.load_state(out)["history"]) < 14

    evolve.run_evolution(out, _config(population_size=4, rounds=10), evaluate=fake_evaluate, progress=False)
    starts = _starts(out)
    for child, mtime in finished.items():
        assert starts.count(child) == 1, f"{child} was finished before the kill and evaluated again"
        assert (out / "children" / child / "result.json").stat().st_mtime_ns == mtime
    history = evolve.load_state(out)["history"]
    assert [h["child"] for h in history] == [f"c{k:04d}" for k in range(14)]
    # The RNG state was saved with every proposal: the resumed search is the uninterrupted one.
    evolve.run_evolution(tmp_path / "whole", _config(population_size=4, rounds=10), evaluate=fake_evaluate,
                         progress=False)
    assert _strip(history) == _strip(evolve.load_state(tmp_path / "whole")["history"])


def test_parallel_workers_evaluate_each_child_once(tmp_path):
    summary = evolve.run_evolution(tmp_path, _config(population_size=4, rounds=4), evaluate=fake_evaluate,
                                   workers=2, progress=False)
    assert summary["evaluations"] == 8
    assert sorted(_starts(tmp_path)) == [f"c{k:04d}" for k in range(8)]
    state = evolve.load_state(tmp_path)
    assert len(state["population"]) == 4 and state["pending"] == []


# -- proxy flags, workers and locks ------------------------------------------------------------------

def test_extending_a_search_with_other_proxy_flags_refuses(tmp_path):
    from pipelines.checks import UserError
    from pipelines.evolve import TrainEvaluator
    from tests.pipelines.test_holdout import IDS, _records

    records = _records(tmp_path / "records", IDS)
    other = _records(tmp_path / "other", [f"w{n:03d}" for n in range(8)])
    out = tmp_path / "search"
    config = _config(rounds=2)
    evolve.init_search(out, config, TrainEvaluator(data=records, train={"steps": 80, "steps_per_epoch": 10}))
    with pytest.raises(UserError) as err:
        evolve.init_search(out, _config(rounds=4),
                           TrainEvaluator(data=records, train={"steps": 10, "steps_per_epoch": 10}))
    assert str(err.value) == (
        f"{out / 'state.json'}: this search's children were trained with other proxy-training settings "
        "(--steps 80 -> 10); refusing to mix them in one population: use a new --out to start a new "
        "population, or the same flags to resume")
    assert evolve.load_state(out)["evaluator"]["train"] == {"steps": 80, "steps_per_epoch": 10}
    # Other data: the recorded held-out split (AssembleNet §3.2 fitness) refuses before anything is written.
    with pytest.raises(ValueError, match=r"not 0\.2 of .*other; use a new --out or the same data"):
        evolve.init_search(out, config, TrainEvaluator(data=other, train={"steps": 80, "steps_per_epoch": 10}))
    # A flag spelled out at its default trains the same children: that is a resume.
    same = TrainEvaluator(data=records, train={"steps": 80, "steps_per_epoch": 10, "frames": 16})
    assert evolve.init_search(out, _config(rounds=4), same)["config"]["rounds"] == 4


def pid_evaluate(structure: Structure, workdir: Path) -> tuple[float, dict]:
    """Writes its process id to <child>/worker.pid, then sleeps FAKE_SLEEP seconds and scores."""
    (Path(workdir) / "worker.pid").write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    return fake_score(structure)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its new parent, counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


_WORKERS_SCRIPT = """
import sys
from pathlib import Path
from tests.pipelines import test_evolve as t
from pipelines import evolve, locks
evolve.run_evolution(Path(sys.argv[1]), t._config(population_size=2, rounds=0), evaluate=t.pid_evaluate,
                     workers=2, progress=False)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_driver_is_sigkilled(tmp_path):
    env = {**os.environ, "FAKE_SLEEP": "300", "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-c", _WORKERS_SCRIPT, str(tmp_path)], env=env, cwd=ROOT)
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("children/*/worker.pid"))) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before its workers started"
        time.sleep(0.1)
    workers = [int(p.read_text()) for p in tmp_path.glob("children/*/worker.pid")]
    assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their SIGKILLed driver"


_CHILD_SCRIPT = """
import sys
from pathlib import Path
from tests.pipelines import test_evolve as t
from pipelines import evolve, locks
evolve.evaluate_child(Path(sys.argv[1]), sys.argv[2], t.pid_evaluate)
"""


def test_a_child_being_trained_is_locked_and_a_killed_holders_lock_is_taken_over(tmp_path):
    from pipelines.evolve import ChildBusy

    evolve.init_search(tmp_path, _config(population_size=2, rounds=0))
    child = evolve.propose_children(tmp_path, 1)[0]
    env = {**os.environ, "FAKE_SLEEP": "300", "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", _CHILD_SCRIPT, str(tmp_path), child], env=env, cwd=ROOT)
    pid_file = tmp_path / "children" / child / "worker.pid"
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            assert holder.poll() is None, "the holder ended before training"
            time.sleep(0.05)
        with pytest.raises(ChildBusy, match=f"child {child} is being trained by process {holder.pid} "):
            evolve.evaluate_child(tmp_path, child, fake_evaluate)
        assert _starts(tmp_path) == []  # not trained a second time
    finally:
        holder.kill()
        holder.wait()
    lock = tmp_path / "children" / child / evolve.CHILD_LOCK
    # a stale lock file of a dead process is left behind (pipelines.locks records the holder)...
    assert locks.read_holder(lock)["pid"] == holder.pid
    result = evolve.evaluate_child(tmp_path, child, fake_evaluate)  # ...and taken over
    assert _starts(tmp_path) == [child] and result["fitness"] == pytest.approx(
        fake_score(Structure.from_json(json.loads((tmp_path / "children" / child / "spec.json").read_text())
                                       ["structure"]))[0])
