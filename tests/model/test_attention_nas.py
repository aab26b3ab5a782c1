"""AttentionNAS: operations, cells, the non-local block, the supernet (runs under TensorFlow and JAX)."""

import itertools
import json

import keras
import numpy as np
import pytest

from model import structure as structure_lib
from model.attention_nas import (
    NONLOCAL,
    NONLOCAL_AS_CELL,
    AlternatingAdam,
    AttentionOperation,
    NonLocalBlock,
    SupernetCell,
    apply_cell,
    architecture_variables,
    architecture_weights,
    cell_cost,
    degenerate_pairs,
    derive_cell,
    inherit_weights,
    insert_cells,
    normalize_cell,
)
from model.attention_nas.operations import ACTIVATIONS, DIMENSIONS, TYPES
from tests.helpers import run_layer_test

X = np.random.default_rng(7).normal(size=(2, 4, 6, 6, 8)).astype("float32")
THREE_OPS = {
    "operations": [
        {"inputs": [0], "dimension": "temporal", "type": "map", "activation": "sigmoid"},
        {"inputs": [0, 1], "dimension": "spatial", "type": "dot", "g1": "conv3x3x3", "reduction": 0.25},
        {"inputs": [2], "dimension": "spatiotemporal", "type": "dot", "g3": "identity", "activation": "relu"},
    ]
}


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("case", list(enumerate(itertools.product(DIMENSIONS, TYPES))))
def test_operation_layer(case):
    n, (dimension, attention_type) = case
    kwargs = {
        "channels": 8,
        "dimension": dimension,
        "attention_type": attention_type,
        "activation": ACTIVATIONS[n % 4],
        "g1": ("conv1x1x1", "conv3x3x3")[n % 2],
        "g2": ("conv3x3x3", "conv1x1x1")[n % 2],
        "g3": ("conv1x1x1", "identity")[n // 3],
        "reduction": 0.5,
        "kv_pool": 2,
    }
    run_layer_test(AttentionOperation, kwargs, X, X.shape)


def _conv1x1(layer, x):
    kernel, bias = (np_(w) for w in layer.weights)
    return np.einsum("bthwc,cd->bthwd", x, kernel[0, 0, 0]) + bias


def test_dot_product_matches_the_formula():
    """Spatiotemporal dot-product without pooling: softmax(G₁ G₂ᵀ) · G₃ over all T·H·W tokens."""
    op = AttentionOperation(
        8, dimension="spatiotemporal", attention_type="dot", activation="softmax", kv_pool=1
    )
    out = np_(op(X))
    q, k, v = (_conv1x1(layer, X).reshape(2, 4 * 36, -1) for layer in (op.g1_conv, op.g2_conv, op.g3_conv))
    s = q @ k.transpose(0, 2, 1)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, (a @ v).reshape(X.shape), rtol=1e-4, atol=1e-4)


def test_temporal_map_matches_the_formula():
    """Temporal map-based: diag(σ(G₂(AvgPool(G₁(f))))) · G₃(f), one weight per frame."""
    op = AttentionOperation(
        8, dimension="temporal", attention_type="map", activation="sigmoid", g2="conv1x1x1"
    )
    out = np_(op(X))
    m = _conv1x1(op.g1_conv, X).mean(axis=(2, 3, 4))  # (B, T)
    w2, b2 = (np_(w) for w in op.g2_conv.weights)
    a = 1 / (1 + np.exp(-(m * w2.reshape(()) + b2.reshape(()))))
    np.testing.assert_allclose(out, a[:, :, None, None, None] * _conv1x1(op.g3_conv, X), rtol=1e-4, atol=1e-4)


def test_nonlocal_block_layer_starts_as_identity():
    layer = run_layer_test(NonLocalBlock, {"channels": 8, "reduction": 0.5, "kv_pool": 2}, X, X.shape)
    fresh = NonLocalBlock(8)
    np.testing.assert_allclose(np_(fresh(X)), X, atol=1e-6)  # BN γ = 0: z = x
    assert not np.allclose(np_(layer(X)), X, atol=1e-4)  # after the fit step γ moved


def test_attention_size_cap_fails_clearly():
    with pytest.raises(ValueError, match=r"spatiotemporal dot-product .*max_attention_size=1,000"):
        AttentionOperation(8, dimension="spatiotemporal", max_attention_size=1000)(X)
    # Temporal attention has only T×T scores and passes the same cap.
    AttentionOperation(8, dimension="temporal", max_attention_size=1000)(X)


def test_cell_json_round_trip_and_defaults():
    cell = normalize_cell(THREE_OPS)
    assert normalize_cell(json.loads(json.dumps(cell))) == cell
    assert normalize_cell(json.dumps(cell)) == cell
    assert cell["operations"][0]["g1"] == "conv1x1x1" and cell["operations"][1]["reduction"] == 0.25
    assert cell["kv_pool"] == 2


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"operations": [{"inputs": [0], "dimension": "diagonal"}]},
            r"operations\[0\]\.dimension: unknown choice",
        ),
        ({"operations": [{"inputs": [0]}, {"inputs": [2]}]}, r"operation 2 cannot take input 2"),
        ({"operations": [{"inputs": []}]}, r"inputs: needs a non-empty list"),
        ({"operations": [{"inputs": [0], "reduction": 2}]}, r"reduction: needs a width ratio"),
        ({"operations": [{"inputs": [0], "kernel": 3}]}, r"unknown field\(s\) \['kernel'\]"),
        ({"operations": []}, r"operations: needs a non-empty list"),
        ({"kind": "transformer"}, r"kind must be one of"),
        (
            {"kind": "supernet", "candidates": {"activation": ["gelu"]}},
            r"candidates.activation: unknown choice",
        ),
    ],
)
def test_invalid_cell_descriptions_fail_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        normalize_cell(bad)


@pytest.mark.parametrize(
    "config", [THREE_OPS, NONLOCAL, NONLOCAL_AS_CELL, {**THREE_OPS, "normalize": True, "width": 0.5}]
)
def test_cell_keeps_shape_starts_as_identity_and_cost_counts_its_weights(config):
    inputs = keras.Input(X.shape[1:])
    model = keras.Model(inputs, apply_cell(inputs, config, name="cell"))
    np.testing.assert_allclose(np_(model(X)), X, atol=1e-6)  # zero-γ BN: a fresh cell is the identity
    cost = cell_cost(config, X.shape[1:])
    assert cost["params"] == model.count_params()
    assert cost == cell_cost(config, (1, *X.shape[1:]))


def test_cell_cost_flops_by_hand():
    """One spatial dot-product on (T, H, W, C) = (2, 4, 4, 8), C′ = 4, keys pooled to 2x2."""
    cell = {"operations": [{"inputs": [0], "dimension": "spatial", "type": "dot"}]}
    convs = 2 * 32 * (8 * 4) * 2 + 2 * 32 * 8 * 8  # G₁, G₂ (8→4), G₃ (8→8) at 32 positions
    products = 2 * (2 * 16 * 4 * 4 + 2 * 16 * 4 * 8)  # per frame: scores (16×4 keys×C′) and A·V (×C)
    assert cell_cost(cell, (2, 4, 4, 8))["flops"] == convs + products


def test_cell_width_adds_a_bottleneck_whose_cost_follows_the_formula():
    """width w: 1x1x1 C → w·C, the operations at w·C, then w·C → C (as non-local's g and W_z)."""
    one_op = {"operations": [{"inputs": [0]}]}  # spatiotemporal dot, G₁/G₂/G₃ 1x1x1, C′ = C_w/2
    # C = 8, w = 0.5: C_w = 4, C′ = 2. in 8·4+4; G₁, G₂ 4·2+2 each; G₃ 4·4+4; out 4·8+8; BN 4·8.
    assert cell_cost({**one_op, "width": 0.5}, (2, 4, 4, 8))["params"] == 36 + 10 + 10 + 20 + 40 + 32
    # 32 positions: projections 2·32·8·4 each; G₁, G₂ 2·32·4·2; G₃ 2·32·4·4; 8 pooled keys (2 frames × 2x2):
    # scores 2·32·8·C′ and A·V 2·32·8·C_w.
    flops = 2 * 2048 + 2 * 512 + 1024 + 2 * 32 * 8 * 2 + 2 * 32 * 8 * 4
    assert cell_cost({**one_op, "width": 0.5}, (2, 4, 4, 8))["flops"] == flops
    for width, inner in ((0.25, 2), (0.5, 4), (0.75, 6)):
        inputs = keras.Input(X.shape[1:])
        model = keras.Model(inputs, apply_cell(inputs, {**THREE_OPS, "width": width}, name="cell"))
        assert model.get_layer("cell_in").output.shape[-1] == inner
        assert model.get_layer("cell_op1").output.shape[-1] == inner
        assert model.count_params() == cell_cost({**THREE_OPS, "width": width}, X.shape[1:])["params"]
    # width 1 (the default) is the cell without projections
    assert normalize_cell(THREE_OPS)["width"] == 1.0
    assert cell_cost({**THREE_OPS, "width": 1}, X.shape[1:]) == cell_cost(THREE_OPS, X.shape[1:])
    with pytest.raises(ValueError, match=r"cell.width: needs the operations' width"):
        normalize_cell({**THREE_OPS, "width": 1.5})


def test_supernet_layer_and_architecture_gradients():
    kwargs = {
        "channels": 8,
        "num_operations": 2,
        "candidates": {"type": ["map"], "g1": ["conv1x1x1"]},
        "kv_pool": 2,
    }
    run_layer_test(SupernetCell, kwargs, X, X.shape)
    inputs = keras.Input(X.shape[1:])
    cell_out = apply_cell(inputs, {"kind": "supernet", "num_operations": 2}, name="search")
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling3D()(cell_out))
    model = keras.Model(inputs, outputs)
    arch = architecture_variables(model)
    assert len(arch) == 2 * 8 - 1 and all(v.path.startswith("search/arch_op") for v in arch)
    before = [np_(v).copy() for v in arch]
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(X, np.array([0, 2]), epochs=1, verbose=0)
    changed = [not np.allclose(b, np_(v)) for b, v in zip(before, arch, strict=True)]
    assert all(changed), [v.name for v, c in zip(arch, changed, strict=True) if not c]
    weights = architecture_weights(model)
    assert weights["cells"] == ["search"]
    probs = weights["operations"]["op2"]["dimension"]
    assert abs(sum(probs.values()) - 1) < 1e-6 and len(set(probs.values())) == 3
    derived = derive_cell(weights)
    assert len(derived["operations"]) == 2 and derived["operations"][1]["inputs"]


def test_alternating_adam_updates_one_group_per_phase_exactly_as_adam():
    """Weights phase = plain Adam on the network weights (arch untouched), architecture phase = Adam with
    its own rate and β₁ on `arch_*` only (network untouched), each with its own step count."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5)).astype("float32"), rng.integers(0, 3, 8)

    class Scaled(keras.layers.Layer):
        def build(self, shape):
            self.arch = self.add_weight(name="arch_scale", shape=(3,), initializer="zeros")

        def call(self, z):
            return z * keras.ops.softmax(self.arch)

    def model():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((5,))
        return keras.Model(inputs, Scaled()(keras.layers.Dense(3)(inputs)))

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    searched = model()
    opt = AlternatingAdam(learning_rate=0.01, arch_learning_rate=0.1, arch_beta_1=0.5)
    searched.compile(optimizer=opt, loss=loss)
    opt.build(searched.trainable_variables)
    dense, arch = searched.layers[1], searched.layers[2].arch
    reference = model()  # plain Adam on the network weights only
    reference.layers[2].trainable = False
    reference.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    for _ in range(2):
        opt.set_phase("weights")
        searched.train_on_batch(x, y)
        reference.train_on_batch(x, y)
    np.testing.assert_allclose(np_(dense.kernel), np_(reference.layers[1].kernel), atol=2e-5)
    np.testing.assert_array_equal(np_(arch), np.zeros(3))
    kernel = np_(dense.kernel).copy()
    opt.set_phase("architecture")
    searched.train_on_batch(x, y)
    np.testing.assert_array_equal(np_(dense.kernel), kernel)
    # First bias-corrected Adam step: every logit moves by arch_learning_rate (up to ε).
    np.testing.assert_allclose(np.abs(np_(arch)), 0.1, rtol=1e-3)
    np.testing.assert_array_equal(np_(opt.group_steps), [2, 1])
    with pytest.raises(ValueError, match="phase must be one of"):
        opt.set_phase("both")


def test_derive_cell_takes_argmax_and_strong_edges():
    def entry(inputs, **best):
        out = {"inputs": inputs}
        for choice, candidates in [
            ("dimension", DIMENSIONS),
            ("type", TYPES),
            ("g1", ["conv1x1x1", "conv3x3x3"]),
            ("g2", ["conv1x1x1", "conv3x3x3"]),
            ("g3", ["conv1x1x1", "identity"]),
            ("activation", ACTIVATIONS),
            ("reduction", ["0.25", "0.5"]),
        ]:
            out[choice] = {
                c: (0.6 if c == best.get(choice, candidates[0]) else 0.4 / (len(candidates) - 1))
                for c in candidates
            }
        return out

    weights = {
        "operations": {
            "op1": entry([0.3], dimension="temporal", type="map"),
            "op2": entry([0.7, 0.9], activation="sigmoid", reduction="0.5"),
            "op3": entry([0.2, 0.45, 0.1], g3="identity"),
        }
    }
    cell = derive_cell(weights)
    ops_ = cell["operations"]
    assert [op["inputs"] for op in ops_] == [[0], [0, 1], [1]]
    assert (ops_[0]["dimension"], ops_[0]["type"]) == ("temporal", "map")
    assert (ops_[1]["activation"], ops_[1]["reduction"]) == ("sigmoid", 0.5)
    assert ops_[2]["g3"] == "identity" and ops_[2]["reduction"] == 0.25


def test_insert_cells_into_assemblenet():
    tiny = structure_lib.tiny()
    with_cells = insert_cells(tiny, THREE_OPS, after_levels=(2, 3))
    assert [n.index for n in with_cells.nodes if n.cell is not None] == [5, 6, 7]
    assert with_cells.node(5).cell == normalize_cell(THREE_OPS)
    restored = structure_lib.Structure.from_json(json.loads(json.dumps(with_cells.to_json())))
    assert restored.node(7).cell == with_cells.node(7).cell
    with pytest.raises(ValueError, match=r"no blocks at level\(s\) \[5\]"):
        insert_cells(tiny, THREE_OPS, after_levels=(5,))

    from model.assemblenet import build_assemblenet

    # Block 7 (stride 16) is 2x2 at 32 px: op2's spatial dot-product, pooled by kv_pool 2, sees one key
    # per query; the derived cell is built, with a warning naming it (the search would exclude it).
    with pytest.warns(UserWarning, match=r"cannot attend") as caught:
        model = build_assemblenet(with_cells, 3, frames=4, size=32)
    ours = [str(w.message) for w in caught if "cannot attend" in str(w.message)]
    assert len(ours) == 1 and ours[0].startswith("cell 'block7_cell': operation(s) that cannot attend")
    assert "op2: spatial dot-product on a (T, H, W) = (4, 2, 2) map" in ours[0]
    strides = tiny.cumulative_stride()
    for i in (5, 6, 7):
        added = sum(layer.count_params() for layer in model.layers if layer.name.startswith(f"block{i}_cell"))
        side = 32 // strides[i]
        assert added == cell_cost(THREE_OPS, (4, side, side, tiny.node(i).output_channels))["params"]
    assert not any(layer.name.startswith("block4_cell") for layer in model.layers)
    inputs = {
        "rgb": np.zeros((1, 4, 32, 32, 3), "float32"),
        "flow": np.zeros((1, 4, 32, 32, 2), "float32"),
        "object": np.zeros((1, 4, 32, 32), "int32"),
    }
    assert tuple(model(inputs).shape) == (1, 3)


# ---------------------------------------------------------------------------------------------------
# The derived cell is the searched function (docs/attention_nas.md); degenerate candidates; weights.

ONE_HOT_CELL = {
    "operations": [
        {"inputs": [0], "dimension": "temporal", "type": "map", "g2": "conv3x3x3", "activation": "sigmoid",
         "reduction": 0.25},
        {"inputs": [1], "dimension": "spatial", "type": "dot", "g1": "conv3x3x3", "g3": "identity"},
        {"inputs": [0], "dimension": "spatiotemporal", "type": "dot", "activation": "relu"},
    ]
}


def _set_one_hot(supernet, cell, logit=60.0):
    """Architecture logits that make softmax(α) one-hot (exp(-60) ≈ 1e-26) on the cell's choices."""
    for i, op in enumerate(normalize_cell(cell)["operations"], start=1):
        for key, variable in supernet.arch.items():
            if not key.startswith(f"op{i}_"):
                continue
            choice = key.split("_", 1)[1]
            if choice == "inputs":
                chosen = op["inputs"]
            else:
                chosen = [supernet.candidates[choice].index(op[choice])]
            values = np.zeros(variable.shape, "float32")
            values[chosen] = logit
            variable.assign(values)


def test_derived_cell_equals_one_hot_supernet_in_training_and_inference():
    """With per-operation normalisation (what derive_cell writes) a derived cell holding the
    supernet's weights computes the one-hot supernet's function, with batch statistics (training) and
    with moving statistics (inference); without it, it does not."""
    rng = np.random.default_rng(0)
    supernet = SupernetCell(8, num_operations=3, name="search")
    supernet(X)
    _set_one_hot(supernet, ONE_HOT_CELL)
    for _ in range(3):  # move the moving statistics away from their initial values
        supernet(rng.normal(1.0, 2.0, X.shape).astype("float32"), training=True)
    supernet.bn.gamma.assign(rng.uniform(0.5, 1.5, 8).astype("float32"))
    supernet.bn.beta.assign(rng.normal(size=8).astype("float32"))
    probs = supernet.probabilities()
    assert probs["op2"]["inputs"][1] == 1.0 and probs["op1"]["type"]["map"] == 1.0

    derived = normalize_cell({**ONE_HOT_CELL, "normalize": True})
    assert derive_cell(architecture_weights(keras.Sequential([keras.Input(X.shape[1:]), supernet])))[
        "operations"
    ] == derived["operations"]
    inputs = keras.Input(X.shape[1:])
    model = keras.Model(inputs, apply_cell(inputs, derived, name="cell"))
    inherit_weights(supernet, model, "cell", derived)
    x = rng.normal(size=X.shape).astype("float32")
    np.testing.assert_allclose(np_(model(x, training=False)), np_(supernet(x, training=False)), atol=2e-5)
    np.testing.assert_allclose(np_(model(x, training=True)), np_(supernet(x, training=True)), atol=2e-5)

    raw = normalize_cell(ONE_HOT_CELL)  # the old derived cell: raw operation outputs
    raw_model = keras.Model(inputs, apply_cell(inputs, raw, name="raw"))
    inherit_weights(supernet, raw_model, "raw", raw)
    gap = np.abs(np_(raw_model(x, training=True)) - np_(supernet(x, training=True))).max()
    assert gap > 1e-2, gap


def test_annealed_temperature_makes_the_supernet_the_one_hot_cell():
    """softmax(α/τ) → one-hot as τ → 0 (SNAS/GDAS annealing): α favouring ONE_HOT_CELL's choices by a
    logit of 1 mixes every candidate at τ = 1, but at τ = 0.02 (effective logit 50) the supernet computes
    the one-hot supernet's function."""
    supernet = SupernetCell(8, num_operations=3, name="search")
    supernet(X)
    x = np.random.default_rng(3).normal(size=X.shape).astype("float32")
    _set_one_hot(supernet, ONE_HOT_CELL, logit=1.0)
    assert abs(float(np_(supernet._probs(1, "g3"))[0]) - 1 / (1 + np.exp(-1.0))) < 1e-6  # conv1x1x1: σ(1)
    mixed = np_(supernet(x, training=False))
    supernet.temperature.assign(0.02)
    assert float(np_(supernet._probs(1, "g3"))[1]) < 1e-20  # identity: e^-50 / (1 + e^-50)
    annealed = np_(supernet(x, training=False))
    supernet.temperature.assign(1.0)
    _set_one_hot(supernet, ONE_HOT_CELL, logit=60.0)
    one_hot = np_(supernet(x, training=False))
    np.testing.assert_allclose(annealed, one_hot, atol=1e-5)
    assert np.abs(mixed - one_hot).max() > 1e-2


def test_normalized_cell_costs_its_statistics():
    cell = {**THREE_OPS, "normalize": True}
    inputs = keras.Input(X.shape[1:])
    model = keras.Model(inputs, apply_cell(inputs, cell, name="cell"))
    assert cell_cost(cell, X.shape[1:])["params"] == model.count_params()
    assert cell_cost(cell, X.shape[1:])["params"] == cell_cost(THREE_OPS, X.shape[1:])["params"] + 3 * 2 * 8
    with pytest.raises(ValueError, match=r"normalize: needs true or false"):
        normalize_cell({**THREE_OPS, "normalize": "yes"})


def test_degenerate_candidates_are_refused_unless_excluded():
    """On a 2×2 map, kv_pool 2 leaves one key per frame: spatial dot-product softmax ≡ 1."""
    small = np.random.default_rng(1).normal(size=(2, 4, 2, 2, 8)).astype("float32")
    assert set(degenerate_pairs(TYPES, DIMENSIONS, 4, 2, 2, kv_pool=2)) == {("dot", "spatial")}
    assert degenerate_pairs(TYPES, DIMENSIONS, 4, 4, 4, kv_pool=2) == {}
    assert set(degenerate_pairs(TYPES, DIMENSIONS, 1, 1, 1, kv_pool=1)) == {
        (k, d) for k in TYPES for d in DIMENSIONS
    }
    with pytest.raises(ValueError, match=r"cannot attend here: spatial dot-product .* one key per query"):
        SupernetCell(8, num_operations=2)(small)
    cell = SupernetCell(8, num_operations=2, excluded=[["dot", "spatial"]])
    out = cell(small)
    assert out.shape == small.shape and np.isfinite(np_(out)).all()
    assert not any("dot_spatial" in layer.name for layer in cell.candidate_bns)
    with pytest.raises(ValueError, match=r"every type of dimension 'spatial' is excluded"):
        SupernetCell(8, excluded=[["dot", "spatial"], ["map", "spatial"]])


def test_derive_cell_never_picks_an_excluded_pair():
    def op(type_, dimension):
        return {
            "inputs": [1.0],
            "dimension": dimension,
            "type": type_,
            **{c: {"a": 1.0} for c in ("g1", "g2", "g3", "activation")},
            "reduction": {"0.5": 1.0},
        }

    weights = {
        "excluded": [["dot", "spatial"]],
        "operations": {
            # spatial is the likeliest dimension and dot the likeliest type, but dot/spatial is out: the
            # supernet computes map at spatial (weight 0.5) vs dot at temporal (0.3 × 0.7).
            "op1": op({"map": 0.3, "dot": 0.7}, {"spatial": 0.5, "temporal": 0.3, "spatiotemporal": 0.2}),
        },
    }
    from model.attention_nas.supernet import best_type_and_dimension

    assert best_type_and_dimension(weights["operations"]["op1"], weights["excluded"]) == ("map", "spatial")
    assert best_type_and_dimension(weights["operations"]["op1"], []) == ("dot", "spatial")


def test_single_candidate_choices_have_no_architecture_weight():
    """A choice with one candidate gets no weight (it could never get a gradient)."""
    inputs = keras.Input(X.shape[1:])
    space = {"type": ["map"], "g1": ["conv1x1x1"], "g3": ["identity"]}
    out = apply_cell(inputs, {"kind": "supernet", "num_operations": 2, "candidates": space}, name="s")
    model = keras.Model(inputs, out)
    names = sorted(v.name for v in architecture_variables(model))
    searched = ["dimension", "g2", "activation", "reduction"]
    assert names == sorted([f"arch_op{i}_{c}" for i in (1, 2) for c in searched] + ["arch_op2_inputs"])
    probs = architecture_weights(model)["operations"]["op1"]
    assert probs["type"] == {"map": 1.0} and probs["g3"] == {"identity": 1.0}
    # Exclusions that leave every dimension one type make `type` a decided choice too.
    cell = SupernetCell(8, candidates={"dimension": ["spatial"]}, excluded=[["dot", "spatial"]])
    cell(X)
    assert "op1_type" not in cell.arch and cell.probabilities()["op1"]["type"] == {"map": 1.0, "dot": 0.0}
