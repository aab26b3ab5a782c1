"""Suites `evolution` (AssembleNet Fig. 4 / Table 3) and `oneshot` (AssembleNet++ §3.5 pruning, peers).

The suites run through the runner (run_suites) on a tiny generated benchmark, with a deterministic
stand-in for the harness's training (the runner's `train=` seam) so that each test takes seconds:
tests/ablation/stand_in.py. It logs every call to a file, so resuming can be checked to
retrain nothing finished, also across worker processes.
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ablation import evolution_suite, oneshot_suite
from ablation.benchmark import BenchmarkConfig
from ablation.runner import run_suites
from model import evolution
from model.oneshot import over_connected
from model.structure import Structure, tiny
from tests.ablation.stand_in import BUDGET, LOG, Killed, fake_train

SPACE = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)
SMALL = evolution_suite.EvolutionSuiteConfig(population_size=3, rounds=4, space=SPACE)
BENCH = BenchmarkConfig(train_clips=8, val_clips=4, test_clips=4)


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """The stand-in's call log: calls() -> the calls so far."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(LOG, str(log))
    monkeypatch.setattr(evolution_suite, "CONFIG", SMALL)

    def read():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return read


def _run(names, out, seeds=(0, 1, 2), train=fake_train, report=False):
    return run_suites(list(names), out=out, seeds=list(seeds), budget=BUDGET, benchmark=BENCH, progress=False,
                      train=train, report=report)


def _train(structure, **kwargs):
    """ctx.train of the stand-in, for calling the suite's functions directly."""
    from ablation.benchmark import generate

    bench = _train.bench = getattr(_train, "bench", None) or generate(dataclasses.replace(BENCH, frames=4, size=32))
    return fake_train(structure, bench, budget=BUDGET, **kwargs)


# -- evolution --------------------------------------------------------------------------------------

def test_the_evolution_suite_writes_table_3_and_figure_4(calls, tmp_path):
    tables = _run(["evolution"], tmp_path, report=True)
    table = {row["variant"]: row for row in tables["evolution"]}
    assert list(table) == [*evolution.STRATEGIES, *evolution.HAND_DESIGNED]  # the suite's order
    for variant, row in table.items():
        assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
        assert row["mean"] == pytest.approx(np.mean(row["scores"]))
        assert row["std"] == pytest.approx(np.std(row["scores"], ddof=1))
        assert row["paper"] == evolution_suite.PAPER.get(variant)
    # 3 methods x 3 seeds x (7 children + the best on test) + 5 baselines x 3 seeds.
    assert len(calls()) == 9 * 8 + 15
    assert [c["split"] for c in calls()].count("test") == 9 + 15
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    fig4 = (tmp_path / "evolution" / "fig4.csv").read_text().splitlines()
    assert fig4[0] == "method,round,top3_mean,std,seeds" and len(fig4) == 1 + 3 * 7
    guided = [r["curve"] for r in rows if r["variant"] == "guided"]
    first = fig4[1].split(",")
    assert first[:2] == ["guided", "1"] and float(first[2]) == pytest.approx(np.mean([c[0] for c in guided]), 1e-5)
    assert (tmp_path / "evolution" / "fig4.png").stat().st_size > 1000
    assert "AssembleNet Fig. 4 / Table 3" in (tmp_path / "results.md").read_text()
    html = (tmp_path / "report" / "index.html").read_text()
    assert "AssembleNet Fig. 4 on the benchmark: mean validation top-1" in html
    assert (tmp_path / "report" / "ablation_evolution_fig4.png").stat().st_size > 1000


@pytest.mark.parametrize("method", evolution_suite.METHODS)
def test_a_search_scores_children_on_val_and_its_best_on_test(calls, tmp_path, method):
    row = evolution_suite.run_search(method, 1, train=_train, out=tmp_path, config=SMALL)
    assert [c["split"] for c in calls()] == ["val"] * 7 + ["test"]
    history = json.loads((evolution_suite.search_dir(tmp_path, method, 1) / "history.json").read_text())
    fitness = [h["fitness"] for h in history]
    assert row["children"] == 7 and row["val_fitness"] == max(fitness)
    assert row["curve"] == pytest.approx([np.mean(sorted(fitness[:r], reverse=True)[:3]) for r in range(1, 8)])
    best = calls()[-1]["structure"]
    assert best["nodes"] == history[int(np.argmax(fitness))]["structure"]["nodes"]
    assert row["score"] == pytest.approx(max(fitness) + 0.5)  # the stand-in's test score of that structure


def test_random_search_draws_every_child_at_random_and_the_evolutions_do_not(calls, tmp_path):
    phases = {}
    for method in evolution_suite.METHODS:
        evolution_suite.run_search(method, 0, train=_train, out=tmp_path, config=SMALL)
        history = json.loads((evolution_suite.search_dir(tmp_path, method, 0) / "history.json").read_text())
        phases[method] = [(h["parent"] is not None, h["info"]["strategy"]) for h in history]
    assert phases["random-search"] == [(False, "random")] * 7
    for method in ("guided", "random-edges"):
        assert phases[method] == [(False, "random")] * 3 + [(True, method)] * 4


def test_guided_children_inherit_the_edges_the_harness_learned(calls, tmp_path):
    """Eq. 2 with B = 0.5 and no node mutation: a child keeps exactly its parent's edges whose σ(w),
    as the harness returned them for the parent, exceed 0.5."""
    config = dataclasses.replace(SMALL, keep_threshold=0.5, rounds=6,
                                 space=dataclasses.replace(SPACE, max_mutations=0))
    evolution_suite.run_search("guided", 2, train=_train, out=tmp_path, config=config)
    folder = evolution_suite.search_dir(tmp_path, "guided", 2)
    history = json.loads((folder / "history.json").read_text())
    trained = [Structure.from_json(c["structure"]) for c in calls()]
    checked = 0
    for h in history:
        if h["parent"] is None:
            continue
        parent = json.loads((folder / "children" / h["parent"] / "result.json").read_text())
        learned = evolution.parse_edge_weights(parent["edge_weights"])
        # The weights came from the harness's call for the parent's structure.
        parent_structure = Structure.from_json(json.loads(
            (folder / "children" / h["parent"] / "spec.json").read_text())["structure"])
        assert set(learned) == set(parent_structure.edges())
        assert any(t.edges() == parent_structure.edges() for t in trained)
        strong = {e for e, w in learned.items() if w > 0.5}
        assert h["info"]["kept"] == len(strong) and h["info"]["dropped"] == len(learned) - len(strong)
        assert strong <= set(Structure.from_json(h["structure"]).edges())
        checked += 1
    assert checked == 6


def test_a_killed_evolution_suite_resumes_without_retraining_finished_runs(calls, tmp_path, monkeypatch):
    monkeypatch.setattr(evolution_suite, "CONFIG", dataclasses.replace(SMALL, baselines=("fully",)))
    monkeypatch.setenv("FAKE_KILL_AT", "12")  # fully (1), guided (7 + test), random-edges child 3 dies
    with pytest.raises(Killed):
        _run(["evolution"], tmp_path, seeds=[0])
    first = calls()
    assert len(first) == 11
    monkeypatch.delenv("FAKE_KILL_AT")
    _run(["evolution"], tmp_path, seeds=[0])
    resumed = calls()[11:]
    # Left: random-edges' children 3..7 and its test run, random search's 7 children and test run.
    assert len(resumed) == 5 + 1 + 8
    assert resumed[0]["split"] == "val" and resumed[0]["structure"] != first[-1]["structure"]
    _run(["evolution"], tmp_path, seeds=[0])
    assert len(calls()) == 11 + 14  # everything finished: nothing is trained again
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["variant"] for r in rows) == sorted(["fully", *evolution.STRATEGIES])


def test_the_search_state_resumes_inside_a_search(calls, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KILL_AT", "5")
    with pytest.raises(Killed):
        evolution_suite.run_search("guided", 0, train=_train, out=tmp_path, config=SMALL)
    monkeypatch.delenv("FAKE_KILL_AT")
    row = evolution_suite.run_search("guided", 0, train=_train, out=tmp_path, config=SMALL)
    assert len(calls()) == 7 + 1  # four children before the kill, three and the test run after it
    assert evolution_suite.run_search("guided", 0, train=_train, out=tmp_path, config=SMALL) == row
    assert len(calls()) == 8  # the test score is cached too


@pytest.mark.slow
def test_worker_processes_give_the_rows_of_one_process(calls, tmp_path, monkeypatch):
    config = dataclasses.replace(SMALL, baselines=("late_fusion",))
    monkeypatch.setattr(evolution_suite, "CONFIG", config)
    serial = _run(["evolution"], tmp_path / "serial", seeds=[0, 1])
    monkeypatch.setenv(evolution_suite.WORKERS_ENV, "2")
    parallel = _run(["evolution"], tmp_path / "parallel", seeds=[0, 1])
    assert parallel == serial
    assert len(calls()) == 2 * 2 * (3 * 8 + 1)  # the serial run's, then the workers'
    _run(["evolution"], tmp_path / "parallel", seeds=[0, 1])
    assert len(calls()) == 2 * 2 * (3 * 8 + 1)
    # The workers load the runner's cached benchmark instead of receiving it pickled.
    from ablation.benchmark import generate, load, load_or_generate

    bench = load_or_generate(dataclasses.replace(BENCH, frames=BUDGET.frames, size=BUDGET.size),
                             tmp_path / "parallel" / "benchmark")
    source = evolution_suite._bench_source(bench)
    assert source == str(tmp_path / "parallel" / "benchmark" / f"benchmark-{bench.config.digest()}.npz")
    assert Path(source).is_file()
    assert evolution_suite._bench_source(load(source)) == source
    in_memory = generate(dataclasses.replace(BENCH, frames=BUDGET.frames, size=BUDGET.size))
    assert evolution_suite._bench_source(in_memory) is in_memory


def test_baselines_are_trained_with_connection_learning_and_scored_on_test(calls):
    row = evolution_suite.run_baseline("fusion_at_4", 3, train=_train, config=SMALL)
    (call,) = calls()
    assert call["split"] == "test" and call["seed"] == 3 and call["attention"] == "none"
    expected = evolution.hand_designed("fusion_at_4", SPACE)
    assert Structure.from_json(call["structure"]).edges() == expected.edges()
    assert set(evolution.parse_edge_weights(row["edge_weights"])) == set(expected.edges())


def test_fig4_curves_average_the_seeds_per_round(tmp_path):
    rows = [{"variant": "guided", "seed": 0, "curve": [1.0, 2.0, 3.0]},
            {"variant": "guided", "seed": 1, "curve": [3.0, 4.0, 7.0]},
            {"variant": "random-search", "seed": 0, "curve": [1.0, 1.0, 1.0]},
            {"variant": "late_fusion", "seed": 0, "score": 9.0}]
    curves = evolution_suite.fig4_curves(rows)
    assert set(curves) == {"guided", "random-search"}
    assert curves["guided"]["mean"] == [2.0, 3.0, 5.0] and curves["guided"]["seeds"] == 2
    assert curves["guided"]["std"] == pytest.approx([math.sqrt(2), math.sqrt(2), 2 * math.sqrt(2)])
    assert np.isnan(curves["random-search"]["std"]).all()  # one seed: no spread
    paths = evolution_suite.write_fig4(rows, tmp_path, population_size=1)
    lines = paths["csv"].read_text().splitlines()
    assert lines[1] == "guided,1,2,1.41421,2" and len(lines) == 7
    assert paths["png"].stat().st_size > 1000


def test_the_worker_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(evolution_suite.WORKERS_ENV, "4")
    assert evolution_suite.workers_from_env() == 4
    monkeypatch.setenv(evolution_suite.WORKERS_ENV, "four")
    with pytest.raises(ValueError, match="ASSEMBLENET_ABLATION_WORKERS='four'"):
        evolution_suite.workers_from_env()


# -- one-shot --------------------------------------------------------------------------------------------

def test_the_oneshot_suite_prunes_at_0_2_and_reports_peer_agreement(calls, tmp_path):
    tables = _run(["oneshot"], tmp_path, report=True)
    table = {row["variant"]: row for row in tables["oneshot"]}
    assert list(table) == [oneshot_suite.SEARCH, oneshot_suite.PRUNED]
    assert all(row["n"] == 3 for row in table.values())
    searches = [c for c in calls() if c["attention"] == "search"]
    supernet = over_connected(tiny())
    assert len(searches) == 3 and all(c["split"] == "val" for c in calls())
    assert all(Structure.from_json(c["structure"]).edges() == supernet.edges() for c in searches)
    rows = {r["key"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    peers = []
    for seed in range(3):
        row = rows[f"oneshot/search/seed{seed}"]
        weights = evolution.parse_edge_weights(row["edge_weights"])
        final = Structure.from_json(row["final_structure"])
        assert set(final.edges()) >= {e for e, w in weights.items() if w > 0.2}
        assert row["edges_removed"] == len(supernet.edges()) - len(final.edges()) > 0
        for block, mix in row["attention_weights"].items():
            assert row["peers"][block] == int(max(mix, key=mix.get))
        pruned = [c for c in calls() if c["attention"] == "peer" and c["seed"] == seed]
        assert [Structure.from_json(c["structure"]).edges() for c in pruned] == [final.edges()]
        peers.append(row["peers"])
    summary = json.loads((tmp_path / "oneshot" / "summary.json").read_text())
    removed = [rows[f"oneshot/search/seed{s}"]["edges_removed"] for s in range(3)]
    assert summary["removed"]["per_seed"] == removed
    assert summary["removed"]["std"] == pytest.approx(np.std(removed, ddof=1))
    assert summary["peers_all_agree"] == pytest.approx(np.mean([len({p[b] for p in peers}) == 1 for b in peers[0]]))
    lines = (tmp_path / "oneshot" / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("seed,score,edges_searched") and lines[4].startswith("mean,") and len(lines) == 6
    assert "Argmax peers: the same in every seed" in (tmp_path / "oneshot" / "summary.md").read_text()
    assert (tmp_path / "oneshot" / "oneshot.png").stat().st_size > 1000
    assert "connections removed at σ(w) &gt; 0.2" in (tmp_path / "report" / "index.html").read_text()


def test_the_oneshot_summary_covers_every_seed_of_the_folder_not_only_this_processs(calls, tmp_path):
    """Processes sharing a folder each run their own seeds; the one that finishes last writes the summary
    over every seed in results.jsonl, not over its own."""
    _run(["oneshot"], tmp_path, seeds=[0, 2])
    _run(["oneshot"], tmp_path, seeds=[1])
    summary = json.loads((tmp_path / "oneshot" / "summary.json").read_text())
    rows = {r["key"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert summary["seeds"] == [0, 1, 2]
    assert summary["removed"]["per_seed"] == [rows[f"oneshot/search/seed{s}"]["edges_removed"] for s in range(3)]
    assert len((tmp_path / "oneshot" / "summary.csv").read_text().splitlines()) == 1 + 3 + 2


def test_table1_reuses_the_oneshot_suites_search(calls, tmp_path):
    _run(["oneshot"], tmp_path, seeds=[0, 1])
    before = len(calls())
    _run(["table1"], tmp_path, seeds=[0])
    searches = [Structure.from_json(c["structure"]) for c in calls()[before:] if c["attention"] == "search"]
    assert [len(s.stems) for s in searches] == [2]  # only the search without the object stem is new


def test_the_suites_register_without_importing_keras():
    import subprocess
    import sys

    code = ("import sys; from ablation import runner; runner.load_suites(); "
            "assert {'evolution', 'oneshot'} <= set(runner.SUITES); print('keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_peer_agreement_counts_blocks_and_pairs():
    agreement = oneshot_suite.peer_agreement({0: {"5": 1, "6": 2, "7": 3},
                                              1: {"5": 1, "6": 2, "7": 4},
                                              2: {"5": 1, "6": 0, "7": 4}})
    assert agreement["all_agree"] == pytest.approx(1 / 3)
    assert agreement["pairs"] == pytest.approx({"0-1": 2 / 3, "0-2": 1 / 3, "1-2": 2 / 3})
    assert agreement["pairwise"] == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match=">= 2 search seeds"):
        oneshot_suite.peer_agreement({0: {"5": 1}})


def test_chance_agreement_is_the_mean_of_one_over_the_peer_count():
    # tiny: blocks at levels 1, 1, 2, 2, 3, 4 have 3, 3, 5, 5, 7, 8 peers.
    expected = np.mean([1 / 3, 1 / 3, 1 / 5, 1 / 5, 1 / 7, 1 / 8])
    assert oneshot_suite.chance_agreement(tiny()) == pytest.approx(expected)


@pytest.mark.slow
def test_a_guided_search_on_the_real_harness_inherits_its_learned_weights(tmp_path):
    """The harness's real result feeds evolve.py: fitness from the validation split, the parent's
    trained σ(w) into Eq. 2 (B = 0.5: only edges the training pushed above 0.5 are kept)."""
    from ablation.benchmark import generate
    from ablation.harness import train_and_score

    bench = generate(dataclasses.replace(BENCH, frames=BUDGET.frames, size=BUDGET.size))
    config = dataclasses.replace(SMALL, population_size=1, rounds=1, keep_threshold=0.5,
                                 space=dataclasses.replace(SPACE, max_mutations=0))

    import keras

    # TensorFlow on a CPU compiles these graphs much faster without XLA (harness.Budget.jit_compile).
    budget = dataclasses.replace(BUDGET, jit_compile=False if keras.backend.backend() == "tensorflow" else "auto")

    def train(structure, **kwargs):
        return train_and_score(structure, bench, budget=budget, **kwargs)

    from pipelines import evolve

    folder = evolution_suite.search_dir(tmp_path, "guided", 0)
    evolve.run_evolution(folder, config.evolution_config("guided", 0), progress=False,
                         evaluate=evolution_suite.child_evaluator(train, seed=0))  # two trainings
    folder = folder / "children"
    parent = json.loads((folder / "c0000" / "result.json").read_text())
    learned = evolution.parse_edge_weights(parent["edge_weights"])
    assert learned and all(w != 0.5 for w in learned.values())  # trained, not the initial sigmoid(0)
    child = json.loads((folder / "c0001" / "spec.json").read_text())
    assert child["parent"] == "c0000"
    assert child["info"]["kept"] == sum(w > 0.5 for w in learned.values())
    assert {e for e, w in learned.items() if w > 0.5} <= set(Structure.from_json(child["structure"]).edges())
    harness = json.loads((folder / "c0000" / "harness.json").read_text())
    assert harness["eval_split"] == "val" and parent["fitness"] == harness["score"]


def test_stem_rms_reads_each_stems_output_and_sees_a_silenced_one():
    """The diagnostic behind the connections suite's finding: a stem whose layers were zeroed passes
    nothing on (its RMS is 0) while the others stay live."""
    from ablation.harness import stem_rms
    from model.assemblenet import build_assemblenet

    structure = tiny()
    model = build_assemblenet(structure, 4, frames=4, size=16)
    rng = np.random.default_rng(0)
    inputs = {t.name.split(":")[0]: rng.normal(size=(2, *t.shape[1:])).astype("float32") for t in model.inputs}
    live = stem_rms(model, structure, inputs)
    assert set(live) == {str(n.index) for n in structure.stems} and all(v > 0 for v in live.values())
    silenced = next(n.index for n in structure.stems if n.modality == "rgb")
    for layer in model.layers:
        if layer.name.startswith(f"stem{silenced}_"):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    after = stem_rms(model, structure, inputs)
    assert after[str(silenced)] == 0.0
    assert all(after[k] == pytest.approx(v, rel=1e-5) for k, v in live.items() if k != str(silenced))
