"""Multi-process data parallelism: two JAX processes on the CPU over 127.0.0.1 train as one.

The processes run `pipelines.train.train_model` (the training loop of `train()`, also what the CLI
runs) under `pipelines.distributed.initialize`, each fed its half of every global batch; a third
process trains the same function on the whole global batches alone. Batches are synthetic arrays
indexed by the step rather than TFRecords, because the tf.data reader's training order is not
deterministic (parallel map/interleave), so no single process could replay the pair's batches.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.distributed import initialize

ROOT = Path(__file__).resolve().parents[2]
CONFIG = dict(structure="tiny", num_classes=5, frames=4, size=32, batch_size=4, steps=4, steps_per_epoch=2,
              learning_rate=0.05)
# float32 all-reduce over two processes sums the gradient in another order than one process does;
# after 4 SGD steps of the test below they differed by at most 1.2e-7 (one float32 ulp near 1).
RTOL, ATOL = 1e-4, 1e-5


def global_batch(step: int, config):
    """The global batch of `step`: deterministic synthetic clips and multi-hot labels."""
    rng = np.random.default_rng(1000 + step)
    n, t, s = config.batch_size, config.frames, config.size
    inputs = {"rgb": rng.uniform(-1, 1, (n, t, s, s, 3)).astype("float32"),
              "flow": rng.normal(0, 0.3, (n, t, s, s, 2)).astype("float32"),
              "object": rng.integers(0, 151, (n, t, s, s)).astype("int32")}
    labels = (rng.uniform(size=(n, config.num_classes)) < 0.3).astype("float32")
    return inputs, labels


def worker(workdir: str, out: str, part: str) -> None:
    """One training process. `part`: `local` (this process's slice of each global batch, the
    multi-process run) or `global` (all of it: the one-process reference)."""
    from model.structure import get_structure
    from pipelines import distributed
    from pipelines.train import TrainConfig, train_model

    config = TrainConfig(**CONFIG)
    local = distributed.local_batch_size(config.batch_size)
    lo, hi = (0, config.batch_size) if part == "global" else (distributed.process_index() * local,
                                                               (distributed.process_index() + 1) * local)

    def train_data(initial_epoch: int):
        step = initial_epoch * config.steps_per_epoch
        while True:
            inputs, labels = global_batch(step, config)
            yield {k: v[lo:hi] for k, v in inputs.items()}, labels[lo:hi]
            step += 1

    model, result = train_model(config, get_structure(config.structure), workdir, train_data=train_data,
                                verbose=0)
    np.savez(out, *[np.asarray(w) for w in model.get_weights()])
    Path(out + ".json").write_text(json.dumps(result))


class _NoTensorFlow:
    """A meta-path finder under which `import tensorflow` fails as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None


def main(*args) -> None:
    """A worker process: joins the run the environment describes (if any), then trains."""
    sys.meta_path.insert(0, _NoTensorFlow())
    initialize()
    worker(*args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, out, part, *, process_id=None, num_processes=None, coordinator=None):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_FLAGS": ""}
    for key in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                "KERAS_DISTRIBUTION_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
        env.pop(key, None)
    if coordinator is not None:  # what `assemblenet train --coordinator --num-processes --process-id` sets up
        env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=coordinator, KERAS_DISTRIBUTION_NUM_PROCESSES=str(num_processes),
                   KERAS_DISTRIBUTION_PROCESS_ID=str(process_id))
    # TensorFlow is hidden from the workers: the JAX path needs none of it (the input here is numpy),
    # and importing it (Keras seeds it when present) costs more than the training on a loaded machine.
    code = "import sys; from tests.pipelines.test_distributed import main; main(*sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, str(workdir), str(out), part], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs, timeout=1800):  # generous: ~100 s of CPU per process, on a shared 2-core machine
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]


def _weights(path):
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _run_pair(workdir, out):
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [_launch(workdir, f"{out}-{i}.npz", "local", process_id=i, num_processes=2, coordinator=coordinator)
             for i in range(2)]
    _wait(procs)
    return [_weights(f"{out}-{i}.npz") for i in range(2)]


def _max_excess(a, b):
    """Largest |a - b| - (ATOL + RTOL |b|) over all weights (<= 0: equal within the tolerance)."""
    return max(float(np.max(np.abs(x - y) - (ATOL + RTOL * np.abs(y)))) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_two_processes_train_like_one_process_on_the_global_batch(tmp_path):
    pair_dir, ref_dir = tmp_path / "pair", tmp_path / "one"
    reference = _launch(ref_dir, tmp_path / "one.npz", "global")
    pair = _run_pair(pair_dir, tmp_path / "pair")
    _wait([reference])
    one = _weights(tmp_path / "one.npz")

    # Both processes hold the same replicated weights, bit for bit.
    for a, b in zip(pair[0], pair[1], strict=True):
        np.testing.assert_array_equal(a, b)
    # ... equal to one process trained on the concatenated (global) batches. (Without the gradient
    # all-reduce each process would follow its own halves: the two would differ, and differ from this.)
    assert _max_excess(pair[0], one) <= 0, _max_excess(pair[0], one)
    results = [json.loads(Path(f"{tmp_path / 'pair'}-{i}.npz.json").read_text()) for i in range(2)]
    assert [r["steps"] for r in results] == [4, 4]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-6)

    # Only process 0 wrote the run directory: one history row per epoch, not two.
    rows = (pair_dir / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and rows[1].startswith("0,") and rows[2].startswith("1,"), rows
    assert json.loads((pair_dir / "checkpoints" / "latest.json").read_text())["epoch"] == 2
    assert (pair_dir / "model.keras").is_file()

    # Resume: point latest.json back at epoch 1; both processes restore it, train epoch 2 again
    # (the same batches), and end where the uninterrupted run ended.
    latest = pair_dir / "checkpoints" / "latest.json"
    latest.write_text(json.dumps({"checkpoint": "epoch-000001", "epoch": 1, "step": 2}))
    resumed = _run_pair(pair_dir, tmp_path / "resumed")
    results = [json.loads(Path(f"{tmp_path / 'resumed'}-{i}.npz.json").read_text()) for i in range(2)]
    assert [r["initial_epoch"] for r in results] == [1, 1] and [r["steps"] for r in results] == [4, 4]
    for a, b in zip(resumed[0], resumed[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert _max_excess(resumed[0], pair[0]) <= 0
    assert (pair_dir / "history.csv").read_text().splitlines()[:2] == rows[:2]
    assert len((pair_dir / "history.csv").read_text().splitlines()) == 3


def test_initialize_is_a_no_op_for_one_process_and_rejects_bad_flags(monkeypatch):
    for key in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                "KERAS_DISTRIBUTION_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    assert initialize() is False
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match="also give --num-processes"):
        initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match="expected 0 <= process id < --num-processes 2"):
        initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="without --coordinator"):
        initialize(num_processes=2, process_id=0)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="KERAS_DISTRIBUTION_NUM_PROCESSES='two'"):
        initialize()


def _write_records(path, video_ids):
    import tensorflow as tf

    from preprocessing import schema

    rgb = np.zeros((3, 8, 8, 3), np.uint8)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for video_id in video_ids:
            writer.write(schema.encode_example(video_id=video_id, dataset="charades", fps=2.0, rgb=rgb,
                                               num_classes=4, labels=(1,), label_start=(0.0,), label_end=(1.0,)))


def _ids(files, shard_index, num_shards):
    from preprocessing.dataset import make_dataset

    ds = make_dataset(files, modalities=["rgb"], frames=2, size=8, training=True, batch_size=1, num_classes=4,
                      seed=0, with_ids=True, shard_index=shard_index, num_shards=num_shards)
    return [video_id.decode() for _, _, ids in ds.as_numpy_iterator() for video_id in ids]


@pytest.mark.parametrize(("files", "num_shards", "sizes"), [
    (3, 2, [4, 2]),     # by file: process 0 reads files 0 and 2, process 1 file 1
    (1, 2, [3, 2]),     # one file, two processes: every other record
    (2, 3, [2, 2, 2]),  # fewer files than processes: by record
])
def test_each_process_reads_a_disjoint_part_of_the_records(tmp_path, files, num_shards, sizes):
    paths, every = [], []
    per_file = 6 // files if files > 1 else 5
    for f in range(files):
        ids = [f"v{f}{r}" for r in range(per_file)]
        _write_records(tmp_path / f"train-{f}.tfrecord", ids)
        paths.append(str(tmp_path / f"train-{f}.tfrecord"))
        every += ids
    parts = [_ids(paths, i, num_shards) for i in range(num_shards)]
    assert [len(p) for p in parts] == sizes
    assert sorted(sum(parts, [])) == sorted(every)  # disjoint, and together all of them
    with pytest.raises(ValueError, match=r"shard_index=2 must be in 0\.\.num_shards-1 \(num_shards=2\)"):
        _ids(paths, 2, 2)
