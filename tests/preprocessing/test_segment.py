import keras
import numpy as np
import pytest

from preprocessing import segment


def test_device_classes_maps_150_channels_to_ade20k_ids_first_of_equal_scores_winning():
    def classes(scores):
        return keras.ops.convert_to_numpy(segment.device_classes(keras.ops.convert_to_tensor(scores)))

    scores = np.zeros((1, 2, 2, 150), np.float32)  # all equal at (0, 0) and (1, 0): the first channel
    scores[0, 1, 1, 149] = 1.0
    scores[0, 0, 1, [5, 7]] = 2.0
    out = classes(scores)
    assert out.dtype == np.uint8
    assert out[0].tolist() == [[1, 6], [1, 150]]  # ADE20K ids are 1-based; 0 is 'other'
    scores151 = np.zeros((1, 1, 1, 151), np.float32)
    scores151[..., 0] = 1.0
    assert classes(scores151)[0, 0, 0] == 0
    noise = np.random.default_rng(0).normal(size=(2, 3, 4, 150)).astype(np.float32)
    np.testing.assert_array_equal(classes(noise), np.argmax(noise, -1) + 1)
    with pytest.raises(ValueError, match="outputs 10 channels"):
        segment.device_classes(keras.ops.zeros((1, 1, 1, 10)))


def test_oracle_reads_ground_truth_at_the_decoded_times(tmp_path):
    masks = np.stack([np.full((8, 10), 10 + i, np.uint8) for i in range(8)])  # source at 4 fps
    (tmp_path / "masks").mkdir()
    np.savez_compressed(tmp_path / "masks" / "VID01.npz", masks=masks, fps=np.float32(4.0))
    seg = segment.make_segmenter("oracle", videos_dir=tmp_path / "videos")
    out = seg(np.zeros((3, 4, 5, 3), np.uint8), np.array([0.0, 0.5, 1.0]), "VID01")
    assert out.shape == (3, 4, 5) and out.dtype == np.uint8
    assert out[:, 0, 0].tolist() == [10, 12, 14]
    with pytest.raises(FileNotFoundError, match="OTHER.npz"):
        seg(np.zeros((1, 4, 5, 3), np.uint8), np.array([0.0]), "OTHER")
    assert segment.make_segmenter("none") is None


def test_keras_model_file_is_loaded_and_run(tmp_path):
    """The real loading path: a tiny randomly initialised model saved as .keras, fixed 16x16 input."""
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(151, 3, padding="same")(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "tiny_segmenter.keras"
    model.save(path)
    seg = segment.make_segmenter(str(path), batch_size=2)
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 24, 32, 3), dtype=np.uint8)
    out = seg(frames, np.zeros(3), "v")
    assert out.shape == (3, 24, 32) and out.dtype == np.uint8
    import cv2

    small = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_LINEAR) for f in frames])
    small = small.astype("float32")
    expected = np.argmax(keras.ops.convert_to_numpy(model(small)), -1).astype(np.uint8)
    np.testing.assert_array_equal(out, segment.resize_nearest(expected, 24, 32))
    with pytest.raises(ValueError, match="does not exist"):
        segment.make_segmenter(str(tmp_path / "missing.keras"))


@pytest.mark.slow
def test_keras_hub_segformer_preset_directory(tmp_path):
    """A keras-hub SegFormer preset saved locally (random weights) loads like a downloaded one."""
    import keras_hub

    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1, 1, 1], num_layers=4, layerwise_num_heads=[1, 1, 1, 1],
        layerwise_sr_ratios=[2, 1, 1, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[3, 3, 3, 3],
        layerwise_strides=[4, 2, 2, 2], image_shape=(64, 64, 3), hidden_dims=[4, 8, 12, 16])
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=8)
    converter = keras_hub.layers.SegFormerImageConverter(image_size=(64, 64), scale=1 / 255.0)
    task = keras_hub.models.SegFormerImageSegmenter(
        backbone=backbone, num_classes=150,
        preprocessor=keras_hub.models.SegFormerImageSegmenterPreprocessor(image_converter=converter))
    task.save_to_preset(str(tmp_path / "preset"))
    seg = segment.make_segmenter(str(tmp_path / "preset"))
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 40, 50, 3), dtype=np.uint8)
    out = seg(frames, np.zeros(2), "v")
    assert seg.image_size == (64, 64) and out.shape == (2, 40, 50)
    assert out.min() >= 1 and out.max() <= 150  # 150 channels -> ADE20K ids 1..150


def test_fixed_input_segmenter_batches_frames_of_several_sizes_as_one_at_a_time(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(151, 3, padding="same")(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "fixed.keras")
    seg = segment.make_segmenter(str(tmp_path / "fixed.keras"), batch_size=4)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((12, 20, 3), (24, 18, 3), (12, 20, 3))]
    assert seg.input_size(12, 20) == seg.input_size(24, 18) == (16, 16)  # one queue for every frame size
    stats = segment.SegmentStats()
    together = seg.segment_frames(frames, np.zeros(3), ["a", "b", "a"], stats)
    assert [m.shape for m in together] == [(12, 20), (24, 18), (12, 20)]
    for frame, mask in zip(frames, together, strict=True):
        assert np.array_equal(mask, seg(frame[None], np.zeros(1), "a")[0])
    assert len(np.unique(np.concatenate([m.ravel() for m in together]))) > 1
    assert (stats.frames, stats.calls) == (3, 1)
