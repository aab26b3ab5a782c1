import keras
import numpy as np
import pytest

from model.layers import BatchNorm, ChannelAttention, ConnectionFusion, EdgeGates, PooledOneHot, SpatialMaxPool
from tests.helpers import gradients, run_layer_test

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
    # A non-square mask (H ≠ W) and unknown sizes.
    wide = RNG.integers(0, 7, (1, 2, 4, 8)).astype("int32")
    out = np.asarray(PooledOneHot(7, pool_size=2)(wide))
    expected = np.eye(7)[wide].reshape(1, 2, 2, 2, 4, 2, 7).max(axis=(3, 5))
    np.testing.assert_array_equal(out, expected)
    assert PooledOneHot(7, pool_size=2).compute_output_shape((None, None, None, None)) == (None, None, None, None, 7)


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


def test_masked_fusion_and_edge_gates_weigh_only_the_unmasked_inputs():
    # AssembleNet++ Eq. 1 over the connections with m_j = 1: Σ_j m_j σ(w_j)·x_j (ConnectionFusion), and the
    # terms m_j σ(w_j)·x_j one by one (EdgeGates). The mask starts at ones and is not trained; a masked input
    # adds exactly zero even when it holds inf.
    xs = [_video(4) for _ in range(3)]
    w = np.array([1.2, -0.4, 0.3], "float32")
    sig = 1 / (1 + np.exp(-w.astype("float64")))
    for cls in (ConnectionFusion, EdgeGates):
        layer = cls(3, masked=True)
        layer(xs)
        assert [v.name for v in layer.trainable_weights] == ["w"]
        assert [v.name for v in layer.non_trainable_weights] == ["mask"]
        layer.w.assign(w)
        terms = [sig[j] * xs[j] for j in range(3)]
        out = layer(xs)
        got = [np.asarray(t) for t in out] if cls is EdgeGates else np.asarray(out)
        np.testing.assert_allclose(got, terms if cls is EdgeGates else sum(terms), rtol=1e-5, atol=1e-6)
        layer.mask.assign(np.array([1.0, 0.0, 1.0], "float32"))
        out = layer([xs[0], np.full_like(xs[1], np.inf), xs[2]])
        expected = [terms[0], np.zeros_like(terms[1]), terms[2]]
        got = [np.asarray(t) for t in out] if cls is EdgeGates else np.asarray(out)
        np.testing.assert_allclose(got, expected if cls is EdgeGates else sum(expected), rtol=1e-5, atol=1e-6)
    symbolic = [keras.Input((3, 8, 8, 4)), keras.Input((3, 8, 8, 6))]
    assert [tuple(t.shape) for t in EdgeGates(2)(symbolic)] == [(None, 3, 8, 8, 4), (None, 3, 8, 8, 6)]


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


def test_fresh_attention_gates_by_one_half_and_mixes_peers_uniformly():
    # v and h start at zero (AssembleNet++ §3.4-3.5): static attention gates every channel by σ(0) = 1/2,
    # and search attention weights its peers equally, softmax(0) = 1/m, before any training.
    x, peers = _video(3), [_video(2), _video(5, s=4)]
    static = ChannelAttention("static", 3)
    np.testing.assert_allclose(np.asarray(static([x])), 0.5 * x, rtol=1e-6)
    search = ChannelAttention("search", 3, num_peers=2)
    out = np.asarray(search([x, *peers]))
    logits = sum(0.5 * (p.mean(axis=(2, 3)) @ kernel + bias)
                 for p, (kernel, bias) in zip(peers, (fc.get_weights() for fc in search.fcs), strict=True))
    np.testing.assert_allclose(out, x / (1 + np.exp(-logits))[:, :, None, None, :], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["static", "search"])
def test_attention_keeps_the_compute_dtype_under_mixed_precision(mode):
    # The gate is cast to the compute dtype: a float32 gate would promote bf16 activations to float32.
    peers = [_video(4), _video(2)] if mode == "search" else []
    layer = ChannelAttention(mode, 3, num_peers=max(len(peers), 1), dtype="mixed_bfloat16")
    inputs = [_video(3), *peers]
    assert keras.backend.standardize_dtype(layer(inputs).dtype) == "bfloat16"


def test_fusion_and_object_stem_keep_the_compute_dtype_under_mixed_precision():
    xs = [_video(4), _video(4)]
    for layer in (ConnectionFusion(2, dtype="mixed_bfloat16"), EdgeGates(2, dtype="mixed_bfloat16")):
        out = layer(xs)
        for t in out if isinstance(out, list) else [out]:
            assert keras.backend.standardize_dtype(t.dtype) == "bfloat16", layer
    one_hot = PooledOneHot(5, pool_size=2, dtype="mixed_bfloat16")(RNG.integers(0, 5, (1, 2, 4, 4)).astype("int32"))
    assert keras.backend.standardize_dtype(one_hot.dtype) == "bfloat16"


def test_attention_input_errors_name_the_bad_shape():
    x = _video(3)
    with pytest.raises(ValueError, match="x has 4 channels, expected 3"):
        ChannelAttention("self", 3)([_video(4)])
    with pytest.raises(ValueError, match="mode 'conv' takes 2 inputs, got 3"):
        ChannelAttention("conv", 3)([x, x, x])
    with pytest.raises(ValueError, match="mode 'search' takes 3 inputs, got 2"):
        ChannelAttention("search", 3, num_peers=2)([x, x])


@pytest.mark.parametrize("kernel, stride, dilation, channels, size", [
    ((1, 3, 3), 2, 1, 3, 8), ((3, 1, 1), 1, 2, 3, 8), ((1, 1, 1), 2, 1, 3, 8), ((1, 7, 7), 2, 1, 3, 8),
    ((5, 1, 1), 1, 4, 3, 8), ((3, 1, 1), 1, 3, 3, 8), ((3, 1, 1), 1, 8, 3, 8),
    # Stems: space-to-depth for stride 2 on even sides (k = 3, 5, 7: every padding parity), else padding.
    ((1, 7, 7), 2, 1, 2, 12), ((1, 5, 5), 2, 1, 3, 10), ((1, 5, 3), 2, 1, 1, 6), ((1, 7, 7), 2, 1, 3, 9),
    ((1, 7, 7), 1, 1, 3, 8), ((1, 3, 3), 2, 1, 8, 8)])
def test_video_conv_equals_conv3d(kernel, stride, dilation, channels, size):
    import keras

    from model.layers import VideoConv

    x = _video(channels, t=8, s=size)
    conv = VideoConv(5, kernel, strides=stride, dilation_rate=dilation)
    ref = keras.layers.Conv3D(5, kernel, strides=(1, stride, stride), dilation_rate=(dilation, 1, 1),
                              padding="same", use_bias=False)
    out = np.asarray(conv(x))
    ref(x)
    ref.set_weights(conv.get_weights())
    np.testing.assert_allclose(out, np.asarray(ref(x)), rtol=1e-4, atol=1e-4)
    run_layer_test(VideoConv, {"filters": 5, "kernel_size": kernel, "strides": stride, "dilation_rate": dilation},
                   x, out.shape)


@pytest.mark.parametrize("kt", [3, 5])
@pytest.mark.parametrize("frames", [3, 16])
def test_video_conv_runtime_dilation_is_the_dilated_conv_for_every_r(kt, frames):
    """One layer with `max_dilation` computes the dilated conv of every r of the search space (§3.2), the
    r read from its variable: exactly, on integer-valued inputs and kernels (where float sums are exact
    in any order), against both the compile-time VideoConv and Keras's Conv3D; clips shorter than r too."""
    import keras

    from model.evolution import DILATIONS
    from model.layers import VideoConv

    rng = np.random.default_rng(kt + frames)
    x = rng.integers(-3, 4, (2, frames, 4, 4, 6)).astype("float32")
    runtime = VideoConv(5, (kt, 1, 1), dilation_rate=2, max_dilation=max(DILATIONS))
    runtime.build(x.shape)
    assert int(runtime.dilation.numpy()) == 2 and not runtime.dilation.trainable
    kernel = rng.integers(-3, 4, tuple(runtime.kernel.shape)).astype("float32")
    runtime.kernel.assign(kernel)
    outputs = set()
    for r in DILATIONS:
        runtime.dilation.assign(r)
        fixed = VideoConv(5, (kt, 1, 1), dilation_rate=r)
        ref = keras.layers.Conv3D(5, (kt, 1, 1), dilation_rate=(r, 1, 1), padding="same", use_bias=False)
        fixed.build(x.shape)
        ref.build(x.shape)
        fixed.kernel.assign(kernel)
        ref.kernel.assign(kernel)
        out = np.asarray(runtime(x))
        np.testing.assert_array_equal(out, np.asarray(fixed(x)), err_msg=f"r={r}")
        np.testing.assert_array_equal(out, np.asarray(ref(x)), err_msg=f"r={r}")
        outputs.add(out.tobytes())
    assert len(outputs) == (len(DILATIONS) if frames > max(DILATIONS) else 3)  # r >= T: only the centre tap
    run_layer_test(VideoConv, {"filters": 5, "kernel_size": (kt, 1, 1), "dilation_rate": 2, "max_dilation": 8},
                   x, (2, frames, 4, 4, 5))


def test_video_conv_runtime_dilation_arguments_are_checked():
    from model.layers import VideoConv

    with pytest.raises(ValueError, match="temporal kernel"):
        VideoConv(5, (1, 3, 3), max_dilation=8)
    with pytest.raises(ValueError, match="with k odd"):
        VideoConv(5, (4, 1, 1), max_dilation=8)
    with pytest.raises(ValueError, match="max_dilation=2 must be >= dilation_rate=4"):
        VideoConv(5, (3, 1, 1), dilation_rate=4, max_dilation=2)


def test_runtime_width_selects_by_the_width_it_holds():
    """layers.RuntimeWidth in its three modes, with W set at run time: zero-padding x or taking its
    projection, zeroing the channels from W on, the identity shortcut or the conv."""
    from model.layers import RuntimeWidth

    rng = np.random.default_rng(0)
    x4, proj8, x8, conv4 = (rng.normal(size=(2, 2, 3, 3, c)).astype("float32") for c in (4, 8, 8, 4))
    pad = RuntimeWidth("pad_or_project", 8, 4, channels=4)
    out = np.asarray(pad([x4, proj8]))
    np.testing.assert_array_equal(out[..., :4], x4)  # W = 4 = the input's width: unprojected
    np.testing.assert_array_equal(out[..., 4:], 0.0)
    pad.runtime_width.assign(8)
    np.testing.assert_array_equal(np.asarray(pad([x4, proj8])), proj8)
    mask = RuntimeWidth("mask", 8, 4)
    np.testing.assert_array_equal(np.asarray(mask([x8])), np.concatenate([x8[..., :4], 0 * x8[..., 4:]], -1))
    mask.runtime_width.assign(6)
    np.testing.assert_array_equal(np.asarray(mask([x8]))[..., :6], x8[..., :6])
    np.testing.assert_array_equal(np.asarray(mask([x8]))[..., 6:], 0.0)
    shortcut = RuntimeWidth("identity_or_conv", 8, 4, channels=4)
    np.testing.assert_array_equal(np.asarray(shortcut([x8, conv4])), x8[..., :4])  # W = 4C: identity
    shortcut.runtime_width.assign(8)
    np.testing.assert_array_equal(np.asarray(shortcut([x8, conv4])), conv4)
    assert not shortcut.runtime_width.trainable and shortcut.runtime_width.dtype == "int32"
    run_layer_test(RuntimeWidth, {"mode": "mask", "max_width": 8, "width": 4}, [x8], (2, 2, 3, 3, 8),
                   expected_trainable_weights=0, run_fit=False)
    run_layer_test(RuntimeWidth, {"mode": "pad_or_project", "max_width": 8, "width": 4, "channels": 4},
                   [x4, proj8], (2, 2, 3, 3, 8), expected_trainable_weights=0, run_fit=False)
    for bad, match in [({"mode": "sum", "max_width": 8, "width": 4}, "mode must be one of"),
                       ({"mode": "mask", "max_width": 8, "width": 9}, "width=9"),
                       ({"mode": "mask", "max_width": 8, "width": 4, "channels": 4}, "expected None for 'mask'"),
                       ({"mode": "identity_or_conv", "max_width": 8, "width": 4}, "channels=None")]:
        with pytest.raises(ValueError, match=match):
            RuntimeWidth(**bad)


def test_batch_norm_layer_standard_checks():
    layer = run_layer_test(BatchNorm, {"relu": True, "momentum": 0.9}, _video(4), (2, 3, 8, 8, 4),
                           expected_trainable_weights=2)
    assert layer.get_config()["relu"] is True


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_training_matches_keras_batch_norm_and_its_gradients(relu):
    """The fast training path computes Keras's function: outputs, moving statistics and the gradients
    with respect to x, γ and β, on data far from zero mean (where a naive one-pass variance would lose
    digits) and with some γ = 0 (zero-initialised residual branches)."""
    rng = np.random.default_rng(0)
    x = (50.0 + 3.0 * rng.normal(size=(2, 3, 5, 5, 4))).astype("float32")
    gamma = np.array([1.5, 0.0, -0.7, 1.0], "float32")
    beta = np.array([0.1, 0.2, -0.3, 0.0], "float32")
    weights = rng.normal(size=x.shape).astype("float32")
    ours = BatchNorm(relu=relu, momentum=0.9)
    ref = keras.layers.BatchNormalization(momentum=0.9)
    ours.build(x.shape)
    ref.build(x.shape)

    relu_fn = keras.ops.relu if relu else (lambda y: y)

    def call(layer, x, gamma, beta):
        # stateless_call: γ, β come in as values (differentiable), moving statistics go out as values.
        return layer.stateless_call([gamma, beta], [v.value for v in layer.non_trainable_variables], x,
                                    training=True)

    def loss_of(layer, activation):
        return lambda x, gamma, beta: keras.ops.sum(activation(call(layer, x, gamma, beta)[0]) * weights)

    value, grads = gradients(loss_of(ours, lambda y: y), x, gamma, beta)
    ref_value, ref_grads = gradients(loss_of(ref, relu_fn), x, gamma, beta)
    np.testing.assert_allclose(value, ref_value, rtol=1e-4, atol=1e-3)
    for g, r, what in zip(grads, ref_grads, ("x", "gamma", "beta"), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3, err_msg=what)
    assert np.abs(grads[0]).max() > 0.1
    assert np.all(grads[0][..., 1] == 0)
    for ours_stat, ref_stat in zip(call(ours, x, gamma, beta)[1], call(ref, x, gamma, beta)[1], strict=True):
        ours_stat, ref_stat = keras.ops.convert_to_numpy(ours_stat), keras.ops.convert_to_numpy(ref_stat)
        assert not np.allclose(ref_stat, [0.0, 0.0, 0.0, 0.0]) and not np.allclose(ref_stat, 1.0)
        np.testing.assert_allclose(ours_stat, ref_stat, rtol=1e-4)
    inference = keras.ops.convert_to_numpy(ours(x, training=False))
    expected = relu_fn(ref(x, training=False))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pool, size", [(2, 8), (4, 8), (2, 7), (4, 6), (2, (7, 8)), (2, (8, 7))])
def test_spatial_max_pool_equals_max_pooling3d(pool, size):
    """Reshape path where the pool divides the sides, reduce_window ('same' padding) elsewhere (also when
    only one side is divisible)."""
    h, w = size if isinstance(size, tuple) else (size, size)
    x = RNG.normal(size=(2, 3, h, w, 3)).astype("float32")
    ref = keras.layers.MaxPooling3D((1, pool, pool), strides=(1, pool, pool), padding="same")(x)
    out = run_layer_test(SpatialMaxPool, {"pool_size": pool}, x, tuple(ref.shape))(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(ref))
    assert (out.shape[2], out.shape[3]) == (-(-h // pool), -(-w // pool))
    assert SpatialMaxPool(pool).compute_output_shape((None, None, None, None, 3)) == (None, None, None, None, 3)


def test_connection_fusion_gradients_are_those_of_the_weighted_sum():
    """The custom gradient (float32 accumulation for w) equals the analytic one of Σ σ(w_j) x_j."""
    layer = ConnectionFusion(3)
    xs = [_video(4) for _ in range(3)]
    layer.build([x.shape for x in xs])
    w = np.array([0.3, -1.2, 2.0], "float32")
    upstream = RNG.normal(size=xs[0].shape).astype("float32")

    def loss(w, x0, x1, x2):
        out, _ = layer.stateless_call([w], [], [x0, x1, x2])
        return keras.ops.sum(out * upstream)

    _, grads = gradients(loss, w, *xs)
    sigma = 1 / (1 + np.exp(-w))
    expected_w = [sigma[j] * (1 - sigma[j]) * np.sum(upstream * xs[j]) for j in range(3)]
    np.testing.assert_allclose(grads[0], expected_w, rtol=1e-4)
    for j in range(3):
        np.testing.assert_allclose(grads[1 + j], sigma[j] * upstream, rtol=1e-5)
