"""The tf.data reader: TFRecords of `preprocessing.schema` -> (inputs dict, labels) clips.

Per video: pick `frames` consecutive stored frames (training: a random start; evaluation: `clips_per_video`
evenly spaced starts, AssembleNet A.7), decode only those, apply one geometric augmentation to every
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

from preprocessing import schema

FLOW_SCALE = 20.0  # docs/CONTRACTS.md: the model's flow input is pixels / 20
MIN_CROP_FRACTION = 0.8


def _decode(encoded, kind: str):
    import tensorflow as tf

    if kind == "jpeg":
        return tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), encoded,
                         fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return tf.map_fn(lambda b: tf.io.decode_png(b, channels=1)[..., 0], encoded,
                     fn_output_signature=tf.TensorSpec([None, None], tf.uint8))


def dequantize(flow_uint8):
    """tf twin of `preprocessing.flow.dequantize_flow`: uint8 0..255 -> pixels in [-20, 20]."""
    import tensorflow as tf

    return tf.cast(flow_uint8, tf.float32) * (40.0 / 255.0) - 20.0


def clip_starts(num_frames, frames: int, clips: int, training: bool, seed):
    """Start indices (int32, (clips,)): random when training, else evenly spaced (one: centred)."""
    import tensorflow as tf

    room = tf.maximum(num_frames - frames, 0)
    if training:
        return tf.random.stateless_uniform([clips], seed, 0, room + 1, dtype=tf.int32)
    if clips == 1:
        return tf.reshape(room // 2, [1])
    steps = tf.cast(tf.range(clips), tf.float32) * tf.cast(room, tf.float32) / float(clips - 1)
    return tf.cast(tf.round(steps), tf.int32)


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


def make_clip(example, start, seed, *, modalities: Sequence[str], frames: int, size: int, training: bool,
              dataset: str, num_classes: int, whole_video_labels: bool):
    """One clip of `frames` frames from `start`: ({modality: tensor}, labels)."""
    import tensorflow as tf

    num_frames = tf.cast(example["num_frames"], tf.int32)
    index = tf.minimum(start + tf.range(frames), num_frames - 1)  # short videos repeat their last frame
    height = tf.cast(example["height"], tf.int32)
    width = tf.cast(example["width"], tf.int32)
    short = tf.minimum(height, width)
    if training:
        fraction = tf.random.stateless_uniform([], seed + [0, 1], MIN_CROP_FRACTION, 1.0)
        side = tf.maximum(tf.cast(tf.cast(short, tf.float32) * fraction, tf.int32), 1)
        y0 = tf.random.stateless_uniform([], seed + [0, 2], 0, height - side + 1, dtype=tf.int32)
        x0 = tf.random.stateless_uniform([], seed + [0, 3], 0, width - side + 1, dtype=tf.int32)
        flip = tf.random.stateless_uniform([], seed + [0, 4]) < 0.5
    else:
        side = short
        y0, x0 = (height - side) // 2, (width - side) // 2
        flip = tf.constant(False)

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
                 with_ids: bool | None = None, shard_index: int = 0, num_shards: int = 1):
    """A tf.data.Dataset of batched `(inputs, labels)` clips from TFRecord files.

    `file_pattern`: a glob (or a list of globs) of TFRecord shards written by `assemblenet preprocess`.
    Training: files and videos shuffled, one random clip per video per pass (the dataset is finite:
    call `.repeat()` for step-based training). Evaluation (`training=False`): `clips_per_video` evenly
    spaced clips per video, in file order. With `with_ids` (default: `clips_per_video > 1`) each element
    is `(inputs, labels, video_ids)`, `video_ids` a tf.string (batch,) tensor: consecutive clips of one
    video share an id, so callers max-pool their scores per id (AssembleNet A.7).
    `shard_index` of `num_shards` (multi-process training: process i of n): read only that disjoint
    part, every num_shards-th file of the sorted list, or every num_shards-th record when there are
    fewer files than shards.
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
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise ValueError(f"no TFRecord files match {file_pattern!r}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index}, num_shards={num_shards}: expected 0 <= shard_index < num_shards")

    by_record = len(files) < num_shards  # then records are dealt out in the (deterministic) read order
    ds = tf.data.Dataset.from_tensor_slices(files if by_record else files[shard_index::num_shards])
    if training and not by_record:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training or by_record)
    if by_record:
        ds = ds.shard(num_shards, shard_index)
    if training:
        ds = ds.shuffle(256, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda s: schema.parse_example(s, modalities), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=not training)
    # One random int64 per video seeds its stateless crop/flip (new values on every pass).
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, randoms)
    options = dict(modalities=modalities, frames=frames, size=size, training=training, dataset=dataset,
                   num_classes=num_classes, whole_video_labels=not training)

    def clips(example, random):
        seed_pair = tf.stack([random, tf.constant(0, tf.int64)])
        starts = clip_starts(tf.cast(example["num_frames"], tf.int32), frames,
                             1 if training else clips_per_video, training, seed_pair)
        return tf.data.Dataset.from_tensor_slices(starts).map(
            lambda start: make_clip(example, start, seed_pair, **options)
            + ((example["video_id"],) if with_ids else ()))

    if training or clips_per_video == 1:
        ds = ds.map(lambda example, random: _single_clip(example, random, frames, training, options)
                    + ((example["video_id"],) if with_ids else ()),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    else:
        ds = ds.flat_map(clips)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _single_clip(example, random, frames: int, training: bool, options: dict):
    import tensorflow as tf

    seed_pair = tf.stack([random, tf.constant(0, tf.int64)])
    start = clip_starts(tf.cast(example["num_frames"], tf.int32), frames, 1, training, seed_pair)[0]
    return make_clip(example, start, seed_pair, **options)
