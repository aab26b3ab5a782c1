"""The TFRecord schema: one `tf.train.SequenceExample` per video, written and parsed here only.

Writing and parsing live in one module so the two cannot drift; docs/tfrecord_schema.md is the
human-readable copy of `CONTEXT_KEYS` / `SEQUENCE_KEYS` below.

Context (one value per video):
  video_id      bytes    the dataset's id (Charades `46GP8`, Toyota `Cook.Cut_p02_r00_v02_c03`)
  dataset       bytes    `charades` | `toyota` | ...
  fps           float    frame rate of the stored frames (the decode target, not the container's)
  num_frames    int64    T, the number of entries of every per-frame feature list
  height, width int64    stored frame size
  num_classes   int64    size of the label space
  labels        int64[]  class indices (Charades: one per annotated action, repeats allowed)
  label_start   float[]  start of each label's interval in seconds (Toyota: 0)
  label_end     float[]  end of each label's interval in seconds (Toyota: the clip duration)
  flow_method   bytes    optional: how the flow was computed (`preprocess --flow`: opencv | tensor | none)
  segmenter     bytes    optional: the segmenter of the object maps (`preprocess --segmenter`)

Feature lists (T entries each; a modality the job did not compute is absent):
  rgb           JPEG (quality 90) of the RGB frame
  flow_x        PNG, uint8 gray: horizontal TV-L1 flow from frame t to t+1, quantised by
                `preprocessing.flow.quantize_flow` (±20 px clipped, mapped to 0..255, like the
                Charades flow release); the last frame repeats the flow before it so every modality
                has T entries. PNG rather than JPEG because it is lossless: JPEG ringing would turn
                still regions (value ~128) into spurious motion.
  flow_y        as flow_x, vertical component
  object        PNG, uint8 gray: ADE20K class map, 0 = other, 1..150 = ADE20K classes (151 values)

No TensorFlow needed: the messages are TensorFlow's `tensorflow/core/example/{feature,example}.proto`
(field numbers, packing and names as there), built with `protobuf` alone in a descriptor pool of
their own (`messages()`). A private pool rather than the default one, because the default pool
refuses a second definition of `tensorflow.SequenceExample`: importing TensorFlow after a module that
registers these names there (e.g. the `tfrecord` package's example_pb2) fails with
"duplicate symbol 'tensorflow.BytesList'". The bytes written are identical to what TensorFlow's
classes write (tests/preprocessing/test_loader.py checks it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

CONTEXT_KEYS = ("video_id", "dataset", "fps", "num_frames", "height", "width", "num_classes",
                "labels", "label_start", "label_end")
# Written by `assemblenet preprocess` so that every record says how it was made; records of older
# versions lack them, so no reader requires them.
OPTIONAL_CONTEXT_KEYS = ("flow_method", "segmenter")
SEQUENCE_KEYS = ("rgb", "flow_x", "flow_y", "object")
# Which feature lists hold each model modality (docs/CONTRACTS.md names the modalities).
MODALITY_KEYS = {"rgb": ("rgb",), "flow": ("flow_x", "flow_y"), "object": ("object",)}
JPEG_QUALITY = 90

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def validate_video_id(video_id: str, where: str = "") -> str:
    """Returns `video_id` if it is safe as a file name under an output directory, else raises.

    Rejects empty ids, `..`, absolute paths and any path separator, so that `<out>/<id>.npz`
    or similar can never escape `<out>`. `where` (e.g. `file.csv:12`) prefixes the message.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(video_id, str) or not video_id:
        raise ValueError(f"{prefix}empty video id")
    if (os.path.isabs(video_id) or "/" in video_id or "\\" in video_id or ".." in video_id
            or not _SAFE_ID.match(video_id)):
        raise ValueError(f"{prefix}unsafe video id {video_id!r}: expected letters, digits, '.', '_' "
                         "or '-', no path separators and no '..'")
    return video_id


def _build_messages() -> dict:
    """TensorFlow's Example protos (feature.proto + example.proto, proto3) in a private pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="assemblenet/tensorflow_example.proto",
                                               package="tensorflow", syntax="proto3")

    def message(name, *fields, nested=(), oneof=None):
        msg = proto.message_type.add(name=name)
        if oneof:
            msg.oneof_decl.add(name=oneof)
        for number, (field, label, kind, type_name, packed) in enumerate(fields, start=1):
            f = msg.field.add(name=field, number=number, label=label, type=kind)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True
            if oneof:
                f.oneof_index = 0
        for entry_name, value_type in nested:  # map<string, value_type>
            entry = msg.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
            entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                            type_name=value_type)
        return msg

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", rep, F.TYPE_BYTES, None, False))
    message("FloatList", ("value", rep, F.TYPE_FLOAT, None, True))
    message("Int64List", ("value", rep, F.TYPE_INT64, None, True))
    message("Feature", ("bytes_list", opt, F.TYPE_MESSAGE, ".tensorflow.BytesList", False),
            ("float_list", opt, F.TYPE_MESSAGE, ".tensorflow.FloatList", False),
            ("int64_list", opt, F.TYPE_MESSAGE, ".tensorflow.Int64List", False), oneof="kind")
    message("Features", ("feature", rep, F.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", False),
            nested=[("FeatureEntry", ".tensorflow.Feature")])
    message("FeatureList", ("feature", rep, F.TYPE_MESSAGE, ".tensorflow.Feature", False))
    message("FeatureLists",
            ("feature_list", rep, F.TYPE_MESSAGE, ".tensorflow.FeatureLists.FeatureListEntry", False),
            nested=[("FeatureListEntry", ".tensorflow.FeatureList")])
    message("SequenceExample", ("context", opt, F.TYPE_MESSAGE, ".tensorflow.Features", False),
            ("feature_lists", opt, F.TYPE_MESSAGE, ".tensorflow.FeatureLists", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
            for name in ("BytesList", "Feature", "SequenceExample")}


_MESSAGES: dict | None = None


def messages() -> dict:
    """{"SequenceExample", "Feature", "BytesList"}: message classes, wire-compatible with TensorFlow's."""
    global _MESSAGES
    if _MESSAGES is None:
        _MESSAGES = _build_messages()
    return _MESSAGES


# zlib level of the gray flow and object PNGs, written with row filter "none" rather than OpenCV's
# default "sub": a gray image's sub filter is undone byte by byte in one serial chain, which made PNG
# decoding most of the TensorFlow-free reader's time (BENCHMARKS.md, input pipeline: 0.70 -> 0.32 ms
# per 256 x 340 flow image, 0.64 -> 0.16 ms per object map). Level 3 keeps the encoding as fast as
# before at about the same size. The pixels are the same either way: records written before read the
# same, only slower.
PNG_COMPRESSION = 3


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image), params)
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
    return data.tobytes()


def encode_jpeg(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return data.tobytes()


def encode_example(*, video_id: str, dataset: str, fps: float, rgb: np.ndarray, num_classes: int,
                   labels: Sequence[int], label_start: Sequence[float], label_end: Sequence[float],
                   flow: np.ndarray | None = None, objects: np.ndarray | None = None,
                   flow_method: str | None = None, segmenter: str | None = None) -> bytes:
    """Serialises one video.

    rgb: uint8 (T, H, W, 3); flow: uint8 (T-1 or T, H, W, 2), already quantised (a T-1 flow gets its
    last frame repeated); objects: uint8 (T, H, W) class map. `flow_method`, `segmenter`: the
    preprocessing settings the record was made with (OPTIONAL_CONTEXT_KEYS; omitted when None).
    Returns the serialized SequenceExample.
    """
    proto = messages()
    validate_video_id(video_id)
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{video_id}: rgb must be uint8 (T, H, W, 3), got {rgb.dtype} {rgb.shape}")
    t, h, w, _ = rgb.shape
    if not len(labels) == len(label_start) == len(label_end):
        raise ValueError(f"{video_id}: labels, label_start, label_end differ in length")
    if any(not 0 <= int(c) < num_classes for c in labels):
        raise ValueError(f"{video_id}: labels {list(labels)} outside 0..{num_classes - 1}")

    example = proto["SequenceExample"]()
    ctx = example.context.feature
    ctx["video_id"].bytes_list.value.append(video_id.encode())
    ctx["dataset"].bytes_list.value.append(dataset.encode())
    ctx["fps"].float_list.value.append(float(fps))
    for key, value in (("num_frames", t), ("height", h), ("width", w), ("num_classes", num_classes)):
        ctx[key].int64_list.value.append(int(value))
    ctx["labels"].int64_list.value.extend(int(c) for c in labels)
    ctx["label_start"].float_list.value.extend(float(s) for s in label_start)
    ctx["label_end"].float_list.value.extend(float(e) for e in label_end)
    for key, value in (("flow_method", flow_method), ("segmenter", segmenter)):
        if value is not None:
            ctx[key].bytes_list.value.append(value.encode())

    lists = example.feature_lists.feature_list

    def add(key: str, encoded: list[bytes]) -> None:
        feature_list = lists[key]
        for data in encoded:
            feature_list.feature.append(proto["Feature"](bytes_list=proto["BytesList"](value=[data])))

    add("rgb", [encode_jpeg(frame) for frame in rgb])
    if flow is not None:
        flow = np.asarray(flow)
        if flow.dtype != np.uint8 or flow.shape[1:] != (h, w, 2) or flow.shape[0] not in (t - 1, t) or t < 2:
            raise ValueError(f"{video_id}: flow must be uint8 ({t - 1} or {t}, {h}, {w}, 2), "
                             f"got {flow.dtype} {flow.shape}")
        if flow.shape[0] == t - 1:
            flow = np.concatenate([flow, flow[-1:]], axis=0)
        add("flow_x", [encode_png(f[..., 0]) for f in flow])
        add("flow_y", [encode_png(f[..., 1]) for f in flow])
    if objects is not None:
        objects = np.asarray(objects)
        if objects.dtype != np.uint8 or objects.shape != (t, h, w) or objects.max(initial=0) > 150:
            raise ValueError(f"{video_id}: objects must be uint8 ({t}, {h}, {w}) with values 0..150, "
                             f"got {objects.dtype} {objects.shape}")
        add("object", [encode_png(m) for m in objects])
    return example.SerializeToString()


def read_video_id(serialized: bytes) -> str:
    """The `video_id` of a serialized example, without decoding its frames."""
    example = messages()["SequenceExample"].FromString(serialized)
    return example.context.feature["video_id"].bytes_list.value[0].decode()


def decode_example(serialized: bytes) -> dict:
    """Parses one serialized SequenceExample into numpy arrays (for tools and tests, not tf.data).

    Returns the context keys (python scalars / lists) plus decoded `rgb` (T,H,W,3), `flow`
    (T,H,W,2) uint8 (still quantised) and `object` (T,H,W) for the modalities present.
    """
    import cv2

    example = messages()["SequenceExample"].FromString(serialized)
    ctx = example.context.feature
    out: dict = {
        "video_id": ctx["video_id"].bytes_list.value[0].decode(),
        "dataset": ctx["dataset"].bytes_list.value[0].decode(),
        "fps": ctx["fps"].float_list.value[0],
        "labels": list(ctx["labels"].int64_list.value),
        "label_start": list(ctx["label_start"].float_list.value),
        "label_end": list(ctx["label_end"].float_list.value),
    }
    for key in ("num_frames", "height", "width", "num_classes"):
        out[key] = ctx[key].int64_list.value[0]
    lists = example.feature_lists.feature_list

    def frames(key: str, flag: int) -> np.ndarray:
        return np.stack([cv2.imdecode(np.frombuffer(f.bytes_list.value[0], np.uint8), flag)
                         for f in lists[key].feature])

    if "rgb" in lists:
        out["rgb"] = frames("rgb", cv2.IMREAD_COLOR)[..., ::-1]
    if "flow_x" in lists:
        out["flow"] = np.stack([frames("flow_x", cv2.IMREAD_GRAYSCALE),
                                frames("flow_y", cv2.IMREAD_GRAYSCALE)], axis=-1)
    if "object" in lists:
        out["object"] = frames("object", cv2.IMREAD_GRAYSCALE)
    return out


def parse_spec(modalities: Sequence[str]) -> tuple[dict, dict]:
    """The `tf.io.parse_single_sequence_example` feature specs for the given modalities."""
    import tensorflow as tf

    context = {
        "video_id": tf.io.FixedLenFeature([], tf.string),
        "dataset": tf.io.FixedLenFeature([], tf.string),
        "fps": tf.io.FixedLenFeature([], tf.float32),
        "num_frames": tf.io.FixedLenFeature([], tf.int64),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
        "num_classes": tf.io.FixedLenFeature([], tf.int64),
        "labels": tf.io.VarLenFeature(tf.int64),
        "label_start": tf.io.VarLenFeature(tf.float32),
        "label_end": tf.io.VarLenFeature(tf.float32),
    }
    sequence = {}
    for modality in modalities:
        if modality not in MODALITY_KEYS:
            raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(MODALITY_KEYS)}")
        for key in MODALITY_KEYS[modality]:
            sequence[key] = tf.io.FixedLenSequenceFeature([], tf.string)
    return context, sequence


def parse_example(serialized, modalities: Sequence[str]) -> dict:
    """tf.data-side parse: a dict of tensors (context scalars, dense label lists, encoded frames)."""
    import tensorflow as tf

    context_spec, sequence_spec = parse_spec(modalities)
    context, sequence = tf.io.parse_single_sequence_example(serialized, context_spec, sequence_spec)
    out = dict(context)
    for key in ("labels", "label_start", "label_end"):
        out[key] = tf.sparse.to_dense(context[key])
    out.update(sequence)
    return out


def parse_native(serialized: bytes, modalities: Sequence[str], where: str = "") -> dict:
    """TensorFlow-free twin of `parse_example`: context values as python scalars / numpy arrays, and
    each needed feature list as the protobuf's repeated field (`[i].bytes_list.value[0]` is frame i's
    encoded image; nothing is decoded here). Missing keys raise a ValueError naming `where`."""
    example = messages()["SequenceExample"].FromString(serialized)
    ctx = example.context.feature
    prefix = f"{where}: " if where else ""
    for key in CONTEXT_KEYS:
        if key not in ctx and key not in ("labels", "label_start", "label_end"):
            raise ValueError(f"{prefix}a record lacks the context key {key!r} (not written by "
                             "`assemblenet preprocess`?)")
    out: dict = {
        "video_id": ctx["video_id"].bytes_list.value[0],
        "dataset": ctx["dataset"].bytes_list.value[0],
        "fps": np.float32(ctx["fps"].float_list.value[0]),
        "labels": np.asarray(ctx["labels"].int64_list.value, np.int64),
        "label_start": np.asarray(ctx["label_start"].float_list.value, np.float32),
        "label_end": np.asarray(ctx["label_end"].float_list.value, np.float32),
    }
    for key in ("num_frames", "height", "width", "num_classes"):
        out[key] = int(ctx[key].int64_list.value[0])
    lists = example.feature_lists.feature_list
    for modality in modalities:
        if modality not in MODALITY_KEYS:
            raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(MODALITY_KEYS)}")
        for key in MODALITY_KEYS[modality]:
            if key not in lists or len(lists[key].feature) != out["num_frames"]:
                raise ValueError(f"{prefix}video {out['video_id'].decode()!r} lacks the '{key}' frames the "
                                 "model needs (preprocess with that modality)")
            out[key] = lists[key].feature
    return out
