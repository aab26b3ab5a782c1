"""Table 4's control of AssembleNet++: `conv` mode, a 1x1 convolution of the peer with exactly the
parameters of the peer-attention FC, in place of the attention (model/layers.py, model/assemblenet.py)."""

import dataclasses

import keras
import numpy as np
import pytest

from model.assemblenet import build_assemblenet
from model.layers import ChannelAttention
from model.structure import tiny
from tests.helpers import run_layer_test


def test_conv_layer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8, 8, 4)).astype("float32")
    source = rng.normal(size=(2, 3, 8, 8, 6)).astype("float32")
    run_layer_test(ChannelAttention, {"mode": "conv", "channels": 4}, [x, source], (2, 3, 8, 8, 4),
                   expected_trainable_weights=2)
    layer = ChannelAttention("conv", 4)
    out = keras.ops.convert_to_numpy(layer([x, source]))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.fcs[0].weights)
    np.testing.assert_allclose(out, x + source @ kernel + bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="spatial size"):
        layer([x, source[:, :, :4, :4]])


def _with_peers(structure, peers, inputs=None):
    nodes = tuple(n if n.is_stem else dataclasses.replace(
        n, peer=peers[n.index], inputs=(inputs or {}).get(n.index, n.inputs)) for n in structure.nodes)
    return structure.replace(nodes=nodes)


def test_conv_model_has_the_peer_models_parameters():
    # Block 7 (fused stride 8) reads peer 3 (stride 4: pooled); block 8 fed by stride-4 nodes only reads
    # peer 7 (stride 16: upsampled); the object stem (151 channels) is block 5's peer.
    s = _with_peers(tiny(), {3: 0, 4: 1, 5: 2, 6: 4, 7: 3, 8: 7}, inputs={8: (2, 4)})
    peer = build_assemblenet(s, 5, attention="peer", frames=4, size=32)
    conv = build_assemblenet(s, 5, attention="conv", frames=4, size=32)
    none = build_assemblenet(s, 5, attention="none", frames=4, size=32)
    assert conv.count_params() == peer.count_params() > none.count_params()
    assert conv.get_layer("block8_attention").fcs[0].kernel.shape == (64, 16)  # peer 7: 4C = 64; fused width 16
    assert conv.get_layer("block5_attention").fcs[0].kernel.shape == (151, 16)
    x = {"rgb": np.zeros((1, 4, 32, 32, 3), "float32"), "flow": np.zeros((1, 4, 32, 32, 2), "float32"),
         "object": np.zeros((1, 4, 32, 32), "int32")}
    assert conv.predict_on_batch(x).shape == (1, 5)


def test_conv_needs_peers():
    with pytest.raises(ValueError, match="attention 'conv' needs a peer"):
        build_assemblenet(tiny(), 5, attention="conv", frames=4, size=32)
