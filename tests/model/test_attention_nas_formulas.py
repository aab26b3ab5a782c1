"""Each AttentionNAS operation (dimension × type) against its formula written out in numpy.

A map-based operation is diag(φ(G₂(AvgPool(G₁(f))))) · G₃(f); a dot-product one is φ(G₁(f) · G₂(f)ᵀ) · G₃(f)
with keys and values max-pooled kv_pool × kv_pool over space (spatial, spatiotemporal) and a temporal
token described by the spatial mean; φ other than softmax is divided by the number of keys
(model/attention_nas/operations.py, docs/attention_nas.md). The other two of the six operations are in
test_attention_nas.py.
"""

import keras
import numpy as np
import pytest

from model.attention_nas import AttentionOperation, operations

B, T, S, C = 2, 3, 4, 4
X = np.random.default_rng(11).normal(size=(B, T, S, S, C)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _conv1x1(layer, x):
    kernel, bias = (_np(w) for w in layer.weights)
    return np.einsum("bthwc,cd->bthwd", x.astype("float64"), kernel[0, 0, 0]) + bias


def _phi(s, activation, keys):
    if activation == "softmax":
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if activation == "relu":
        s = np.maximum(s, 0)
    elif activation == "sigmoid":
        s = 1 / (1 + np.exp(-s))
    return s / keys


def _pool2(x):
    """2 x 2 spatial max pool, stride 2 (S is even: no padding)."""
    b, t, h, w, c = x.shape
    return x.reshape(b, t, h // 2, 2, w // 2, 2, c).max(axis=(3, 5))


def _op(**kwargs):
    op = AttentionOperation(C, g1="conv1x1x1", g2="conv1x1x1", g3="conv1x1x1", reduction=0.5, **kwargs)
    op(X)
    rng = np.random.default_rng(3)
    for w in op.weights:  # biases too, so that a dropped bias shows
        w.assign(rng.normal(size=w.shape).astype("float32"))
    return op


@pytest.mark.parametrize("dimension, activation, axes", [
    ("spatial", "softmax", (2, 3)),               # softmax over each frame's H·W tokens
    ("spatiotemporal", "softmax", (1, 2, 3)),     # softmax over all T·H·W tokens
    ("spatiotemporal", "relu", None),
])
def test_map_operations(dimension, activation, axes):
    op = _op(dimension=dimension, attention_type="map", activation=activation)
    m = _conv1x1(op.g1_conv, X).mean(axis=-1, keepdims=True)  # AvgPool over channels: (B, T, H, W, 1)
    w2, b2 = (_np(w) for w in op.g2_conv.weights)
    m = m * w2.reshape(()) + b2.reshape(())
    if activation == "softmax":
        e = np.exp(m - m.max(axis=axes, keepdims=True))
        a = e / e.sum(axis=axes, keepdims=True)
    else:
        a = np.maximum(m, 0)
    np.testing.assert_allclose(_np(op(X)), a * _conv1x1(op.g3_conv, X), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_temporal_dot_product(activation):
    op = _op(dimension="temporal", attention_type="dot", activation=activation)
    q = _conv1x1(op.g1_conv, X).mean(axis=(2, 3))  # a frame token: the spatial mean, (B, T, C′)
    k = _conv1x1(op.g2_conv, X).mean(axis=(2, 3))
    a = _phi(q @ k.transpose(0, 2, 1), activation, T)  # (B, T, T)
    v = _conv1x1(op.g3_conv, X).reshape(B, T, -1)
    np.testing.assert_allclose(_np(op(X)), (a @ v).reshape(X.shape), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dimension, activation", [("spatial", "relu"), ("spatial", "softmax"),
                                                   ("spatiotemporal", "none")])
def test_pooled_dot_products(dimension, activation):
    op = _op(dimension=dimension, attention_type="dot", activation=activation, kv_pool=2)
    q = _conv1x1(op.g1_conv, X)
    k = _pool2(_conv1x1(op.g2_conv, X))
    v = _pool2(_conv1x1(op.g3_conv, X))
    if dimension == "spatial":  # one attention per frame: H·W queries, (H/2)·(W/2) keys
        qs, ks, vs = (z.reshape(B * T, -1, z.shape[-1]) for z in (q, k, v))
    else:
        qs, ks, vs = (z.reshape(B, -1, z.shape[-1]) for z in (q, k, v))
    a = _phi(qs @ ks.transpose(0, 2, 1), activation, ks.shape[1])
    np.testing.assert_allclose(_np(op(X)), (a @ vs).reshape(X.shape), rtol=1e-4, atol=1e-5)


def test_identity_g3_attends_over_the_input_itself():
    op = AttentionOperation(C, dimension="spatial", attention_type="map", activation="sigmoid", g3="identity")
    op(X)
    m = _conv1x1(op.g1_conv, X).mean(axis=-1, keepdims=True)
    w2, b2 = (_np(w) for w in op.g2_conv.weights)
    assert op.g2_conv.kernel.shape == (1, 1, 1, 1, 1)
    a = 1 / (1 + np.exp(-(m * w2.reshape(()) + b2.reshape(()))))
    np.testing.assert_allclose(_np(op(X)), a * X, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dimension, kernel", [("temporal", (3, 1, 1)), ("spatial", (1, 3, 3)),
                                               ("spatiotemporal", (3, 3, 3))])
def test_map_g2_3x3x3_is_restricted_to_the_token_axes(dimension, kernel):
    op = AttentionOperation(C, dimension=dimension, attention_type="map", g2="conv3x3x3")
    op(X)
    assert tuple(op.g2_conv.kernel.shape) == kernel + (1, 1)


# Non-square frames, one side odd (kv_pool pads it), pooled to a non-square grid: H and W swapped or rounded
# wrongly change the shapes.
Y = np.random.default_rng(12).normal(size=(B, T, 5, 8, C)).astype("float32")


def _pool2_same(x):
    """2 x 2 spatial max pool, stride 2, `same` padding (the padding at the bottom and right)."""
    b, t, h, w, c = x.shape
    padded = np.full((b, t, h + h % 2, w + w % 2, c), -np.inf)
    padded[:, :, :h, :w] = x
    return _pool2(padded)


@pytest.mark.parametrize("dimension", ["spatial", "spatiotemporal", "temporal"])
def test_dot_products_on_odd_non_square_frames(dimension):
    op = AttentionOperation(C, dimension=dimension, attention_type="dot", activation="softmax", kv_pool=2)
    op(Y)
    rng = np.random.default_rng(5)
    for w in op.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    q, k, v = (_conv1x1(layer, Y) for layer in (op.g1_conv, op.g2_conv, op.g3_conv))
    if dimension == "temporal":
        qs, ks, vs = q.mean(axis=(2, 3)), k.mean(axis=(2, 3)), v.reshape(B, T, -1)
    else:
        k, v = _pool2_same(k), _pool2_same(v)  # 5 x 8 -> 3 x 4 keys and values per frame
        rows = B * T if dimension == "spatial" else B
        qs, ks, vs = (z.reshape(rows, -1, z.shape[-1]) for z in (q, k, v))
        assert ks.shape[1] == (12 if dimension == "spatial" else 36)
    a = _phi(qs @ ks.transpose(0, 2, 1), "softmax", None)
    np.testing.assert_allclose(_np(op(Y)), (a @ vs).reshape(Y.shape), rtol=1e-4, atol=1e-5)


def test_softmax_over_several_axes_is_stable_per_map():
    # Two maps 300 apart: one shift by the max of both, or an added max, overflows or underflows float32.
    m = np.array([[0.0, 1.0, 2.0], [300.0, 301.0, 302.0]], "float32")[:, :, None, None, None]
    e = np.exp(np.array([0.0, 1.0, 2.0]) - 2.0)
    expected = np.broadcast_to(e / e.sum(), (2, 3))[:, :, None, None, None]
    np.testing.assert_allclose(_np(operations.softmax_over(m, (1,))), expected, rtol=1e-5)
    # A temporal map is (B, T, 1, 1, 1): its tokens are the frames (axis 1).
    np.testing.assert_allclose(_np(operations.activate_map(m, "softmax", "temporal")), expected, rtol=1e-5)
    np.testing.assert_array_equal(_np(operations.activate_map(m, "none", "temporal")), m)


def test_scores_keep_their_dtype():
    s = keras.ops.convert_to_tensor(np.array([[1.0, -2.0, 3.0]], "float16"))
    out = operations.activate_scores(s, "relu")
    assert keras.backend.standardize_dtype(out.dtype) == "float16"  # mixed precision: no float32 upcast
    np.testing.assert_allclose(_np(out), [[1 / 3, 0, 1]], rtol=1e-3)


def test_sizes():
    assert operations.reduced_width(4, 0.1) == 1  # round(0.4) = 0 channels, kept at 1
    assert operations.reduced_width(10, 0.25) == 2
    assert operations.g_kernel("conv3x3x3") == (3, 3, 3) and operations.g_kernel("conv1x1x1") == (1, 1, 1)
    assert [operations.pooled_size(s, 2) for s in (4, 5, 1, None)] == [2, 3, 1, None]
    assert operations.pooled_size(7, 3) == 3
    assert operations.attention_size("temporal", 3, 5, 6, 2) == (3, 3)
    assert operations.attention_size("spatial", 3, 5, 6, 2) == (30, 9)
    assert operations.attention_size("spatiotemporal", 3, 5, 6, 2) == (90, 27)
    assert operations.attention_size("temporal", None, 5, 6, 2) is None
    assert operations.attention_size("spatial", 3, None, 6, 2) is None
    assert operations.attention_size("spatial", 3, 5, None, 2) is None
    assert operations.attention_size("spatiotemporal", None, 5, 6, 2) is None


@pytest.mark.parametrize("dimension, total", [
    ("spatial", 3 * 30 * 9),  # one 30 x 9 matrix per frame
    ("spatiotemporal", 90 * 27),
    ("temporal", 3 * 3),
])
def test_attention_size_cap_counts_every_score(dimension, total):
    check = operations.check_attention_size
    check(dimension, 3, 5, 6, kv_pool=2, max_attention_size=total, where="op")  # exactly at the cap passes
    with pytest.raises(ValueError, match=rf"^op: {dimension} dot-product attention on a \(T, H, W\) = \(3, 5, 6\) "
                                         rf"map needs {total:,} query×key scores per example "
                                         rf"\(> max_attention_size={total - 1:,}\); raise kv_pool \(now 2\)"):
        check(dimension, 3, 5, 6, kv_pool=2, max_attention_size=total - 1, where="op")


def test_operation_errors_name_the_layer_and_the_value():
    with pytest.raises(ValueError, match=r"^op7: spatiotemporal dot-product attention"):
        AttentionOperation(C, name="op7", max_attention_size=500)(X)  # 48 x 12 scores
    with pytest.raises(ValueError, match=r"^op8: input has 4 channels, expected 8$"):
        AttentionOperation(8, name="op8")(Y)  # W = 8 too
    with pytest.raises(ValueError, match=r"^dimension must be one of \('spatial', 'temporal', 'spatiotemporal'\), "
                                         r"got 'depth'$"):
        AttentionOperation(C, dimension="depth")


def test_operation_config_round_trip():
    kwargs = dict(channels=C, dimension="temporal", attention_type="map", g1="conv3x3x3", g2="conv3x3x3",
                  g3="identity", activation="relu", reduction=0.25, kv_pool=3, max_attention_size=77)
    config = AttentionOperation(**kwargs).get_config()
    assert {k: config[k] for k in kwargs} == kwargs
    assert AttentionOperation.from_config(config).get_config() == config
    assert keras.saving.get_registered_name(AttentionOperation) == "attention_nas>AttentionOperation"


def test_conv_cost_by_hand():
    # A 3x3x3 conv 5 -> 6 at 2 x 3 x 4 positions: 27·5·6 weights (+ 6 biases), 2 FLOPs per multiply-add.
    assert operations.conv_cost(2, 3, 4, (3, 3, 3), 5, 6) == (27 * 30 + 6, 2 * 24 * 27 * 30)
    assert operations.conv_cost(2, 3, 4, (3, 3, 3), 5, 6, bias=False) == (27 * 30, 2 * 24 * 27 * 30)


@pytest.mark.parametrize("op, params, flops", [
    # (T, H, W, C) = (3, 4, 5, 8), C′ = 4, 60 positions. G₁ 3x3x3: 27·8·4 + 4 weights, 2·60·27·32 FLOPs;
    # G₂, G₁ 1x1x1: 8·4 + 4, 2·60·32; G₃ 1x1x1: 8·8 + 8, 2·60·64.
    # Temporal dot: scores T·T·C′, A·V T·T·(H·W·C).
    ({"type": "dot", "dimension": "temporal", "g1": "conv3x3x3", "g2": "conv1x1x1", "g3": "conv1x1x1"},
     868 + 36 + 72, 103680 + 3840 + 7680 + 2 * 9 * 4 + 2 * 9 * 20 * 8),
    # Spatial dot, G₂ 3x3x3, keys pooled 2 x 2 (the default kv_pool) to 2 x 3: per frame 20 queries x 6 keys.
    ({"type": "dot", "dimension": "spatial", "g1": "conv1x1x1", "g2": "conv3x3x3", "g3": "identity"},
     36 + 868, 3840 + 103680 + 3 * (2 * 20 * 6 * 4 + 2 * 20 * 6 * 8)),
    # Temporal map: G₂ 3x1x1 on the (T, 1, 1) token map, 1 -> 1 channel: 3 + 1 weights, 2·3·3 FLOPs.
    ({"type": "map", "dimension": "temporal", "g1": "conv1x1x1", "g2": "conv3x3x3", "g3": "identity"},
     36 + 4, 3840 + 18),
    # Spatial map: G₂ 1x3x3 on the (T, H, W) map: 9 + 1 weights, 2·60·9 FLOPs.
    ({"type": "map", "dimension": "spatial", "g1": "conv1x1x1", "g2": "conv3x3x3", "g3": "identity"},
     36 + 10, 3840 + 1080),
])
def test_operation_cost_by_hand(op, params, flops):
    assert operations.operation_cost({**op, "reduction": 0.5}, (3, 4, 5, 8)) == {"params": params, "flops": flops}


def test_degenerate_pairs_count_tokens_and_say_why():
    assert operations.degenerate_pairs(("map",), ("spatiotemporal", "spatial"), 1, 2, 2, kv_pool=1) == {}
    assert operations.degenerate_pairs(("map",), ("temporal",), 1, 4, 4, kv_pool=1) == {
        ("map", "temporal"): "temporal map on a (T, H, W) = (1, 4, 4) map has one token (softmax ≡ 1)"}
