"""Suite `oneshot`: what AssembleNet++'s one-shot attention search (§3.5) decides, and how stably.

For each search seed, the harness trains the over-connected model of a layout (model.oneshot: every
connection L(j) < L(i), §3.3) with attention="search" (Eq. 4: every block weighs all its peers with
softmax(h)), learning σ(w) and h with the convolutions, on the benchmark's train split. The learned
weights are then pruned as the project's search does (model.pruning.prune_weights): connections with
σ(w) ≤ 0.2 go (§4.1), each block keeps its argmax-h peer (§3.5).

Row per seed: `score` (the one-shot model on the validation split), `edges_searched`, `edges_kept`,
`edges_removed` (and the fraction removed), `object_edges_kept`, `peers` {block: argmax peer} and the
pruned structure. Over the seeds (OUT/oneshot/summary.json, summary.csv, oneshot.png):

    removed            edges removed by pruning at σ(w) > 0.2, mean ± std over seeds
    peers_all_agree    fraction of blocks whose argmax peer is the same in every seed
    peers_pairwise     mean over seed pairs of the fraction of blocks with the same argmax peer
    peer_chance        the pairwise agreement of peers drawn uniformly at random (1/|P| per block,
                       averaged), the level that says "no better than chance"
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.oneshot import over_connected
from model.pruning import prune_weights
from model.structure import Structure, get_structure

THRESHOLD = 0.2  # AssembleNet++ §4.1: connections with σ(w) > 0.2 are kept
# The harness's key for the learned softmax(h) per block ({block: {peer: weight}}).
ATTENTION_KEYS = ("attention_weights", "attention")


def _harness():
    from pipelines.ablation import harness  # looked up at call time (tests count the trainings)

    return harness


def learned_attention(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    for key in ATTENTION_KEYS:
        if result.get(key):
            return {str(b): {str(p): float(v) for p, v in row.items()} for b, row in result[key].items()}
    raise ValueError(f"harness result has no learned peer-attention weights (looked for {ATTENTION_KEYS}; "
                     f"got keys {sorted(result)}): was it trained with attention='search'?")


def run_oneshot(seed: int, *, bench, budget, layout: str | Structure = "tiny",
                threshold: float = THRESHOLD) -> dict[str, Any]:
    """One one-shot search: train the over-connected `layout` with attention='search', prune it."""
    supernet = over_connected(get_structure(layout))
    result = _harness().train_and_score(supernet, bench, attention="search", seed=seed, budget=budget,
                                        eval_split="val")
    weights = {str(i): {str(j): float(w) for j, w in row.items()} for i, row in result["edge_weights"].items()}
    attention = learned_attention(result)
    final = prune_weights(supernet, weights, attention, threshold=threshold, name=f"{supernet.name}_seed{seed}")
    objects = {n.index for n in supernet.stems if n.modality == "object"}
    searched, kept = len(supernet.edges()), len(final.edges())
    return {"score": float(result["score"]), "params": result.get("params"), "seconds": result.get("seconds"),
            "threshold": threshold, "edges_searched": searched, "edges_kept": kept,
            "edges_removed": searched - kept, "removed_fraction": (searched - kept) / searched,
            "object_edges_kept": sum(1 for j, _ in final.edges() if j in objects),
            "peers": {str(n.index): n.peer for n in final.blocks},
            "edge_weights": weights, "attention_weights": attention, "final_structure": final.to_json()}


# -- over the seeds ------------------------------------------------------------------------------------

def peer_agreement(peers_by_seed: Mapping[Any, Mapping[str, int]]) -> dict[str, Any]:
    """How often the search seeds choose the same argmax peer for a block.

    `all_agree`: fraction of blocks with one peer in every seed; `pairwise`: mean over seed pairs of the
    fraction of blocks on which the pair agrees; `per_block`: {block: [peer per seed]}. Only blocks
    present in every seed count (all seeds search the same layout, so all of them)."""
    seeds = list(peers_by_seed)
    if len(seeds) < 2:
        raise ValueError(f"peer_agreement: needs >= 2 search seeds, got {len(seeds)}")
    blocks = sorted(set.intersection(*(set(peers_by_seed[s]) for s in seeds)), key=int)
    if not blocks:
        raise ValueError("peer_agreement: the seeds share no block")
    per_block = {b: [peers_by_seed[s][b] for s in seeds] for b in blocks}
    all_agree = float(np.mean([len(set(v)) == 1 for v in per_block.values()]))
    pairs = {f"{a}-{b}": float(np.mean([peers_by_seed[a][k] == peers_by_seed[b][k] for k in blocks]))
             for a, b in itertools.combinations(seeds, 2)}
    return {"blocks": len(blocks), "seeds": len(seeds), "all_agree": all_agree,
            "pairwise": float(np.mean(list(pairs.values()))), "pairs": pairs, "per_block": per_block}


def chance_agreement(layout: Structure) -> float:
    """Expected pairwise agreement of two uniformly random peer choices: mean over blocks of 1/|P_i|."""
    return float(np.mean([1.0 / len(layout.peers(n.index)) for n in layout.blocks]))


def summarize(rows: Sequence[Mapping[str, Any]], layout: Structure) -> dict[str, Any]:
    """The suite's figures over its seeds (see the module docstring)."""
    removed = np.array([float(r["edges_removed"]) for r in rows])
    fraction = np.array([float(r["removed_fraction"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    out = {"layout": layout.name, "threshold": rows[0]["threshold"], "seeds": [r["seed"] for r in rows],
           "edges_searched": rows[0]["edges_searched"],
           "removed": {"per_seed": removed.tolist(), "mean": float(removed.mean()), "std": float(removed.std())},
           "removed_fraction": {"mean": float(fraction.mean()), "std": float(fraction.std())},
           "val_score": {"mean": float(scores.mean()), "std": float(scores.std())},
           "peer_chance": chance_agreement(over_connected(layout))}
    if len(rows) >= 2:
        agreement = peer_agreement({r["seed"]: r["peers"] for r in rows})
        out.update(peers_all_agree=agreement["all_agree"], peers_pairwise=agreement["pairwise"],
                   peers=agreement)
    return out


def write_summary(rows: Sequence[Mapping[str, Any]], layout: Structure, folder: str | Path) -> dict[str, Any]:
    """summary.json, summary.csv (one line per seed, then mean and std) and oneshot.png in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, layout)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    columns = ["seed", "score", "edges_searched", "edges_kept", "edges_removed", "removed_fraction",
               "object_edges_kept"]
    with open(folder / "summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r[c] for c in columns])
        for name, reduce in (("mean", np.mean), ("std", np.std)):
            writer.writerow([name] + [f"{reduce([float(r[c]) for r in rows]):.6g}" for c in columns[1:]])
    plot_oneshot(rows, summary, folder / "oneshot.png")
    return summary


def plot_oneshot(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: str | Path) -> Path:
    """Left: connections kept and removed by pruning per search seed. Right: each block's argmax peer
    per seed (a column of one colour is a block on which the seeds agree)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.4))
    ax = fig.add_subplot(1, 2, 1)
    labels = [str(r["seed"]) for r in rows]
    kept = [r["edges_kept"] for r in rows]
    removed = [r["edges_removed"] for r in rows]
    ax.bar(labels, kept, color="#4c72b0", label="kept (σ(w) > 0.2)")
    ax.bar(labels, removed, bottom=kept, color="#dd8452", label="removed")
    ax.set_xlabel("search seed")
    ax.set_ylabel("connections")
    ax.set_title(f"Pruning: {summary['removed']['mean']:.1f} ± {summary['removed']['std']:.1f} "
                 f"of {summary['edges_searched']} removed", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    blocks = sorted({b for r in rows for b in r["peers"]}, key=int)
    matrix = np.array([[np.nan if r["peers"].get(b) is None else float(r["peers"][b]) for b in blocks]
                       for r in rows])
    ax.imshow(np.ma.masked_invalid(matrix % 20), cmap="tab20", aspect="auto", vmin=0, vmax=19)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(blocks)))
    ax.set_xticklabels(blocks)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels)
    ax.set_xlabel("block")
    ax.set_ylabel("search seed")
    agree = summary.get("peers_all_agree")
    title = "argmax peer per block" + ("" if agree is None else
                                       f": all seeds agree on {agree:.0%}, pairwise {summary['peers_pairwise']:.0%}"
                                       f" (chance {summary['peer_chance']:.0%})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
