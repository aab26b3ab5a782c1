"""AttentionNAS's differentiable one-shot search (the driver), its synthetic proxy task and the cell drawing.

`search(config=..., out_dir=...)` inserts supernet cells (model.attention_nas.SupernetCell) into a small
backbone (the I3D-ResNet of model/resnet.py at res3/res4, or an AssembleNet structure after levels 2
and 3), trains it DARTS-style (first-order, alternating; DARTS §2.3, §3.1.1 settings by default):
  1. network weights: one SGD step (momentum 0.9, L2 3e-4, learning rate cosine 0.025 → 0.001) on a
     training batch;
  2. architecture weights (`arch_*`): one Adam step (β (0.5, 0.999), L2 1e-3 on α; the rate keeps
     DARTS's budget 3e-4 × 19 550 steps over this search's architecture steps unless `arch_lr` is set,
     `architecture_learning_rate`) on a batch of the held-out split (DARTS's validation loss), from
     `arch_start` × steps onwards, optionally with the supernet's softmax temperature annealed towards
     `final_temperature`.
Candidates that cannot attend at some insertion position's feature size (one key per query after
`kv_pool`, model.attention_nas.degenerate_pairs) are excluded from the search space, with a message.
With --data the videos are split by id into a training part and a disjoint held-out part for the
architecture steps (`heldout_split`); both id lists go into search.json.
Writes to OUT/: cell.json (the derived cell), arch_weights.json (the learned softmax weights),
cell.png (a drawing of the cell), entropy.png (decisiveness per step), search.json (config, split,
exclusions, supernet accuracy, losses and per-choice entropies per step).
Both steps are Keras's own `train_on_batch` with one optimiser (model.attention_nas.AlternatingAdam) that
updates one group of variables per step, so the search runs under any backend (TensorFlow, JAX).

The synthetic task (no --data): every clip holds a coloured disc doing one of four temporal patterns —
static, moving on a line, blinking, or jumping between two far places — plus a static distractor disc and
pixel noise. A single frame cannot tell static / blinking / jumping apart, so the task needs temporal
(or spatiotemporal) reasoning and the search has a signal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from pipelines import locks

SYNTHETIC_CLASSES = ("static", "linear", "blink", "jump")


# ---------------------------------------------------------------------------------------------------
# The synthetic proxy task.


def synthetic_batch(
    rng: np.random.Generator, batch: int, *, frames: int, size: int, modalities=("rgb",)
) -> tuple[dict, np.ndarray]:
    """(inputs keyed by modality, int labels in 0..3). rgb in [-1, 1]; flow = true disc motion / 20 px;
    object = 1 on the disc, 2 on the distractor (the contract's formats, docs/CONTRACTS.md)."""
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    radius = max(1.5, size / 8)
    rgb = rng.normal(-0.6, 0.1, size=(batch, frames, size, size, 3)).astype("float32")
    flow = np.zeros((batch, frames, size, size, 2), "float32")
    objects = np.zeros((batch, frames, size, size), "int32")
    labels = rng.integers(0, len(SYNTHETIC_CLASSES), size=batch)
    low, high = radius, size - radius

    def far_pair():
        while True:
            a, b = rng.uniform(low, high, 2), rng.uniform(low, high, 2)
            if np.linalg.norm(a - b) >= size / 3:
                return a, b

    for n in range(batch):
        a, b = far_pair()
        steps = np.arange(frames)
        visible = np.ones(frames, bool)
        if labels[n] == 0:
            path = np.repeat(a[None], frames, 0)
        elif labels[n] == 1:
            path = a[None] + (b - a)[None] * (steps / max(1, frames - 1))[:, None]
        elif labels[n] == 2:
            period = rng.integers(1, 3)
            visible = ((steps + rng.integers(0, 2)) // period) % 2 == 0
            path = np.repeat(a[None], frames, 0)
        else:
            period = rng.integers(1, 3)
            path = np.where((((steps // period) % 2) == 0)[:, None], a[None], b[None])
        colour = rng.uniform(0.0, 1.0, 3).astype("float32")
        distractor = rng.uniform(low, high, 2)
        distractor_mask = (xx - distractor[0]) ** 2 + (yy - distractor[1]) ** 2 <= (0.8 * radius) ** 2
        distractor_colour = rng.uniform(-0.2, 1.0, 3).astype("float32")
        for t in range(frames):
            rgb[n, t][distractor_mask] = distractor_colour
            objects[n, t][distractor_mask] = 2
            if not visible[t]:
                continue
            mask = (xx - path[t, 0]) ** 2 + (yy - path[t, 1]) ** 2 <= radius**2
            rgb[n, t][mask] = colour
            objects[n, t][mask] = 1
            if t + 1 < frames and visible[t + 1]:
                flow[n, t][mask] = (path[t + 1] - path[t]) / 20.0
    np.clip(rgb, -1, 1, out=rgb)
    available = {"rgb": rgb, "flow": flow, "object": objects}
    return {m: available[m] for m in modalities}, labels.astype("int32")


# ---------------------------------------------------------------------------------------------------
# Configuration and model.


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    backbone: str = "resnet"  # resnet | assemblenet
    structure: str = "tiny"  # AssembleNet structure name or JSON path (backbone=assemblenet)
    steps: int = 200
    frames: int = 8
    size: int = 32
    batch_size: int = 8
    seed: int = 0
    # Network weights (DARTS §3.1.1): SGD, momentum 0.9, L2 3e-4, cosine from lr to lr_min.
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    # Architecture weights (DARTS §3.1.1): Adam, β (0.5, 0.999), L2 1e-3 on α. The rate: None = DARTS's
    # 3e-4 scaled to this search's number of architecture steps (architecture_learning_rate).
    arch_lr: float | None = None
    arch_beta_1: float = 0.5
    arch_weight_decay: float = 1e-3
    arch_start: float = 0.0  # fraction of the steps before architecture updates begin (DARTS: none)
    heldout_fraction: float = 0.5  # --data: share of the videos (by id) for the architecture steps
    train_lr: float = 1e-3  # train_and_evaluate: Adam rate of a fixed cell's training
    final_temperature: float = 1.0  # softmax temperature at the last step (geometric from 1; 1 = none)
    num_operations: int = 3
    candidates: dict | None = None  # restricts the supernet's candidates (see model.attention_nas.cell)
    width: int = 8  # ResNet base width (proxy backbone)
    blocks: tuple[int, ...] = (1, 1, 1, 1)  # ResNet blocks per stage (proxy backbone)
    positions: tuple[str, ...] = ("res3_0", "res4_0")  # ResNet cell positions
    after_levels: tuple[int, ...] = (2, 3)  # AssembleNet cell levels
    data: str | None = None  # TFRecord pattern; None = the synthetic task
    dataset: str = "charades"
    num_classes: int = len(SYNTHETIC_CLASSES)
    eval_batches: int = 8
    recalibration_batches: int = 20  # BatchNorm re-estimation before evaluating (evaluate_accuracy)
    eager: bool = False  # TensorFlow only: run_eagerly (tracing the supernet costs ~1 min on CPU)

    def __post_init__(self):
        if self.backbone not in ("resnet", "assemblenet"):
            raise ValueError(f"backbone must be 'resnet' or 'assemblenet', got {self.backbone!r}")
        if self.steps < 1 or self.batch_size < 1 or self.frames < 1 or self.size < 1:
            raise ValueError(f"steps, batch_size, frames and size must be positive: {self}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if not 0 <= self.arch_start < 1:
            raise ValueError(f"arch_start must be in [0, 1), got {self.arch_start}")
        if self.arch_lr is not None and not self.arch_lr > 0:
            raise ValueError(f"arch_lr must be positive (or None: DARTS's budget), got {self.arch_lr}")
        if not 0 < self.final_temperature <= 1:
            raise ValueError(f"final_temperature must be in (0, 1], got {self.final_temperature}")
        if self.data is None and self.num_classes != len(SYNTHETIC_CLASSES):
            raise ValueError(
                f"the synthetic task has {len(SYNTHETIC_CLASSES)} classes, got num_classes={self.num_classes}"
            )


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
    config: SearchConfig, modalities, seed: int, *, training: bool = True, only_ids=None, seen=None
):
    """Endless (inputs, labels) batches: synthetic, or the TFRecords through preprocessing.dataset
    (restricted to the videos in `only_ids` when given: full batches of those videos only)."""
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
    evaluating (the project applies it to every compared model alike)."""
    import keras

    layers = [
        layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    try:
        for k in range(1, num_batches + 1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / k  # running mean over the k batches seen
            inputs, _ = next(batches)
            model(_model_inputs(model, inputs), training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def evaluate_accuracy(model, config: SearchConfig, modalities, *, seed: int) -> float:
    """Top-1 accuracy on `eval_batches` batches never used in training (their own seed), after
    recalibrating BatchNorm on other unseen batches."""
    recalibrate_batchnorm(model, _batches(config, modalities, seed + 1), config.recalibration_batches)
    batches = _batches(config, modalities, seed, training=False)
    correct = total = 0
    for _ in range(config.eval_batches):
        inputs, labels = next(batches)
        logits = np.asarray(model.predict_on_batch(_model_inputs(model, inputs)))
        correct += _correct(logits, labels)
        total += len(labels)
    return correct / total


# ---------------------------------------------------------------------------------------------------
# The search.


# DARTS §3.1.1 (CIFAR-10): 50 epochs over the 25 000-image training half at batch 64 = 391 steps an
# epoch, one architecture step per weight step, Adam at 3e-4.
DARTS_ARCH_LR = 3e-4
DARTS_ARCH_STEPS = 50 * 391


def architecture_learning_rate(config: SearchConfig) -> float:
    """Adam rate of α: `config.arch_lr`, or (None) DARTS's rate scaled to keep DARTS's budget.

    Adam moves a parameter by about its rate a step at most (|m̂/√v̂| ≈ 1 for a gradient of constant sign
    and steady size, a little more while its size grows), whatever the gradient's size. So a search of
    N architecture steps can move a logit by about rate × N at most: DARTS's 3e-4 × 19 550 ≈ 5.9
    (softmax of two logits 5.9 apart: 0.997 / 0.003), but 3e-4 × 300 = 0.09 in a 300-step proxy search
    (0.52 / 0.48 at best) — it cannot decide whatever the data say (measured in
    docs/attention_nas.md). The project keeps DARTS's budget rate × steps instead of its rate:
    3e-4 × 19 550 / N (= 3e-4 at DARTS's own length). A noisy gradient moves α less than the budget
    (|m̂/√v̂| ≪ 1), so a decision still needs a consistent preference."""
    if config.arch_lr is not None:
        return config.arch_lr
    arch_steps = config.steps - int(config.arch_start * config.steps)
    return DARTS_ARCH_LR * DARTS_ARCH_STEPS / max(1, arch_steps)


def temperature_at(config: SearchConfig, step: int) -> float:
    """Softmax temperature of the supernet at `step`: 1 during the warm-up, then geometric from 1 down
    to `config.final_temperature` at the last step (1 = no annealing)."""
    arch_from = int(config.arch_start * config.steps)
    if step <= arch_from or config.steps - 1 <= arch_from:
        return 1.0
    fraction = (step - arch_from) / (config.steps - 1 - arch_from)
    return float(config.final_temperature**fraction)


def cell_input_shapes(config: SearchConfig) -> dict:
    """{position: (T, H, W, C)} of the feature maps the cells see (ResNet positions / AssembleNet blocks)."""
    if config.backbone == "resnet":
        from model.resnet import STAGES

        shapes = {}
        for position in config.positions:
            stage = STAGES.index(position.split("_")[0])  # res2 = 0: stride 4, width 4·width
            side = -(-config.size // (4 * 2**stage))
            shapes[position] = (config.frames, side, side, 4 * config.width * 2**stage)
        return shapes
    from model.structure import get_structure

    structure = get_structure(config.structure)
    strides = structure.cumulative_stride()
    levels = set(config.after_levels)
    return {
        f"block{n.index}": (
            config.frames,
            -(-config.size // strides[n.index]),
            -(-config.size // strides[n.index]),
            n.output_channels,
        )
        for n in structure.blocks
        if n.level in levels
    }


def search_space(config: SearchConfig, kv_pool: int = 2) -> tuple[dict, list, list]:
    """(candidates, excluded [type, dimension] pairs, messages): the configured candidates less those
    that cannot attend at some insertion position (one searched design is inserted at every position,
    so a pair degenerate anywhere is left out everywhere; a dimension left with no type is dropped)."""
    from model.attention_nas import degenerate_pairs, normalize_cell

    candidates = normalize_cell({"kind": "supernet", "candidates": config.candidates or {}})["candidates"]
    reasons = {}
    for position, (t, h, w, _) in cell_input_shapes(config).items():
        for pair, reason in degenerate_pairs(
            candidates["type"], candidates["dimension"], t, h, w, kv_pool=kv_pool
        ).items():
            reasons.setdefault(pair, f"{position}: {reason}")
    messages = [f"excluded {k}/{d} from the search space ({why})" for (k, d), why in sorted(reasons.items())]
    dims = [d for d in candidates["dimension"] if any((k, d) not in reasons for k in candidates["type"])]
    if not dims:
        raise ValueError(f"no candidate can attend at these feature sizes: {'; '.join(reasons.values())}")
    for d in candidates["dimension"]:
        if d not in dims:
            messages.append(f"dropped dimension {d!r}: no type can attend there")
    candidates = {**candidates, "dimension": dims}
    excluded = sorted([k, d] for (k, d) in reasons if d in dims)
    return candidates, excluded, messages


def choice_entropies(weights: dict) -> dict:
    """{"op{i}.{choice}": entropy / log(#candidates)} over every searched decision (one with an
    architecture weight; 1 = uniform, 0 = decided), from `architecture_weights(...)`."""
    out = {}
    fixed = set(weights.get("fixed", []))
    for op, entry in weights["operations"].items():
        for choice, probs in entry.items():
            values = list(probs) if choice == "inputs" else list(probs.values())
            if len(values) < 2 or f"{op}.{choice}" in fixed:
                continue
            out[f"{op}.{choice}"] = -sum(p * math.log(p) for p in values if p > 0) / math.log(len(values))
    return out


def entropies_at_temperature(weights: dict, temperature: float) -> dict:
    """{"op{i}.{choice}": normalised entropy of softmax(α/τ)} — the mixing weights the supernet actually
    used at temperature τ — averaged over the positions (cells). Exact from the stored probabilities,
    since softmax(α/τ) ∝ softmax(α)^(1/τ)."""
    fixed = set(weights.get("fixed", []))
    per_position = []
    for entry_by_op in weights["per_cell"].values():
        sharpened = {}
        for op, entry in entry_by_op.items():
            sharpened[op] = {}
            for choice, probs in entry.items():
                values = np.asarray(list(probs) if choice == "inputs" else list(probs.values()), "float64")
                logs = np.log(np.maximum(values, 1e-300)) / temperature
                q = np.exp(logs - logs.max())
                q = [float(v) for v in q / q.sum()]
                sharpened[op][choice] = q if choice == "inputs" else dict(zip(probs, q, strict=True))
        per_position.append(choice_entropies({"operations": sharpened, "fixed": sorted(fixed)}))
    return {k: float(np.mean([e[k] for e in per_position])) for k in per_position[0]}


def _reset(model, optimizer, config: SearchConfig, cell_config) -> None:
    """Puts a compiled model back to the initial state a fresh build with `config.seed` would have:
    the weights of an uncompiled twin built under that seed, optimiser moments and counters zero. So
    seeds share one compiled train function (jit/tf.function compile costs minutes for a supernet)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    twin, _ = build_backbone(config, cell_config)
    model.set_weights(twin.get_weights())
    for variable in optimizer.variables:
        if not variable.path.endswith("learning_rate"):
            variable.assign(np.zeros(variable.shape, variable.dtype))


def _compiled(cache, key, config: SearchConfig, cell_config, make_optimizer, loss, eager=False):
    """(model, optimizer, modalities), compiled once per `key` in `cache` (a dict, or None for no
    reuse) and reset to `config.seed`'s initial state."""
    import keras

    if cache is not None and key in cache:
        model, optimizer, modalities = cache[key]
        _reset(model, optimizer, config, cell_config)
        return model, optimizer, modalities
    keras.utils.set_random_seed(config.seed)
    model, modalities = build_backbone(config, cell_config)
    optimizer = make_optimizer()
    model.compile(optimizer=optimizer, loss=loss, run_eagerly=eager)
    optimizer.build(model.trainable_variables)
    if cache is not None:
        cache[key] = (model, optimizer, modalities)
    return model, optimizer, modalities


@locks.writes("out_dir", "attention-search folder")
def search(*, config: SearchConfig, out_dir: str | os.PathLike, model_cache: dict | None = None) -> dict:
    """Runs the one-shot search (module docstring) and writes OUT/; returns the search.json record.

    Any Keras backend: both kinds of step are `model.train_on_batch` with one `AlternatingAdam`.
    `model_cache` (a dict kept by the caller) reuses the compiled supernet across search seeds."""
    import keras
    from tqdm import tqdm

    from model.attention_nas import (
        AlternatingAdam,
        architecture_variables,
        architecture_weights,
        derive_cell,
        supernet_cells,
    )

    if config.data is not None:  # every file's header, before anything is written (pipelines/checks.py)
        from pipelines.checks import check_records

        check_records(config.data, dataset=config.dataset, num_classes=config.num_classes, modalities=(),
                      source="the search")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    candidates, excluded, messages = search_space(config)
    for message in messages:
        print(f"attention-search: {message}", file=sys.stderr)
    supernet = {
        "kind": "supernet",
        "num_operations": config.num_operations,
        "candidates": candidates,
        "excluded": excluded,
    }
    arch_from = int(config.arch_start * config.steps)
    arch_lr = architecture_learning_rate(config)
    make_optimizer = lambda: AlternatingAdam(
        learning_rate=config.lr,
        arch_learning_rate=arch_lr,
        arch_beta_1=config.arch_beta_1,
        arch_weight_decay=config.arch_weight_decay,
        weights_optimizer=config.optimizer,
        momentum=config.momentum,
        weight_decay_l2=config.weight_decay,
        decay_steps=config.steps if config.optimizer == "sgd" else None,
        min_learning_rate=config.lr_min,
    )
    # BatchNorm runs in training mode in the architecture step too (batch statistics, as in DARTS).
    # `eager` only for TensorFlow: an un-jitted JAX step is ~10x slower than compiling it.
    eager = config.eager and keras.backend.backend() == "tensorflow"
    key = ("search", json.dumps(dataclasses.replace(config, seed=0).__dict__, sort_keys=True, default=str))
    model, optimizer, modalities = _compiled(
        model_cache, key, config, supernet, make_optimizer, _loss_fn(config), eager
    )
    arch_vars = architecture_variables(model)
    cells = supernet_cells(model)
    if config.data is None:
        split = {
            "kind": "synthetic",
            "train": f"synthetic clips drawn from seed {config.seed}",
            "heldout": f"synthetic clips drawn from seed {config.seed + 1} (architecture steps)",
        }
        train_batches = _batches(config, modalities, config.seed)
        heldout_batches = _batches(config, modalities, config.seed + 1)
        seen = None
    else:  # DARTS §2.3: the architecture loss on videos the network weights never train on
        train_ids, heldout_ids = heldout_split(video_ids(config.data), config.heldout_fraction)
        split = {"kind": "by video id", "train_ids": train_ids, "heldout_ids": heldout_ids}
        seen = {"train": set(), "heldout": set()}
        train_batches = _batches(config, modalities, config.seed, only_ids=train_ids, seen=seen["train"])
        heldout_batches = _batches(
            config, modalities, config.seed + 1, only_ids=heldout_ids, seen=seen["heldout"]
        )
    history = []
    for step in tqdm(range(config.steps), desc="attention-search", unit="step"):
        temperature = temperature_at(config, step)
        for cell in cells:
            cell.temperature.assign(temperature)
        optimizer.set_phase("weights")
        inputs, labels = next(train_batches)
        loss = float(np.asarray(model.train_on_batch(_model_inputs(model, inputs), labels)))
        arch_loss = None
        if step >= arch_from:
            optimizer.set_phase("architecture")
            inputs, labels = next(heldout_batches)
            arch_loss = float(np.asarray(model.train_on_batch(_model_inputs(model, inputs), labels)))
        entropy = choice_entropies(architecture_weights(model))
        history.append(
            {
                "step": step,
                "loss": loss,
                "arch_loss": arch_loss,
                "temperature": temperature,
                "mean_entropy": float(np.mean(list(entropy.values()))) if entropy else 0.0,
                "entropy": entropy,
            }
        )

    weights = architecture_weights(model)
    cell = derive_cell(weights)
    arch_steps = max(0, config.steps - arch_from)
    spread = logit_spread(arch_vars)
    accuracy = (
        evaluate_accuracy(model, config, modalities, seed=config.seed + 1000) if config.data is None else None
    )
    (out / "cell.json").write_text(json.dumps(cell, indent=2) + "\n")
    (out / "arch_weights.json").write_text(json.dumps(weights, indent=2) + "\n")
    draw_cell(cell, out / "cell.png", weights=weights["operations"])
    plot_entropy(history, out / "entropy.png")
    if seen is not None:
        split["seen"] = {k: sorted(v) for k, v in seen.items()}
    last = history[-max(1, len(history) // 10) :]
    record = {
        "config": dataclasses.asdict(config),
        "search_space": {"candidates": candidates, "excluded": excluded, "messages": messages},
        "split": split,
        "supernet_accuracy": accuracy,
        "final_loss": float(np.mean([h["loss"] for h in last])),
        "first_loss": history[0]["loss"],
        "arch_variables": len(arch_vars),
        # Why α moved as far as it did: Adam's budget (rate × architecture steps bounds each logit's
        # move from 0) and the spread max α − min α reached per choice (mean over positions).
        "arch_learning_rate": arch_lr,
        "arch_steps": arch_steps,
        "arch_budget": arch_lr * arch_steps,
        "logit_spread": spread,
        "mean_logit_spread": float(np.mean(list(spread.values()))) if spread else 0.0,
        "final_entropy": history[-1]["entropy"],
        "final_mean_entropy": history[-1]["mean_entropy"],
        # what the supernet mixed with at the last step (= final_entropy without annealing)
        "final_temperature": history[-1]["temperature"],
        "final_mean_entropy_at_temperature": float(
            np.mean(list(entropies_at_temperature(weights, history[-1]["temperature"]).values()) or [0.0])
        ),
        "cell": cell,
        "history": history,
    }
    (out / "search.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def logit_spread(arch_vars) -> dict:
    """{"op{i}.{choice}": max α − min α, averaged over the cells (positions)} of `arch_*` variables
    (they start at 0, so Adam keeps the spread to about 2 × rate × steps)."""
    import keras

    spreads = {}
    for variable in arch_vars:
        values = np.asarray(keras.ops.convert_to_numpy(variable), "float64")
        key = variable.name[len("arch_") :].replace("_", ".", 1)
        spreads.setdefault(key, []).append(float(values.max() - values.min()))
    return {k: float(np.mean(v)) for k, v in sorted(spreads.items())}


def plot_entropy(history: list, path: str | os.PathLike) -> Path:
    """Normalised entropy of every choice per step (thin lines) and their mean (thick): 1 = uniform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for key in history[-1]["entropy"]:
        ax.plot(steps, [h["entropy"][key] for h in history], lw=0.6, alpha=0.5)
    ax.plot(steps, [h["mean_entropy"] for h in history], lw=2.2, color="black", label="mean")
    ax.set_xlabel("search step")
    ax.set_ylabel("entropy / log(#candidates)")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("decisiveness of the architecture weights")
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def train_and_evaluate(
    config: SearchConfig,
    cell_config: dict | None,
    *,
    steps: int | None = None,
    seed: int | None = None,
    model_cache: dict | None = None,
) -> dict:
    """Trains the backbone with a fixed cell (or none) on the proxy task; backend-agnostic (train_on_batch).

    Same data stream, initial seed and budget for every cell, so cells compare fairly. `model_cache`
    reuses one compiled model per cell across seeds (reset to each seed's fresh initialisation)."""
    import keras
    from tqdm import tqdm

    seed = config.seed if seed is None else seed
    config = dataclasses.replace(config, seed=seed)
    same = json.dumps(dataclasses.replace(config, seed=0).__dict__, sort_keys=True, default=str)
    key = ("train", json.dumps(cell_config, sort_keys=True), same)
    make_optimizer = lambda: keras.optimizers.Adam(config.train_lr)
    model, _, modalities = _compiled(model_cache, key, config, cell_config, make_optimizer, _loss_fn(config))
    batches = _batches(config, modalities, seed)
    losses = []
    for _ in tqdm(range(steps or config.steps), desc="train", unit="step", leave=False):
        inputs, labels = next(batches)
        losses.append(float(np.asarray(model.train_on_batch(_model_inputs(model, inputs), labels))))
    accuracy = evaluate_accuracy(model, config, modalities, seed=seed + 1000)
    tail = max(1, len(losses) // 4)
    return {
        "model": model,
        "accuracy": accuracy,
        "first_loss": float(np.mean(losses[:tail])),
        "final_loss": float(np.mean(losses[-tail:])),
        "params": int(model.count_params()),
    }


# ---------------------------------------------------------------------------------------------------
# The drawing.


def draw_cell(cell: dict, path: str | os.PathLike, *, weights: dict | None = None) -> Path:
    """Draws the cell: the input, one box per operation with its choices, the combine node, the edges
    (labelled with their softmax weight when `weights` — architecture_weights(...)["operations"] — are given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from model.attention_nas import normalize_cell

    cell = normalize_cell(cell)
    ops_ = cell["operations"]
    n = len(ops_)
    fig, ax = plt.subplots(figsize=(3.2 * (n + 2), 4.2))
    centers = {0: (0.0, 0.0)}
    for i in range(1, n + 1):
        centers[i] = (3.0 * i, 1.2 * (1 if i % 2 else -1) if n > 1 else 0.0)
    combine = (3.0 * (n + 1), 0.0)

    patches = {}

    def box(key, xy, text, colour, width=2.3, height=1.5):
        x, y = xy
        patches[key] = FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.05",
            fc=colour,
            ec="black",
            zorder=2,
        )
        ax.add_patch(patches[key])
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5, zorder=3)

    def arrow(a, b, label=None):
        ax.annotate(
            "",
            xy=centers[b],
            xytext=centers[a],
            zorder=1,
            arrowprops={
                "arrowstyle": "->",
                "lw": 1.2,
                "patchA": patches[a],
                "patchB": patches[b],
                "connectionstyle": "arc3,rad=0.08",
            },
        )
        if label:
            (xa, ya), (xb, yb) = centers[a], centers[b]
            ax.text(
                xa + 0.45 * (xb - xa),
                ya + 0.45 * (yb - ya) + 0.12,
                label,
                fontsize=7.5,
                color="tab:blue",
                zorder=4,
            )

    centers["combine"] = combine
    box(0, centers[0], "cell input x\n(B,T,H,W,C)", "#dddddd", width=1.8)
    for i, op in enumerate(ops_, start=1):
        text = (
            f"op{i}: {op['dimension']}\n{'map-based' if op['type'] == 'map' else 'dot-product'}, "
            f"φ={op['activation']}\nG₁={op['g1']} G₂={op['g2']}\nG₃={op['g3']}, C′/C={op['reduction']:g}"
        )
        box(i, centers[i], text, "#cfe2ff" if op["type"] == "dot" else "#ffe5b4")
    box("combine", combine, "combine\nΣ ops → BN(γ₀=0)\n+ x (residual)", "#d4edda", width=1.9)
    for i, op in enumerate(ops_, start=1):
        for j in op["inputs"]:
            arrow(j, i, None if weights is None else f"w={weights[f'op{i}']['inputs'][j]:.2f}")
        arrow(i, "combine")
    arrow(0, "combine")
    ax.set_xlim(-1.3, combine[0] + 1.3)
    ax.set_ylim(-2.3, 2.3)
    ax.axis("off")
    ax.set_title(f"AttentionNAS cell ({n} operations)")
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
