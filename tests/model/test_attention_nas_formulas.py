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

from model.attention_nas import AttentionOperation

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
