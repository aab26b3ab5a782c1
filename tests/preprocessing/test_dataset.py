import numpy as np
import pytest
import tensorflow as tf

from preprocessing import schema
from preprocessing.dataset import dequantize, make_dataset
from preprocessing.flow import dequantize_flow, quantize_flow

T, H, W = 10, 24, 32


def _write(path, *, video_id="VIDEO", dataset="charades", fps=2.0, labels=(0, 2), starts=(0.0, 4.0),
           ends=(1.0, 5.0), num_classes=4):
    """Frame t has brightness 20 t; its left half is darker than its right; flow is (+5, -3) px;
    the object mask is 7 on the left half, 9 on the right."""
    rgb = np.zeros((T, H, W, 3), np.uint8)
    for t in range(T):
        rgb[t, :, : W // 2] = 20 * t
        rgb[t, :, W // 2:] = 20 * t + 40
    flow = quantize_flow(np.broadcast_to(np.array([5.0, -3.0], np.float32), (T - 1, H, W, 2)))
    objects = np.full((T, H, W), 9, np.uint8)
    objects[:, :, : W // 2] = 7
    data = schema.encode_example(video_id=video_id, dataset=dataset, fps=fps, rgb=rgb,
                                 num_classes=num_classes, labels=labels, label_start=starts, label_end=ends,
                                 flow=flow, objects=objects)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(data)


def test_tf_dequantize_matches_numpy():
    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(dequantize(values).numpy(), dequantize_flow(values), atol=1e-5)
    # the flip rule: 255 - v is exactly the negated flow
    np.testing.assert_allclose(dequantize_flow(255 - values), -dequantize_flow(values), atol=1e-5)


def test_training_clips_labels_and_consistent_augmentation(tmp_path):
    _write(tmp_path / "a.tfrecord")
    ds = make_dataset(str(tmp_path / "*.tfrecord"), modalities=["rgb", "flow", "object"], frames=4, size=16,
                      training=True, batch_size=1, dataset="charades", num_classes=4, seed=3, repeat=True)
    seen_starts, flips = set(), set()
    batches = iter(ds)  # one video: every pass (batch) draws its own clip
    for _ in range(12):
        inputs, labels = next(batches)
        rgb, flow, obj = inputs["rgb"].numpy()[0], inputs["flow"].numpy()[0], inputs["object"].numpy()[0]
        assert rgb.shape == (4, 16, 16, 3) and flow.shape == (4, 16, 16, 2) and obj.shape == (4, 16, 16)
        assert obj.dtype == np.int32 and rgb.min() >= -1.0 and rgb.max() <= 1.0
        # frame index from the darker half's brightness (20 t -> rgb 20 t / 127.5 - 1)
        start = int(round((rgb[0].min() + 1) * 127.5 / 20))
        seen_starts.add(start)
        # labels: action 0 covers [0, 1) s = frames 0-1; action 2 covers [4, 5) s = frames 8-9 (fps 2)
        expected = np.zeros(4, np.float32)
        expected[0] = start < 2
        expected[2] = start + 4 > 8
        np.testing.assert_array_equal(labels.numpy()[0], expected)
        # flipped iff the dark half is on the right; masks and flow must agree with the image
        flipped = rgb[0, 8, 0, 0] > rgb[0, 8, -1, 0]
        flips.add(bool(flipped))
        assert obj[0, 8, 0] == (9 if flipped else 7) and obj[0, 8, -1] == (7 if flipped else 9)
        px_x, px_y = dequantize_flow(quantize_flow(np.array([5.0, -3.0], np.float32)))
        scale = flow[0, 8, 8, 1] / (px_y / 20)  # resize factor: size / crop side, side in [0.8 * 24, 24]
        assert 16 / 24 - 1e-4 <= scale <= 16 / int(24 * 0.8) + 1e-4
        assert flow[0, 8, 8, 0] == pytest.approx((-px_x if flipped else px_x) / 20 * scale, abs=1e-4)
    assert len(seen_starts) > 2 and flips == {True, False}


def test_evaluation_clips_with_video_ids(tmp_path):
    _write(tmp_path / "a.tfrecord", video_id="AAAAA")
    _write(tmp_path / "b.tfrecord", video_id="BBBBB", labels=(1,), starts=(0.0,), ends=(0.5,))
    ds = make_dataset([str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")], modalities=["rgb"],
                      frames=4, size=8, training=False, batch_size=3, dataset="charades", num_classes=4,
                      clips_per_video=3)
    batches = list(ds)
    ids = np.concatenate([b[2].numpy() for b in batches]).tolist()
    assert ids == [b"AAAAA"] * 3 + [b"BBBBB"] * 3
    rgb = np.concatenate([b[0]["rgb"].numpy() for b in batches])
    starts = np.round((rgb[:, 0].min(axis=(1, 2, 3)) + 1) * 127.5 / 20).astype(int).tolist()
    assert starts == [0, 3, 6, 0, 3, 6]  # evenly spaced over 10 frames
    labels = np.concatenate([b[1].numpy() for b in batches])
    # evaluation clips carry the whole video's labels
    np.testing.assert_array_equal(labels, [[1, 0, 1, 0]] * 3 + [[0, 1, 0, 0]] * 3)


def test_toyota_one_hot_and_no_files(tmp_path):
    _write(tmp_path / "t.tfrecord", dataset="toyota", labels=(30,), starts=(0.0,), ends=(5.0,),
           num_classes=31)
    ds = make_dataset(str(tmp_path / "t.tfrecord"), modalities=["rgb"], frames=20, size=8, training=False,
                      batch_size=1, dataset="toyota", num_classes=31)
    inputs, labels = next(iter(ds))
    assert labels.numpy()[0].argmax() == 30 and labels.numpy().sum() == 1
    assert inputs["rgb"].shape == (1, 20, 8, 8, 3)  # a short video repeats its last frame
    with pytest.raises(ValueError, match="no TFRecord files"):
        make_dataset(str(tmp_path / "none*"), modalities=["rgb"], frames=2, size=8, training=False,
                     batch_size=1, num_classes=31)


def test_one_clip_evaluation_can_carry_video_ids(tmp_path):
    for name in ("a", "b", "c"):
        _write(tmp_path / f"{name}.tfrecord", video_id=name.upper() * 5)
    ds = make_dataset(str(tmp_path / "*.tfrecord"), modalities=["rgb"], frames=4, size=8, training=False,
                      batch_size=2, num_classes=4, with_ids=True)
    seen = [v.decode() for _, _, batch in ds for v in batch.numpy()]
    assert seen == ["AAAAA", "BBBBB", "CCCCC"]
    assert all(len(element) == 2 for element in make_dataset(
        str(tmp_path / "*.tfrecord"), modalities=["rgb"], frames=4, size=8, training=False, batch_size=2,
        num_classes=4))
