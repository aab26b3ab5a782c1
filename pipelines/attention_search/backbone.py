"""The model: the proxy backbone with cells inserted, the batches it trains on (the synthetic task, the planted
relation task, or TFRecords split by video id) and its evaluation. The search's settings (`SearchConfig`) are
pipelines.attention_search.config."""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from pipelines.attention_search.config import SearchConfig
from pipelines.attention_search.synthetic import synthetic_batch


def relation_benchmark(config: SearchConfig):
    """The relation benchmark (ablation.benchmark, variant "relation") of `config`: its clips at the
    search's frames and size, drawn from `task_seed`; loaded once per process."""
    from ablation.benchmark import versioned

    quarter = max(2, config.task_clips // 4)
    return _load_benchmark(
        versioned(
            "relation",
            seed=config.task_seed,
            frames=config.frames,
            size=config.size,
            train_clips=config.task_clips,
            val_clips=quarter,
            test_clips=quarter,
        ),
        config.task_cache,
    )


@functools.lru_cache(maxsize=2)
def _load_benchmark(benchmark_config, cache_dir):
    from ablation.benchmark import load_or_generate

    return load_or_generate(benchmark_config, cache_dir)


def build_backbone(config: SearchConfig, cell_config: dict | None):
    """(model, modalities): the proxy backbone with `cell_config` at the configured positions."""
    if config.backbone == "resnet":
        from model.resnet import build_resnet3d

        cells = {p: cell_config for p in config.positions} if cell_config else None
        model = build_resnet3d(
            config.num_classes,
            blocks=config.blocks,
            width=config.width,
            cells=cells,
            frames=config.frames,
            size=config.size,
        )
        return model, ("rgb",)
    from model.assemblenet import build_assemblenet
    from model.attention_nas import insert_cells
    from model.structure import get_structure

    structure = get_structure(config.structure)
    if cell_config:
        structure = insert_cells(structure, cell_config, after_levels=config.after_levels)
    model = build_assemblenet(structure, config.num_classes, frames=config.frames, size=config.size)
    return model, structure.modalities


def _model_inputs(model, inputs: dict):
    return inputs["rgb"] if not isinstance(model.input, dict) else inputs


def video_ids(pattern: str) -> list[str]:
    """Every video id in the TFRecords matching `pattern` (sorted), read without decoding frames."""
    import glob

    from preprocessing.loader import read_record, scan_records
    from preprocessing.schema import read_video_id

    files = sorted(glob.glob(pattern))
    if not files:
        raise ValueError(f"--data: no TFRecord files match {pattern!r}")
    ids = set()
    for path in files:  # no TensorFlow: the records' own framing (preprocessing.loader)
        with open(path, "rb") as handle:
            for offset, length in scan_records(path):
                ids.add(read_video_id(read_record(handle, path, offset, length)))
    return sorted(ids)


def heldout_split(ids, fraction: float) -> tuple[list[str], list[str]]:
    """(training ids, held-out ids): a deterministic split by a hash of each id (independent of order
    and of the other ids, so adding videos never moves one across), at least one video on each side."""
    ids = sorted(set(ids))
    if len(ids) < 2:
        raise ValueError(f"the held-out split needs at least 2 videos, got {len(ids)}")
    key = lambda v: int(hashlib.sha1(v.encode()).hexdigest()[:12], 16) / 16**12
    heldout = [v for v in ids if key(v) < fraction]
    if not heldout or len(heldout) == len(ids):  # tiny sets: the lowest / highest hash moves over
        ranked = sorted(ids, key=key)
        heldout = ranked[:1] if not heldout else ranked[:-1]
    train = [v for v in ids if v not in set(heldout)]
    return train, sorted(heldout)


def _batches(
    config: SearchConfig, modalities, seed: int, *, training: bool = True, only_ids=None, seen=None,
    split: str = "train",
):
    """Endless (inputs, labels) batches: synthetic; the relation benchmark's `split` (training: a new
    permutation of its clips every pass, drawn from `seed`; else its clips in order); or the TFRecords
    through preprocessing.dataset (restricted to the videos in `only_ids` when given: full batches of
    those videos only)."""
    if config.data is None and config.task == "relation":
        bench = relation_benchmark(config)
        n = len(bench.splits[split])
        if n < config.batch_size:
            raise ValueError(f"the relation task's {split} split has {n} clips, fewer than a batch of "
                             f"{config.batch_size} (raise task_clips)")
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(n) if training else np.arange(n)
            for start in range(0, n - config.batch_size + 1, config.batch_size):
                index = np.sort(order[start : start + config.batch_size])
                yield bench.inputs(split, index, modalities), bench.labels(split)[index]
    if config.data is None:
        rng = np.random.default_rng(seed)
        while True:
            yield synthetic_batch(
                rng, config.batch_size, frames=config.frames, size=config.size, modalities=modalities
            )
    from preprocessing.loader import make_reader, to_numpy

    dataset = make_reader(
        config.data,
        modalities=modalities,
        frames=config.frames,
        size=config.size,
        training=training,
        batch_size=config.batch_size,
        dataset=config.dataset,
        num_classes=config.num_classes,
        seed=seed,
        repeat=training,  # every pass draws new clips (preprocessing.clips.decide of the pass)
        with_ids=only_ids is not None,
    )
    if only_ids is None:
        while True:
            for inputs, labels in dataset:
                yield {k: np.array(to_numpy(v)) for k, v in inputs.items()}, np.array(to_numpy(labels))
    keep_ids = set(only_ids)
    pending = []
    while True:
        for inputs, labels, ids in dataset:
            inputs = {k: np.array(to_numpy(v)) for k, v in inputs.items()}
            labels, ids = np.array(to_numpy(labels)), np.array(to_numpy(ids)).reshape(-1)
            for n, video in enumerate(ids):
                video = video.decode() if isinstance(video, bytes) else str(video)
                if video in keep_ids:
                    pending.append(({m: x[n] for m, x in inputs.items()}, labels[n], video))
            while len(pending) >= config.batch_size:
                chunk, pending = pending[: config.batch_size], pending[config.batch_size :]
                if seen is not None:
                    seen.update(c[2] for c in chunk)
                batch = {m: np.stack([c[0][m] for c in chunk]) for m in chunk[0][0]}
                yield batch, np.stack([c[1] for c in chunk])


def _loss_fn(config: SearchConfig):
    import keras

    if config.data is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if config.dataset == "charades":  # multi-hot
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.CategoricalCrossentropy(from_logits=True)


def _correct(logits, labels) -> int:
    predicted = np.argmax(logits, axis=-1)
    truth = labels if labels.ndim == 1 else np.argmax(labels, axis=-1)
    return int(np.sum(predicted == truth))


def recalibrate_batchnorm(model, batches, num_batches: int = 20) -> None:
    """Re-estimates every BatchNorm's moving statistics as the plain average over `num_batches` batches.

    After a few hundred steps the moving averages (momentum 0.99) still lag the weights, most of all
    behind a cell whose zero-initialised γ grows during training; one-shot NAS re-estimates them before
    evaluating (the project applies it to every compared model alike).

    Each batch runs through one compiled training-mode forward pass with every momentum at 0, so a
    layer's moving statistics become that batch's; their mean over the batches is kept. (A forward pass
    run eagerly instead costs a dispatch, and under JAX a compilation, per operation: on a supernet of
    many candidate operations that took a minute on the CPU and longer on a shared GPU.)"""
    import keras

    layers = [
        layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not layers or num_batches < 1:
        return
    momenta = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, "float64"), np.zeros(layer.moving_variance.shape, "float64")]
            for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0  # read when the forward pass is traced: moving statistics := the batch's
        forward = _training_forward(model)
        for _ in range(num_batches):
            inputs, _ = next(batches)
            forward(_model_inputs(model, inputs))
            for total, layer in zip(sums, layers, strict=True):
                total[0] += np.asarray(layer.moving_mean.value, "float64")
                total[1] += np.asarray(layer.moving_variance.value, "float64")
        for (mean, variance), layer in zip(sums, layers, strict=True):
            layer.moving_mean.assign((mean / num_batches).astype(layer.moving_mean.dtype))
            layer.moving_variance.assign((variance / num_batches).astype(layer.moving_variance.dtype))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def _training_forward(model):
    """model(x, training=True) compiled once, its variable updates (BatchNorm statistics) applied: under
    JAX a jitted stateless call, under TensorFlow a tf.function; eager on other backends."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        @jax.jit
        def step(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=True)[1]

        def forward(x):
            updated = step([v.value for v in model.trainable_variables],
                           [v.value for v in model.non_trainable_variables], x)
            for variable, value in zip(model.non_trainable_variables, updated, strict=True):
                variable.assign(value)

        return forward
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: model(x, training=True))
    return lambda x: model(x, training=True)


def evaluate_accuracy(model, config: SearchConfig, modalities, *, seed: int) -> float:
    """Top-1 accuracy on `eval_batches` batches never used in training (their own seed), after
    recalibrating BatchNorm on other unseen batches. The relation task: on its whole test split (as many
    full batches as it holds), BatchNorm recalibrated on training clips."""
    recalibrate_batchnorm(model, _batches(config, modalities, seed + 1), config.recalibration_batches)
    batches = _batches(config, modalities, seed, training=False, split="test")
    count = config.eval_batches
    if config.data is None and config.task == "relation":
        count = len(relation_benchmark(config).splits["test"]) // config.batch_size
    correct = total = 0
    for _ in range(count):
        inputs, labels = next(batches)
        logits = np.asarray(model.predict_on_batch(_model_inputs(model, inputs)))
        correct += _correct(logits, labels)
        total += len(labels)
    return correct / total
