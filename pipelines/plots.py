"""The report's figures, one function per figure, each writing one PNG (matplotlib, no pyplot state).

`plot_connectivity` draws a structure like Figure 4(a) of AssembleNet++: nodes placed in rows by
level (stems at the bottom), edge darkness = the learned σ(w) of the connection (§3.3), edges below
`model.pruning.PRUNE_THRESHOLD` (0.2, §4.1) faded, and the direct edges from the object stem in blue.
`plot_fitness` draws an evolution's progress like Figure 4 of AssembleNet: the mean fitness of the
three best models in the pool after each round, over every child's fitness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from model.pruning import PRUNE_THRESHOLD, keeps

DPI = 100
_MODALITY_COLOURS = {"rgb": "#d62728", "flow": "#2ca02c", "object": "#1f77b4"}
_OBJECT_BLUE = (0.12, 0.35, 0.85)


def _save(fig: Figure, path: str | Path, bbox_inches: str | None = "tight") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches=bbox_inches)
    return path


# ----------------------------------------------------------------------------------------------
# Training.

def plot_history(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Training curves from a Keras CSVLogger table {column: values}: losses, other metrics, learning rate."""
    epochs = np.asarray(history.get("epoch", range(len(next(iter(history.values()))))), dtype=float)
    columns = [c for c in history if c not in ("epoch", "step")]  # counters, not curves
    losses = [c for c in columns if "loss" in c]
    rates = [c for c in columns if c in ("lr", "learning_rate")]
    others = [c for c in columns if c not in losses and c not in rates]
    candidates = (("loss", losses), ("metrics", others), ("learning rate", rates))
    panels = [(title, cols) for title, cols in candidates if cols]
    if not panels:
        raise ValueError("history has no column besides 'epoch'")
    fig = Figure(figsize=(4.2 * len(panels), 3.2))
    for k, (title, cols) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for c in cols:
            ax.plot(epochs, np.asarray(history[c], dtype=float), marker="o", markersize=3, label=c)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Evaluation.

def plot_per_class_ap(per_class_ap: Mapping[str, float], path: str | Path, *,
                      mean: float | None = None) -> Path:
    """Charades: per-class AP as horizontal bars sorted from best to worst, with the mAP as a line."""
    names = sorted(per_class_ap, key=lambda c: -per_class_ap[c])
    values = np.array([per_class_ap[c] for c in names], dtype=float)
    height = 0.16 * len(names) + 1.2
    fig = Figure(figsize=(7.0, height))
    # Fixed margins: with 157 tick labels, a layout pass (tight_layout) costs seconds.
    label_inches = 0.25 + 0.055 * max(len(n) for n in names)  # ~0.055 in per character at 7 pt
    fig.subplots_adjust(left=min(0.5, label_inches / 7.0), right=0.97, top=1 - 0.45 / height,
                        bottom=0.55 / height)
    ax = fig.add_subplot()
    ax.barh(np.arange(len(names)), values, color="#4c72b0", height=0.8)
    if mean is not None:
        ax.axvline(mean, color="#c44e52", linestyle="--", label=f"mAP = {mean:.3f}")
        ax.legend(loc="lower right")
    ax.set_yticks(np.arange(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_ylim(len(names) - 0.4, -0.6)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("average precision")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Per-class AP ({len(names)} classes with a positive)")
    return _save(fig, path, bbox_inches=None)


def plot_confusion(matrix, classes: Sequence[str], path: str | Path) -> Path:
    """Toyota: the confusion matrix, each row normalised by its true-class count."""
    matrix = np.asarray(matrix, dtype=float)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(classes)
    side = min(max(4.0, 0.32 * n + 2), 16)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=90, fontsize=7)
    ax.set_yticklabels(classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, int(count), ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def plot_per_class_accuracy(per_class: Mapping[str, float], path: str | Path, *,
                            mean: float | None = None) -> Path:
    """Toyota: the accuracy of each class present, with the mean per-class accuracy as a line."""
    names = list(per_class)
    values = np.array([per_class[c] for c in names], dtype=float)
    fig = Figure(figsize=(min(max(5.0, 0.3 * len(names) + 2), 18), 3.6))
    ax = fig.add_subplot()
    ax.bar(np.arange(len(names)), values, color="#55a868")
    if mean is not None:
        ax.axhline(mean, color="#c44e52", linestyle="--", label=f"mean per-class accuracy = {mean:.3f}")
        ax.legend(loc="upper right")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("Per-class accuracy")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# What the network learned.

def connectivity_layout(structure) -> dict[int, tuple[float, float]]:
    """(x, y) of every node: one row per level (stems at y = 0), nodes of a row spread evenly."""
    positions = {}
    for level in range(structure.top_level + 1):
        row = sorted(structure.nodes_at(level), key=lambda n: n.index)
        for k, node in enumerate(row):
            positions[node.index] = ((k + 0.5) / len(row), float(level))
    return positions


def edge_weights(structure, weights: Mapping | None) -> tuple[dict[tuple[int, int], float], int]:
    """({(j, i): σ(w_ji)} for every edge of `structure`, NaN where `weights` has none; the number of
    edges in `weights` that the structure lacks, e.g. those pruned away (they are not drawn)."""
    out = {edge: math.nan for edge in structure.edges()}
    extra = 0
    for block, inputs in (weights or {}).items():
        for source, value in inputs.items():
            edge = (int(source), int(block))
            if edge in out:
                out[edge] = float(value)
            else:
                extra += 1
    return out, extra


def plot_connectivity(structure, weights: Mapping | None, path: str | Path, *,
                      threshold: float = PRUNE_THRESHOLD, title: str | None = None) -> Path:
    """The learned connectivity graph, drawn like Figure 4(a) of AssembleNet++.

    `weights` is connection_weights.json: {"<block>": {"<input>": σ(w)}} (None: structure only).
    Edge darkness and width grow with σ(w); edges below `threshold` are faded; edges leaving the
    object stem are blue (Fig. 4(a): "the highlighted blue edges ... from the object input block").
    """
    positions = connectivity_layout(structure)
    edges, extra = edge_weights(structure, weights)
    widest = max(len(structure.nodes_at(level)) for level in range(structure.top_level + 1))
    fig = Figure(figsize=(max(6.0, 1.3 * widest + 1.5), 1.5 * (structure.top_level + 1) + 1.2))
    ax = fig.add_subplot()
    # Faint edges first, so the strong ones are drawn on top.
    for (j, i), w in sorted(edges.items(), key=lambda item: -1 if math.isnan(item[1]) else item[1]):
        source = structure.node(j)
        is_object = source.is_stem and source.modality == "object"
        if math.isnan(w):
            colour, alpha, width, style = (0.45, 0.45, 0.45), 0.8, 1.0, "--"
        elif not keeps(w, threshold):
            colour, alpha, width, style = ((0.55, 0.7, 1.0) if is_object else (0.7, 0.7, 0.7)), 0.35, 0.6, ":"
        else:
            darkness = min(max(w, 0.0), 1.0)
            if is_object:
                colour = tuple(1 - darkness * (1 - c) for c in _OBJECT_BLUE)
            else:
                colour = (1 - darkness,) * 3
            alpha, width, style = 0.95, 0.6 + 2.4 * darkness, "-"
        (x0, y0), (x1, y1) = positions[j], positions[i]
        # Edges skipping levels curve a little, so they do not hide behind the nodes in between.
        rad = 0.0 if y1 - y0 <= 1 else 0.12 * (1 if x1 >= x0 else -1)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=9,
                                     connectionstyle=f"arc3,rad={rad}", color=colour, alpha=alpha,
                                     linewidth=width, linestyle=style, shrinkA=13, shrinkB=13, zorder=1))
    for node in structure.nodes:
        x, y = positions[node.index]
        face = _MODALITY_COLOURS[node.modality] if node.is_stem else "#f2f2f2"
        label = f"{node.index}\n{node.modality}" if node.is_stem else f"{node.index}\nr={node.dilation}"
        ax.scatter([x], [y], s=900, c=[face], edgecolors="black", linewidths=1.0, zorder=2)
        ax.text(x, y, label, ha="center", va="center", fontsize=7, zorder=3,
                color="white" if node.is_stem else "black")
    ax.set_yticks(range(structure.top_level + 1))
    ax.set_yticklabels(["stems"] + [f"level {k}" for k in range(1, structure.top_level + 1)])
    ax.set_xticks([])
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.5, structure.top_level + 0.5)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    known = [w for w in edges.values() if not math.isnan(w)]
    kept = sum(keeps(w, threshold) for w in known)
    note = (f"{kept} of {len(known)} learned edges with σ(w) > {threshold} (darker = larger); "
            f"faded dotted: ≤ {threshold}; blue: from the object stem") if known else \
        "no learned weights: the structure's edges (dashed)"
    if extra:
        note += f"; {extra} weighted edges absent from this structure not drawn"
    ax.set_title((title or f"Connectivity of {structure.name}") + "\n" + note, fontsize=9)
    return _save(fig, path)


def plot_attention(attention: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Peer-attention weights softmax(h) per block (AssembleNet++ §3.4): a block × peer heatmap."""
    blocks = sorted(attention, key=int)
    peers = sorted({p for values in attention.values() for p in values}, key=int)
    matrix = np.full((len(blocks), len(peers)), np.nan)
    for r, block in enumerate(blocks):
        for peer, value in attention[block].items():
            matrix[r, peers.index(peer)] = float(value)
    fig = Figure(figsize=(max(4.0, 0.45 * len(peers) + 2.5), max(2.5, 0.4 * len(blocks) + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=max(1e-6, np.nanmax(matrix)))
    fig.colorbar(image, ax=ax, label="softmax(h)")
    ax.set_xticks(range(len(peers)))
    ax.set_xticklabels(peers)
    ax.set_yticks(range(len(blocks)))
    ax.set_yticklabels(blocks)
    ax.set_xlabel("peer block")
    ax.set_ylabel("block")
    if matrix.size <= 400:
        for (r, c), value in np.ndenumerate(matrix):
            if not np.isnan(value):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 * np.nanmax(matrix) else "white")
    ax.set_title("Peer-attention weights per block")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Search.

def top_k_mean_per_round(history: Sequence[Mapping], k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """After each round, the mean fitness of the k best models seen so far (AssembleNet Fig. 4).

    Tournament evolution discards only the least fit model, so the k best of the pool are the k
    best of every model evaluated up to that round.
    """
    if not history:
        raise ValueError("empty evolution history")
    rounds = np.array([int(entry["round"]) for entry in history])
    fitness = np.array([float(entry["fitness"]) for entry in history])
    xs = np.unique(rounds)
    means = np.array([np.sort(fitness[rounds <= r])[::-1][:k].mean() for r in xs])
    return xs, means


def plot_fitness(history: Sequence[Mapping], path: str | Path, *, k: int = 3) -> Path:
    """Evolution progress: every child's fitness (points) and the mean of the top k per round (line)."""
    rounds = np.array([int(entry["round"]) for entry in history])
    fitness = np.array([float(entry["fitness"]) for entry in history])
    xs, means = top_k_mean_per_round(history, k)
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    ax.scatter(rounds, fitness, s=12, color="#999999", alpha=0.7, label="each child")
    ax.plot(xs, means, color="#c44e52", linewidth=2, label=f"mean of the top {k}")
    ax.set_xlabel("round")
    ax.set_ylabel("fitness")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Evolution: fitness over rounds")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Ablations.

def plot_ablation(table: Sequence[Mapping], path: str | Path, *, title: str, metric: str) -> Path:
    """One ablation suite (ablation/runner.py's table): mean ± std (ddof 1) over seeds per
    variant, each seed as a dot, beside the paper's number for the row where it gives one. Two panels,
    because the benchmark's metric and the paper's (Charades mAP) are not on one scale. Rows with a
    numeric "x" (e.g. Fig. 4(b)'s object fraction) are drawn as a curve over x."""
    names = [str(r["variant"]) for r in table]
    means = np.array([100 * float(r["mean"]) for r in table])
    stds = np.array([0.0 if r["std"] is None or math.isnan(float(r["std"])) else 100 * float(r["std"])
                     for r in table])
    paper = [r.get("paper") for r in table]
    has_paper = any(p is not None for p in paper)
    curve = all(r.get("x") is not None for r in table) and len(table) > 1
    fig = Figure(figsize=(5.5 + 0.5 * len(names) * (1 + has_paper) if not curve else 9.0, 4.0))
    ax = fig.add_subplot(1, 2 if has_paper else 1, 1)
    positions = np.array([float(r["x"]) for r in table]) if curve else np.arange(len(names))
    if curve:
        order = np.argsort(positions)
        ax.errorbar(positions[order], means[order], yerr=stds[order], marker="o", capsize=4, color="#4c72b0")
        ax.set_xlabel("fraction of blocks with a direct object connection")
    else:
        ax.bar(positions, means, yerr=stds, capsize=4, color="#4c72b0", alpha=0.85)
        ax.set_xticks(positions)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    for pos, row in zip(positions, table, strict=True):
        scores = 100 * np.asarray(row.get("scores", []), dtype=float)
        ax.scatter(np.full(len(scores), pos), scores, s=10, color="k", zorder=3)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("this benchmark: mean ± std over seeds", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    if has_paper:
        right = fig.add_subplot(1, 2, 2)
        values = np.array([np.nan if p is None else float(p) for p in paper])
        if curve:
            keep = ~np.isnan(values)
            right.plot(positions[keep], values[keep], marker="s", color="#c44e52")
            right.set_xlabel("fraction of blocks with a direct object connection")
        else:
            right.bar(positions, np.nan_to_num(values), color="#c44e52", alpha=0.85)
            right.set_xticks(positions)
            right.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        finite = values[~np.isnan(values)]
        right.set_ylim(max(0.0, finite.min() - 5), finite.max() + 3)
        right.set_title("paper (its dataset and metric)", fontsize=9)
        right.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
