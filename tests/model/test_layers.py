import numpy as np
import pytest

from model.layers import ChannelAttention, ConnectionFusion, PooledOneHot
from tests.helpers import run_layer_test

RNG = np.random.default_rng(0)


def _video(c, b=2, t=3, s=8):
    return RNG.normal(size=(b, t, s, s, c)).astype("float32")


def test_pooled_one_hot_marks_classes_present_in_each_window():
    mask = np.zeros((1, 1, 4, 4), "int32")
    mask[0, 0, 0, 0] = 3
    mask[0, 0, 3, 3] = 1
    out = np.asarray(PooledOneHot(5, pool_size=2)(mask))
    assert out.shape == (1, 1, 2, 2, 5)
    np.testing.assert_array_equal(out[0, 0, 0, 0], [1, 0, 0, 1, 0])
    np.testing.assert_array_equal(out[0, 0, 1, 1], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(out[0, 0, 0, 1], [1, 0, 0, 0, 0])
    run_layer_test(PooledOneHot, {"num_classes": 7, "pool_size": 4},
                   RNG.integers(0, 7, (2, 3, 8, 8)).astype("int32"), (2, 3, 2, 2, 7), run_fit=False)


def test_connection_fusion_is_the_sigmoid_weighted_sum():
    a, b = _video(4), _video(4)
    layer = ConnectionFusion(2)
    out = np.asarray(layer([a, b]))
    np.testing.assert_allclose(out, 0.5 * a + 0.5 * b, rtol=1e-6)
    layer.w.assign(np.array([2.0, -1.0], "float32"))
    sig = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
    np.testing.assert_allclose(np.asarray(layer([a, b])), sig[0] * a + sig[1] * b, rtol=1e-5, atol=1e-6)
    run_layer_test(ConnectionFusion, {"num_inputs": 3}, [_video(4), _video(4), _video(4)], (2, 3, 8, 8, 4),
                   expected_trainable_weights=1)


@pytest.mark.parametrize("mode, sources, n_weights", [
    ("static", [], 1), ("self", [], 2), ("peer", [_video(6, s=4)], 2), ("search", [_video(6, s=4), _video(2)], 5),
])
def test_channel_attention_modes(mode, sources, n_weights):
    x = _video(4)
    kwargs = {"mode": mode, "channels": 4, "num_peers": max(len(sources), 1)}
    run_layer_test(ChannelAttention, kwargs, [x] + sources, (2, 3, 8, 8, 4), expected_trainable_weights=n_weights)


def test_search_attention_mixes_peer_logits_by_softmax_h():
    x, p0, p1 = _video(4), _video(6, s=4), _video(2)
    layer = ChannelAttention("search", 4, num_peers=2)
    layer([x, p0, p1])
    layer.h.assign(np.array([30.0, -30.0], "float32"))  # softmax(h) ≈ one-hot on peer 0
    peer = ChannelAttention("peer", 4)
    peer([x, p0])
    peer.fcs[0].set_weights(layer.fcs[0].get_weights())
    np.testing.assert_allclose(np.asarray(layer([x, p0, p1])), np.asarray(peer([x, p0])), rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="attention mode must be one of"):
        ChannelAttention("cross", 4)
    with pytest.raises(ValueError, match="num_peers must be 1 for mode 'peer'"):
        ChannelAttention("peer", 4, num_peers=3)
    with pytest.raises(ValueError, match="expected 2 inputs, got 1"):
        ConnectionFusion(2)([_video(4)])


@pytest.mark.parametrize("kernel, stride, dilation", [((1, 3, 3), 2, 1), ((3, 1, 1), 1, 2), ((1, 1, 1), 2, 1),
                                                       ((1, 7, 7), 2, 1), ((5, 1, 1), 1, 4),
                                                       ((3, 1, 1), 1, 3), ((3, 1, 1), 1, 8)])
def test_video_conv_equals_conv3d(kernel, stride, dilation):
    import keras

    from model.layers import VideoConv

    x = _video(3, t=8, s=8)
    conv = VideoConv(5, kernel, strides=stride, dilation_rate=dilation)
    ref = keras.layers.Conv3D(5, kernel, strides=(1, stride, stride), dilation_rate=(dilation, 1, 1),
                              padding="same", use_bias=False)
    out = np.asarray(conv(x))
    ref(x)
    ref.set_weights(conv.get_weights())
    np.testing.assert_allclose(out, np.asarray(ref(x)), rtol=1e-4, atol=1e-4)
    run_layer_test(VideoConv, {"filters": 5, "kernel_size": kernel, "strides": stride, "dilation_rate": dilation},
                   x, out.shape)
