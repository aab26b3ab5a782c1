"""ablation/harness.py: the structure variants, the batch sampler, and one real
train_and_score on a tiny benchmark (a few steps: the keys and their ranges, not the accuracy)."""

import numpy as np
import pytest

from ablation import harness as H
from ablation.benchmark import BenchmarkConfig, generate
from model.structure import tiny


def test_without_object_stem_and_modalities():
    s = H.without_object_stem("tiny")
    assert s.modalities == ("rgb", "flow") and all(2 not in n.inputs for n in s.blocks)
    assert H.without_object_stem(s) is s
    flow = H.with_modalities("tiny", ["flow"])
    assert flow.modalities == ("flow",) and {n.index for n in flow.stems} == {1}
    assert flow.node(3).inputs == (1,) and flow.node(7).inputs == (5, 6)
    with pytest.raises(ValueError, match="no stem"):
        H.with_modalities("tiny", ["depth"])


def test_object_fraction():
    counts = {}
    for fraction in (0.0, 0.5, 1.0):
        s = H.with_object_fraction("tiny", fraction, seed=0)
        counts[fraction] = sum(1 for j, _ in s.edges() if j == 2)
    assert counts == {0.0: 0, 0.5: 3, 1.0: 6}
    assert "object" not in H.with_object_fraction("tiny", 0.0).modalities
    assert H.with_object_fraction("tiny", 0.5, seed=0) == H.with_object_fraction("tiny", 0.5, seed=0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        H.with_object_fraction("tiny", 1.5)


def test_random_peers_are_valid_and_fixed_by_the_seed():
    a, b = H.with_random_peers("tiny", seed=0), H.with_random_peers("tiny", seed=0)
    assert a == b
    s = tiny()
    for n in a.blocks:
        assert n.peer in s.peers(n.index)
    draws = {tuple(n.peer for n in H.with_random_peers("tiny", seed=k).blocks) for k in range(8)}
    assert len(draws) > 1


def test_batch_indices_cover_each_clip_once_per_epoch():
    index = H.batch_indices(10, 4, 5, seed=1)
    assert index.shape == (5, 4)
    flat = index.ravel()
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    np.testing.assert_array_equal(index, H.batch_indices(10, 4, 5, seed=1))
    assert not np.array_equal(index, H.batch_indices(10, 4, 5, seed=2))


def test_budget_errors():
    with pytest.raises(ValueError, match="multiple of 32"):
        H.Budget(size=48)
    with pytest.raises(ValueError, match="warmup_steps"):
        H.Budget(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="jit_compile"):
        H.Budget(jit_compile="xla")


@pytest.mark.slow
def test_train_and_score_search_model():
    bench = generate(BenchmarkConfig(frames=4, size=32, train_clips=24, val_clips=12, test_clips=12), workers=1)
    budget = H.Budget(steps=3, batch_size=4, frames=4, size=32, warmup_steps=0)
    result = H.train_and_score("tiny", bench, attention="search", seed=0, budget=budget)
    assert 0.0 <= result["score"] <= 1.0 and result["steps"] == 3 and not result["diverged"]
    assert result["params"] > 0 and result["seconds"] >= result["compile_seconds"] > 0
    s = tiny()
    assert result["edge_weights"] == {str(n.index): result["edge_weights"][str(n.index)] for n in s.blocks}
    for n in s.blocks:
        assert set(result["edge_weights"][str(n.index)]) == {str(j) for j in n.inputs}
        mix = result["attention_weights"][str(n.index)]
        assert set(mix) == {str(p) for p in s.peers(n.index)} and sum(mix.values()) == pytest.approx(1.0)
    plain = H.train_and_score("tiny", bench, object_stem=False, seed=0, budget=budget, eval_split="test")
    assert plain["attention_weights"] == {} and plain["eval_split"] == "test"
    assert "object" not in [n["inputs"][0] for n in plain["structure"]["nodes"] if n["level"] == 0]
    with pytest.raises(ValueError, match="budget asks for"):
        H.train_and_score("tiny", bench, budget=H.Budget(frames=8, size=32, steps=2, warmup_steps=0))
