"""The tf.data reader: TFRecords of `preprocessing.schema` -> (inputs dict, labels) clips.

Per video: pick `frames` consecutive stored frames (training: a random start; evaluation: `clips_per_video`
starts, evenly spaced or drawn from a fixed seed (`eval_starts`; AssembleNet A.7 tests on "five random
128 frame crops", which `pipelines.evaluate` takes by default for Charades and from a run's recipe)),
decode only those, apply one geometric augmentation to every
modality, and scale each modality as docs/CONTRACTS.md says:
- rgb: float32 (T, S, S, 3) in [-1, 1];
- flow: float32 (T, S, S, 2), pixels / 20 (x then y); pixel values are those of the resized frames
  (a crop of side c resized to S multiplies displacements by S / c);
- object: int32 (T, S, S), values 0..150.
Augmentation (training only), identical across modalities: a random square crop of 80-100 % of the
shorter side, resized to S, and a horizontal flip with probability 1/2 that also negates flow x
(in the stored uint8 coding that is v -> 255 - v) and flips the object mask. Evaluation takes the
centre square of the shorter side. Images resize bilinearly, object masks with nearest neighbour.

Labels are float32 (num_classes,): Charades training clips are multi-hot over the actions whose
interval overlaps the clip's time span [first frame, last frame + 1/fps) (times from the stored fps);
evaluation clips carry the whole video's labels, because Charades v1 classification scores videos;
Toyota is one-hot of the clip's class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from preprocessing import clips as clips_lib
from preprocessing import schema
from preprocessing.clips import MIN_CROP_FRACTION  # noqa: F401  (re-exported)

FLOW_SCALE = 20.0  # docs/CONTRACTS.md: the model's flow input is pixels / 20


def _decode(encoded, kind: str):
    import tensorflow as tf

    if kind == "jpeg":
        # INTEGER_ACCURATE is libjpeg's ISLOW IDCT, the one OpenCV uses: both readers decode the same
        # pixels (TensorFlow's default, INTEGER_FAST, differs by up to 3 levels).
        return tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3, dct_method="INTEGER_ACCURATE"), encoded,
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return tf.map_fn(lambda b: tf.io.decode_png(b, channels=1)[..., 0], encoded,
                     fn_output_signature=tf.TensorSpec([None, None], tf.uint8))


def dequantize(flow_uint8):
    """tf twin of `preprocessing.flow.dequantize_flow`: uint8 0..255 -> pixels in [-20, 20]."""
    import tensorflow as tf

    return tf.cast(flow_uint8, tf.float32) * (40.0 / 255.0) - 20.0


def decisions(example, *, frames: int, clips: int, training: bool, seed: int, epoch, eval_starts: str):
    """`preprocessing.clips.decide` for one parsed example, as tensors (starts (clips,), y0, x0, side, flip).

    The numpy function is the one the TensorFlow-free reader calls, so both cut the same clips.
    """
    import tensorflow as tf

    def decide(num_frames, height, width, video_id, epoch):
        d = clips_lib.decide(num_frames=num_frames, height=height, width=width, frames=frames, clips=clips,
                             training=training, seed=seed, epoch=int(epoch), video_id=bytes(video_id),
                             eval_starts=eval_starts)
        return d.starts, np.int32(d.y0), np.int32(d.x0), np.int32(d.side), np.bool_(d.flip)

    starts, y0, x0, side, flip = tf.numpy_function(
        decide, [example["num_frames"], example["height"], example["width"], example["video_id"],
                 tf.cast(epoch, tf.int64)],
        [tf.int32, tf.int32, tf.int32, tf.int32, tf.bool], stateful=False)
    starts.set_shape([clips])
    for scalar in (y0, x0, side, flip):
        scalar.set_shape([])
    return starts, (y0, x0, side, flip)


def clip_labels(example, start, frames: int, *, dataset: str, num_classes: int, whole_video: bool):
    import tensorflow as tf

    labels = tf.cast(example["labels"], tf.int32)
    if dataset == "charades" and not whole_video:
        fps = example["fps"]
        t0 = tf.cast(start, tf.float32) / fps
        t1 = tf.cast(start + frames, tf.float32) / fps
        overlap = (example["label_start"] < t1) & (example["label_end"] > t0)
        labels = tf.boolean_mask(labels, overlap)
    hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    return tf.reduce_max(tf.concat([tf.zeros([1, num_classes]), hot], axis=0), axis=0)


def make_clip(example, start, window, *, modalities: Sequence[str], frames: int, size: int, dataset: str,
              num_classes: int, whole_video_labels: bool):
    """One clip of `frames` frames from `start`, cropped to `window` = (y0, x0, side, flip):
    ({modality: tensor}, labels)."""
    import tensorflow as tf

    num_frames = tf.cast(example["num_frames"], tf.int32)
    index = tf.minimum(start + tf.range(frames), num_frames - 1)  # short videos repeat their last frame
    y0, x0, side, flip = window

    def crop(x):
        return x[:, y0:y0 + side, x0:x0 + side]

    def maybe_flip(x):
        return tf.cond(flip, lambda: tf.reverse(x, axis=[2]), lambda: x)

    inputs = {}
    for modality in modalities:
        for key in schema.MODALITY_KEYS[modality]:
            tf.debugging.assert_equal(
                tf.shape(example[key])[0], num_frames,
                message=f"a video lacks the '{key}' frames the model needs (preprocess with that modality)")
        if modality == "rgb":
            rgb = tf.cast(crop(_decode(tf.gather(example["rgb"], index), "jpeg")), tf.float32)
            rgb = tf.image.resize(rgb, [size, size], method="bilinear")
            inputs["rgb"] = maybe_flip(rgb / 127.5 - 1.0)
        elif modality == "flow":
            xy = [dequantize(crop(_decode(tf.gather(example[k], index), "png")))
                  for k in ("flow_x", "flow_y")]
            flow = tf.image.resize(tf.stack(xy, axis=-1), [size, size], method="bilinear")
            flow = flow * (float(size) / tf.cast(side, tf.float32)) / FLOW_SCALE
            # A mirrored video moves the other way: negate x (v -> 255 - v in the stored coding).
            inputs["flow"] = tf.where(flip, tf.reverse(flow, axis=[2]) * [-1.0, 1.0], flow)
        else:
            objects = crop(_decode(tf.gather(example["object"], index), "png"))[..., None]
            objects = tf.image.resize(objects, [size, size], method="nearest")[..., 0]
            inputs["object"] = maybe_flip(tf.cast(objects, tf.int32))
    labels = clip_labels(example, index[0], frames, dataset=dataset, num_classes=num_classes,
                         whole_video=whole_video_labels)
    return inputs, labels


def make_dataset(file_pattern, *, modalities, frames: int, size: int, training: bool, batch_size: int,
                 dataset: str = "charades", num_classes: int, clips_per_video: int = 1, seed=None,
                 with_ids: bool | None = None, epoch: int = 0, repeat: bool = False,
                 eval_starts: str = "even", shard_index: int = 0, num_shards: int = 1):
    """A tf.data.Dataset of batched `(inputs, labels)` clips from TFRecord files.

    `file_pattern`: a glob (or a list of globs) of TFRecord shards written by `assemblenet preprocess`.
    Training: files and videos shuffled, one clip per video per pass; the pass is `epoch` (with
    `repeat`: passes epoch, epoch + 1, ... without end, batches of exactly `batch_size` running across
    passes). Each video's start, crop and flip are `preprocessing.clips.decide(seed, pass, video id)`:
    the TensorFlow-free reader (`preprocessing.loader`) takes the same decisions. Evaluation
    (`training=False`): `clips_per_video` clips per video, in file order, evenly spaced
    (`eval_starts="even"`) or random from `seed` (`"random"`, AssembleNet A.7). With `with_ids`
    (default: `clips_per_video > 1`) each element is `(inputs, labels, video_ids)`, `video_ids` a
    tf.string (batch,) tensor: consecutive clips of one video share an id, so callers max-pool their
    scores per id (AssembleNet A.7).

    Sharding (multi-process training): process `shard_index` of `num_shards` reads a disjoint part of
    the records: whole files (files[shard_index::num_shards] of the sorted list) when there are at least
    `num_shards` files, else every `num_shards`-th record of the files read in sorted order.
    """
    import tensorflow as tf

    if dataset not in ("charades", "toyota"):
        raise ValueError(f"dataset must be 'charades' or 'toyota', got {dataset!r}")
    modalities = tuple(modalities)
    for modality in modalities:
        if modality not in schema.MODALITY_KEYS:
            raise ValueError(f"unknown modality {modality!r}; expected some of "
                             f"{sorted(schema.MODALITY_KEYS)}")
    if with_ids is None:
        with_ids = clips_per_video > 1
    if frames < 1 or size < 1 or batch_size < 1 or clips_per_video < 1:
        raise ValueError(f"frames, size, batch_size, clips_per_video must be >= 1, got "
                         f"{frames}, {size}, {batch_size}, {clips_per_video}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must be in 0..num_shards-1 (num_shards={num_shards})")
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise ValueError(f"no TFRecord files match {file_pattern!r}")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    seed = int(seed)
    by_record = num_shards > 1 and len(files) < num_shards
    if num_shards > 1 and not by_record:
        files = files[shard_index::num_shards]
    clips = 1 if training else clips_per_video
    options = dict(modalities=modalities, frames=frames, size=size, dataset=dataset,
                   num_classes=num_classes, whole_video_labels=not training)

    def one_pass(pass_index):
        names = tf.constant(files)
        if training and not by_record:
            names = tf.random.experimental.stateless_shuffle(
                names, seed=tf.stack([tf.constant(seed, tf.int64), pass_index]))
        ds = tf.data.Dataset.from_tensor_slices(names)
        if by_record:  # one ordered stream, so every process sees the same record numbers
            ds = tf.data.TFRecordDataset(ds).shard(num_shards, shard_index)
        else:
            ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
        if training:
            ds = ds.shuffle(256, seed=seed + 1)
        ds = ds.map(lambda s: schema.parse_example(s, modalities), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=not training)

        def video_clips(example):
            starts, window = decisions(example, frames=frames, clips=clips, training=training, seed=seed,
                                       epoch=pass_index, eval_starts=eval_starts)
            return tf.data.Dataset.from_tensor_slices(starts).map(
                lambda start: make_clip(example, start, window, **options)
                + ((example["video_id"],) if with_ids else ()))

        if clips == 1:
            def single(example):
                starts, window = decisions(example, frames=frames, clips=1, training=training, seed=seed,
                                           epoch=pass_index, eval_starts=eval_starts)
                return make_clip(example, starts[0], window, **options) + (
                    (example["video_id"],) if with_ids else ())
            return ds.map(single, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
        return ds.flat_map(video_clips)

    if repeat:
        ds = tf.data.Dataset.range(epoch, 2**62).flat_map(one_pass)
        return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return one_pass(tf.constant(epoch, tf.int64)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
