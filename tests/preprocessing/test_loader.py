"""The TensorFlow-free input path: record writing, the native reader against tf.data, sharding, and a
training run with TensorFlow hidden from the import system."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from preprocessing import clips, loader, schema
from preprocessing.flow import quantize_flow

ROOT = Path(__file__).resolve().parents[2]
MODALITIES = ["rgb", "flow", "object"]


def _video(rng, video_id, *, frames=12, height=30, width=41, dataset="charades", labels=(1, 3),
           starts=(0.0, 3.0), ends=(1.5, 4.0), num_classes=6, smooth=True):
    """Random frames (blurred, so JPEG keeps them close to the originals) of one video, encoded."""
    import cv2

    rgb = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    if smooth:
        rgb = np.stack([cv2.GaussianBlur(f, (5, 5), 1.5) for f in rgb])
    flow = quantize_flow(rng.normal(0, 6, (frames - 1, height, width, 2)).astype(np.float32))
    objects = rng.integers(0, 151, (frames, height, width), dtype=np.uint8)
    return schema.encode_example(video_id=video_id, dataset=dataset, fps=2.0, rgb=rgb,
                                 num_classes=num_classes, labels=labels, label_start=starts, label_end=ends,
                                 flow=flow, objects=objects)


def _write_videos(folder: Path, files=2, per_file=3, seed=0, **kwargs) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(files):
        records = [_video(rng, f"vid{f}{v}", height=28 + 2 * v, width=37 + 3 * f, **kwargs)
                   for v in range(per_file)]
        path = folder / f"part-{f}.tfrecord"
        loader.write_records(path, records)
        paths.append(str(path))
    return paths


def _tf_clips(files, **kwargs) -> dict:
    from preprocessing.dataset import make_dataset

    out = {}
    for inputs, labels, ids in make_dataset(files, batch_size=1, with_ids=True, **kwargs):
        key = ids.numpy()[0].decode()
        out.setdefault(key, []).append(({m: v.numpy()[0] for m, v in inputs.items()}, labels.numpy()[0]))
    return out


def _native_clips(files, workers=0, **kwargs) -> dict:
    out = {}
    for inputs, labels, ids in loader.NativeReader(files, batch_size=1, with_ids=True, workers=workers,
                                                   **kwargs):
        key = ids[0].decode()
        out.setdefault(key, []).append(({m: np.array(v[0]) for m, v in inputs.items()}, labels[0].copy()))
    return out


def _assert_same(tf_clips: dict, native: dict) -> None:
    """rgb and flow within 1e-4 (cv2.resize vs tf.image.resize in float32: both bilinear with
    half-pixel centres, they differ by float rounding only); object masks and labels exactly."""
    assert sorted(tf_clips) == sorted(native)
    for video, expected in tf_clips.items():
        assert len(native[video]) == len(expected)
        for (a_inputs, a_labels), (b_inputs, b_labels) in zip(expected, native[video], strict=True):
            np.testing.assert_allclose(b_inputs["rgb"], a_inputs["rgb"], atol=1e-4, rtol=0, err_msg=video)
            np.testing.assert_allclose(b_inputs["flow"], a_inputs["flow"], atol=1e-4, rtol=0, err_msg=video)
            np.testing.assert_array_equal(b_inputs["object"], a_inputs["object"], err_msg=video)
            assert b_inputs["object"].dtype == a_inputs["object"].dtype == np.int32
            np.testing.assert_array_equal(b_labels, a_labels, err_msg=video)


# -- writing ----------------------------------------------------------------------------------

def _encode_with_tensorflow(*, video_id, dataset, fps, rgb, num_classes, labels, label_start, label_end,
                            flow, objects) -> bytes:
    """What schema.encode_example wrote with TensorFlow's own example_pb2 before it needed no TF."""
    from tensorflow.core.example import example_pb2, feature_pb2

    example = example_pb2.SequenceExample()
    ctx = example.context.feature
    ctx["video_id"].bytes_list.value.append(video_id.encode())
    ctx["dataset"].bytes_list.value.append(dataset.encode())
    ctx["fps"].float_list.value.append(float(fps))
    t, h, w, _ = rgb.shape
    for key, value in (("num_frames", t), ("height", h), ("width", w), ("num_classes", num_classes)):
        ctx[key].int64_list.value.append(int(value))
    ctx["labels"].int64_list.value.extend(int(c) for c in labels)
    ctx["label_start"].float_list.value.extend(float(s) for s in label_start)
    ctx["label_end"].float_list.value.extend(float(e) for e in label_end)
    lists = example.feature_lists.feature_list

    def add(key, encoded):
        for data in encoded:
            lists[key].feature.append(feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[data])))

    flow = np.concatenate([flow, flow[-1:]], axis=0)
    add("rgb", [schema.encode_jpeg(f) for f in rgb])
    add("flow_x", [schema.encode_png(f[..., 0]) for f in flow])
    add("flow_y", [schema.encode_png(f[..., 1]) for f in flow])
    add("object", [schema.encode_png(m) for m in objects])
    return example.SerializeToString()


def test_records_written_without_tensorflow_are_byte_identical_to_tensorflow_s(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    video = dict(video_id="AB12C", dataset="charades", fps=6.0, num_classes=157, labels=[5, 17, 5],
                 label_start=[0.0, 1.25, 7.5], label_end=[3.5, 9.0, 8.0],
                 rgb=rng.integers(0, 256, (5, 16, 20, 3), dtype=np.uint8),
                 flow=rng.integers(0, 256, (4, 16, 20, 2), dtype=np.uint8),
                 objects=rng.integers(0, 151, (5, 16, 20), dtype=np.uint8))
    ours = schema.encode_example(**video)
    assert ours == _encode_with_tensorflow(**video)
    # The file framing too: TensorFlow's writer and ours write the same bytes, and each reads the other's.
    loader.write_records(tmp_path / "ours.tfrecord", [ours, ours[:100]])
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        writer.write(ours)
        writer.write(ours[:100])
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == [ours, ours[:100]]
    parsed = schema.parse_native(ours, MODALITIES)
    assert parsed["video_id"] == b"AB12C" and parsed["num_frames"] == 5 and parsed["num_classes"] == 157
    np.testing.assert_array_equal(parsed["labels"], [5, 17, 5])
    np.testing.assert_allclose(parsed["label_end"], [3.5, 9.0, 8.0])


def test_corrupt_and_truncated_records_fail_with_the_file_and_byte(tmp_path):
    path = tmp_path / "a.tfrecord"
    loader.write_records(path, [b"x" * 50, b"y" * 70])
    assert loader.scan_records(str(path)) == [(0, 50), (66, 70)]
    data = bytearray(path.read_bytes())
    data[66 + 12 + 5] ^= 1
    path.write_bytes(bytes(data))
    with open(path, "rb") as f, pytest.raises(ValueError, match=r"a.tfrecord: corrupt TFRecord data at byte 66"):
        loader.read_record(f, str(path), 66, 70)
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match=r"a.tfrecord: truncated TFRecord at byte 66"):
        loader.scan_records(str(path))


def test_in_memory_framing_is_the_files_and_checks_the_same(tmp_path):
    """encode_records / decode_records (the preprocessing job's shards and staged files) frame exactly as
    write_records / scan_records, and refuse the same damage."""
    records = [b"x" * 50, b"", b"y" * 70]
    loader.write_records(tmp_path / "a.tfrecord", records)
    blob = loader.encode_records(records)
    assert blob == (tmp_path / "a.tfrecord").read_bytes() and len(blob) == 16 * 3 + 120
    assert loader.decode_records(blob, "a") == records
    damaged = bytearray(blob)
    damaged[66 + 16 + 12 + 3] ^= 1  # inside the third record's data
    with pytest.raises(ValueError, match=r"^shard: corrupt TFRecord data at byte 82 \(CRC mismatch\)"):
        loader.decode_records(bytes(damaged), "shard")
    damaged = bytearray(blob)
    damaged[66] ^= 1  # the second record's length
    with pytest.raises(ValueError, match=r"^shard: corrupt TFRecord length at byte 66"):
        loader.decode_records(bytes(damaged), "shard")
    with pytest.raises(ValueError, match=r"^shard: truncated TFRecord at byte 82"):
        loader.decode_records(blob[:-1], "shard")
    with pytest.raises(ValueError, match=r"^shard: truncated TFRecord header at byte 82"):
        loader.decode_records(blob[:90], "shard")


# -- the two readers --------------------------------------------------------------------------

def test_decisions_are_a_function_of_seed_pass_and_video():
    common = dict(num_frames=40, height=30, width=50, frames=8, clips=1, training=True)
    a = clips.decide(seed=3, epoch=0, video_id="v1", **common)
    assert a == clips.decide(seed=3, epoch=0, video_id=b"v1", **common)
    others = [clips.decide(seed=s, epoch=e, video_id=v, **common)
              for s, e, v in [(4, 0, "v1"), (3, 1, "v1"), (3, 0, "v2")]]
    assert all((o.starts, o.y0, o.x0, o.side, o.flip) != (a.starts, a.y0, a.x0, a.side, a.flip) for o in others)
    many = [clips.decide(seed=0, epoch=e, video_id="v", **common) for e in range(300)]
    sides = np.array([d.side for d in many])
    assert sides.min() >= 24 and sides.max() <= 30 and len(set(sides)) > 4  # 80-100 % of the short side
    assert all(0 <= d.y0 <= 30 - d.side and 0 <= d.x0 <= 50 - d.side for d in many)
    assert 0.4 < np.mean([d.flip for d in many]) < 0.6
    starts = np.array([d.starts[0] for d in many])
    assert starts.min() == 0 and starts.max() == 32
    # evaluation: centre crop, no flip; evenly spaced or (A.7) random from the seed, repeatable
    even = clips.decide(num_frames=40, height=30, width=50, frames=8, clips=5, training=False, seed=0,
                        epoch=0, video_id="v", eval_starts="even")
    assert even.starts.tolist() == [0, 8, 16, 24, 32] and (even.y0, even.x0, even.side, even.flip) == (0, 10, 30, False)
    random = [clips.decide(num_frames=400, height=30, width=50, frames=8, clips=5, training=False, seed=0,
                           epoch=0, video_id="v", eval_starts="random").starts.tolist() for _ in range(2)]
    assert random[0] == random[1] and random[0] != [0, 98, 196, 294, 392] and max(random[0]) <= 392


@pytest.mark.parametrize("dataset", ["charades", "toyota"])
def test_both_readers_cut_the_same_training_clips(tmp_path, dataset):
    kwargs = {} if dataset == "charades" else dict(dataset="toyota", labels=(4,), starts=(0.0,), ends=(6.0,))
    files = _write_videos(tmp_path, **kwargs)
    common = dict(modalities=MODALITIES, frames=4, size=24, training=True, dataset=dataset, num_classes=6,
                  seed=11)
    for epoch in (0, 1):
        tf_clips = _tf_clips(files, epoch=epoch, **common)
        native = _native_clips(files, epoch=epoch, **common)
        _assert_same(tf_clips, native)
    # what the decisions say: across videos and passes, flips and crops differ
    flips = {clips.decide(num_frames=12, height=28, width=37, frames=4, clips=1, training=True, seed=11,
                          epoch=e, video_id=f"vid0{v}").flip for e in (0, 1) for v in range(3)}
    assert flips == {True, False}
    labels = np.stack([c[0][1] for c in native.values()])
    if dataset == "toyota":
        assert (labels.sum(axis=1) == 1).all() and (labels.argmax(axis=1) == 4).all()
    else:  # clips overlapping [0, 1.5) s have class 1, those overlapping [3, 4) s class 3 (fps 2)
        assert labels[:, 1].any() or labels[:, 3].any()


def test_both_readers_cut_the_same_evaluation_clips(tmp_path):
    files = _write_videos(tmp_path, frames=20)
    for starts in ("even", "random"):
        common = dict(modalities=MODALITIES, frames=6, size=32, training=False, dataset="charades",
                      num_classes=6, clips_per_video=3, seed=0, eval_starts=starts)
        tf_clips = _tf_clips(files, **common)
        native = _native_clips(files, **common)
        _assert_same(tf_clips, native)
        # evaluation clips carry the whole video's labels
        assert all((c[1] == np.isin(np.arange(6), [1, 3])).all() for v in native.values() for c in v)


@pytest.mark.parametrize("side, flip", [(40, True), (32, False), (32, True), (27, True), (45, False)])
def test_a_clip_equals_tf_data_s_for_crops_up_down_and_equal_to_the_size(side, flip):
    """clip_into against preprocessing.dataset.make_clip for one explicit window each: crops smaller
    than, equal to and larger than the output size (side == size skips the resize), with and
    without the flip (applied before the resize here, after it in tf.data)."""
    import tensorflow as tf

    from preprocessing.dataset import make_clip

    serialized = _video(np.random.default_rng(side), "w1", frames=9, height=48, width=61)
    decision = clips.Decision(starts=np.array([2], np.int32), y0=48 - side, x0=61 - side - 3, side=side, flip=flip)
    expected, _ = make_clip(schema.parse_example(tf.constant(serialized), MODALITIES), tf.constant(2),
                            tuple(tf.constant(v) for v in (decision.y0, decision.x0, side, flip)),
                            modalities=MODALITIES, frames=6, size=32, dataset="charades", num_classes=6,
                            whole_video_labels=False)
    out = {"rgb": np.full((6, 32, 32, 3), np.nan, np.float32), "flow": np.full((6, 32, 32, 2), np.nan, np.float32),
           "object": np.full((6, 32, 32), -1, np.int32)}
    loader.clip_into(schema.parse_native(serialized, MODALITIES), 2, decision, out, modalities=MODALITIES,
                     frames=6, size=32)
    np.testing.assert_allclose(out["rgb"], expected["rgb"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["flow"], expected["flow"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out["object"], expected["object"].numpy())
    assert np.abs(out["flow"]).max() > 0.1 and len(np.unique(out["object"])) > 20  # not a trivial clip


def test_png_frames_are_written_unfiltered_and_older_records_give_the_same_clips(tmp_path, monkeypatch):
    """schema.encode_png writes row filter 0 (none; the reader's speed depends on it, BENCHMARKS.md)
    and records written before it, with OpenCV's default filters, still give identical clips."""
    import struct
    import zlib

    import cv2

    image = np.random.default_rng(0).normal(128, 20, (30, 41)).clip(0, 255).astype(np.uint8)
    data = schema.encode_png(image)
    width, height = struct.unpack(">II", data[16:24])
    chunks, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks += data[pos + 8:pos + 8 + length] if kind == b"IDAT" else b""
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(chunks), np.uint8).reshape(height, width + 1)
    assert (width, height) == (41, 30) and (rows[:, 0] == 0).all()
    np.testing.assert_array_equal(rows[:, 1:], image)

    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    new = _write_videos(tmp_path / "new", files=1)
    monkeypatch.setattr(schema, "encode_png", lambda m: cv2.imencode(".png", np.ascontiguousarray(m))[1].tobytes())
    old = _write_videos(tmp_path / "old", files=1)
    assert Path(old[0]).read_bytes() != Path(new[0]).read_bytes()  # other PNG bytes...
    common = dict(modalities=MODALITIES, frames=4, size=24, training=True, dataset="charades", num_classes=6,
                  seed=5)
    before, after = _native_clips(old, **common), _native_clips(new, **common)
    assert sorted(before) == sorted(after) == ["vid00", "vid01", "vid02"]
    for video in before:  # ...the same clips, exactly
        for m in MODALITIES:
            np.testing.assert_array_equal(before[video][0][0][m], after[video][0][0][m])


@pytest.mark.slow
def test_worker_processes_give_the_batches_of_the_inline_reader(tmp_path):
    files = _write_videos(tmp_path)
    common = dict(modalities=MODALITIES, frames=4, size=16, training=True, batch_size=4, dataset="charades",
                  num_classes=6, seed=2, repeat=True)
    inline = loader.NativeReader(files, workers=0, **common).batches()
    pooled = loader.NativeReader(files, workers=2, hold=2, **common).batches()
    for _ in range(5):  # 20 clips: more than three passes over the 6 videos, batches across passes
        (a, a_labels), (b, b_labels) = next(inline), next(pooled)
        for m in MODALITIES:
            np.testing.assert_array_equal(a[m], b[m])
        np.testing.assert_array_equal(a_labels, b_labels)
        assert a["rgb"].shape == (4, 4, 16, 16, 3)
    pooled.close()


@pytest.mark.parametrize("files, num_shards", [(3, 2), (1, 2), (2, 3)])
def test_shards_are_disjoint_and_cover_the_records_in_both_readers(tmp_path, files, num_shards):
    from preprocessing.dataset import make_dataset

    paths = _write_videos(tmp_path, files=files, per_file=3)
    common = dict(modalities=["object"], frames=2, size=8, training=False, batch_size=1, dataset="charades",
                  num_classes=6, with_ids=True)
    seen_tf, seen_native = [], []
    for index in range(num_shards):
        shard = dict(shard_index=index, num_shards=num_shards)
        seen_native.append([i.decode() for _, _, ids in loader.NativeReader(paths, workers=0, **common, **shard)
                            for i in ids])
        seen_tf.append([i.decode() for _, _, ids in make_dataset(paths, **common, **shard)
                        for i in ids.numpy()])
    everything = sorted(f"vid{f}{v}" for f in range(files) for v in range(3))
    for seen in (seen_tf, seen_native):
        assert sorted(sum(seen, [])) == everything
    assert [sorted(s) for s in seen_tf] == [sorted(s) for s in seen_native]
    if files >= num_shards:  # by file
        assert all(len({v[3] for v in s}) == len(s) // 3 for s in seen_native)


# -- TensorFlow hidden ------------------------------------------------------------------------

SITECUSTOMIZE = """
import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith(("tensorflow.", "tensorboard", "tf_keras")):
            raise ImportError(f"{name} is hidden by the TensorFlow-free test")
        return None


sys.meta_path.insert(0, _NoTensorFlow())
"""


def _tf_free_env(tmp_path: Path) -> dict:
    hide = tmp_path / "hide_tf"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(SITECUSTOMIZE)  # every process, the input workers too
    return {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{ROOT}", "KERAS_BACKEND": "jax",
            "JAX_PLATFORMS": "cpu", "ASSEMBLENET_INPUT_PIPELINE": "auto"}


@pytest.mark.slow
def test_train_resume_and_evaluate_with_tensorflow_hidden(tmp_path):
    env = _tf_free_env(tmp_path)
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "hidden by the TensorFlow-free test" in check.stderr
    # records written without TensorFlow too
    writer = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.preprocessing.test_loader import _write_videos
        out = Path(sys.argv[1]); out.mkdir(parents=True)
        _write_videos(out, files=2, per_file=4, frames=10)
        assert "tensorflow" not in sys.modules
    """)
    data = tmp_path / "records"
    subprocess.run([sys.executable, "-c", writer, str(data)], env=env, check=True, timeout=300)

    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "pipelines.cli", "train", "--structure", "tiny", "--data", str(data),
               "--workdir", str(workdir), "--frames", "4", "--size", "32", "--batch-size", "4", "--steps", "12",
               "--steps-per-epoch", "3", "--learning-rate", "0.1", "--quiet", "--input-workers", "1"]
    latest = workdir / "checkpoints" / "latest.json"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        deadline = time.monotonic() + 900
        while not latest.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    log_text = (tmp_path / "first.log").read_text()
    assert first.returncode == -signal.SIGKILL, log_text[-3000:]
    killed_at = json.loads(latest.read_text())["epoch"]
    assert 1 <= killed_at < 4, f"the kill came after epoch {killed_at}: nothing left to resume"

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = json.loads(second.stdout[second.stdout.rindex("\n{") + 1:])
    assert result["initial_epoch"] == killed_at and result["steps"] == 12
    assert json.loads(latest.read_text()) == {"checkpoint": "epoch-000004", "epoch": 4, "step": 12}

    evaluate = subprocess.run([sys.executable, "-m", "pipelines.cli", "evaluate", "run", str(workdir),
                               "--data", str(data), "--clips", "2", "--input-workers", "0", "--json"],
                              capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["num_videos"] == 8 and metrics["clip_starts"] == "random" and metrics["size"] == 32
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert "hidden by the TensorFlow-free test" not in second.stderr + evaluate.stderr


def test_keras_view_serves_the_peeked_batch_again_and_never_replays_an_endless_reader(tmp_path):
    files = _write_videos(tmp_path, files=1, per_file=3)
    common = dict(modalities=["object"], frames=2, size=8, dataset="charades", num_classes=6, seed=1,
                  workers=0, batch_size=2)
    endless = loader.NativeReader(files, training=True, repeat=True, **common)
    expected = [b[0]["object"].copy() for b, _ in zip(endless.batches(), range(4), strict=False)]
    data = loader.keras_data(endless)
    assert data.num_batches is None
    got = [data[0][0]["object"], data[0][0]["object"], data[1][0]["object"], data[0][0]["object"]]
    for batch, want in zip(got, [expected[0], expected[0], expected[1], expected[2]], strict=True):
        np.testing.assert_array_equal(batch, want)
    finite = loader.keras_data(loader.NativeReader(files, training=False, **common))
    assert finite.num_batches == len(finite) == 2  # 3 videos, batches of 2
    first = finite[0][0]["object"].copy()
    finite[1]
    np.testing.assert_array_equal(finite[0][0]["object"], first)  # a new pass
    with pytest.raises(IndexError, match="sequential"):
        finite[0], finite[0], finite[2]
