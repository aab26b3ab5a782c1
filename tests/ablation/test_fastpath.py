"""The fast path of the ablation harness (ablation/fastpath.py): one compiled masked model
per shape.

- a child trained on the fast path ends with the same weights and score as the same child trained by
  harness.train_and_score (the plain path: a model built for the child alone), started from the same
  initial weights;
- children of one shape compile once: the train step is traced once and, under JAX, XLA compiles
  nothing for the later children, whether they differ in edges, in temporal resolutions (node
  mutation (1) of AssembleNet §3.2) or in the fused widths their edges give; the same child and seed
  after other children repeats its run;
- re-initialisation is deterministic per seed.
(That a masked edge has no effect on the forward pass, batch-norm statistics and gradients is tested in
tests/model/test_edge_masks.py.)
"""

import contextlib
import dataclasses

import keras
import numpy as np
import pytest

from ablation import fastpath
from ablation import harness as H
from ablation.benchmark import BenchmarkConfig, generate
from model import edge_masks
from model.assemblenet import build_assemblenet
from model.evolution import change_dilation, with_edges
from tests.model.test_edge_masks import MINI, MINI_T, REDILATED, REWIDTHED, SPARSE, child_values

BUDGET = H.Budget(steps=4, batch_size=4, frames=4, size=32, warmup_steps=1, learning_rate=0.05,
                  jit_compile=keras.backend.backend() == "jax")


def test_reinitialize_is_deterministic_per_seed_and_path():
    maximal = edge_masks.maximal(MINI)
    model = build_assemblenet(maximal, 5, frames=4, size=32, edge_masks=True)
    fastpath.reinitialize(model, seed=7)
    first = {v.path: np.asarray(v.numpy()) for v in model.weights}
    fastpath.reinitialize(model, seed=8)
    assert not np.array_equal(first["stem0_spatial_conv/kernel"], model.get_layer("stem0_spatial_conv").kernel.numpy())
    fastpath.reinitialize(model, seed=7)
    for v in model.weights:
        np.testing.assert_array_equal(first[v.path], np.asarray(v.numpy()), err_msg=v.path)
    assert np.all(first["block5_fusion/w"] == 0) and np.all(first["block5_fusion/mask"] == 1)
    assert np.all(first["stem0_spatial_bn/moving_variance"] == 1)


# -- the fast path trains the child the plain path trains ------------------------------------------------

@pytest.fixture(scope="module")
def bench():
    return generate(BenchmarkConfig(frames=4, size=32, train_clips=16, val_clips=8, test_clips=8), workers=1)


@pytest.fixture(scope="module")
def trainer(bench):
    return fastpath.ChildTrainer(bench, BUDGET)


@pytest.mark.parametrize("child, parent", [(SPARSE, MINI), (REDILATED, MINI_T), (REWIDTHED, MINI_T)],
                         ids=["sparse", "redilated", "rewidthed"])
def test_fast_path_equals_the_plain_path(bench, trainer, monkeypatch, child, parent):
    """The child trains on the model compiled for `parent` (REDILATED: other edges and other r at four
    nodes; REWIDTHED: other fused widths at blocks 4 and 5 as well; all set at run time)."""
    import model.assemblenet as builder

    seed = 5
    trainer.entry(parent)
    compiled, new = trainer.prepare(child, seed=seed)
    assert not new and compiled.structure.edges() == edge_masks.maximal(parent).edges()
    # Built for the parent's r: the child's r differ at four nodes (REDILATED) and are set at run time.
    assert [n.dilation for n in compiled.structure.nodes] == [n.dilation for n in parent.nodes]
    start = {v.path: np.asarray(v.numpy()) for v in compiled.model.weights}
    plain = {}
    build = builder.build_assemblenet

    def build_from_fast_start(structure, *args, **kwargs):  # the plain child, from the fast path's start
        model = build(structure, *args, **kwargs)
        for v in model.weights:
            if not v.path.endswith("_fusion/w"):  # σ(w) starts at 0.5 on both paths
                v.assign(edge_masks.child_value(start[v.path], tuple(v.shape)))
        plain["model"] = model
        return model

    monkeypatch.setattr(builder, "build_assemblenet", build_from_fast_start)
    reference = H.train_and_score(child, bench, seed=seed, budget=BUDGET)
    monkeypatch.undo()
    fast = trainer(child, seed=seed, budget=BUDGET)
    assert fast["score"] == reference["score"] and fast["params"] == reference["params"]
    assert fast["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-4)
    assert set(fast["edge_weights"]) == set(reference["edge_weights"])
    for block, row in reference["edge_weights"].items():
        assert set(fast["edge_weights"][block]) == set(row)
        for j, value in row.items():
            assert fast["edge_weights"][block][j] == pytest.approx(value, abs=1e-5)
    assert fast["stem_rms"] == pytest.approx(reference["stem_rms"], rel=1e-4)
    # The score of a 4-step model on 8 clips says little: compare the logits it comes from.
    logits = [H.predict(m, bench, "val", child.modalities, BUDGET.batch_size, compiled.feeder)
              for m in (compiled.model, plain["model"])]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-4, atol=1e-5)
    values = child_values(compiled.model, plain["model"], compiled.structure, child)
    moved = 0
    for path, (a, b) in values.items():
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5, err_msg=path)
        moved += not np.array_equal(b, edge_masks.child_value(start[path], b.shape)) if not path.endswith(
            "_fusion/w") else 1
    assert moved > len(values) // 2  # the steps trained the weights compared


@contextlib.contextmanager
def xla_compiles():
    """The XLA compilations that happen inside the block, as a list of events (under JAX; under
    TensorFlow the list stays empty)."""
    compiles = []
    if keras.backend.backend() != "jax":
        yield compiles
        return
    import jax

    def listen(event, duration, **kwargs):
        if "backend_compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_children_of_one_shape_compile_once(trainer):
    with xla_compiles() as compiles:
        trainer.entry(MINI)  # built and compiled here if no test before did
        before = trainer.compiles
        results = []
        third = with_edges(MINI, [e for e in MINI.edges() if e != (1, 3)])
        for k, child in enumerate([MINI, SPARSE, third, SPARSE]):
            if k == 2:  # by then the model and every eager op of a child's preparation ran once
                compiles.clear()
            results.append(trainer(child, seed=(0, 1, 2, 1)[k]))
    assert trainer.compiles == before and not any(r["compiled"] for r in results)
    assert [r["traces"] for r in results] == [1, 1, 1, 1]  # the train step was traced once, for every child
    if keras.backend.backend() == "jax":
        assert compiles == [], compiles  # XLA compiled nothing for the third and fourth child
    # The same child and seed after another child: the same run (weights, optimizer and masks all reset).
    assert results[3]["final_loss"] == results[1]["final_loss"]
    assert results[3]["edge_weights"] == results[1]["edge_weights"]
    assert len({r["final_loss"] for r in results[:3]}) == 3


def test_children_differing_in_dilations_and_edges_compile_once(trainer):
    """Node mutation (1) of AssembleNet §3.2 (a new r) and rewiring: one model, traced once; under JAX no
    XLA compilation after the first child. The r matter: the same edges with other r train differently."""
    sparse_t = with_edges(MINI_T, SPARSE.edges())
    children = [MINI_T, REDILATED, change_dilation(change_dilation(MINI_T, 6, 1), 3, 4), sparse_t,
                change_dilation(sparse_t, 0, 1), REDILATED, REWIDTHED]
    assert len({edge_masks.signature(c, runtime_width=True) for c in children}) == 1
    assert len({tuple(n.dilation for n in c.nodes) for c in children}) == 5
    assert len({tuple(edge_masks.fused_shapes(c).items()) for c in children}) == 2
    before = trainer.compiles
    with xla_compiles() as compiles:
        results = []
        for k, child in enumerate(children):
            if k == 2:
                compiles.clear()
            results.append(trainer(child, seed=3))
    assert trainer.compiles - before == int(results[0]["compiled"])  # MINI_T's model, if no test built it
    assert not any(r["compiled"] for r in results[1:])
    assert {r["traces"] for r in results} == {1}
    if keras.backend.backend() == "jax":
        assert compiles == [], compiles
    assert results[5]["final_loss"] == results[1]["final_loss"]  # REDILATED again: the same run
    # sparse_t and REDILATED differ only in r (seed 3 both): different runs; so do sparse_t and its r=1 stem.
    assert results[3]["final_loss"] != results[1]["final_loss"]
    assert results[4]["final_loss"] != results[3]["final_loss"]
    assert results[6]["params"] != results[0]["params"]  # the plain child's count: its own projections


def test_runtime_width_kernels_start_at_the_child_fan_in(trainer):
    """He-normal draws with the plain child's fan-in W for the kernels that read a block's runtime-width
    input (max_width rows, the child reads the first W): the reinitialised kernel scaled by
    sqrt(max_width / W)."""
    compiled, _ = trainer.prepare(REWIDTHED, seed=4)
    kernel = np.asarray(compiled.model.get_layer("block5_m0_a_conv").kernel.numpy())
    fastpath.reinitialize(compiled.model, seed=4)
    drawn = np.asarray(compiled.model.get_layer("block5_m0_a_conv").kernel.numpy())
    assert kernel.shape[-2] == 8 and REWIDTHED.fused_channels(5) == 4
    np.testing.assert_allclose(kernel, drawn * np.sqrt(2.0), rtol=1e-6)
    assert fastpath.match_fan_in(compiled.model, MINI_T) == 4  # a and shortcut of blocks 3, 4: 8 rows, W = 4
    assert fastpath.uses_runtime_width("none") and not fastpath.uses_runtime_width("peer")
    assert not fastpath.uses_runtime_width("none", "weight_first")


def test_the_evolution_suite_takes_the_fast_path_only_when_asked(bench, monkeypatch):
    from ablation import evolution_suite as suite
    from tests.ablation.stand_in import fake_train

    real = suite.WorkerTrain(H.train_and_score, bench, BUDGET)
    stand_in = suite.WorkerTrain(fake_train, bench, BUDGET)
    monkeypatch.delenv(fastpath.FASTPATH_ENV, raising=False)
    assert suite.fast_children(real) is real  # off by default
    monkeypatch.setenv(fastpath.FASTPATH_ENV, "1")
    fast = suite.fast_children(real)
    assert isinstance(fast, fastpath.ChildTrainer) and fast.bench is bench and fast.budget == BUDGET
    assert suite.fast_children(real) is fast  # one per process and benchmark: its compiled models are shared
    assert suite.fast_children(stand_in) is stand_in
    monkeypatch.setenv(fastpath.FASTPATH_ENV, "yes")
    with pytest.raises(ValueError, match="expected 0 or 1"):
        suite.fast_children(real)


def test_a_child_of_another_shape_gets_a_model_of_its_own(bench):
    trainer = fastpath.ChildTrainer(bench, BUDGET, max_models=2)
    redilated = change_dilation(change_dilation(MINI, 4, 4), 0, 8)
    wider = MINI.replace(nodes=tuple(n if n.index != 4 else dataclasses.replace(n, channels=4) for n in MINI.nodes))
    first, new = trainer.entry(MINI)
    assert new and trainer.entry(SPARSE) == (first, False)  # only edges differ: the same model
    assert trainer.entry(redilated) == (first, False)  # only r differs: the same model (runtime dilations)
    other, new = trainer.entry(wider)  # another C: another shape
    assert new and other is not first and trainer.compiles == 2
    assert trainer.entry(MINI, fusion_order="weight_first")[1]  # another graph: another model
    assert trainer.compiles == 3 and len(trainer.models) == 2  # the least recently used one was dropped
    assert trainer.entry(MINI)[1]
    longer = change_dilation(MINI, 4, 16)  # beyond the search space's r: a model padded for it
    assert trainer.entry(longer)[1] and fastpath.max_dilation(longer) == 16
    with pytest.raises(ValueError, match="not supported"):
        trainer.entry(MINI, temporal="max")
