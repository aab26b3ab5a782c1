"""TV-L1 optical flow in keras.ops (AssembleNet A.6: "TV-L1 optical flow extraction implemented with
tensor operations").

The algorithm is the dual TV-L1 of Zach, Pock and Bischof (2007) in the form of Sánchez,
Meinhardt-Llopis and Facciolo, "TV-L1 Optical Flow Estimation" (IPOL 2013; the scheme OpenCV's
DualTVL1 implements): a coarse-to-fine pyramid (zoom factor 0.5), several warps per scale, and per warp a
fixed number of iterations of

    thresholding   v = u + TH(rho(u))
    primal step    u = v + theta * div(p)
    dual step      p = (p + tau/theta * grad(u)) / (1 + tau/theta * |grad(u)|)

with rho(u) = I1(x + u0) + grad I1(x + u0) . (u - u0) - I0(x) the linearised residual. The ε stopping
test of the reference is replaced by fixed iteration counts so the whole computation has a static
shape and compiles (XLA, `jax.jit`) into one program. Everything is batched: frames are (B, H, W).

Convention (same as OpenCV): the flow maps the first frame onto the second, I1(x + u(x)) ≈ I0(x);
channel 0 is the horizontal displacement u (columns), channel 1 the vertical v (rows), in pixels.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from preprocessing.kernels import tvl1_inner_iterations

# IPOL's GRAD_IS_ZERO: below it the thresholding leaves the flow unchanged.
_GRAD_IS_ZERO = 1e-10
# The pyramid halves the frames while the shorter side stays >= this many pixels (7 px at 224², 8 at
# 250 x 370): see DEFAULT_SCALES.
_MIN_COARSE_SIDE = 6
# ITU-R BT.601 luma, the weights of OpenCV's COLOR_RGB2GRAY, so both flow backends see the same image.
_LUMA = (0.299, 0.587, 0.114)

# Defaults chosen with benchmarks/flow.py (224² pairs made from real frames of the packaged clips, BENCHMARKS.md):
# - scales=None: as many levels as keep the coarsest shorter side >= 6 px (`pyramid_depth`; 6 levels at
#   224²). A motion of d px is d / 2^(L-1) px at the coarsest of L levels, and TV-L1 only recovers a
#   couple of pixels per level from zero: with 10–40 px motion at 224² (16 pairs, smooth warps and shifted
#   crops) the EPE is 17.0 px with 4 levels (coarsest 28 px, the old default, like scikit-image's >16 px
#   rule: 9.1 px), 4.1 px with 5 (14 px) and 1.2 px with 6 (7 px), while small motion stays at 0.30–0.32 px.
#   OpenCV (5 levels) and IPOL (coarsest >= 16 px) stop earlier; their images were larger than their motion.
# - 3 warps, 10 iterations: 0.30 / 0.24 px on small smooth warps (seeds 0 / 1) against 0.35 / 0.31 px for
#   OpenCV's DualTVL1 with its defaults, at a third of the cost of 5 warps x 20 iterations (0.30 px: more
#   iterations fit the TV-L1 model more closely, not the true flow); 2 warps lose accuracy (0.40 px).
# - median=0: the 5 x 5 median filter of the flow after each warp (IPOL, OpenCV) moved the EPE by 0.02 px
#   on small and 2.4 px on large motion with 4 levels (far less than the levels) and made the CPU run
#   ~4x slower (a 25-way median per warp); it stays an option.
DEFAULT_SCALES = None
DEFAULT_WARPS = 3
DEFAULT_ITERATIONS = 10
DEFAULT_MEDIAN = 0
DEFAULT_SMOOTHING = 0.8


def rgb_to_gray(frames):
    """(…, 3) RGB in [0, 255] (any dtype) -> (…) float32 luma, as OpenCV's COLOR_RGB2GRAY."""
    frames = ops.cast(frames, "float32")
    return frames[..., 0] * _LUMA[0] + frames[..., 1] * _LUMA[1] + frames[..., 2] * _LUMA[2]


def _gaussian_taps(sigma):
    radius = max(1, math.ceil(2 * sigma))
    x = np.arange(-radius, radius + 1, dtype="float64")
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).tolist()


def _smooth(images, sigma):
    """Separable Gaussian blur of (B, H, W) images with mirrored borders (IPOL's presmoothing)."""
    if sigma <= 0:
        return images
    taps = _gaussian_taps(sigma)
    radius = len(taps) // 2
    height, width = images.shape[1], images.shape[2]
    padded = ops.pad(images, [[0, 0], [0, 0], [radius, radius]], mode="symmetric")
    images = sum(t * padded[:, :, k:k + width] for k, t in enumerate(taps))
    padded = ops.pad(images, [[0, 0], [radius, radius], [0, 0]], mode="symmetric")
    return sum(t * padded[:, k:k + height, :] for k, t in enumerate(taps))


def _downsample(images):
    """Halves (B, H, W) images by 2x2 averaging (zoom factor 0.5); odd sides repeat their last row/column."""
    height, width = images.shape[1], images.shape[2]
    images = ops.pad(images, [[0, 0], [0, height % 2], [0, width % 2]], mode="symmetric")
    batch = ops.shape(images)[0]
    blocks = ops.reshape(images, (batch, (height + 1) // 2, 2, (width + 1) // 2, 2))
    return ops.mean(blocks, axis=(2, 4))


def _upsample_flow(flow, height, width):
    """Bilinear x2 upsampling of a (B, h, w, 2) flow to (B, height, width, 2), displacements doubled.

    The coarse grid is exactly half the (edge-padded, even) fine grid, so resizing to (2h, 2w) with
    half-pixel centres and cropping keeps pixel centres aligned.
    """
    coarse_h, coarse_w = flow.shape[1], flow.shape[2]
    flow = ops.image.resize(flow, (2 * coarse_h, 2 * coarse_w), interpolation="bilinear",
                            data_format="channels_last")
    return 2.0 * flow[:, :height, :width, :]


def _centered_gradient(images):
    """Central differences of (B, H, W) images, one-sided (halved) at the borders: (B, H, W, 2) (x, y).

    A symmetric pad of width 1 repeats the border pixel (TensorFlow's pad has no "edge" mode).
    """
    padded = ops.pad(images, [[0, 0], [1, 1], [1, 1]], mode="symmetric")
    grad_x = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    grad_y = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return ops.stack([grad_x, grad_y], axis=-1)


def _forward_gradient(u):
    """Forward differences of (B, H, W, C) fields, zero on the last column/row (as Sánchez et al.)."""
    grad_x = ops.pad(u[:, :, 1:, :] - u[:, :, :-1, :], [[0, 0], [0, 0], [0, 1], [0, 0]])
    grad_y = ops.pad(u[:, 1:, :, :] - u[:, :-1, :, :], [[0, 0], [0, 1], [0, 0], [0, 0]])
    return grad_x, grad_y


def _divergence(p_x, p_y):
    """Backward-difference divergence, the negative adjoint of `_forward_gradient`."""
    div_x = p_x - ops.pad(p_x[:, :, :-1, :], [[0, 0], [0, 0], [1, 0], [0, 0]])
    div_y = p_y - ops.pad(p_y[:, :-1, :, :], [[0, 0], [1, 0], [0, 0], [0, 0]])
    return div_x + div_y


def warp_bilinear(images, flow):
    """Samples (B, H, W, C) `images` at x + flow(x) with bilinear interpolation, replicated borders.

    One flat gather per corner over the whole batch (a single XLA gather each on GPU).
    """
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    cols = ops.cast(ops.arange(width), "float32")[None, None, :]
    rows = ops.cast(ops.arange(height), "float32")[None, :, None]
    x = ops.clip(cols + flow[..., 0], 0.0, width - 1.0)
    y = ops.clip(rows + flow[..., 1], 0.0, height - 1.0)
    x0 = ops.floor(x)
    y0 = ops.floor(y)
    wx = (x - x0)[..., None]
    wy = (y - y0)[..., None]
    x0 = ops.cast(x0, "int32")
    y0 = ops.cast(y0, "int32")
    x1 = ops.minimum(x0 + 1, width - 1)
    y1 = ops.minimum(y0 + 1, height - 1)
    offset = (ops.arange(batch, dtype="int32") * (height * width))[:, None, None]
    flat = ops.reshape(images, (-1, channels))

    def corner(yi, xi):
        index = ops.reshape(offset + yi * width + xi, (-1,))
        return ops.reshape(ops.take(flat, index, axis=0), (batch, height, width, channels))

    top = corner(y0, x0) * (1.0 - wx) + corner(y0, x1) * wx
    bottom = corner(y1, x0) * (1.0 - wx) + corner(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


@functools.lru_cache(maxsize=None)
def _iteration(tau, lambda_, theta):
    """One primal-dual iteration for fixed parameters.

    The same function object serves every warp and call, and the per-warp arrays travel in the loop
    state, so JAX compiles the loop body once per shape even outside `jit` (eager layers and tests).
    """
    lambda_theta = lambda_ * theta
    tau_theta = tau / theta

    def step(_, state):
        u, p_x, p_y, grad_w, inv_grad_sq, rho_c = state
        rho = rho_c + ops.sum(grad_w * u, axis=-1, keepdims=True)
        # Thresholding TH of Zach et al.: the three cases rho < -λθ|∇I1|², rho > λθ|∇I1|², else
        # -rho/|∇I1|², folded into one clip of the step length along ∇I1.
        v = u - ops.clip(rho * inv_grad_sq, -lambda_theta, lambda_theta) * grad_w
        u = v + theta * _divergence(p_x, p_y)  # primal step
        u_x, u_y = _forward_gradient(u)
        norm = 1.0 + tau_theta * ops.sqrt(u_x * u_x + u_y * u_y)  # dual step (and its denominator)
        return u, (p_x + tau_theta * u_x) / norm, (p_y + tau_theta * u_y) / norm, grad_w, inv_grad_sq, rho_c

    return step


def _median_filter(flow, size):
    """size x size median of each flow channel, mirrored borders (IPOL/OpenCV's medianFiltering)."""
    if size <= 1:
        return flow
    radius = size // 2
    height, width = flow.shape[1], flow.shape[2]
    padded = ops.pad(flow, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="symmetric")
    windows = [padded[:, i:i + height, j:j + width, :] for i in range(size) for j in range(size)]
    return ops.median(ops.stack(windows, axis=-1), axis=-1)


def _tvl1_scale(image0, image1, flow, *, tau, lambda_, theta, warps, iterations, median=0, inner=None):
    """Warps x iterations of the TV-L1 scheme at one pyramid scale; returns the refined (B, H, W, 2) flow.

    `inner`: a kernel running the iterations (see `preprocessing.kernels.tvl1_inner_iterations`), or None for the
    keras.ops loop below (the reference).
    """
    step = _iteration(float(tau), float(lambda_), float(theta))
    grad1 = _centered_gradient(image1)
    # I1 and its gradient are warped together: one gather serves all three channels.
    stacked1 = ops.concatenate([image1[..., None], grad1], axis=-1)
    p_x = ops.zeros_like(flow)
    p_y = ops.zeros_like(flow)
    for _ in range(warps):
        warped = warp_bilinear(stacked1, flow)
        grad_w = warped[..., 1:]
        grad_sq = ops.sum(grad_w * grad_w, axis=-1, keepdims=True)
        inv_grad_sq = 1.0 / ops.maximum(grad_sq, _GRAD_IS_ZERO)
        # rho(u) = rho_c + grad_w . u with rho_c = I1(x+u0) - grad_w . u0 - I0(x)
        rho_c = warped[..., :1] - ops.sum(grad_w * flow, axis=-1, keepdims=True) - image0[..., None]
        if inner is None:
            state = ops.fori_loop(0, iterations, step, (flow, p_x, p_y, grad_w, inv_grad_sq, rho_c))
            flow, p_x, p_y = state[:3]
        else:
            flow, p_x, p_y = inner(flow, p_x, p_y, grad_w, inv_grad_sq, rho_c, tau=tau, lambda_=lambda_,
                                   theta=theta, iterations=iterations)
        flow = _median_filter(flow, median)
    return flow


def pyramid_depth(height, width, scales=None):
    """Pyramid levels (zoom factor 0.5) for an image: halve while the shorter side stays >= 6 pixels
    (`_MIN_COARSE_SIDE`), at most `scales` levels when given."""
    depth = 1
    side = min(height, width)
    while (scales is None or depth < scales) and (side + 1) // 2 >= _MIN_COARSE_SIDE:
        side = (side + 1) // 2
        depth += 1
    return depth


def _validate(tau, lambda_, theta, scales, warps, iterations, smoothing, median=0):
    if not 0 < tau <= 0.25:
        raise ValueError(f"tau={tau!r}: expected 0 < tau <= 0.25 (the scheme's stability bound)")
    for name, value in (("lambda_", lambda_), ("theta", theta)):
        if not value > 0:
            raise ValueError(f"{name}={value!r}: expected a positive number")
    for name, value in (("scales", scales), ("warps", warps), ("iterations", iterations)):
        if name == "scales" and value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r}: expected an integer >= 1")
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing!r}: expected a Gaussian sigma >= 0 (0 disables it)")
    if not isinstance(median, (int, np.integer)) or isinstance(median, bool) or median < 0 or (
            median > 1 and median % 2 == 0):
        raise ValueError(f"median={median!r}: expected 0 (off) or an odd window side >= 1")


def tvl1_flow(frame0, frame1, *, tau=0.25, lambda_=0.15, theta=0.3, scales=DEFAULT_SCALES,
              warps=DEFAULT_WARPS, iterations=DEFAULT_ITERATIONS, smoothing=DEFAULT_SMOOTHING,
              median=DEFAULT_MEDIAN, implementation="auto"):
    """Batched TV-L1 optical flow from `frame0` to `frame1`.

    Args:
      frame0, frame1: (B, H, W) grayscale frames, float in [0, 255] (see `rgb_to_gray`).
      tau, lambda_, theta: time step, data-term weight and coupling of the scheme (IPOL / OpenCV defaults).
      scales: pyramid levels with zoom factor 0.5; None: from the image size, an int: at most that many
        (see `pyramid_depth`).
      warps: re-linearisations (warps of frame1) per scale.
      iterations: fixed primal-dual iterations per warp.
      smoothing: sigma of the Gaussian presmoothing of both frames (IPOL uses 0.8; 0 disables).
      median: side of the median filter applied to the flow after each warp (IPOL/OpenCV use 5; 0 off).
      implementation: who runs the inner iterations (`preprocessing.kernels.tvl1_inner_iterations`): `auto` (the
        Pallas kernel on JAX + GPU, else keras.ops), `reference` (keras.ops), `kernel`, `interpret`.

    Returns:
      (B, H, W, 2) float32 flow (u, v) in pixels with frame1(x + flow(x)) ≈ frame0(x), as OpenCV.
    """
    _validate(tau, lambda_, theta, scales, warps, iterations, smoothing, median)
    inner = tvl1_inner_iterations(implementation)
    frame0 = ops.cast(ops.convert_to_tensor(frame0), "float32")
    frame1 = ops.cast(ops.convert_to_tensor(frame1), "float32")
    if len(frame0.shape) != 3 or tuple(frame0.shape) != tuple(frame1.shape):
        raise ValueError(f"frames must both be (B, H, W) with equal shapes, got {tuple(frame0.shape)} "
                         f"and {tuple(frame1.shape)}")
    height, width = frame0.shape[1], frame0.shape[2]
    pyramid = [(_smooth(frame0, smoothing), _smooth(frame1, smoothing))]
    for _ in range(pyramid_depth(height, width, scales) - 1):
        pyramid.append(tuple(_downsample(f) for f in pyramid[-1]))
    coarse0 = pyramid[-1][0]
    flow = ops.zeros((ops.shape(coarse0)[0], coarse0.shape[1], coarse0.shape[2], 2), "float32")
    for level, (image0, image1) in enumerate(reversed(pyramid)):
        if level:
            flow = _upsample_flow(flow, image0.shape[1], image0.shape[2])
        flow = _tvl1_scale(image0, image1, flow, tau=tau, lambda_=lambda_, theta=theta, warps=warps,
                           iterations=iterations, median=median, inner=inner)
    return flow


@keras.saving.register_keras_serializable(package="assemblenet")
class TVL1Flow(keras.layers.Layer):
    """Representation-flow style layer: TV-L1 flow between consecutive frames of a video.

    Input (B, T, H, W, C) with C = 1 (gray) or 3 (RGB) and values in `value_range`; output
    (B, T-1, H, W, 2) flow in pixels (see `tvl1_flow`). No weights; gradients are not meaningful
    through the thresholding, so use it as a fixed feature extractor.
    """

    def __init__(self, tau=0.25, lambda_=0.15, theta=0.3, scales=DEFAULT_SCALES, warps=DEFAULT_WARPS,
                 iterations=DEFAULT_ITERATIONS, smoothing=DEFAULT_SMOOTHING, value_range=(0.0, 255.0),
                 median=DEFAULT_MEDIAN, **kwargs):
        super().__init__(**kwargs)
        _validate(tau, lambda_, theta, scales, warps, iterations, smoothing, median)
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise ValueError(f"value_range={value_range!r}: expected (low, high) with low < high")
        self.tau = tau
        self.lambda_ = lambda_
        self.theta = theta
        self.scales = scales
        self.warps = warps
        self.iterations = iterations
        self.smoothing = smoothing
        self.median = median
        self.value_range = tuple(value_range)

    def call(self, frames):
        if frames.shape[-1] not in (1, 3):
            raise ValueError(f"TVL1Flow expects 1 (gray) or 3 (RGB) channels, got shape {frames.shape}")
        low, high = self.value_range
        frames = (ops.cast(frames, "float32") - low) * (255.0 / (high - low))
        gray = rgb_to_gray(frames) if frames.shape[-1] == 3 else frames[..., 0]
        batch, time = ops.shape(gray)[0], gray.shape[1]
        height, width = gray.shape[2], gray.shape[3]
        first = ops.reshape(gray[:, :-1], (-1, height, width))
        second = ops.reshape(gray[:, 1:], (-1, height, width))
        flow = tvl1_flow(first, second, tau=self.tau, lambda_=self.lambda_, theta=self.theta,
                         scales=self.scales, warps=self.warps, iterations=self.iterations,
                         smoothing=self.smoothing, median=self.median)
        return ops.reshape(flow, (batch, time - 1, height, width, 2))

    def compute_output_shape(self, input_shape):
        time = None if input_shape[1] is None else input_shape[1] - 1
        return (input_shape[0], time, input_shape[2], input_shape[3], 2)

    def get_config(self):
        config = super().get_config()
        config.update(tau=self.tau, lambda_=self.lambda_, theta=self.theta, scales=self.scales,
                      warps=self.warps, iterations=self.iterations, smoothing=self.smoothing,
                      median=self.median, value_range=list(self.value_range))
        return config
