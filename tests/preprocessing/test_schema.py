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
