"""The search: DARTS-style alternating steps over a supernet (`search`), the architecture learning rate and
temperature schedules, the search space at the insertion positions, and the fixed-cell training that compares
cells (`train_and_evaluate`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from pipelines import compile_cache, locks
from pipelines.attention_search.backbone import (
    _batches,
    _loss_fn,
    _model_inputs,
    build_backbone,
    evaluate_accuracy,
    heldout_split,
    relation_benchmark,
    video_ids,
)
from pipelines.attention_search.config import SearchConfig
from pipelines.attention_search.drawing import draw_cell
from pipelines.rundir import write_json

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


# A searched choice whose final normalised entropy is above this is reported as undecided: the derived
# cell takes its argmax all the same, but of near-equal weights. Our choice (AttentionNAS derives the cell
# by argmax and gives no such rule): 0.9 is where the leading candidate of two holds less than about 2/3
# of the weight, of three less than about 0.55.
UNDECIDED_ENTROPY = 0.9


def undecided_choices(entropy: dict, threshold: float = UNDECIDED_ENTROPY) -> list[str]:
    """The keys of `choice_entropies(...)` whose normalised entropy is above `threshold`, sorted."""
    return sorted(key for key, value in entropy.items() if value > threshold)


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


def chosen_operations(cell: dict) -> dict:
    """{"op{i}.{choice}": the candidate a derived cell takes} (its inputs as a list): what the search
    would choose were it stopped here, recorded per step so the choices can be plotted over the search."""
    return {
        f"op{i}.{key}": value
        for i, op in enumerate(cell["operations"], start=1)
        for key, value in op.items()
    }


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
    compile_cache.enable()  # under JAX: other seeds' processes, and later runs, load this program
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
    if config.data is None and config.task == "relation":
        bench = relation_benchmark(config)
        split = {
            "kind": "relation",
            "benchmark": bench.describe(),
            "train": "the benchmark's train split",
            "heldout": "the benchmark's val split (architecture steps)",
            "evaluation": "the benchmark's test split",
        }
        train_batches = _batches(config, modalities, config.seed)
        heldout_batches = _batches(config, modalities, config.seed + 1, split="val")
        seen = None
    elif config.data is None:
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
        step_weights = architecture_weights(model)
        entropy = choice_entropies(step_weights)
        history.append(
            {
                "step": step,
                "loss": loss,
                "arch_loss": arch_loss,
                "temperature": temperature,
                "mean_entropy": float(np.mean(list(entropy.values()))) if entropy else 0.0,
                "entropy": entropy,
                "chosen": chosen_operations(derive_cell(step_weights)),
            }
        )

    weights = architecture_weights(model)
    cell = derive_cell(weights)
    arch_steps = max(0, config.steps - arch_from)
    spread = logit_spread(arch_vars)
    write_json(out / "cell.json", cell, indent=2)  # the project's atomic writer (pipelines/rundir.py)
    write_json(out / "arch_weights.json", weights, indent=2)
    draw_cell(cell, out / "cell.png", weights=weights["operations"])
    plot_entropy(history, out / "entropy.png")
    if seen is not None:
        split["seen"] = {k: sorted(v) for k, v in seen.items()}
    last = history[-max(1, len(history) // 10) :]
    record = {
        "config": dataclasses.asdict(config),
        "search_space": {"candidates": candidates, "excluded": excluded, "messages": messages},
        "split": split,
        "supernet_accuracy": None,  # filled in below, once the supernet is scored
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
        # the choices the search did not decide (the cell takes their argmax all the same)
        "undecided_threshold": UNDECIDED_ENTROPY,
        "undecided_choices": undecided_choices(history[-1]["entropy"]),
        # what the supernet mixed with at the last step (= final_entropy without annealing)
        "final_temperature": history[-1]["temperature"],
        "final_mean_entropy_at_temperature": float(
            np.mean(list(entropies_at_temperature(weights, history[-1]["temperature"]).values()) or [0.0])
        ),
        "cell": cell,
        "history": history,
    }
    # The search's outcome is written before the supernet is scored: scoring compiles the supernet twice
    # more (BatchNorm recalibration, prediction), and a run cut during it still leaves what was searched.
    write_json(out / "search.json", record, indent=2)
    if config.data is None:
        record["supernet_accuracy"] = evaluate_accuracy(model, config, modalities, seed=config.seed + 1000)
        write_json(out / "search.json", record, indent=2)
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
