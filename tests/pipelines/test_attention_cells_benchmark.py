"""benchmarks/attention_cells.py: the searched cell at matched added cost, and the pooled statistics."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from model.attention_nas import NONLOCAL, cell_cost

_spec = importlib.util.spec_from_file_location(
    "attention_cells", Path(__file__).resolve().parents[2] / "benchmarks" / "attention_cells.py"
)
AC = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(AC)

SHAPES = {"res3_0": (4, 4, 4, 64), "res4_0": (4, 2, 2, 128)}  # the ResNet proxy at 4 × 32²
WIDE = {  # a derived cell of the kind the searches pick: 3x3x3 G₁, ~17x the non-local block's params
    "kind": "cell",
    "normalize": True,
    "operations": [
        {"inputs": [0], "g1": "conv3x3x3", "g2": "conv3x3x3"},
        {"inputs": [0, 1], "g1": "conv3x3x3", "type": "map", "dimension": "temporal", "reduction": 0.25},
    ],
}


def test_matched_width_is_the_grid_width_closest_to_the_nonlocal_params():
    target = AC.added_cost(NONLOCAL, SHAPES)["params"]
    assert target == 42016  # θ, φ, g: C·C/2 (+bias), W_z, BN at C = 64 and 128
    assert AC.added_cost(WIDE, SHAPES)["params"] > 15 * target
    matched = AC.matched_width(WIDE, target, SHAPES)
    k = round(matched["width"] * 64)
    assert matched["width"] == k / 64 and 1 <= k < 64 and matched["operations"] == WIDE["operations"]
    params = lambda w: sum(cell_cost({**WIDE, "width": w}, s)["params"] for s in SHAPES.values())
    gap = abs(params(k / 64) - target)
    assert gap < abs(params((k - 1) / 64) - target) and gap < abs(params((k + 1) / 64) - target)
    assert gap < 0.15 * target


def test_statistics_pool_full_width_and_matched_cells_apart():
    rows = [
        {"variant": "none", "top1": {"values": [0.3, 0.35, 0.32]}},
        {"variant": "non-local", "top1": {"values": [0.5, 0.52, 0.55]}},
        {"variant": "searched (search seed 0)", "top1": {"values": [0.6, 0.61, 0.62]}},
        {"variant": "searched, matched cost (search seed 0,1, width 0.2)", "top1": {"values": [0.4, 0.42, 0.41]}},
    ]
    stats = AC.statistics([], rows)
    assert stats["searched_pooled"]["n"] == 3
    # search seeds 0 and 1 derived the same cell: its runs count once per search seed
    assert stats["searched_matched_pooled"]["n"] == 6
    assert stats["searched_matched_pooled"]["mean"] == pytest.approx(0.41)
    assert set(stats["p_values"]) == {
        "searched vs non-local", "searched vs none", "searched, matched cost vs non-local",
        "searched, matched cost vs none", "non-local vs none",
    }
    assert [AC.variant_kind(r["variant"]) for r in rows] == ["none", "non-local", "searched", "searched-matched"]


def test_agreement_counts_seed_pairs_per_categorical_choice_against_one_over_n():
    candidates = {"activation": ["none", "relu", "sigmoid", "softmax"], "g1": ["conv1x1x1", "conv3x3x3"],
                  "type": ["map", "dot"], "dimension": ["spatial", "temporal"]}
    cell = lambda act, g1, inputs, pair=("map", "spatial"): {
        "operations": [{"inputs": inputs, "activation": act, "g1": g1, "type": pair[0], "dimension": pair[1]}]}
    cells = [cell("relu", "conv1x1x1", [0]), cell("relu", "conv3x3x3", [0]),
             cell("sigmoid", "conv1x1x1", [0, 1], ("dot", "spatial"))]
    a = AC.agreement(cells, candidates, draws=4000)
    assert (a["agree"], a["total"]) == (1, 5)
    assert a["differ"] == ["op1.inputs", "op1.activation", "op1.g1", "op1.type"]
    # pairs (0,1), (0,2), (1,2): activation agrees once, g1 once -> 2 of 6; inputs, type and dimension
    # (one pair, derived jointly) are left out of the rate
    assert a["choices"] == 2 and a["pairwise"] == pytest.approx(2 / 6)
    assert a["chance"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert (a["joint_agree"], a["joint_total"]) == (0, 1)  # seed 2 took another (type, dimension) pair
    # Three random seeds: `g1` (2 candidates) always has 1 agreeing pair, all 3 with P 1/4; `activation`
    # (4) has 0 pairs with P 24/64, 3 with P 4/64. Fewer than 2 of 6 only if g1 has 1 and activation 0.
    assert a["p"] == pytest.approx(1 - (3 / 4) * (24 / 64), abs=0.03)
    same = AC.agreement([cells[0]] * 3, candidates, draws=4000)
    assert same["pairwise"] == 1.0 and same["p"] == pytest.approx((4 / 64) * (1 / 4), abs=0.006)
    assert (same["joint_agree"], same["joint_total"]) == (1, 1)
    assert "pairwise" not in AC.agreement(cells)  # without the search space: the counts only


def test_pool_rows_joins_one_variants_seed_groups_and_counts_a_repeated_seed_once():
    row = lambda name, seeds, values: {"variant": name, "seeds": seeds, "top1": AC.summary(values)}
    rows = [row("none", [0, 1], [0.5, 0.7]), row("non-local", [0], [0.9]), row("none", [1, 2], [0.1, 0.6])]
    pooled = AC.pool_rows(rows)
    assert [r["variant"] for r in pooled] == ["none", "non-local"]
    assert pooled[0]["seeds"] == [0, 1, 2] and pooled[0]["top1"]["values"] == [0.5, 0.7, 0.6]  # seed 1: first run
    assert pooled[0]["top1"]["mean"] == pytest.approx(0.6) and pooled[0]["top1"]["n"] == 3
    # Rows of older reports (no seeds) are not merged into one another.
    old = [{"variant": "none", "top1": AC.summary([0.2])}, {"variant": "none", "top1": AC.summary([0.4])}]
    assert [r["top1"]["values"] for r in AC.pool_rows(old)] == [[0.2], [0.4]]


def test_planted_plot_reports_when_each_choice_settled(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "attention_nas_planted", Path(__file__).resolve().parents[2] / "benchmarks" / "attention_nas_planted.py"
    )
    planted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(planted)
    chosen = ["temporal", "spatial", "temporal", "temporal"]
    history = [{"step": s, "mean_entropy": 1 - 0.1 * s, "entropy": {"op1.dimension": 1 - 0.1 * s},
                "chosen": {"op1.dimension": c}} for s, c in enumerate(chosen)]
    assert planted.settled_at(history, "op1.dimension") == 2
    for seed in (0, 1):
        folder = tmp_path / "search" / "resnet" / f"search_seed{seed}"
        folder.mkdir(parents=True)
        (folder / "search.json").write_text(
            json.dumps({"config": {"seed": seed}, "history": history, "supernet_accuracy": 0.75})
        )
    assert planted.main(["plot", "--searches", str(tmp_path / "search"), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "choices.md").read_text()
    assert "| op1.dimension | temporal (0.700; 2) | temporal (0.700; 2) |" in table
    assert "| supernet top-1 (test split) | 0.750 | 0.750 |" in table
    assert (tmp_path / "report" / "choices_resnet.png").read_bytes()[:4] == b"\x89PNG"


def test_near_uniform_weights_derive_the_same_type_and_dimension_for_every_seed():
    """Why agreement leaves type and dimension out of its rate: with dot-product excluded on spatial
    maps, a spatial map takes p_spatial whole, so weights that learned nothing always derive it."""
    from model.attention_nas.supernet import best_type_and_dimension

    rng = np.random.default_rng(0)
    for _ in range(20):
        noise = 1 + 0.05 * rng.standard_normal(5)  # about uniform: ±5 %
        dims = dict(zip(("spatial", "temporal", "spatiotemporal"), noise[:3] / noise[:3].sum(), strict=True))
        types = dict(zip(("map", "dot"), noise[3:] / noise[3:].sum(), strict=True))
        pair = best_type_and_dimension({"type": types, "dimension": dims}, [["dot", "spatial"]])
        assert pair == ("map", "spatial")
    # with nothing excluded the same weights give p_d * p_type: the largest of each
    dims, types = {"spatial": 0.3, "temporal": 0.4, "spatiotemporal": 0.3}, {"map": 0.45, "dot": 0.55}
    assert best_type_and_dimension({"type": types, "dimension": dims}, []) == ("dot", "temporal")
