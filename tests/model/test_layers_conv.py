"""Value tests of `VideoConv`, its space-to-depth helpers and `BatchNorm` against numpy written out here:
the convolution as a sum of shifted slices times kernel taps, batch normalisation as its formula."""

import keras
import numpy as np
import pytest

from model.layers import BatchNorm, RuntimeWidth, VideoConv, _space_to_depth_applies, _space_to_depth_plan

RNG = np.random.default_rng(1)


def _same_padding(n, k, stride, dilation):
    """'Same' padding of one axis: the output has ceil(n / stride) samples, the padding split with the
    smaller half before (TensorFlow's and Keras's rule)."""
    out = -(-n // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return out, total // 2, total - total // 2


def _numpy_video_conv(x, kernel, stride=1, dilation=1):
    """Conv3D(padding='same', use_bias=False) of (B, T, H, W, C) with a (kt, kh, kw, C, F) kernel, stride in
    space only and dilation in time only, as Σ over the taps of a strided slice of the padded input."""
    kt, kh, kw = kernel.shape[:3]
    b, t, h, w, _ = x.shape
    _, t0, t1 = _same_padding(t, kt, 1, dilation)
    oh, h0, h1 = _same_padding(h, kh, stride, 1)
    ow, w0, w1 = _same_padding(w, kw, stride, 1)
    padded = np.pad(x.astype("float64"), [(0, 0), (t0, t1), (h0, h1), (w0, w1), (0, 0)])
    y = np.zeros((b, t, oh, ow, kernel.shape[-1]))
    for a in range(kt):
        for p in range(kh):
            for q in range(kw):
                window = padded[:, a * dilation:a * dilation + t,
                                p:p + (oh - 1) * stride + 1:stride, q:q + (ow - 1) * stride + 1:stride]
                y += window @ kernel[a, p, q].astype("float64")
    return y


def _integer_weights(layer):
    """A kernel of small integers: on integer inputs every product and sum is exact in float32, in any order."""
    kernel = RNG.integers(-2, 3, tuple(layer.kernel.shape)).astype("float32")
    layer.kernel.assign(kernel)
    return kernel


@pytest.mark.parametrize("kernel, stride, dilation, channels, size", [
    # Stems on the space-to-depth path, H ≠ W, kernels of every padding parity (k = 3 … 11).
    ((1, 3, 3), 2, 1, 3, (3, 10, 8)), ((1, 5, 3), 2, 1, 2, (2, 6, 12)), ((1, 9, 11), 2, 1, 3, (1, 12, 14)),
    ((1, 7, 5), 2, 1, 1, (1, 14, 10)),
    # Narrow inputs off that path: one odd side, an even or 1-wide kernel, stride 3 or 1 (more frames than
    # the 8 channels the input is padded to).
    ((1, 3, 3), 2, 1, 3, (2, 9, 8)), ((1, 3, 3), 2, 1, 3, (2, 8, 9)), ((1, 4, 4), 2, 1, 3, (2, 8, 8)),
    ((1, 1, 3), 2, 1, 3, (2, 8, 8)), ((1, 3, 3), 3, 1, 3, (2, 12, 12)), ((1, 3, 3), 1, 1, 3, (10, 6, 5)),
    # 9 channels (not narrow) on fewer than 8 frames and columns; 1x1x1 with a stride; temporal, H ≠ W.
    ((1, 3, 3), 1, 1, 9, (3, 6, 5)), ((1, 3, 3), 2, 1, 9, (2, 7, 6)), ((1, 1, 1), 2, 1, 4, (3, 7, 4)),
    ((1, 1, 1), 1, 1, 4, (3, 3, 5)), ((3, 1, 1), 1, 2, 4, (7, 3, 5)), ((3, 1, 1), 1, 1, 4, (5, 3, 5)),
    ((5, 1, 1), 1, 3, 2, (8, 2, 3)),
    # Even kernels: temporal ones, dilated too ('same' pads one frame fewer in front than behind), and
    # the 1-tap-wide spatial ones.
    ((2, 1, 1), 1, 1, 4, (5, 3, 5)), ((2, 1, 1), 1, 2, 4, (7, 3, 5)), ((4, 1, 1), 1, 3, 2, (8, 2, 3)),
    ((1, 2, 1), 1, 1, 4, (3, 4, 5)), ((1, 1, 2), 2, 1, 9, (2, 6, 5))])
def test_video_conv_is_the_numpy_convolution(kernel, stride, dilation, channels, size):
    x = RNG.integers(-3, 4, (2, *size, channels)).astype("float32")
    layer = VideoConv(4, kernel, strides=stride, dilation_rate=dilation)
    layer.build(x.shape)
    weights = _integer_weights(layer)
    expected = _numpy_video_conv(x, weights, stride, dilation)
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("kt, r", [(3, 1), (3, 2), (5, 3)])
def test_runtime_dilation_is_the_numpy_dilated_convolution_on_non_square_frames(kt, r):
    x = RNG.integers(-3, 4, (2, 6, 3, 5, 4)).astype("float32")
    layer = VideoConv(3, (kt, 1, 1), dilation_rate=1, max_dilation=4)
    layer.build(x.shape)
    weights = _integer_weights(layer)
    layer.dilation.assign(r)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), _numpy_video_conv(x, weights, 1, r),
                               rtol=0, atol=1e-3)


def test_space_to_depth_is_chosen_and_planned_as_worked_out_by_hand():
    """A stride-2 conv runs on 2x2 blocks when both sides are known and even and both kernel sides are odd
    and at least 3, whatever the channel count (RGB 3, flow 2). The plan (taps in front, taps behind,
    block-kernel size, block padding before and after), worked out from 'same' padding (k - 2, the smaller
    half before) for each odd k; the paddings are ints (JAX's pad takes no floats)."""
    for kernel in [(3, 3, 3, 5), (7, 7, 2, 5), (5, 3, 1, 5), (3, 9, 3, 5)]:
        assert _space_to_depth_applies((2, 4, 8, 12, kernel[2]), kernel), kernel
    for shape in [(2, 4, None, 8, 3), (2, 4, 8, None, 3), (2, 4, 9, 8, 3), (2, 4, 8, 9, 3)]:
        assert not _space_to_depth_applies(shape, (3, 3, 3, 5)), shape
    for kernel in [(1, 3, 3, 5), (3, 1, 3, 5), (4, 4, 3, 5), (3, 2, 3, 5), (5, 6, 3, 5)]:
        assert not _space_to_depth_applies((2, 4, 8, 8, 3), kernel), kernel
    plans = {3: (0, 1, 2, 0, 1), 5: (1, 0, 3, 1, 1), 7: (0, 1, 4, 1, 2), 9: (1, 0, 5, 2, 2), 11: (0, 1, 6, 2, 3)}
    for k, plan in plans.items():
        got = _space_to_depth_plan(k)
        assert got == plan and all(type(v) is int for v in got), (k, got)


def test_video_conv_weights_initializer_and_output_shape():
    layer = VideoConv(4, (1, 3, 3), kernel_initializer="ones")
    layer.build((2, 3, 8, 8, 5))
    assert [v.name for v in layer.weights] == ["kernel"] and layer.kernel.shape == (1, 3, 3, 5, 4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), 1.0)
    restored = VideoConv.from_config(layer.get_config())
    restored.build((2, 3, 8, 8, 5))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.kernel), 1.0)
    # The default He-normal: a (truncated) normal of standard deviation about sqrt(2 / fan_in).
    wide = VideoConv(64, (1, 3, 3))
    wide.build((1, 1, 4, 4, 16))
    std = float(np.std(keras.ops.convert_to_numpy(wide.kernel)))
    assert 0.8 * np.sqrt(2 / 144) < std < 1.1 * np.sqrt(2 / 144), std
    runtime = VideoConv(4, (3, 1, 1), dilation_rate=2, max_dilation=4)
    runtime.build((2, 3, 8, 8, 5))
    assert [v.name for v in runtime.non_trainable_weights] == ["dilation"]
    assert runtime.dilation.shape == () and keras.backend.standardize_dtype(runtime.dilation.dtype) == "int32"
    assert keras.saving.get_registered_name(VideoConv) == "assemblenet>VideoConv"
    width = RuntimeWidth("mask", 8, 4)
    width.build((2, 3, 8, 8, 8))
    assert [v.name for v in width.non_trainable_weights] == ["width"] and width.runtime_width.shape == ()
    for stride, shape in [(1, (2, 3, 9, 8, 4)), (2, (2, 3, 5, 4, 4)), (3, (2, 3, 3, 3, 4))]:
        assert VideoConv(4, (1, 3, 3), strides=stride).compute_output_shape((2, 3, 9, 8, 5)) == shape
    assert VideoConv(4, (1, 3, 3), strides=2).compute_output_shape((None,) * 5) == (None, None, None, None, 4)


@pytest.mark.parametrize("kernel, stride, channels", [((1, 3, 3), 2, 3), ((1, 3, 3), 1, 3), ((1, 3, 3), 1, 8),
                                                      ((3, 1, 1), 1, 8), ((1, 1, 1), 2, 8)])
def test_video_conv_keeps_the_compute_dtype_under_mixed_precision(kernel, stride, channels):
    # The float32 kernel is cast to the compute dtype: bf16 activations stay bf16 on every path.
    x = RNG.normal(size=(2, 3, 8, 8, channels)).astype("float32")
    layer = VideoConv(4, kernel, strides=stride, dtype="mixed_bfloat16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = _numpy_video_conv(x, keras.ops.convert_to_numpy(layer.kernel), stride)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")), expected,
                               rtol=0.05, atol=0.1)


def _batch(seed=2):
    """Channels of very different scales, one with a variance below 1, far from zero mean."""
    rng = np.random.default_rng(seed)
    scale = np.array([3.0, 0.3, 1.0, 0.05], "float32")
    return (np.array([5.0, -2.0, 0.5, 1.0], "float32") + scale * rng.normal(size=(2, 3, 4, 5, 4))).astype("float32")


def _numpy_batch_norm(x, mean, variance, gamma, beta, epsilon, relu):
    y = gamma * (x.astype("float64") - mean) / np.sqrt(variance + epsilon) + beta
    return np.maximum(y, 0.0) if relu else y


def _set(layer, **values):
    for name, value in values.items():
        getattr(layer, name).assign(np.asarray(value, "float32"))


STATE = {"gamma": [1.5, -0.7, 2.0, 0.5], "beta": [0.1, 0.2, -0.3, -0.4],
         "moving_mean": [4.0, -1.0, 0.2, 0.9], "moving_variance": [5.0, 0.04, 2.0, 0.5]}


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_training_and_inference_are_the_numpy_formula(relu):
    """Training: batch mean and (biased) variance over every axis but the channels, the output normalised
    with them, and the moving statistics m ← momentum·m + (1 - momentum)·batch statistic, starting from
    moving statistics far from 0 and 1; inference: the output normalised with the moving statistics. A
    non-default epsilon and momentum; γ < 0 and β < 0 give negative outputs for the ReLU to clip."""
    x = _batch()
    eps, momentum = 0.01, 0.8
    layer = BatchNorm(relu=relu, epsilon=eps, momentum=momentum)
    layer.build(x.shape)
    _set(layer, **STATE)
    gamma, beta, mm, mv = (np.array(STATE[k], "float64") for k in ("gamma", "beta", "moving_mean",
                                                                    "moving_variance"))
    mean, variance = x.astype("float64").mean(axis=(0, 1, 2, 3)), x.astype("float64").var(axis=(0, 1, 2, 3))
    assert variance[1] < 1 and variance[3] < 0.01
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    expected = _numpy_batch_norm(x, mean, variance, gamma, beta, eps, relu)
    assert (expected < 0).any() != relu
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    mm, mv = momentum * mm + (1 - momentum) * mean, momentum * mv + (1 - momentum) * variance
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), mv, rtol=1e-4, atol=1e-7)
    inference = keras.ops.convert_to_numpy(layer(x, training=False))
    expected = _numpy_batch_norm(x, mm, mv, gamma, beta, eps, relu)
    assert (expected < 0).any() != relu
    np.testing.assert_allclose(inference, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options", [{"center": False}, {"scale": False}, {"axis": 1}, {"axis": -2},
                                     {"trainable": False}, {"mask": True}])
def test_batch_norm_keras_path_cases_are_the_numpy_formula(options):
    """The cases the fast path leaves to Keras (no β, no γ, another axis, a frozen layer, a mask), in
    training with the ReLU: each is still the formula, over its own axis and, with a mask, with batch
    statistics over the unmasked positions only."""
    options = dict(options)
    masked = options.pop("mask", False)
    x = _batch()
    axis = options.get("axis", -1) % x.ndim
    eps = 0.01
    layer = BatchNorm(relu=True, epsilon=eps, momentum=0.8, **options)
    layer.build(x.shape)
    n = x.shape[axis]
    state = {k: np.resize(np.array(v), n) for k, v in STATE.items()}
    _set(layer, **{k: v for k, v in state.items() if getattr(layer, k, None) is not None})
    gamma = np.array(state["gamma"]) if layer.scale else 1.0
    beta = np.array(state["beta"]) if layer.center else 0.0
    moved = np.moveaxis(x.astype("float64"), axis, -1)
    mask = None
    if masked:
        mask = RNG.random(x.shape[:-1]) < 0.6
        mean = moved[mask].mean(axis=0)
        variance = moved[mask].var(axis=0)
    elif layer.trainable:
        mean, variance = moved.reshape(-1, n).mean(axis=0), moved.reshape(-1, n).var(axis=0)
    else:  # a frozen layer normalises with its moving statistics even in training
        mean, variance = np.array(state["moving_mean"]), np.array(state["moving_variance"])
    expected = _numpy_batch_norm(moved, mean, variance, gamma, beta, eps, relu=True)
    out = keras.ops.convert_to_numpy(layer(x, training=True, mask=mask))
    assert (_numpy_batch_norm(moved, mean, variance, gamma, beta, eps, relu=False) < 0).any()
    np.testing.assert_allclose(np.moveaxis(out, axis, -1), expected, rtol=1e-3, atol=1e-3)


def test_batch_norm_renorm_is_left_to_keras():
    """Batch renormalisation (Ioffe 2017) on its first step, with fresh renorm statistics (mean 0, standard
    deviation 1): r = σ_B, d = μ_B, so (x - μ_B)/σ_B · r + d gives x back (γ = 1, β = 0)."""
    x = _batch()
    layer = BatchNorm(renorm=True, epsilon=0.01)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=True)), x, rtol=1e-4, atol=1e-4)


def test_batch_norm_training_keeps_the_compute_dtype_under_mixed_precision():
    x = _batch()
    layer = BatchNorm(relu=False, epsilon=0.01, dtype="mixed_bfloat16")
    out = layer(x, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    expected = _numpy_batch_norm(x, x.mean(axis=(0, 1, 2, 3)), x.var(axis=(0, 1, 2, 3)), 1.0, 0.0, 0.01, False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")), expected,
                               rtol=0.02, atol=0.05)
