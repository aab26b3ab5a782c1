"""Edge masks (model/edge_masks.py, `build_assemblenet(edge_masks=True)`): a masked-out edge of the
maximal model has no effect on what the child computes.

Compared with the plain model of the child (built alone, from the same weights): the same forward pass
(training and inference), the same batch-norm moving statistics of the child's layers, the same
gradients of the child's weights; the masked edges' own parameters (and a block only they read) get
exactly zero gradient, and scrambling them changes nothing. Both fusion orders.
"""

import dataclasses

import keras
import numpy as np
import pytest

from model import edge_masks
from model.assemblenet import build_assemblenet
from model.evolution import with_edges
from model.oneshot import over_connected
from model.structure import Structure, tiny

# Three stems, one block per level above 1, one temporal dilation of 2 per level: every layer kind of
# `tiny` (projections of stems and blocks, the object one-hot, pooling by 2 and 4) at a tenth of its cost.
MINI = Structure.create("mini", [
    (0, 0, "rgb", 4, 2, 4), (1, 0, "flow", 4, 1, 4), (2, 0, "object", 151, 1, 4),
    (3, 1, [0, 1, 2], 2, 1, 1), (4, 1, [0, 1], 2, 2, 1),
    (5, 2, [0, 3, 4], 2, 1, 2), (6, 3, [2, 5], 2, 2, 2), (7, 4, [4, 6], 2, 1, 2)],
    repeats=(0.5,) * 4, level_widths=(4, 4, 4, 4), sink="fc_then_pool")
# Block 3 loses its flow and object inputs (its width stays the stems' 16), block 4 nothing; block 5
# takes only block 4 and the object stem; nothing reads block 3 then (a dead block).
SPARSE = with_edges(MINI, [(0, 3), (0, 4), (1, 4), (2, 5), (4, 5), (5, 6), (4, 7), (6, 7)]).replace(name="sparse")
# MINI with a (2+1)D module in every block (m = 1: 2D, then (2+1)D), so that every node but the flow and
# object stems has a temporal conv; and SPARSE's edges with other temporal resolutions at four nodes
# (§3.2 mutation (1)): the same compiled model trains it, its r set at run time.
MINI_T = MINI.replace(name="mini_t", repeats=(1.0,) * 4)
REDILATED = with_edges(MINI_T, SPARSE.edges()).replace(name="redilated", nodes=tuple(
    dataclasses.replace(n, dilation={0: 8, 4: 1, 5: 4, 6: 8}.get(n.index, n.dilation))
    for n in with_edges(MINI_T, SPARSE.edges()).nodes))
# Other fused widths W than MINI_T's maximal structure has (AssembleNet §3.1: the widest input's): block 5
# fed by the RGB and object stems only (W = 4, the maximal model carries 8), block 4 by the object stem
# only (W = its own 4C = 8: an identity shortcut where block 3's W = 4 needs a conv); other r as well. A
# model built with `runtime_width` runs it; without, it is another signature.
REWIDTHED = with_edges(MINI_T, [(0, 3), (1, 3), (2, 4), (0, 5), (2, 5), (2, 6), (5, 6), (4, 7), (6, 7)]).replace(
    name="rewidthed")
REWIDTHED = REWIDTHED.replace(nodes=tuple(dataclasses.replace(n, dilation={0: 1, 5: 8}.get(n.index, n.dilation))
                                          for n in REWIDTHED.nodes))
# float32 on the CPU: the masked sum adds exact zeros, so the two paths differ only where XLA or
# TensorFlow order a sum differently in two different graphs.
RTOL, ATOL = 1e-4, 1e-5


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"rgb": rng.uniform(-1, 1, (batch, 4, 32, 32, 3)).astype("float32"),
            "flow": rng.normal(size=(batch, 4, 32, 32, 2)).astype("float32"),
            "object": rng.integers(0, 151, (batch, 4, 32, 32)).astype("int32")}


def _pair(child, fusion_order="project_first", attention="none", parent=None, runtime_width=False):
    """(masked maximal model set to `child`, the plain model of `child` with the same weights). The
    maximal model is `parent`'s (default: the child's), with runtime dilations (and widths, if asked) as
    the fast path builds it."""
    maximal = edge_masks.maximal(parent or child, runtime_width=runtime_width)
    big = build_assemblenet(maximal, 5, frames=4, size=32, edge_masks=True, fusion_order=fusion_order,
                            attention=attention, max_dilation=8, runtime_width=runtime_width)
    edge_masks.set_masks(big, maximal, child)
    small = build_assemblenet(child, 5, frames=4, size=32, fusion_order=fusion_order, attention=attention)
    assert edge_masks.copy_weights(big, small, source_structure=maximal, target_structure=child) == len(small.weights)
    return maximal, big, small


def child_values(big, small, maximal, child):
    """{path: (the maximal model's value, the plain model's value)} of every variable of the plain model."""
    by_path = {v.path: np.asarray(v.numpy()) for v in big.weights}
    out = {}
    for v in small.weights:
        value = by_path[v.path]
        if v.path.endswith("_fusion/w"):
            block = int(v.path[len("block"):].split("_")[0])
            inputs = list(maximal.node(block).inputs)
            value = value[[inputs.index(j) for j in child.node(block).inputs]]
        out[v.path] = (edge_masks.child_value(value, tuple(v.shape)), np.asarray(v.numpy()))
    return out


def _gradients(model, inputs, labels):
    """({path: d loss / d variable} of every trainable variable, the logits) of one training-mode pass,
    which also updates the batch-norm moving statistics."""
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(tv):
            logits, nt = model.stateless_call(tv, non_trainable, inputs, training=True)
            return loss_fn(labels, logits), (logits, nt)

        grads, (logits, updated) = jax.jit(jax.grad(loss, has_aux=True))(trainable)
        for v, value in zip(model.non_trainable_variables, updated, strict=True):
            v.assign(value)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            value = loss_fn(labels, logits)
        grads = tape.gradient(value, model.trainable_variables)
    return ({v.path: np.zeros(v.shape) if g is None else np.asarray(g)
             for v, g in zip(model.trainable_variables, grads, strict=True)}, np.asarray(logits))


# -- the structures ---------------------------------------------------------------------------------

def test_maximal_is_the_over_connected_graph_where_shapes_allow():
    assert edge_masks.maximal(tiny()).edges() == over_connected(tiny()).edges()
    assert edge_masks.maximal(SPARSE).edges() == edge_masks.maximal(MINI).edges()
    assert edge_masks.signature(SPARSE) == edge_masks.signature(MINI)
    masks = edge_masks.mask_values(edge_masks.maximal(MINI), SPARSE)
    assert masks[3].tolist() == [1, 0, 0] and masks[7].tolist() == [0, 0, 0, 0, 1, 0, 1]
    # Block 7 fed by stride-8 block 5 instead of stride-16 block 6 is another shape: another signature.
    shallow = with_edges(MINI, [*[e for e in MINI.edges() if e[1] != 7], (5, 7)])
    assert edge_masks.fused_shapes(shallow)[7] != edge_masks.fused_shapes(MINI)[7]
    assert edge_masks.signature(shallow) != edge_masks.signature(MINI)
    with pytest.raises(ValueError, match="differ from the maximal structure's"):
        edge_masks.mask_values(edge_masks.maximal(MINI), shallow)
    with pytest.raises(ValueError, match=r"edges \[\(6, 7\)\] are not in the maximal structure"):
        edge_masks.mask_values(edge_masks.maximal(shallow), MINI)
    # Another r is runtime data (the model's temporal convs read it): the same signature.
    assert edge_masks.signature(REDILATED) == edge_masks.signature(MINI_T)
    assert edge_masks.maximal(REDILATED).edges() == edge_masks.maximal(MINI_T).edges()
    assert edge_masks.mask_values(edge_masks.maximal(MINI_T), REDILATED)[3].tolist() == [1, 0, 0]
    wider = MINI.replace(nodes=tuple(n if n.index != 4 else dataclasses.replace(n, channels=4) for n in MINI.nodes))
    assert edge_masks.signature(wider) != edge_masks.signature(MINI)  # another C
    with pytest.raises(ValueError, match="only the inputs and dilation of a node may differ"):
        edge_masks.mask_values(edge_masks.maximal(MINI), wider)
    # Another fused width: another signature, unless widths are runtime data (then only the strides count).
    assert edge_masks.fused_shapes(REWIDTHED)[5] == (4, 4) and edge_masks.fused_shapes(MINI_T)[5] == (4, 8)
    assert edge_masks.signature(REWIDTHED) != edge_masks.signature(MINI_T)
    assert (edge_masks.signature(REWIDTHED, runtime_width=True)
            == edge_masks.signature(MINI_T, runtime_width=True) != edge_masks.signature(MINI_T))
    with pytest.raises(ValueError, match="differ from the maximal structure's"):
        edge_masks.mask_values(edge_masks.maximal(MINI_T), REWIDTHED)
    masks = edge_masks.mask_values(edge_masks.maximal(MINI_T, runtime_width=True), REWIDTHED, runtime_width=True)
    assert masks[5].tolist() == [1, 0, 1, 0, 0] and masks[4].tolist() == [0, 0, 1]
    # A block's maximal inputs with runtime widths: every lower node of a stride that divides its own.
    assert edge_masks.maximal(MINI_T, runtime_width=True).node(7).inputs == (0, 1, 2, 3, 4, 5, 6)
    with pytest.raises(ValueError, match="differ from the maximal structure's"):  # block 7: another stride
        edge_masks.mask_values(edge_masks.maximal(MINI_T, runtime_width=True),
                               with_edges(MINI_T, [*[e for e in MINI_T.edges() if e[1] != 7], (5, 7)]),
                               runtime_width=True)


def test_set_masks_sets_every_temporal_conv_to_its_node_r():
    maximal = edge_masks.maximal(MINI_T)
    model = build_assemblenet(maximal, 5, frames=4, size=32, edge_masks=True, max_dilation=8)
    convs = edge_masks.temporal_convs(model)
    # The RGB stem's k=5 conv and each block's (2+1)D module; the flow and object stems have none.
    assert sorted(convs) == [0, 3, 4, 5, 6, 7]
    assert [layer.name for layer in convs[0] + convs[5]] == ["stem0_temporal_conv", "block5_m1_a_conv"]
    assert {i: int(c[0].dilation.numpy()) for i, c in convs.items()} == {n.index: n.dilation for n in MINI_T.nodes
                                                                         if n.index in convs}
    edge_masks.set_masks(model, maximal, REDILATED)
    assert {i: int(c[0].dilation.numpy()) for i, c in convs.items()} == {0: 8, 3: 1, 4: 1, 5: 4, 6: 8, 7: 1}
    too_long = REDILATED.replace(nodes=tuple(dataclasses.replace(n, dilation=16) if n.index == 6 else n
                                             for n in REDILATED.nodes))
    with pytest.raises(ValueError, match="r=16, above the model's max_dilation=8"):
        edge_masks.set_masks(model, maximal, too_long)
    fixed = build_assemblenet(maximal, 5, frames=4, size=32, edge_masks=True)  # dilations compiled in
    with pytest.raises(ValueError, match="node 0 has r=8, layer stem0_temporal_conv was built for r=2"):
        edge_masks.set_masks(fixed, maximal, REDILATED)
    edge_masks.set_masks(fixed, maximal, with_edges(MINI_T, SPARSE.edges()))  # the model's own r: accepted


def test_masked_fusion_layers_config_round_trip():
    from model.layers import ConnectionFusion, EdgeGates
    from tests.helpers import run_layer_test

    x = [np.ones((2, 3, 4, 4, 2), "float32"), 2 * np.ones((2, 3, 4, 4, 2), "float32")]
    run_layer_test(ConnectionFusion, {"num_inputs": 2, "masked": True}, x, (2, 3, 4, 4, 2),
                   expected_trainable_weights=1, run_fit=False)
    layer = ConnectionFusion(2, masked=True)
    layer(x)
    layer.mask.assign(np.array([0.0, 1.0], "float32"))
    np.testing.assert_array_equal(np.asarray(layer(x)), np.ones((2, 3, 4, 4, 2)))  # σ(0)·2, input 0 dropped
    gates = EdgeGates(2, masked=True)
    gates(x)
    gates.mask.assign(np.array([1.0, 0.0], "float32"))
    out = [np.asarray(y) for y in gates(x)]
    np.testing.assert_array_equal(out[0], 0.5 * x[0])
    np.testing.assert_array_equal(out[1], np.zeros_like(x[1]))


# -- a masked edge has no effect ------------------------------------------------------------------------

# Both fusion orders under both backends (the masked sum has a custom gradient per backend); the
# attention modes, which add no backend-specific code to the masking, under TensorFlow only (each costs
# seconds there, tens of seconds of XLA compilation under JAX on this CPU).
_ATTENTION_CASES = [("project_first", "self", "SPARSE"), ("project_first", "search", "SPARSE"),
                    ("weight_first", "peer", "PEERED")] if keras.backend.backend() == "tensorflow" else []
# Block 3 feeds nothing in SPARSE; as block 5's peer it is read again (`peer` attention).
PEERS = {3: 0, 4: 1, 5: 3, 6: 4, 7: 5}
PEERED = SPARSE.replace(name="peered", nodes=tuple(
    n if n.is_stem else dataclasses.replace(n, peer=PEERS[n.index]) for n in SPARSE.nodes))


@pytest.mark.parametrize("fusion_order, attention, child", [
    ("project_first", "none", SPARSE), ("weight_first", "none", SPARSE), ("project_first", "none", REDILATED),
    ("project_first", "none", REWIDTHED),
    *[(order, mode, {"SPARSE": SPARSE, "PEERED": PEERED}[name]) for order, mode, name in _ATTENTION_CASES]],
    ids=lambda v: v.name if isinstance(v, Structure) else None)
def test_masked_edges_change_nothing_the_child_computes(fusion_order, attention, child):
    # REDILATED and REWIDTHED run on MINI_T's model: their other r (and W) are runtime data, like edges.
    maximal, big, small = _pair(child, fusion_order, attention, parent=MINI_T if child.repeats[0] == 1 else None,
                                runtime_width=child is REWIDTHED)
    x, labels = _inputs(), np.eye(5, dtype="float32")[[1, 3]]
    # What only masked edges read does not matter: scramble it (kernels, batch-norm statistics, the
    # masked edges' w, the dead block 3 where nothing reads it).
    rng = np.random.default_rng(1)
    child_shapes = {v.path: tuple(v.shape) for v in small.weights}
    child_paths = set(child_shapes)
    for v in big.weights:
        if v.path not in child_paths and not v.path.endswith(("/mask", "/dilation", "/width")):
            v.assign(rng.uniform(0.5, 3.0, v.shape).astype("float32"))
        elif (v.path in child_paths and tuple(v.shape) != child_shapes[v.path]
              and not v.path.endswith("_fusion/w")):  # beyond the child's W (w is per input: below)
            value = rng.uniform(0.5, 3.0, v.shape).astype("float32")
            corner = tuple(slice(0, n) for n in child_shapes[v.path])
            value[corner] = np.asarray(v.numpy())[corner]
            v.assign(value)
    for i, j in _masked(maximal, child):
        w = big.get_layer(f"block{i}_fusion").w
        w.assign(np.where(np.array(maximal.node(i).inputs) == j, 2.5, w.numpy()).astype("float32"))
    (grads_big, logits_big), (grads_small, logits_small) = _gradients(big, x, labels), _gradients(small, x, labels)
    np.testing.assert_allclose(logits_big, logits_small, rtol=RTOL, atol=ATOL)
    shared = child_values(big, small, maximal, child)
    for v in small.trainable_variables:
        g_big = grads_big[v.path]
        if v.path.endswith("_fusion/w"):
            block = int(v.path[len("block"):].split("_")[0])
            inputs = list(maximal.node(block).inputs)
            np.testing.assert_array_equal(  # σ(w) of a masked edge learns nothing
                g_big[[k for k, j in enumerate(inputs) if j not in child.node(block).inputs]], 0.0)
            g_big = g_big[[inputs.index(j) for j in child.node(block).inputs]]
        if g_big.shape != tuple(v.shape):  # a runtime-width variable: nothing beyond the child's W learns
            outside = np.ones(g_big.shape, bool)
            outside[tuple(slice(0, n) for n in v.shape)] = False
            assert not np.any(g_big[outside]), v.path
            g_big = edge_masks.child_value(g_big, tuple(v.shape))
        np.testing.assert_allclose(g_big, grads_small[v.path], rtol=1e-3, atol=1e-5, err_msg=v.path)
    # Everything only masked edges (or the dead block 3) read gets exactly zero gradient.
    for v in big.trainable_variables:
        if v.path not in child_paths:
            assert not np.any(grads_big[v.path]), v.path
    read = attention in ("search", "peer")  # every lower node is a peer in `search`; block 3 is one in PEERED
    assert (3 in child.live(via_peers=True) or attention == "search") == read
    assert any(p.startswith("block3_") for p in child_paths) == read
    # Inference reads the moving statistics: the masked layers' (scrambled, then updated) change nothing.
    np.testing.assert_allclose(big.predict_on_batch(x), small.predict_on_batch(x), rtol=RTOL, atol=ATOL)
    # Batch-norm moving statistics of the child's layers after one training-mode pass: the same.
    for path, (a, b) in child_values(big, small, maximal, child).items():
        if "moving" in path:
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=path)
    assert shared  # the comparison covered the child's variables


def _masked(maximal, child):
    return [(i, j) for i in (n.index for n in maximal.blocks) for j in maximal.node(i).inputs
            if j not in child.node(i).inputs]
