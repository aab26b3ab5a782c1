"""Suites `evolution` (AssembleNet Fig. 4 / Table 3) and `oneshot` (AssembleNet++ §3.5 pruning, peers).

A deterministic stand-in for the harness's proxy training keeps these tests to seconds (the harness
itself is tested in test_ablation.py): every edge gets a fixed quality q(e) from a hash of what it
connects; the validation fitness is the sum of q over the edges, the "learned" σ(w) of an edge is
sigmoid(3 q(e)), and the one-shot search's softmax(h) favours a hash-chosen peer per block, perturbed
by the seed. The stand-in counts its calls, so resuming can be checked to retrain nothing finished.
"""

import json
import math
import zlib

import numpy as np
import pytest

from model import evolution
from model.oneshot import over_connected
from model.structure import Structure, tiny
from pipelines.ablation import evolution_suite, oneshot_suite

SPACE = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4)


def _quality(structure: Structure, j: int, i: int) -> float:
    a, b = structure.node(j), structure.node(i)
    key = f"{a.level}-{a.inputs if a.is_stem else a.dilation}-{b.level}-{b.dilation}".encode()
    return zlib.crc32(key) / 2**32 * 2 - 1


class FakeHarness:
    """`train_and_score` with the harness's signature and result keys; logs every call."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[dict] = []
        self.fail_at = fail_at

    def train_and_score(self, structure, bench, *, attention="none", object_stem=None, seed=0, budget=None,
                        eval_split="val"):
        self.calls.append({"structure": structure.to_json(), "attention": attention, "seed": seed,
                           "split": eval_split, "bench": bench, "budget": budget})
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("killed")
        q = {(j, i): _quality(structure, j, i) for j, i in structure.edges()}
        score = sum(q.values()) + (0.5 if eval_split == "test" else 0.0)
        result = {"score": score, "params": 1000 + len(q), "seconds": 0.01,
                  "edge_weights": evolution.edge_weights_to_json(
                      {e: 1 / (1 + math.exp(-3 * v)) for e, v in q.items()})}
        if attention == "search":
            rng = np.random.default_rng(seed)
            result["attention_weights"] = {}
            for n in structure.blocks:
                peers = structure.peers(n.index)
                logits = np.array([zlib.crc32(f"{n.index}-{p}".encode()) / 2**32 for p in peers])
                logits = 4 * logits + rng.normal(0, 0.3, len(peers))
                h = np.exp(logits) / np.exp(logits).sum()
                result["attention_weights"][str(n.index)] = {str(p): float(v) for p, v in zip(peers, h, strict=True)}
        return result


@pytest.fixture
def fake(monkeypatch):
    harness = FakeHarness()
    monkeypatch.setattr(evolution_suite, "_harness", lambda: harness)
    monkeypatch.setattr(oneshot_suite, "_harness", lambda: harness)
    return harness


def _config(**kwargs):
    return evolution_suite.EvolutionSuiteConfig(**{"population_size": 3, "rounds": 4, "space": SPACE,
                                                   "baselines": ("late_fusion",), **kwargs})


# -- evolution --------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", evolution_suite.METHODS)
def test_a_search_trains_its_children_on_val_and_its_best_on_test(fake, tmp_path, method):
    row = evolution_suite.run_search(method, 1, bench="BENCH", budget="B", out=tmp_path, config=_config())
    assert [c["split"] for c in fake.calls] == ["val"] * 7 + ["test"]
    assert {c["bench"] for c in fake.calls} == {"BENCH"} and {c["budget"] for c in fake.calls} == {"B"}
    history = json.loads((tmp_path / "evolution" / method / "seed1" / "history.json").read_text())
    fitness = [h["fitness"] for h in history]
    assert row["children"] == 7 and row["val_fitness"] == max(fitness)
    assert row["curve"] == pytest.approx([np.mean(sorted(fitness[:r], reverse=True)[:3]) for r in range(1, 8)])
    best = fake.calls[-1]["structure"]
    assert best == history[int(np.argmax(fitness))]["structure"] | {"name": best["name"]}
    assert row["score"] == pytest.approx(max(fitness) + 0.5)  # the stand-in's test score of that structure


def test_random_search_draws_every_child_at_random_and_the_evolutions_do_not(fake, tmp_path):
    phases = {}
    for method in evolution_suite.METHODS:
        evolution_suite.run_search(method, 0, bench=None, budget=None, out=tmp_path, config=_config())
        history = json.loads((tmp_path / "evolution" / method / "seed0" / "history.json").read_text())
        phases[method] = [(h["parent"] is not None, h["info"]["strategy"]) for h in history]
    assert phases["random-search"] == [(False, "random")] * 7
    for method in ("guided", "random-edges"):
        assert phases[method] == [(False, "random")] * 3 + [(True, method)] * 4


def test_guided_children_inherit_the_edges_the_harness_learned(fake, tmp_path):
    """Eq. 2 with B = 0.5 and no node mutation: a child keeps exactly its parent's edges whose σ(w),
    as the harness returned them for the parent, exceed 0.5."""
    space = evolution.SearchSpace(width_scale=16, repeats=(0.5,) * 4, max_mutations=0)
    evolution_suite.run_search("guided", 2, bench=None, budget=None, out=tmp_path,
                               config=_config(space=space, keep_threshold=0.5, rounds=6))
    folder = tmp_path / "evolution" / "guided" / "seed2" / "children"
    history = json.loads((folder.parent / "history.json").read_text())
    checked = 0
    for h in history:
        if h["parent"] is None:
            continue
        parent = json.loads((folder / h["parent"] / "result.json").read_text())
        learned = evolution.parse_edge_weights(parent["edge_weights"])
        strong = {e for e, w in learned.items() if w > 0.5}
        assert h["info"]["kept"] == len(strong) and h["info"]["dropped"] == len(learned) - len(strong)
        assert strong <= set(Structure.from_json(h["structure"]).edges())
        checked += 1
    assert checked == 6


def test_a_killed_search_resumes_without_retraining_finished_children(monkeypatch, tmp_path):
    killed = FakeHarness(fail_at=5)
    monkeypatch.setattr(evolution_suite, "_harness", lambda: killed)
    with pytest.raises(KeyboardInterrupt):
        evolution_suite.run_search("guided", 0, bench=None, budget=None, out=tmp_path, config=_config())
    resumed = FakeHarness()
    monkeypatch.setattr(evolution_suite, "_harness", lambda: resumed)
    row = evolution_suite.run_search("guided", 0, bench=None, budget=None, out=tmp_path, config=_config())
    # Four children finished before the kill; the fifth, three more and the test run remain.
    assert len(resumed.calls) == 3 + 1
    assert resumed.calls[0]["structure"] == killed.calls[4]["structure"]
    assert row["children"] == 7
    again = FakeHarness()
    monkeypatch.setattr(evolution_suite, "_harness", lambda: again)
    assert evolution_suite.run_search("guided", 0, bench=None, budget=None, out=tmp_path,
                                      config=_config()) == row
    assert again.calls == []  # the test score is cached too


def test_baselines_are_trained_with_connection_learning_and_scored_on_test(fake):
    row = evolution_suite.run_baseline("fusion_at_4", 3, bench=None, budget=None, config=_config())
    (call,) = fake.calls
    assert call["split"] == "test" and call["seed"] == 3 and call["attention"] == "none"
    assert Structure.from_json(call["structure"]).edges() == evolution.hand_designed("fusion_at_4", SPACE).edges()
    assert set(evolution.parse_edge_weights(row["edge_weights"])) == set(
        evolution.hand_designed("fusion_at_4", SPACE).edges())


def test_fig4_curves_average_the_seeds_per_round(tmp_path):
    rows = [{"variant": "guided", "seed": 0, "curve": [1.0, 2.0, 3.0]},
            {"variant": "guided", "seed": 1, "curve": [3.0, 4.0, 5.0]},
            {"variant": "random-search", "seed": 0, "curve": [1.0, 1.0, 1.0]},
            {"variant": "late_fusion", "seed": 0, "score": 9.0}]
    curves = evolution_suite.fig4_curves(rows)
    assert set(curves) == {"guided", "random-search"}
    assert curves["guided"] == {"round": [1, 2, 3], "mean": [2.0, 3.0, 4.0], "std": [1.0, 1.0, 1.0], "seeds": 2}
    paths = evolution_suite.write_fig4(rows, tmp_path, population_size=1)
    lines = paths["csv"].read_text().splitlines()
    assert lines[0] == "method,round,top3_mean,std,seeds" and lines[1] == "guided,1,2,1,2" and len(lines) == 7
    assert paths["png"].stat().st_size > 1000


# -- one-shot --------------------------------------------------------------------------------------------

def test_a_oneshot_search_prunes_at_0_2_and_keeps_the_argmax_peer(fake):
    row = oneshot_suite.run_oneshot(4, bench=None, budget=None, layout="tiny")
    (call,) = fake.calls
    supernet = over_connected(tiny())
    assert call["attention"] == "search" and call["split"] == "val"
    assert Structure.from_json(call["structure"]).edges() == supernet.edges()
    weights = evolution.parse_edge_weights(row["edge_weights"])
    assert row["edges_searched"] == len(supernet.edges()) == len(weights)
    strong = {e for e, w in weights.items() if w > 0.2}
    final = Structure.from_json(row["final_structure"])
    assert set(final.edges()) >= strong  # plus the strongest input of a block that would keep none
    assert row["edges_removed"] == len(supernet.edges()) - len(final.edges()) > 0
    for block, mix in row["attention_weights"].items():
        assert row["peers"][block] == int(max(mix, key=mix.get))


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
    # tiny: levels 1, 1, 2, 2, 3, 4 with 3, 3, 5, 5, 7, 8 peers.
    assert oneshot_suite.chance_agreement(tiny()) == pytest.approx(np.mean([1 / 3, 1 / 3, 1 / 5, 1 / 5, 1 / 7, 1 / 8]))


def test_oneshot_summary_over_seeds(fake, tmp_path):
    rows = [{"seed": s, **oneshot_suite.run_oneshot(s, bench=None, budget=None)} for s in range(3)]
    summary = oneshot_suite.write_summary(rows, tiny(), tmp_path)
    removed = [r["edges_removed"] for r in rows]
    assert summary["removed"] == {"per_seed": removed, "mean": pytest.approx(np.mean(removed)),
                                  "std": pytest.approx(np.std(removed))}
    peers = [r["peers"] for r in rows]
    same = [len({p[b] for p in peers}) == 1 for b in peers[0]]
    assert summary["peers_all_agree"] == pytest.approx(np.mean(same))
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("seed,score,edges_searched") and lines[4].startswith("mean,") and len(lines) == 6
    assert (tmp_path / "oneshot.png").stat().st_size > 1000
