"""Per-frame semantic segmentation into the 151 ADE20K values of the object modality.

AssembleNet++ §3.2, §3.6: the object input is the class map of a fixed segmentation model trained
on ADE20K (150 classes + 1 'other'), treated as a black box. Here 0 is 'other' and 1..150 are the
ADE20K classes (the SceneParsing numbering). A segmenter is chosen by a spec string:

- `none`: no masks (RGB + flow models need none);
- `oracle` or `oracle:DIR`: the synthetic generator's ground truth, `DIR/<id>.npz` (default DIR:
  `masks/` next to the videos directory);
- a path ending in `.keras`: any Keras model file mapping float32 RGB in [0, 255], (B, H, W, 3) to
  per-pixel scores (B, h, w, 150 or 151);
- an existing directory: a keras-hub `ImageSegmenter` preset saved there (e.g. a downloaded
  `segformer_b0_ade20k_512`), with its image converter's resizing and rescaling;
- anything else: a keras-hub preset name such as `segformer_b0_ade20k_512` (keras-hub fetches it
  on first use and caches it; offline machines should download once and pass the directory).

Models with 150 output channels are taken to score ADE20K classes 1..150 (argmax + 1); with 151 the
argmax is the value itself. Frames are resized to the model's input size for inference and the
class map back to the frame size with nearest-neighbour interpolation.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from preprocessing.flow import Counters

NUM_VALUES = 151  # ADE20K: 150 classes + 'other'


class Segmenter(Protocol):
    # Whether `segment_frames` runs a compiled model, whose batches a caller pads to one shape.
    fixed_batch: bool

    def __call__(self, frames: np.ndarray, times: np.ndarray, video_id: str) -> np.ndarray:
        """uint8 RGB (T, H, W, 3) frames at `times` (seconds) -> uint8 (T, H, W) class map 0..150."""

    def segment_frames(self, frames: np.ndarray, times: np.ndarray, video_ids: list[str],
                       stats: SegmentStats | None = None) -> np.ndarray:
        """The same for frames of several videos: frame i is at `times[i]` of video `video_ids[i]`.

        Each frame's class map depends on that frame alone, so a batch gives the maps the frames would
        get one video at a time."""


@dataclasses.dataclass
class SegmentStats(Counters):
    """What `segment_frames` did, added up over calls (the fields of `preprocessing.flow.FlowStats`):
    `frames` asked for, `computed` (padding included), model `calls`, shapes `compiled` (new to this
    process), `seconds` in all and `compile_seconds` (the first call of each new shape, which also runs it)."""

    frames: int = 0
    computed: int = 0
    calls: int = 0
    compiled: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0


def device_classes(scores):
    """(B, h, w, 150 | 151) scores -> uint8 (B, h, w) values 0..150 (150 channels: ADE20K 1..150), in
    `keras.ops` so that it runs where the scores are (inside the compiled inference); of equal scores the
    first channel wins, as in NumPy's argmax."""
    from keras import ops

    channels = scores.shape[-1]
    if channels not in (NUM_VALUES - 1, NUM_VALUES):
        raise ValueError(f"segmentation model outputs {channels} channels; expected 150 (ADE20K classes) "
                         "or 151 (with 'other')")
    classes = ops.argmax(scores, axis=-1) + (1 if channels == NUM_VALUES - 1 else 0)
    return ops.cast(classes, "uint8")


def resize_nearest(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if masks.shape[1:3] == (height, width):
        return masks
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST) for m in masks])


class OracleSegmenter:
    """Reads `masks_dir/<id>.npz` (`masks` uint8 (N, H, W) per source frame at `fps`)."""

    fixed_batch = False  # a file read per video: nothing to compile, no padding

    def __init__(self, masks_dir):
        self.masks_dir = Path(masks_dir)

    def segment_frames(self, frames: np.ndarray, times: np.ndarray, video_ids: list[str],
                       stats: SegmentStats | None = None) -> np.ndarray:
        start = time.perf_counter()
        out = np.empty(frames.shape[:3], np.uint8)
        ids = np.asarray(video_ids)
        for video_id in dict.fromkeys(video_ids):  # each video's file once, in order
            rows = np.flatnonzero(ids == video_id)
            out[rows] = self(frames[rows], np.asarray(times)[rows], video_id)
        if stats is not None:
            stats.add(SegmentStats(frames=len(frames), computed=len(frames), calls=1,
                                   seconds=time.perf_counter() - start))
        return out

    def __call__(self, frames: np.ndarray, times: np.ndarray, video_id: str) -> np.ndarray:
        path = self.masks_dir / f"{video_id}.npz"
        if not path.exists():
            raise FileNotFoundError(f"oracle segmenter: no ground-truth masks {path}")
        with np.load(path) as data:
            masks, fps = data["masks"], float(data["fps"])
        # The decoder holds the source frame on screen at each time, so does the oracle.
        index = np.clip(np.floor(np.asarray(times) * fps + 1e-6).astype(int), 0, len(masks) - 1)
        return resize_nearest(masks[index], frames.shape[1], frames.shape[2])


# Input shapes each model has already run in this process: the first call of a shape compiles it (the
# backend's graph or XLA program), which `SegmentStats` counts apart from the rate once compiled.
_SEEN_LOCK = threading.Lock()
_SEEN: set = set()


class KerasSegmenter:
    """Any Keras model (a .keras file or a keras-hub ImageSegmenter preset) run frame-batch by batch."""

    fixed_batch = True

    def __init__(self, model, *, image_size=None, converter=None, batch_size: int = 16):
        self.model = model
        self.image_size = image_size  # (height, width) the model runs at; None: the frame size
        self.converter = converter  # keras-hub ImageConverter (rescaling), applied after resizing
        self.batch_size = batch_size

    @functools.cached_property
    def _forward(self):
        """uint8 frames at the model's input size -> uint8 class maps, as one compiled program per input
        shape: the float conversion, the converter's rescaling, the model and the argmax of its scores
        (`jax.jit` of its stateless call under JAX, where op-by-op dispatch would leave a GPU idle between
        small kernels; `tf.function` under TensorFlow; op by op otherwise). Only uint8 crosses between host
        and device: a SegFormer's scores at 512 x 512 x 150 in float32 are 157 MB a frame, which the host
        would otherwise copy and reduce far more slowly than a GPU runs the model."""
        import keras
        from keras import ops

        model, converter = self.model, self.converter

        def classes(scores_of, x):
            x = ops.cast(x, "float32")
            return device_classes(scores_of(converter(x) if converter is not None else x))

        if keras.backend.backend() == "jax":
            import jax

            def stateless(trainable, non_trainable, x):
                return classes(lambda y: model.stateless_call(trainable, non_trainable, y, training=False)[0], x)

            compiled = jax.jit(stateless)
            return lambda x: compiled([v.value for v in model.trainable_variables],
                                      [v.value for v in model.non_trainable_variables], x)
        call = functools.partial(classes, lambda y: model(y, training=False))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.function(call, autograph=False, reduce_retracing=False)
        return call

    def __call__(self, frames: np.ndarray, times: np.ndarray, video_id: str) -> np.ndarray:
        out = []
        for start in range(0, len(frames), self.batch_size):
            chunk = frames[start:start + self.batch_size]
            # The last chunk padded with its last frame: one compiled shape per frame size.
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - len(chunk), axis=0)])
            out.append(self.segment_frames(padded, None, [])[:len(chunk)])
        return np.concatenate(out)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the model sees a frame of this size at: frames of every size that map to the same input
        size can share a batch."""
        return tuple(self.image_size) if self.image_size is not None else (height, width)

    def segment_frames(self, frames, times: np.ndarray | None, video_ids: list[str],
                       stats: SegmentStats | None = None):
        """As the protocol's; `frames` may also be a list of frames of several sizes of one `input_size`
        (a list of class maps then comes back)."""
        import cv2
        from keras import ops

        start = time.perf_counter()
        sizes = [frame.shape[:2] for frame in frames]
        h, w = self.input_size(*sizes[0])
        batch = np.stack([frame if frame.shape[:2] == (h, w) else
                          cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR) for frame in frames])
        key = (id(self.model), batch.shape)
        with _SEEN_LOCK:
            new = key not in _SEEN
            _SEEN.add(key)
        classes = ops.convert_to_numpy(self._forward(ops.convert_to_tensor(batch)))
        out = [resize_nearest(c[None], *size)[0] for c, size in zip(classes, sizes, strict=True)]
        if isinstance(frames, np.ndarray):
            out = np.stack(out)
        if stats is not None:
            seconds = time.perf_counter() - start
            stats.add(SegmentStats(frames=len(frames), computed=len(frames), calls=1, compiled=int(new),
                                   seconds=seconds, compile_seconds=seconds if new else 0.0))
        return out


def _fixed_size(model) -> tuple[int, int] | None:
    shape = model.inputs[0].shape if getattr(model, "inputs", None) else None
    if shape is not None and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def load_keras_file(path, *, batch_size: int = 16) -> KerasSegmenter:
    import keras

    try:
        import keras_hub  # noqa: F401  (registers keras-hub classes a saved model may use)
    except ImportError:
        pass
    model = keras.models.load_model(path, compile=False)
    return KerasSegmenter(model, image_size=_fixed_size(model), batch_size=batch_size)


def load_preset(preset: str, *, batch_size: int = 16) -> KerasSegmenter:
    """A keras-hub ImageSegmenter preset, by name or local directory."""
    import keras_hub

    try:
        task = keras_hub.models.ImageSegmenter.from_preset(preset)
    except Exception as error:  # keras-hub raises several types for a missing/unreachable preset
        raise ValueError(f"cannot load keras-hub segmenter preset {preset!r} ({error}); on an offline "
                         "machine download it once and pass its directory") from error
    converter = getattr(task.preprocessor, "image_converter", None) if task.preprocessor else None
    image_size = tuple(converter.image_size) if converter is not None and converter.image_size else None
    # We resize whole frames ourselves (the converter would crop to its aspect ratio, which would
    # misalign the class map with the frame) and keep only its rescaling.
    return KerasSegmenter(task, image_size=image_size or _fixed_size(task), converter=converter,
                          batch_size=batch_size)


def make_segmenter(spec: str, *, videos_dir=None, batch_size: int = 16) -> Segmenter | None:
    """The segmenter named by `spec` (see the module docstring); None for `none`."""
    if spec in (None, "", "none"):
        return None
    if spec == "oracle" or spec.startswith("oracle:"):
        if spec.startswith("oracle:"):
            masks_dir = Path(spec.split(":", 1)[1])
        elif videos_dir is not None:
            masks_dir = Path(videos_dir).resolve().parent / "masks"
        else:
            raise ValueError("the oracle segmenter needs `oracle:DIR` or a videos directory")
        if not masks_dir.is_dir():
            raise ValueError(f"oracle segmenter: masks directory {masks_dir} does not exist")
        return OracleSegmenter(masks_dir)
    path = Path(spec)
    if spec.endswith((".keras", ".h5")):
        if not path.is_file():
            raise ValueError(f"segmenter model file {spec} does not exist")
        return load_keras_file(path, batch_size=batch_size)
    if path.is_dir():
        return load_preset(str(path), batch_size=batch_size)
    return load_preset(spec, batch_size=batch_size)
