"""Flow backends (preprocessing/flow.py), Charades-style quantisation and the `assemblenet flow` command."""

import cv2
import numpy as np
import pytest

from pipelines.cli import main as cli_main
from preprocessing.flow import compute_flow, dequantize_flow, flow_pairs, quantize_flow

SIZE = 48
PARAMS = {"opencv": {}, "tensor": {"scales": 3, "warps": 3, "iterations": 15}}


def rgb_texture(shift, seed=0):
    """Smooth RGB uint8 texture sampled at x - shift (analytic): frame(shift)(x + shift) = frame(0)(x)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    x, y = cols - shift[0], rows - shift[1]
    channels = []
    for _ in range(3):
        image = np.full((SIZE, SIZE), 128.0)
        for _ in range(10):
            fx, fy = rng.uniform(-0.35, 0.35, size=2)
            image += rng.uniform(8, 20) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
        channels.append(image)
    return np.clip(np.round(np.stack(channels, -1)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["opencv", "tensor"])
def test_compute_flow_recovers_translations(method):
    video = np.stack([rgb_texture((0.0, 0.0)), rgb_texture((1.5, -1.0)), rgb_texture((0.5, 1.0))])
    flow = compute_flow(video, method, **PARAMS[method])
    assert flow.shape == (2, SIZE, SIZE, 2) and flow.dtype == np.float32
    inner = flow[:, 8:-8, 8:-8, :]
    np.testing.assert_allclose(np.median(inner[0], axis=(0, 1)), [1.5, -1.0], atol=0.15)
    np.testing.assert_allclose(np.median(inner[1], axis=(0, 1)), [-1.0, 2.0], atol=0.15)


def test_compiled_chunks_match_eager_call():
    first = np.stack([rgb_texture((0.0, 0.0), seed=s) for s in range(3)])
    second = np.stack([rgb_texture((1.0, 0.5), seed=s) for s in range(3)])
    # Batch size 2 (the shape compiled above): two chunks, the last one padded.
    chunked = flow_pairs(first, second, "tensor", batch_size=2, **PARAMS["tensor"])
    eager = flow_pairs(first, second, "tensor", batch_size=3, compiled=False, **PARAMS["tensor"])
    np.testing.assert_allclose(chunked, eager, atol=1e-3)


@pytest.mark.parametrize("method", ["opencv", "tensor"])
def test_quantized_pairs_are_the_bytes_of_quantize_flow(method):
    """`quantized=True` (for `tensor`, quantised inside the compiled program) stores what quantising the
    float flow on the host stores, padding included; large motion reaches the ±20 px clip."""
    first = np.stack([rgb_texture((0.0, 0.0), seed=s) for s in range(3)])
    second = np.stack([rgb_texture((6.0 * s - 3.0, 2.5), seed=s) for s in range(3)])
    second[2] = np.roll(first[2], 30, axis=1)  # a wrap-around jump: flow near or past the clip
    flow = flow_pairs(first, second, method, batch_size=2, **PARAMS[method])
    stored = flow_pairs(first, second, method, batch_size=2, quantized=True, **PARAMS[method])
    assert stored.dtype == np.uint8 and stored.shape == (3, SIZE, SIZE, 2)
    np.testing.assert_array_equal(stored, quantize_flow(flow))
    assert len(np.unique(stored)) > 20
    empty = flow_pairs(first[:0], second[:0], method, quantized=True)
    assert empty.shape == (0, SIZE, SIZE, 2) and empty.dtype == np.uint8


def test_bad_input_raises():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="flow method 'farneback'"):
        compute_flow(frames, "farneback")
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(frames.astype(np.float32), "opencv")
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        compute_flow(frames[..., 0], "opencv")
    with pytest.raises(ValueError, match="unknown parameter 'smoothing'"):
        compute_flow(frames, "opencv", smoothing=1.0)


def test_quantize_round_trip_and_clipping():
    flow = np.array([-25.0, -20.0, -3.3, 0.0, 0.1, 7.77, 20.0, 31.0], np.float32).reshape(4, 2)
    stored = quantize_flow(flow)
    assert stored.dtype == np.uint8 and stored.shape == (4, 2)
    np.testing.assert_array_equal(stored.ravel(), [0, 0, 106, 128, 128, 177, 255, 255])
    restored = dequantize_flow(stored)
    assert restored.dtype == np.float32
    np.testing.assert_allclose(restored, np.clip(flow, -20, 20), atol=20 / 255 + 1e-6)
    np.testing.assert_allclose(restored.ravel()[[0, 6, 7]], [-20.0, 20.0, 20.0], atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        dequantize_flow(flow)


@pytest.mark.parametrize("method", ["opencv", "tensor"])
def test_flow_command_writes_npy(tmp_path, method):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(first), cv2.cvtColor(rgb_texture((0.0, 0.0), seed=7), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(second), cv2.cvtColor(rgb_texture((-1.0, 1.5), seed=7), cv2.COLOR_RGB2BGR))
    out = tmp_path / "flow.npy"
    assert cli_main(["flow", "--method", method, "--first", str(first), "--second", str(second),
                     "--out", str(out)]) == 0
    flow = np.load(out)
    assert flow.shape == (SIZE, SIZE, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(np.median(flow[8:-8, 8:-8], axis=(0, 1)), [-1.0, 1.5], atol=0.15)
