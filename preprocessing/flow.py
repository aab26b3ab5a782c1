"""TV-L1 optical flow between consecutive frames, and its Charades-style uint8 storage.

Two interchangeable backends:
- `opencv`: cv2.optflow.DualTVL1OpticalFlow (Sánchez et al., IPOL 2013), one pair at a time, the reference;
- `tensor`: `preprocessing.tvl1.tvl1_flow` (keras.ops), all pairs of a video batched and compiled once per
  shape (XLA through `tf.function(jit_compile=True)` under TensorFlow, `jax.jit` under JAX); under JAX on
  a GPU its inner iterations run in the Pallas kernel of preprocessing/kernels/ (`implementation="auto"`).

Both read the frames as OpenCV's RGB->gray luma and return (u, v) in pixels with
second(x + flow(x)) ≈ first(x).

Compiling the tensor backend costs far more than running it: ~19 s (JAX) to ~45 s (TensorFlow) per new
batch shape on the 2-core CPU at 112 px, against 0.04–0.12 s per pair once compiled (BENCHMARKS.md, "TV-L1
inside the preprocessing job"). Each shape is compiled once per process (JAX: ahead of time, so its
compile time is measured apart from any run); `enable_compile_cache` keeps the programs on disk, so a
second job, another worker process or a resumed run loads them instead of compiling them; `FlowStats`,
which `flow_pairs` fills, lets the Beam job report where its flow time went.
"""

import dataclasses
import functools
import os
import threading
import time
from pathlib import Path

import numpy as np

METHODS = ("opencv", "tensor")
# The Charades flow release stores each component clipped to ±20 px and mapped linearly onto 0..255.
FLOW_CLIP = 20.0
# Pairs per compiled call of the tensor backend: bounds memory on long videos (224x224: ~1 MB per pair).
DEFAULT_BATCH_SIZE = 32
# The persistent compilation cache: this environment variable names its folder ("" or "none": off);
# unset, it is `$XDG_CACHE_HOME/assemblenet/xla` (`~/.cache/assemblenet/xla`).
COMPILE_CACHE_ENV = "ASSEMBLENET_COMPILE_CACHE"


class Counters:
    """A dataclass of counters that `add` sums field by field (FlowStats, segment.SegmentStats)."""

    def add(self, other) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


@dataclasses.dataclass
class FlowStats(Counters):
    """What `flow_pairs` did, added up over the calls given the same object.

    `seconds` is the whole time spent in `flow_pairs`, compilation included; `compile_seconds` the part
    spent making the programs of new shapes (JAX: tracing + XLA compile, measured apart from any run;
    TensorFlow: the first call of each new shape, which also runs that batch once); `compiled` how many
    shapes were new to this process; `computed` the pairs the programs ran, the padding of the last chunk
    included.
    """

    pairs: int = 0
    computed: int = 0
    calls: int = 0
    compiled: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0


def _check_frames(frames, name):
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected (N, H, W, 3) RGB frames, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 frames, got dtype {frames.dtype}")
    return frames


def _opencv_pairs(first, second, params):
    import cv2

    # OpenCV's own names for the shared parameters; the others (scales, warps, ...) pass through as
    # its setters: nscales, warpings, innerIterations, outerIterations, scaleStep, epsilon, medianFiltering.
    renames = {"lambda_": "lambda", "scales": "scalesNumber", "warps": "warpingsNumber",
               "iterations": "innerIterations"}
    solver = cv2.optflow.DualTVL1OpticalFlow_create()
    for key, value in params.items():
        setter = "set" + renames.get(key, key)[0].upper() + renames.get(key, key)[1:]
        if not hasattr(solver, setter):
            raise ValueError(f"opencv flow: unknown parameter {key!r} (no DualTVL1OpticalFlow.{setter})")
        getattr(solver, setter)(value)
    out = np.empty(first.shape[:3] + (2,), np.float32)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        gray_a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        gray_b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        out[i] = solver.calc(gray_a, gray_b, None)
    return out


@functools.cache
def _tvl1_function(params, compiled, quantized=False):
    """The tensor backend's pair function for one parameter set, compiled for the active Keras backend;
    `quantized`: with `quantize_flow` in the same program, so only uint8 leaves the device."""
    import keras

    from preprocessing.tvl1 import rgb_to_gray, tvl1_flow

    def flow_fn(first, second):
        flow = tvl1_flow(rgb_to_gray(first), rgb_to_gray(second), **dict(params))
        return _quantize_ops(flow) if quantized else flow

    backend = keras.backend.backend()
    if not compiled:
        return flow_fn
    if backend == "tensorflow":
        import tensorflow as tf

        # No AutoGraph: tvl1_flow's Python loops run over static sizes (its iterations are ops.fori_loop),
        # so the graph is the same and tracing takes less than half the time (~4 vs ~10 s a shape on the
        # 2-core CPU; tracing is what the persistent cache cannot save under TensorFlow).
        return tf.function(flow_fn, jit_compile=True, reduce_retracing=False, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(flow_fn)
    return flow_fn


def default_compile_cache() -> str:
    """The persistent compilation cache folder: $ASSEMBLENET_COMPILE_CACHE if set ('' or 'none': no
    cache), else `$XDG_CACHE_HOME/assemblenet/xla` (`~/.cache/assemblenet/xla`)."""
    if COMPILE_CACHE_ENV in os.environ:
        value = os.environ[COMPILE_CACHE_ENV]
        return "" if value.lower() == "none" else value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "assemblenet", "xla")


def enable_compile_cache(path: str | None) -> str | None:
    """Persists the tensor backend's compiled XLA programs in the folder `path` (None or "": off).

    JAX: `jax_compilation_cache_dir` (every program; a local folder, or gs:// with `etils` installed).
    TensorFlow: `--tf_xla_persistent_cache_directory` in TF_XLA_FLAGS, which TensorFlow reads once per
    process at its first XLA compilation, so call this before any jit-compiled TensorFlow function runs.
    A later process with the same folder loads the programs instead of compiling them (~20 s each on a
    2-core CPU, BENCHMARKS.md). Outputs do not change: the cached program is the compiled one.
    Returns the folder used, or None.
    """
    if not path or path.lower() == "none":
        return None
    import keras

    if "://" not in path:
        Path(path).mkdir(parents=True, exist_ok=True)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if jax.config.jax_compilation_cache_dir != path:
            jax.config.update("jax_compilation_cache_dir", path)
            # Every program (JAX's default keeps only those that took >= 1 s: small frames compile faster).
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            try:  # JAX decides once per process whether the cache is used: ask again with the folder set
                from jax._src import compilation_cache

                compilation_cache.reset_cache()
            except (ImportError, AttributeError):  # another JAX: the setting applies from the next process
                pass
    elif backend == "tensorflow":
        flag = f"--tf_xla_persistent_cache_directory={path}"
        flags = [f for f in os.environ.get("TF_XLA_FLAGS", "").split()
                 if not f.startswith("--tf_xla_persistent_cache_directory=")]
        os.environ["TF_XLA_FLAGS"] = " ".join([*flags, flag])
    else:
        return None
    return path


_COMPILE_LOCK = threading.Lock()
_COMPILED: dict = {}  # (params, shape) -> the compiled program (JAX) or None (TensorFlow: traced and compiled)


def _run(params, a, b, compiled, stats, quantized=False):
    """Flow of the padded chunk (a, b), compiling its shape on first use in this process (timed into `stats`)."""
    from keras import ops

    flow_fn = _tvl1_function(params, compiled, quantized)
    key = (params, quantized, a.shape)
    if not compiled:
        return ops.convert_to_numpy(flow_fn(a, b))
    if key in _COMPILED:
        return ops.convert_to_numpy((_COMPILED[key] or flow_fn)(a, b))
    import keras

    with _COMPILE_LOCK:  # Beam may run several bundles in threads of one process: compile each shape once
        if key not in _COMPILED:
            start = time.perf_counter()
            if keras.backend.backend() == "jax":
                import jax

                spec = jax.ShapeDtypeStruct(a.shape, a.dtype)
                _COMPILED[key] = flow_fn.lower(spec, spec).compile()
                result = None
            else:  # TensorFlow compiles at the first call of a shape: that call is timed as compilation
                result = ops.convert_to_numpy(flow_fn(a, b))
                _COMPILED[key] = None
            stats.compile_seconds += time.perf_counter() - start
            stats.compiled += 1
            if result is not None:
                return result
    program = _COMPILED[key] or flow_fn
    return ops.convert_to_numpy(program(a, b))


def _tensor_pairs(first, second, params, batch_size, compiled, stats, quantized):
    params = tuple(sorted(params.items()))
    out = np.empty(first.shape[:3] + (2,), np.uint8 if quantized else np.float32)
    # Pad the last chunk of a long video to the batch size, and a short video to the next power of two:
    # a handful of compiled shapes then serves videos of every length.
    padded = min(batch_size, 1 << (len(first) - 1).bit_length())
    for start in range(0, len(first), batch_size):
        stop = min(start + batch_size, len(first))
        a, b = first[start:stop], second[start:stop]
        if compiled and padded > stop - start:
            pad = padded - (stop - start)
            a = np.concatenate([a, np.repeat(a[-1:], pad, axis=0)])
            b = np.concatenate([b, np.repeat(b[-1:], pad, axis=0)])
        out[start:stop] = _run(params, a, b, compiled, stats, quantized)[:stop - start]
        stats.calls += 1
        stats.computed += len(a)
    return out


def flow_pairs(first, second, method="opencv", *, batch_size=DEFAULT_BATCH_SIZE, compiled=True, stats=None,
               quantized=False, **params):
    """TV-L1 flow for independent pairs: (N, H, W, 3) uint8 RGB `first` and `second` -> (N, H, W, 2) float32,
    or with `quantized` the uint8 of `quantize_flow` (for `tensor`, computed in the same program: a GPU then
    sends the host a quarter of the bytes and does the rounding itself).

    `params` go to the backend: for `tensor` the keywords of `preprocessing.tvl1.tvl1_flow` (tau, lambda_, theta,
    scales, warps, iterations, smoothing, median, implementation); for `opencv` the same names (scales,
    warps, iterations map to nscales, warpings, innerIterations) or any other DualTVL1OpticalFlow setter
    name (e.g. epsilon).
    `compiled=False` runs the tensor backend op by op: compiling costs seconds per new shape on CPU
    (worth it for a video, not for one pair).
    `stats`: a `FlowStats` to add this call's pairs, time and compilations to.
    """
    if method not in METHODS:
        raise ValueError(f"flow method {method!r}: expected one of {METHODS}")
    first = _check_frames(first, "first frames")
    second = _check_frames(second, "second frames")
    if first.shape != second.shape:
        raise ValueError(f"first frames {first.shape} and second frames {second.shape} differ in shape")
    if len(first) == 0:
        return np.zeros(first.shape[:3] + (2,), np.uint8 if quantized else np.float32)
    if method == "tensor" and batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected >= 1")
    call = FlowStats(pairs=len(first))
    start = time.perf_counter()
    if method == "opencv":
        out = _opencv_pairs(first, second, params)
        out = quantize_flow(out) if quantized else out
        call.calls, call.computed = len(first), len(first)
    else:
        out = _tensor_pairs(first, second, params, batch_size, compiled, call, quantized)
    call.seconds = time.perf_counter() - start
    if stats is not None:
        stats.add(call)
    return out


def compute_flow(frames_uint8, method="opencv", *, stats=None, **params):
    """TV-L1 flow between consecutive frames: (T, H, W, 3) uint8 RGB -> (T-1, H, W, 2) float32 (u, v) px."""
    frames = _check_frames(frames_uint8, "frames")
    return flow_pairs(frames[:-1], frames[1:], method, stats=stats, **params)


def quantize_flow(flow):
    """Float flow in pixels -> uint8, as the Charades flow release: clip to ±20 px, map linearly to 0..255."""
    flow = np.clip(np.asarray(flow, np.float32), -FLOW_CLIP, FLOW_CLIP)
    return np.round((flow + FLOW_CLIP) * (255.0 / (2 * FLOW_CLIP))).astype(np.uint8)


def _quantize_ops(flow):
    """`quantize_flow` in `keras.ops` (float32 arithmetic in the same order: the same bytes)."""
    from keras import ops

    flow = ops.clip(ops.cast(flow, "float32"), -FLOW_CLIP, FLOW_CLIP)
    return ops.cast(ops.round((flow + FLOW_CLIP) * (255.0 / (2 * FLOW_CLIP))), "uint8")


def dequantize_flow(flow_uint8):
    """uint8 flow from `quantize_flow` -> float32 pixels (error at most 20/255 px inside the clip)."""
    flow_uint8 = np.asarray(flow_uint8)
    if flow_uint8.dtype != np.uint8:
        raise ValueError(f"dequantize_flow: expected uint8, got dtype {flow_uint8.dtype}")
    return flow_uint8.astype(np.float32) * np.float32(2 * FLOW_CLIP / 255.0) - np.float32(FLOW_CLIP)


def _read_rgb(path):
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def flow_image_pair(first, second, out, method="opencv", **params):
    """Reads two images and writes their (H, W, 2) float32 flow (u, v in px) to the .npy `out`; returns it."""
    image0, image1 = _read_rgb(first), _read_rgb(second)
    if image0.shape != image1.shape:
        raise ValueError(f"{first} is {image0.shape[:2]} but {second} is {image1.shape[:2]}: sizes differ")
    flow = flow_pairs(image0[None], image1[None], method, compiled=False, **params)[0]
    np.save(out, flow)
    return flow
