import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from preprocessing import schema
from preprocessing.flow import quantize_flow


def _video(t=5, h=16, w=20):
    rng = np.random.default_rng(0)
    rgb = np.broadcast_to(np.linspace(0, 200, w, dtype=np.uint8)[None, :, None], (h, w, 3))
    rgb = np.stack([np.clip(rgb.astype(int) + 10 * i, 0, 255).astype(np.uint8) for i in range(t)])
    flow = quantize_flow(rng.uniform(-25, 25, size=(t - 1, h, w, 2)))
    objects = rng.integers(0, 151, size=(t, h, w)).astype(np.uint8)
    return rgb, flow, objects


def test_round_trip():
    rgb, flow, objects = _video()
    data = schema.encode_example(video_id="AB12C", dataset="charades", fps=6.0, rgb=rgb, num_classes=10,
                                 labels=[3, 7], label_start=[0.25, 0.5], label_end=[1.0, 0.75], flow=flow,
                                 objects=objects)
    out = schema.decode_example(data)
    assert out["video_id"] == "AB12C" and out["dataset"] == "charades" and out["num_frames"] == 5
    assert (out["height"], out["width"], out["num_classes"]) == (16, 20, 10)
    assert out["labels"] == [3, 7] and out["label_end"] == pytest.approx([1.0, 0.75])
    assert out["label_start"] == pytest.approx([0.25, 0.5]) and out["fps"] == pytest.approx(6.0)
    assert np.abs(out["rgb"].astype(int) - rgb).mean() < 2  # JPEG
    np.testing.assert_array_equal(out["flow"][:4], flow)  # PNG: lossless
    np.testing.assert_array_equal(out["flow"][4], flow[3])  # the last flow frame repeats
    np.testing.assert_array_equal(out["object"], objects)
    assert schema.read_video_id(data) == "AB12C"

    parsed = schema.parse_example(tf.constant(data), ["rgb", "flow", "object"])
    assert parsed["video_id"].numpy() == b"AB12C"
    assert parsed["rgb"].shape == (5,) and parsed["flow_x"].shape == (5,) and parsed["object"].shape == (5,)
    np.testing.assert_array_equal(parsed["labels"].numpy(), [3, 7])
    np.testing.assert_allclose(parsed["label_start"].numpy(), [0.25, 0.5])
    np.testing.assert_allclose(parsed["label_end"].numpy(), [1.0, 0.75])
    png = tf.io.decode_png(parsed["flow_y"][2], channels=1).numpy()[..., 0]
    np.testing.assert_array_equal(png, flow[2, ..., 1])


def test_optional_modalities_and_validation():
    rgb, flow, objects = _video()
    data = schema.encode_example(video_id="X", dataset="toyota", fps=5.0, rgb=rgb, num_classes=31, labels=[4],
                                 label_start=[0.0], label_end=[1.0])
    out = schema.decode_example(data)
    assert "flow" not in out and "object" not in out
    with pytest.raises(ValueError, match="outside 0..30"):
        schema.encode_example(video_id="X", dataset="toyota", fps=5.0, rgb=rgb, num_classes=31, labels=[31],
                              label_start=[0.0], label_end=[1.0])
    with pytest.raises(ValueError, match="flow must be uint8"):
        schema.encode_example(video_id="X", dataset="toyota", fps=5.0, rgb=rgb, num_classes=31, labels=[1],
                              label_start=[0.0], label_end=[1.0], flow=flow[:2])


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/b", "a\\b", "..", "", ".hidden"])
def test_unsafe_ids_rejected(bad):
    with pytest.raises(ValueError, match="video id"):
        schema.validate_video_id(bad, "f.csv:3")
    assert schema.validate_video_id("Cook.Cut_p02_r00_v02_c03") == "Cook.Cut_p02_r00_v02_c03"


def test_unsafe_id_messages():
    with pytest.raises(ValueError, match=r"^f.csv:3: unsafe video id 'a\.\.b': expected letters, digits, '\.', '_' "
                                         r"or '-', no path separators and no '\.\.'$"):
        schema.validate_video_id("a..b", "f.csv:3")  # '..' inside an id the pattern alone would accept
    with pytest.raises(ValueError, match="^unsafe video id 'a/b'"):
        schema.validate_video_id("a/b")
    with pytest.raises(ValueError, match="^empty video id$"):
        schema.validate_video_id("")
    with pytest.raises(ValueError, match="^x: empty video id$"):
        schema.validate_video_id(None, "x")


@pytest.mark.parametrize("fill, wire", [
    # SequenceExample{context: Features{feature: {key: Feature{kind: ...List{value: ...}}}}}, field by field.
    (lambda m, ex: ex.context.feature["n"].int64_list.value.extend([3, 7]), "0a0d0a0b0a016e12061a040a020307"),
    (lambda m, ex: ex.context.feature["f"].float_list.value.append(0.5), "0a0f0a0d0a0166120812060a040000003f"),
    (lambda m, ex: ex.feature_lists.feature_list["v"].feature.append(m["Feature"](bytes_list=m["BytesList"](
        value=[b"ab"]))), "120f0a0d0a017612080a060a040a026162"),
])
def test_messages_write_tensorflows_wire_format(fill, wire):
    """The bytes of example.proto worked out by hand: map entries are (key = 1, value = 2), int64 and float
    lists are packed (tag 0x0a, then the payload length), Feature's kinds are fields 1..3. The classes are
    built afresh rather than taken from `messages()`, whose cache would keep the first build of the session."""
    from tensorflow.core.example import example_pb2

    m = schema._build_messages()
    ex = m["SequenceExample"]()
    fill(m, ex)
    assert ex.SerializeToString().hex() == wire
    ours = m["SequenceExample"].FromString(bytes.fromhex(wire))
    assert ours.SerializeToString() == example_pb2.SequenceExample.FromString(bytes.fromhex(wire)).SerializeToString()


def _png_rows(data: bytes) -> tuple[bytes, bytes]:
    """(zlib stream, inflated rows) of a PNG's IDAT chunks."""
    stream, i = b"", 8
    while i < len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            stream += data[i + 8:i + 8 + size]
        i += 12 + size
    return stream, zlib.decompress(stream)


def test_png_rows_are_unfiltered_at_zlib_level_3():
    image = (np.arange(16 * 20).reshape(16, 20) * 7 % 251).astype(np.uint8)
    stream, raw = _png_rows(schema.encode_png(image))
    # Each gray row is one filter-type byte and 20 pixels; type 0 is "none".
    assert [raw[r * 21] for r in range(16)] == [0] * 16
    assert np.frombuffer(raw, np.uint8).reshape(16, 21)[:, 1:].tolist() == image.tolist()
    assert stream[1] >> 6 == 1  # zlib's FLEVEL: 1 for levels 2..5 (OpenCV's default level 1 gives 0)


def test_jpeg_quality_90_and_channel_order():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    data = schema.encode_jpeg(red)
    start = data.find(b"\xff\xdb") + 5  # the first quantisation table, zig-zag order
    # IJG's quality scaling: q < 50 -> 5000 / q, else 200 - 2q (%), of the standard luminance table (16, 11, 12, ...).
    assert list(data[start:start + 3]) == [(v * (200 - 2 * 90) + 50) // 100 for v in (16, 11, 12)]
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr[..., 2].min() > 240 and bgr[..., :2].max() < 15  # OpenCV's order is BGR: red is the last channel


def test_round_trip_keeps_colours_settings_and_a_first_class():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    rgb[0, ..., 0] = 250  # red
    rgb[1, ..., 2] = 250  # blue
    flow = np.full((1, 8, 8, 2), 128, np.uint8)
    data = schema.encode_example(video_id="C", dataset="toyota", fps=5.0, rgb=rgb, num_classes=3, labels=[0],
                                 label_start=[0.0], label_end=[1.0], flow=flow, flow_method="opencv",
                                 segmenter="none")
    out = schema.decode_example(data)
    assert np.abs(out["rgb"].astype(int) - rgb).max() < 8
    assert out["labels"] == [0] and out["flow"].shape == (2, 8, 8, 2)  # two frames: the one flow frame repeats
    context = schema.messages()["SequenceExample"].FromString(data).context.feature
    assert list(context["flow_method"].bytes_list.value) == [b"opencv"]
    assert list(context["segmenter"].bytes_list.value) == [b"none"]


@pytest.mark.parametrize("change, message", [
    ({"rgb": np.zeros((5, 16, 20, 3), np.float32)},
     r"^X: rgb must be uint8 \(T, H, W, 3\), got float32 \(5, 16, 20, 3\)"),
    ({"rgb": np.zeros((5, 16, 20, 4), np.uint8)}, "rgb must be uint8"),
    ({"labels": [1, 2]}, "^X: labels, label_start, label_end differ in length$"),
    ({"flow": np.zeros((4, 16, 20, 2), np.float32)}, r"^X: flow must be uint8 \(4 or 5, 16, 20, 2\), got float32"),
    ({"objects": np.zeros((5, 16, 20), np.float32)}, "objects must be uint8"),
    ({"objects": np.zeros((5, 16, 21), np.uint8)}, "objects must be uint8"),
    ({"objects": np.full((5, 16, 20), 151, np.uint8)},
     r"^X: objects must be uint8 \(5, 16, 20\) with values 0..150, got uint8 \(5, 16, 20\)$"),
])
def test_encode_rejects(change, message):
    rgb, _, _ = _video()
    args = dict(video_id="X", dataset="toyota", fps=5.0, rgb=rgb, num_classes=31, labels=[1], label_start=[0.0],
                label_end=[1.0])
    with pytest.raises(ValueError, match=message):
        schema.encode_example(**{**args, **change})


def test_parse_spec_rejects_an_unknown_modality():
    with pytest.raises(ValueError, match=r"^unknown modality 'depth'; expected one of \['flow', 'object', 'rgb'\]$"):
        schema.parse_spec(["rgb", "depth"])


def _record():
    rgb, flow, objects = _video()
    return rgb, flow, objects, schema.encode_example(
        video_id="AB12C", dataset="charades", fps=6.0, rgb=rgb, num_classes=10, labels=[3, 7, 3],
        label_start=[0.25, 0.5, 2.0], label_end=[1.0, 0.75, 3.5], flow=flow, objects=objects)


def test_parse_native_reads_the_context_and_the_needed_frames():
    rgb, flow, objects, data = _record()
    out = schema.parse_native(data, ["flow", "object"])
    assert out["video_id"] == b"AB12C" and out["dataset"] == b"charades"
    assert out["fps"] == 6.0 and out["fps"].dtype == np.float32
    assert (out["num_frames"], out["height"], out["width"], out["num_classes"]) == (5, 16, 20, 10)
    assert all(type(out[k]) is int for k in ("num_frames", "height", "width", "num_classes"))
    assert out["labels"].tolist() == [3, 7, 3] and out["labels"].dtype == np.int64
    assert out["label_start"].tolist() == [0.25, 0.5, 2.0] and out["label_start"].dtype == np.float32
    assert out["label_end"].tolist() == [1.0, 0.75, 3.5] and out["label_end"].dtype == np.float32
    assert "rgb" not in out and "flow" not in out
    assert len(out["flow_x"]) == len(out["flow_y"]) == len(out["object"]) == 5

    def png(key, i):
        return cv2.imdecode(np.frombuffer(out[key][i].bytes_list.value[0], np.uint8), cv2.IMREAD_GRAYSCALE)

    np.testing.assert_array_equal(png("flow_x", 1), flow[1, ..., 0])
    np.testing.assert_array_equal(png("flow_y", 2), flow[2, ..., 1])
    np.testing.assert_array_equal(png("object", 4), objects[4])
    frame = schema.parse_native(data, ["rgb"])["rgb"][3].bytes_list.value[0]
    decoded = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.abs(decoded.astype(int) - rgb[3]).mean() < 2


def _edited(data, edit):
    example = schema.messages()["SequenceExample"].FromString(data)
    edit(example.context.feature, example.feature_lists.feature_list)
    return example.SerializeToString()


def test_parse_native_without_labels_and_its_errors():
    _, _, _, data = _record()

    def drop_labels(ctx, lists):
        for key in ("labels", "label_start", "label_end"):
            del ctx[key]

    out = schema.parse_native(_edited(data, drop_labels), ["rgb"])
    assert out["labels"].tolist() == [] and out["labels"].dtype == np.int64
    assert out["label_end"].tolist() == [] and out["label_end"].dtype == np.float32
    for key in ("video_id", "dataset", "fps", "num_frames", "height", "width", "num_classes"):
        def drop(ctx, lists, key=key):
            del ctx[key]

        with pytest.raises(ValueError, match=f"^a.tfrecord: a record lacks the context key '{key}' "
                                             r"\(not written by `assemblenet preprocess`\?\)$"):
            schema.parse_native(_edited(data, drop), ["rgb"], where="a.tfrecord")
    with pytest.raises(ValueError, match="^a record lacks the context key 'fps'"):
        schema.parse_native(_edited(data, lambda ctx, lists: ctx.pop("fps")), ["rgb"])

    def cut_objects(ctx, lists):
        del lists["object"].feature[-1]

    with pytest.raises(ValueError, match=r"^b: video 'AB12C' lacks the 'object' frames the model needs \(preprocess "
                                         r"with that modality\)$"):
        schema.parse_native(_edited(data, cut_objects), ["rgb", "object"], where="b")
    with pytest.raises(ValueError, match="^video 'AB12C' lacks the 'flow_y' frames"):
        schema.parse_native(_edited(data, lambda ctx, lists: lists.pop("flow_y")), ["flow"])
    with pytest.raises(ValueError, match=r"^unknown modality 'depth'; expected one of \['flow', 'object', 'rgb'\]$"):
        schema.parse_native(data, ["depth"])
