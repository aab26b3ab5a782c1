"""Benchmark v2 (planted answers) and its suites: the decoy stream, per-clip segmenter failure, the
probe that checks both, tagged input streams in the model, σ(w) traces and the suites' summaries."""

import hashlib
import json

import numpy as np
import pytest

from ablation import benchmark as B
from ablation import runner
from ablation.harness import Budget, decoy_stems, with_decoy
from ablation.planted_suite import decoy_verdict
from ablation.stats import permutation_test
from model.oneshot import over_connected
from model.structure import Structure, get_structure, stream_modality
from pipelines.checks import UserError

SMALL = dict(frames=4, size=32, train_clips=24, val_clips=12, test_clips=2)


@pytest.fixture(scope="module")
def v2():
    return B.generate(B.versioned("v2", **SMALL), workers=1)


def test_v1_is_unchanged_by_v2():
    # Digests and arrays of v1 as they were before v2 existed: cached v1 benchmarks and their results stay valid.
    assert B.BenchmarkConfig().digest() == "beb91735853c"
    assert B.BenchmarkConfig(seed=3, frames=4, size=32, train_clips=24, val_clips=24, test_clips=4).digest() == \
        "a8f7a2958e18"
    train = B.generate(B.BenchmarkConfig(frames=4, size=32, train_clips=24, val_clips=12, test_clips=2),
                       workers=1).splits["train"]
    digest = hashlib.sha256(train.rgb.tobytes() + train.object.tobytes() + train.flow.tobytes()).hexdigest()
    assert digest[:16] == "8617d64e512ecb6a"
    assert B.versioned("v2").digest() != B.BenchmarkConfig().digest()
    with pytest.raises(ValueError, match="v3"):
        B.versioned("v3")


def test_decoy_is_another_clips_flow(v2):
    for split in B.SPLITS:
        data = v2.splits[split]
        source = data.decoy_source
        assert sorted(source.tolist()) == list(range(len(data)))  # a permutation ...
        assert not np.any(source == np.arange(len(data)))  # ... with no clip its own decoy
    index = np.array([0, 5, 7])
    inputs = v2.inputs("train", index, ("flow", B.DECOY_STREAM))
    np.testing.assert_array_equal(inputs[B.DECOY_STREAM],
                                  v2.splits["train"].flow[v2.splits["train"].decoy_source[index]].astype(np.float32))
    assert not np.array_equal(inputs[B.DECOY_STREAM], inputs["flow"])


def test_failed_segmenter_shows_no_object_and_rgb_shows_the_type(v2):
    data = v2.splits["train"]
    failed = data.object_failed
    assert 0 < failed.sum() < len(data)
    object_ids = np.isin(data.object, B.OBJECT_IDS).any(axis=(1, 2, 3))
    assert not object_ids[failed].any()  # the segmenter saw nothing where it failed ...
    assert object_ids[~failed].all()  # ... and something everywhere else
    assert (data.mask_state[failed][:, 0] == B.MASK_MISSED).all()
    # The actor's pixel colour at its centre in frame 0 is its own type's colour where the segmenter failed.
    for k in np.flatnonzero(failed):
        x, y = np.round(data.actor_path[k, 0]).astype(int)
        colour = data.rgb[k, 0, y, x].astype(np.float64) / 127.5 - 1
        distances = [np.linalg.norm(colour - np.asarray(c)) for c in B.TYPE_COLOURS]
        assert int(np.argmin(distances)) == data.object_type[k]


def test_v2_failure_rate_is_the_configured_one():
    config = B.versioned("v2", frames=2, size=32, train_clips=400, val_clips=2, test_clips=2, object_failure_rate=0.3)
    data = B.generate_split(config, "train", workers=1)
    assert abs(data.object_failed.mean() - 0.3) < 0.07  # 400 Bernoulli(0.3) draws: std 0.023


def test_save_load_keeps_v2_fields(tmp_path, v2):
    path = B.save(v2, tmp_path / "b.npz")
    loaded = B.load(path)
    assert loaded.config == v2.config
    np.testing.assert_array_equal(loaded.splits["val"].decoy_source, v2.splits["val"].decoy_source)
    np.testing.assert_array_equal(loaded.splits["val"].object_failed, v2.splits["val"].object_failed)


def test_oracle_decoy_at_chance_and_reliability_split_as_designed():
    bench = B.generate(B.versioned("v2", frames=16, size=32, train_clips=360, val_clips=240, test_clips=2))
    oracle = B.oracle_check(bench)
    assert oracle["flow"]["motion_accuracy"] > 0.8
    assert oracle[B.DECOY_STREAM]["motion_accuracy"] < 0.4  # chance 0.25; the real flow's probe reads > 0.8
    rgb, masks = oracle["rgb"], oracle["object"]
    assert rgb["segmenter_failed"]["object_accuracy"] > rgb["segmenter_ok"]["object_accuracy"] + 0.1
    assert masks["segmenter_ok"]["object_accuracy"] > masks["segmenter_failed"]["object_accuracy"] + 0.1


def test_streams_in_structures():
    assert stream_modality("flow_decoy") == "flow" and stream_modality("object") == "object"
    assert stream_modality("depth_x") == "" and stream_modality("flow_") == "" and stream_modality("flowx") == ""
    tiny = get_structure("tiny")
    decoy = with_decoy(tiny)
    (stem,) = decoy_stems(decoy)
    assert decoy.node(stem).modality == "flow" and decoy.node(stem).stream == B.DECOY_STREAM
    assert decoy.modalities == ("rgb", "flow", "object", B.DECOY_STREAM)
    flow_fed = {n.index for n in tiny.blocks if 1 in n.inputs}
    assert {n.index for n in decoy.blocks if stem in n.inputs} == flow_fed
    assert Structure.from_json(decoy.to_json()) == decoy
    bad = decoy.to_json()
    bad["nodes"][-1]["inputs"] = ["depth_decoy"]
    with pytest.raises(ValueError, match="tagged stream"):
        Structure.from_json(bad)


def test_decoy_verdict():
    weights = {"5": {"0": 0.6, "1": 0.7, "9": 0.1}, "6": {"1": 0.5, "9": 0.45}}
    verdict = decoy_verdict(weights, [9])
    assert verdict["real_median"] == 0.6 and verdict["decoy_max"] == 0.45 and verdict["found"]
    assert verdict["decoy_lowest_in_block"] == 2  # the decoy is the weakest input of blocks 5 and 6
    missed = decoy_verdict({"5": {"0": 0.3, "1": 0.7, "9": 0.6}}, [9])
    assert not missed["found"] and missed["decoy_lowest_in_block"] == 0


def test_permutation_test_exact_values():
    # 3 vs 3 fully separated: 2 of the 20 labellings are as extreme (two-sided).
    assert permutation_test([3, 4, 5], [0, 1, 2]) == pytest.approx(0.1)
    assert permutation_test([1, 2], [1, 2]) == 1.0


class PlantedTrainer:
    """A stand-in for train_and_score: decoy edges get σ(w) 0.1, real ones 0.6; peer attention scores best."""

    def __init__(self):
        self.calls = []

    def __call__(self, structure, bench, *, attention="none", seed=0, trace_every=0, **kwargs):
        self.calls.append((structure.name, attention, seed, trace_every, kwargs.get("fusion_order")))
        decoys = {str(d) for d in decoy_stems(structure)}
        weights = {str(n.index): {str(j): 0.1 if str(j) in decoys else 0.6 for j in n.inputs}
                   for n in structure.blocks}
        mix = {str(n.index): {str(p): float(p == min(structure.peers(n.index))) for p in structure.peers(n.index)}
               for n in structure.blocks} if attention == "search" else {}
        row = {"score": 0.5 + 0.1 * (attention == "peer") + 0.01 * seed, "params": 10, "edge_weights": weights,
               "attention_weights": mix}
        if trace_every:
            row["edge_trace"] = {"steps": [0, 2], "score": [0.1, 0.5],
                                 "weights": {b: {j: [0.5, v] for j, v in r.items()} for b, r in weights.items()}}
        return row


def test_v2_suites_write_their_verdicts(tmp_path):
    trainer = PlantedTrainer()
    budget = Budget(steps=60, batch_size=4, frames=4, size=32, warmup_steps=0)
    tables = runner.run_suites(["connections", "oneshot", "attention"], out=tmp_path, seeds=[0, 1, 2],
                               budget=budget, benchmark=B.versioned("v2", **SMALL), train=trainer,
                               progress=False)
    assert [r["variant"] for r in tables["attention"]] == ["none, with object", "static, with object",
                                                           "self, with object", "peer, with object"]
    for order in ("project_first", "weight_first"):
        assert '"found_in": 3' in (tmp_path / "connections" / f"summary_{order}.json").read_text()
        assert (tmp_path / "connections" / f"sigma_{order}.png").stat().st_size > 1000
    traced = [c for c in trainer.calls if c[0].endswith("_oneshot") and c[1] == "none"]
    assert {c[3] for c in traced} == {2} and len(traced) == 6  # 60 steps / 30; 2 fusion orders x 3 seeds
    oneshot = (tmp_path / "oneshot" / "summary.md").read_text()
    assert "Decoy edges removed: 100% ± 0%; real edges removed: 0% ± 0%" in oneshot
    results = (tmp_path / "results.md").read_text()
    # peer (0.6 + 0.01 seed) vs none (0.5 + 0.01 seed) over 3 seeds each: fully separated, exact p = 0.1.
    assert "| peer, with object − none, with object | 10.00 | 3 vs 3 | 0.1 |" in results
    html = (tmp_path / "report" / "index.html").read_text()
    assert "+10.00 points, p = 0.1 (permutation test)" in html
    assert "fusion order weight_first (decoy edges red); found in 3 of 3" in html
    searched = Structure.from_json(tmp_path / "attention" / "searched_object.json")
    assert decoy_stems(searched) and not any(j in decoy_stems(searched) for j, _ in searched.edges())
    assert over_connected(with_decoy("tiny")).name == "tiny_decoy_oneshot"


def test_v2_suites_refuse_v1(tmp_path):
    with pytest.raises(UserError, match="benchmark v2"):
        runner.run_suites(["connections"], out=tmp_path, seeds=[0], budget=Budget(steps=2, batch_size=4, frames=4,
                          size=32, warmup_steps=0), benchmark=B.BenchmarkConfig(**SMALL), train=PlantedTrainer(),
                          progress=False, report=False)


def test_train_and_score_feeds_the_decoy_and_traces_sigma(v2):
    from ablation.harness import train_and_score

    structure = with_decoy("tiny")
    budget = Budget(steps=3, batch_size=4, frames=4, size=32, warmup_steps=0)
    row = train_and_score(structure, v2, budget=budget, trace_every=2)
    (stem,) = decoy_stems(structure)
    trace = row["edge_trace"]
    assert trace["steps"] == [0, 2, 3] and len(trace["score"]) == 3
    assert trace["score"][-1] == pytest.approx(row["score"])  # the last point is the run's own score
    assert trace["weights"]["3"][str(stem)][0] == pytest.approx(0.5)  # σ(0): every edge starts even
    assert trace["weights"]["3"][str(stem)][-1] == pytest.approx(row["edge_weights"]["3"][str(stem)])
    assert trace["weights"]["3"][str(stem)][-1] != pytest.approx(0.5)  # it learned
    failed = v2.splits["val"].object_failed
    assert row["score"] == pytest.approx(row["score_segmenter_failed"] * failed.mean()
                                         + row["score_segmenter_ok"] * (1 - failed.mean()))


def test_the_connections_summary_covers_every_seed_of_the_folder(tmp_path):
    """Two processes' seeds in one folder: the summary and the plot of each fusion order hold all of them."""
    budget = Budget(steps=60, batch_size=4, frames=4, size=32, warmup_steps=0)
    for seeds in ([0, 2], [1]):
        runner.run_suites(["connections"], out=tmp_path, seeds=seeds, budget=budget,
                          benchmark=B.versioned("v2", **SMALL), train=PlantedTrainer(), progress=False)
    for order in ("project_first", "weight_first"):
        summary = json.loads((tmp_path / "connections" / f"summary_{order}.json").read_text())
        assert summary["seeds"] == [0, 1, 2] and summary["found_in"] == 3
        assert [r["seed"] for r in summary["per_seed"]] == [0, 1, 2]
