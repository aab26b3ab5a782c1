"""The ablation runner and suites (ablation/): resume without redoing finished runs, tables,
the suites' variants, the report section and the CLI's one-line errors.

The suite tests replace `train_and_score` with `FakeTrainer`, a deterministic stand-in that records
each call: they check what each suite trains (structures, attention, seeds) and that its table is
well-formed, in seconds. The real harness is tested in tests/ablation/test_harness.py."""

import json
import math
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from ablation import runner
from ablation.benchmark import BenchmarkConfig
from ablation.harness import Budget
from model.structure import get_structure
from pipelines.checks import UserError
from tests.pipelines.test_cli import assert_one_line, run_cli

BUDGET = Budget(steps=2, batch_size=4, frames=4, size=32, warmup_steps=0)
BENCH = BenchmarkConfig(train_clips=12, val_clips=12, test_clips=12)


class FakeTrainer:
    """Stands in for harness.train_and_score: a score that depends on the structure, attention and
    seed; σ(w) and softmax(h) that make a known peer (the highest-indexed one) win the search."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def __call__(self, structure, bench, *, attention="none", object_stem=True, seed=0, budget=None, **kwargs):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("killed")
        s = get_structure(structure)
        self.calls.append({"structure": s, "attention": attention, "seed": seed})
        weights = {str(n.index): {str(j): 0.1 if (n.index + int(j)) % 3 == 0 else 0.8 for j in n.inputs}
                   for n in s.blocks}
        mix = {}
        if attention == "search":
            mix = {str(n.index): {str(p): float(p == max(s.peers(n.index))) for p in s.peers(n.index)}
                   for n in s.blocks}
        score = 0.4 + 0.01 * len(s.edges()) + 0.05 * ("object" in s.modalities) + 0.002 * seed
        return {"score": score, "params": 100 + len(s.edges()), "edge_weights": weights,
                "attention_weights": mix, "seconds": 0.0, "attention": attention}


def run(tmp_path, names, trainer, seeds=(0, 1, 2), **kwargs):
    return runner.run_suites(names, out=tmp_path, seeds=list(seeds), budget=BUDGET, benchmark=BENCH,
                             train=trainer, progress=False, **kwargs)


@runner.suite("test-counting", title="a test suite", paper={"a": 1.0}, order=("b", "a"))
def _counting(ctx):
    for variant in ("a", "b"):
        for seed in ctx.seeds:
            ctx.run(f"{variant}/{seed}", lambda seed=seed: ctx.train("tiny", seed=seed), variant=variant, seed=seed)


def test_resume_redoes_no_finished_run(tmp_path):
    killed = FakeTrainer(fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, ["test-counting"], killed, report=False)
    assert len(killed.calls) == 4
    assert len((tmp_path / runner.STORE).read_text().splitlines()) == 4
    resumed = FakeTrainer()
    tables = run(tmp_path, ["test-counting"], resumed, report=False)
    assert len(resumed.calls) == 2  # only b/1 and b/2 were left
    assert [(r["variant"], r["n"]) for r in tables["test-counting"]] == [("b", 3), ("a", 3)]
    again = FakeTrainer()
    run(tmp_path, ["test-counting"], again, report=False)
    assert again.calls == []


def test_a_torn_last_line_is_redone_and_not_glued(tmp_path):
    run(tmp_path, ["test-counting"], FakeTrainer(), seeds=(0,), report=False)
    store = tmp_path / runner.STORE
    lines = store.read_text().splitlines()
    store.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # killed mid-write
    trainer = FakeTrainer()
    run(tmp_path, ["test-counting"], trainer, seeds=(0,), report=False)
    assert len(trainer.calls) == 1
    rows = runner.ResultStore(store)
    assert rows.torn == 1 and len(rows.rows) == 2


def test_a_run_finished_by_another_process_is_reused(tmp_path):
    first, second = runner.ResultStore(tmp_path / "r.jsonl"), runner.ResultStore(tmp_path / "r.jsonl")
    first.append({"key": "s/a", "score": 0.5})
    assert second.get("s/a") == {"key": "s/a", "score": 0.5}
    ctx = runner.SuiteContext("s", bench=None, budget=BUDGET, seeds=[0], out=tmp_path / "s", store=second,
                              train=FakeTrainer())
    first.append({"key": "s/b", "score": 0.7})
    assert ctx.run("b", lambda: pytest.fail("ran a finished run")) == {"key": "s/b", "score": 0.7}
    assert ctx.run("c", lambda: {"score": 0.1}, variant="c")["suite"] == "s"
    assert runner.ResultStore(tmp_path / "r.jsonl").get("s/c")["variant"] == "c"


def _run_claimed(folder, started, release, key):
    store = runner.ResultStore(Path(folder) / "r.jsonl")
    ctx = runner.SuiteContext("s", bench=None, budget=BUDGET, seeds=[0], out=Path(folder) / "s", store=store,
                              train=FakeTrainer())

    def slow():
        started.set()
        release.wait(30)
        return {"score": 0.25, "pid": os.getpid()}

    ctx.run(key, slow, shared=True)


def test_a_run_another_process_is_running_is_waited_for_not_repeated(tmp_path):
    # Several `ablate` processes whose suites share the one-shot search: one trains it, the rest wait.
    mp = multiprocessing.get_context("fork")
    started, release = mp.Event(), mp.Event()
    other = mp.Process(target=_run_claimed, args=(str(tmp_path), started, release, "search"))
    other.start()
    assert started.wait(30)
    store = runner.ResultStore(tmp_path / "r.jsonl")
    ctx = runner.SuiteContext("s", bench=None, budget=BUDGET, seeds=[0], out=tmp_path / "s", store=store,
                              train=FakeTrainer())
    threading.Timer(0.5, release.set).start()
    row = ctx.run("search", lambda: pytest.fail("ran a run another process was running"), shared=True)
    other.join(30)
    assert row["pid"] == other.pid and row["score"] == 0.25
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1
    assert ctx.run("other", lambda: {"score": 0.5})["score"] == 0.5  # a different key is not blocked


def test_aggregate_mean_std_paper_and_seeds():
    info = runner.SuiteInfo("s", lambda ctx: None, "S", {"x": 50.0}, "", "top-1", ("x",))
    rows = [{"suite": "s", "key": f"s/x/{i}", "variant": "x", "seed": i, "score": v, "params": 7}
            for i, v in zip((2, 0, 1), (0.7, 0.5, 0.6), strict=True)]
    rows.append({"suite": "s", "key": "s/aux", "aux": True, "score": 0.9})
    rows.append({"suite": "s", "key": "s/y/0", "variant": "y", "seed": 0, "score": 0.3})
    table = runner.aggregate(rows, info)
    assert [r["variant"] for r in table] == ["x", "y"]
    x, y = table
    assert x["n"] == 3 and x["mean"] == pytest.approx(0.6) and x["std"] == pytest.approx(0.1)  # ddof 1
    assert x["scores"] == [0.5, 0.6, 0.7] and x["seeds"] == [0, 1, 2] and x["paper"] == 50.0 and x["params"] == 7
    assert y["n"] == 1 and math.isnan(y["std"]) and y["paper"] is None


def test_other_budget_in_the_same_folder_is_refused(tmp_path):
    run(tmp_path, ["test-counting"], FakeTrainer(), seeds=(0,), report=False)
    with pytest.raises(UserError, match="steps: 2 -> 3"):
        runner.run_suites(["test-counting"], out=tmp_path, seeds=[0], budget=Budget(
            steps=3, batch_size=4, frames=4, size=32, warmup_steps=0), benchmark=BENCH, train=FakeTrainer(),
            progress=False, report=False)
    with pytest.raises(UserError, match="unknown suite"):
        run(tmp_path, ["nosuch"], FakeTrainer())


def _peers(structure):
    return {n.index: n.peer for n in structure.blocks}


def test_table1_table4_objects_small(tmp_path):
    trainer = FakeTrainer()
    tables = run(tmp_path, ["table1", "table4", "objects"], trainer, seeds=(0, 1, 2))
    # Two searches (with / without objects), shared by Table 1 and Table 4; 3 seeds per row.
    searches = [c for c in trainer.calls if c["attention"] == "search"]
    assert len(searches) == 2 and len(trainer.calls) == 2 + 8 * 3 + 4 * 3 + 3 * 3
    assert {c["structure"].name for c in searches} == {"tiny_oneshot", "tiny_noobj_oneshot"}
    with_object = next(c["structure"] for c in searches if "object" in c["structure"].modalities)
    # The search covers every L(j) < L(i) edge.
    assert len(with_object.edges()) == sum(1 for i in with_object.blocks for j in with_object.nodes
                                           if j.level < i.level)

    t1 = {r["variant"]: r for r in tables["table1"]}
    assert len(t1) == 8 and all(r["n"] == 3 and len(r["scores"]) == 3 for r in t1.values())
    assert t1["peer, with object"]["paper"] == 56.38 and t1["none, without object"]["paper"] == 47.18
    peer_rows = [c for c in trainer.calls if c["attention"] == "peer"]
    searched = [c["structure"] for c in peer_rows if "object" in c["structure"].modalities]
    # The argmax peer of the fake search is each block's highest-indexed valid peer; σ(w) = 0.1 edges are pruned.
    expected_peers = {n.index: max(with_object.peers(n.index)) for n in with_object.blocks}
    assert _peers(searched[0]) == expected_peers
    assert all((int(j) + n.index) % 3 != 0 for n in searched[0].blocks for j in n.inputs if len(n.inputs) > 1)
    without = [c["structure"] for c in peer_rows if "object" not in c["structure"].modalities]
    assert without and all("object" not in c.modalities for c in without)

    t4 = {r["variant"]: r for r in tables["table4"]}
    assert list(t4) == ["Base", "Base + 1x1 conv.", "Random peer-attention", "Our peer-attention"]
    assert {c["attention"] for c in trainer.calls} == {"search", "none", "static", "self", "peer", "conv"}
    random_peers = [_peers(c["structure"]) for c in peer_rows if c["structure"].name.endswith("randompeers0")]
    assert len(random_peers) == 3 and random_peers[0] != expected_peers
    assert all(p in get_structure(searched[0]).peers(i) for i, p in random_peers[0].items())

    objects = {r["variant"]: r for r in tables["objects"]}
    assert list(objects) == ["object fraction 0", "object fraction 0.5", "object fraction 1"]
    assert [objects[v]["x"] for v in objects] == [0.0, 0.5, 1.0]
    object_edges = sorted({sum(1 for j, _ in c["structure"].edges() if j == 2) for c in trainer.calls
                           if c["structure"].name.startswith("tiny_obj")})
    assert object_edges == [0, 3, 6]  # tiny has 6 blocks, each fed by the object stem

    for name in ("table1", "table4", "objects"):
        saved = json.loads((tmp_path / name / "results.json").read_text())
        assert saved["suite"] == name and len(saved["rows"]) == len(tables[name])
        header = (tmp_path / name / "results.csv").read_text().splitlines()[0]
        assert header == ",".join(runner.TABLE_COLUMNS)
    assert (tmp_path / "table1" / "searched_object.json").exists()
    markdown = (tmp_path / "results.md").read_text()
    assert "| peer, with object | 3 |" in markdown and "56.38" in markdown
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Ablation: AssembleNet++ Table 1" in html and html.count("data:image/png;base64") == 3
    assert "Not available" not in html  # an ablation folder's report holds its tables only
    assert (tmp_path / "report" / "ablation_table1.png").stat().st_size > 1000


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0,x"], "argument --seeds: expected distinct non-negative integers separated by commas, e.g. "
                         "0,1,2; got '0,x'"),
    (["--size", "40"], "argument --size: expected a multiple of 32 (the model's total stride), got '40'"),
    (["--steps", "0"], "argument --steps: expected a positive integer, got '0'"),
])
def test_cli_bad_flags_are_one_line(tmp_path, flags, message):
    result = run_cli("ablate", "--suite", "table1", "--out", tmp_path / "out", *flags, cwd=tmp_path)
    assert_one_line(result, f"assemblenet ablate: error: {message} (see assemblenet ablate --help)")


def test_cli_unknown_suite_is_one_line(tmp_path):
    result = run_cli("ablate", "--suite", "table1,nosuch", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("assemblenet ablate: error: unknown suite(s) nosuch; expected some of ")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out" / "benchmark").exists()  # refused before any work


@pytest.mark.slow
def test_objects_suite_with_real_training(tmp_path):
    """The `objects` suite end to end with the real harness (one seed, two steps: the plumbing, not
    the accuracy): three trained models, their table, and parameter counts that grow with the object edges
    (each object edge adds a 151 -> C projection)."""
    tables = runner.run_suites(["objects"], out=tmp_path, seeds=[0], budget=BUDGET, benchmark=BENCH,
                               progress=False)
    rows = {r["variant"]: r for r in tables["objects"]}
    assert list(rows) == ["object fraction 0", "object fraction 0.5", "object fraction 1"]
    assert all(r["n"] == 1 and 0.0 <= r["mean"] <= 1.0 for r in rows.values())
    params = [rows[v]["params"] for v in rows]
    assert params[0] < params[1] < params[2]
    stored = runner.ResultStore(tmp_path / runner.STORE).suite_rows("objects")
    assert {len(r["edge_weights"]) for r in stored} == {6} and all(r["steps"] == 2 for r in stored)
    assert (tmp_path / "report" / "ablation_objects.png").exists()


def test_objects_suite_on_the_fast_path_compiles_once_and_keeps_its_folder_to_it(tmp_path, monkeypatch):
    """With ASSEMBLENET_ABLATION_FASTPATH=1 a suite's runs train on one ChildTrainer: fraction 0 has no
    object stem (a model of its own), fractions ½ and 1 differ only in object edges (one model for their
    four runs); each row
    reports the plain model's parameters. The folder is then refused to the plain path."""
    from ablation import fastpath

    monkeypatch.setenv(fastpath.FASTPATH_ENV, "1")
    monkeypatch.setattr(fastpath, "_TRAINERS", {})
    tables = runner.run_suites(["objects"], out=tmp_path, seeds=[0, 1], budget=BUDGET, benchmark=BENCH,
                               progress=False, report=False)
    stored = runner.ResultStore(tmp_path / runner.STORE).suite_rows("objects")
    assert [r["compiled"] for r in stored] == [True, False, True, False, False, False]
    (trainer,) = fastpath._TRAINERS.values()
    assert trainer.compiles == 2
    params = [r["params"] for r in tables["objects"]]
    assert params[0] < params[1] < params[2]
    assert json.loads((tmp_path / runner.SETTINGS).read_text())["trainer"] == {"fastpath": True}
    monkeypatch.setenv(fastpath.FASTPATH_ENV, "0")
    with pytest.raises(UserError, match="another trainer"):
        runner.run_suites(["objects"], out=tmp_path, seeds=[0], budget=BUDGET, benchmark=BENCH,
                          progress=False, report=False)


def test_modalities_suite_small(tmp_path):
    trainer = FakeTrainer()
    tables = run(tmp_path, ["modalities"], trainer, seeds=(0, 1, 2), report=False)
    assert [r["variant"] for r in tables["modalities"]] == ["rgb", "flow", "object", "rgb + flow",
                                                           "rgb + flow + object"]
    assert all(r["n"] == 3 and r["paper"] is None for r in tables["modalities"])
    seen = [c["structure"].modalities for c in trainer.calls[::3]]
    assert seen == [("rgb",), ("flow",), ("object",), ("rgb", "flow"), ("rgb", "flow", "object")]
