"""Suite `oneshot`: what AssembleNet++'s one-shot attention search (§3.5) decides, and how stably.

For each search seed, the harness trains the over-connected model of a layout (model.oneshot: every
connection L(j) < L(i), §3.3) with attention="search" (Eq. 4: every block weighs all its peers with
softmax(h)), learning σ(w) and h with the convolutions, on the benchmark's train split. The learned
weights are then pruned as the project's search does (model.pruning.prune_weights): connections with
σ(w) ≤ 0.2 go (§4.1), each block keeps its argmax-h peer (§3.5).

The searches are the runner's shared runs `oneshot-search/<layout>/object/seed<k>`, the same that
suites table1 and table4 take their peers from (ablation/suites.py, seed 0): the stability
measured here is that of the peers those tables use. Rows, per seed (`score`: top-1 on the validation
split, as in table1 / table4; nothing here selects on it):

    one-shot search   the trained search model itself (all connections, softmax(h) over all peers);
                      also `edges_searched`, `edges_kept`, `edges_removed`, `removed_fraction`,
                      `object_edges_kept`, `peers` {block: argmax peer}, the pruned structure
    pruned (peer)     that pruned structure retrained with attention="peer" (§3.5: "we can either
                      prune the connections by only leaving the argmax over h_k or leave them with
                      softmax. We confirmed that they do not make different in practice")

Over the seeds (OUT/oneshot/summary.json, summary.csv, summary.md, oneshot.png):

    removed            connections removed by pruning at σ(w) > 0.2, mean ± std over seeds
    peers_all_agree    fraction of blocks whose argmax peer is the same in every seed
    peers_pairwise     mean over seed pairs of the fraction of blocks with the same argmax peer
    peer_chance        the pairwise agreement of peers drawn uniformly at random (mean over blocks of
                       1/|P_i|), the level that means "no better than chance"
"""

from __future__ import annotations

import csv
import functools
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ablation.harness import decoy_stems
from ablation.runner import SuiteContext, suite
from ablation.suites import LAYOUT, layout_for, search_key
from model.oneshot import over_connected
from model.pruning import PRUNE_THRESHOLD
from model.structure import Structure, get_structure
from pipelines.checks import write_json, write_text

SEARCH, PRUNED = "one-shot search", "pruned (peer)"
THRESHOLD = PRUNE_THRESHOLD  # AssembleNet++ §4.1: connections with σ(w) > 0.2 are kept


def search_run(ctx: SuiteContext, layout: Structure, seed: int) -> dict[str, Any]:
    """The harness's result for the over-connected `layout` trained with attention='search' (shared)."""
    supernet = over_connected(layout)
    return ctx.run(search_key(layout, seed), functools.partial(ctx.train, supernet, attention="search", seed=seed),
                   shared=True, aux=True, seed=seed)


def pruning_stats(result: Mapping[str, Any], layout: Structure, seed: int,
                  threshold: float = THRESHOLD) -> dict[str, Any]:
    """What pruning at σ(w) > threshold with argmax-h peers does to one search's learned weights."""
    from model.pruning import prune_weights  # imports Keras: not at suite registration (fast CLI errors)

    supernet = over_connected(layout)
    weights = {str(i): {str(j): float(w) for j, w in row.items()} for i, row in result["edge_weights"].items()}
    attention = {str(b): {str(p): float(v) for p, v in row.items()}
                 for b, row in result["attention_weights"].items()}
    if not attention:
        raise ValueError(f"search seed {seed}: the harness returned no peer-attention weights "
                         "(was it trained with attention='search'?)")
    final = prune_weights(supernet, weights, attention, threshold=threshold, name=f"{supernet.name}_seed{seed}")
    objects = {n.index for n in supernet.stems if n.modality == "object"}
    decoys = set(decoy_stems(supernet))
    searched, kept = len(supernet.edges()), len(final.edges())
    decoy_edges = [e for e in supernet.edges() if e[0] in decoys]
    real_edges = [e for e in supernet.edges() if e[0] not in decoys]
    kept_edges = set(final.edges())
    planted = {} if not decoys else {  # benchmark v2: the decoy's edges are wrong by construction
        "decoy_edges": len(decoy_edges),
        "decoy_removed_fraction": sum(e not in kept_edges for e in decoy_edges) / len(decoy_edges),
        "real_removed_fraction": sum(e not in kept_edges for e in real_edges) / len(real_edges)}
    return {"score": float(result["score"]), "params": result.get("params"), "threshold": threshold,
            "edges_searched": searched, "edges_kept": kept, "edges_removed": searched - kept,
            "removed_fraction": (searched - kept) / searched, **planted,
            "object_edges_kept": sum(1 for j, _ in final.edges() if j in objects),
            "peers": {str(n.index): n.peer for n in final.blocks},
            "edge_weights": weights, "attention_weights": attention, "final_structure": final.to_json()}


@suite("oneshot", title="AssembleNet++ §3.5: the one-shot attention search, pruning and peer agreement",
       paper_source="AssembleNet++ reports no count of pruned connections and no seed study; §3.5 says "
                    "the argmax-pruned and the softmax models perform the same",
       order=(SEARCH, PRUNED))
def oneshot_suite(ctx: SuiteContext) -> None:
    run_suite(ctx, layout_for(ctx))


def run_suite(ctx: SuiteContext, layout: str | Structure = LAYOUT) -> dict[str, Any]:
    """Per seed: the search (shared run), its pruning figures and its pruned model retrained with
    peer-attention; then the summary over the seeds."""
    layout = get_structure(layout)
    ctx.expect(3 * len(ctx.seeds))
    for seed in ctx.seeds:
        result = search_run(ctx, layout, seed)
        row = ctx.run(f"search/seed{seed}", functools.partial(pruning_stats, result, layout, seed),
                      variant=SEARCH, seed=seed)
        pruned = Structure.from_json(row["final_structure"])
        ctx.run(f"pruned/seed{seed}", functools.partial(ctx.train, pruned, attention="peer", seed=seed),
                variant=PRUNED, seed=seed)
    return write_summary(ctx.folder_rows(SEARCH), layout, ctx.out)


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


def _std(values) -> float:
    """Standard deviation over seeds with ddof 1, as the runner's tables (NaN for one seed)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def summarize(rows: Sequence[Mapping[str, Any]], layout: Structure) -> dict[str, Any]:
    """The suite's figures over its search rows (see the module docstring)."""
    removed = [float(r["edges_removed"]) for r in rows]
    fraction = [float(r["removed_fraction"]) for r in rows]
    out = {"layout": layout.name, "threshold": rows[0]["threshold"], "seeds": [r["seed"] for r in rows],
           "edges_searched": rows[0]["edges_searched"],
           "removed": {"per_seed": removed, "mean": float(np.mean(removed)), "std": _std(removed)},
           "removed_fraction": {"mean": float(np.mean(fraction)), "std": _std(fraction)},
           **{key: {"per_seed": [float(r[key]) for r in rows], "mean": float(np.mean([r[key] for r in rows])),
                    "std": _std([r[key] for r in rows])}
              for key in ("decoy_removed_fraction", "real_removed_fraction") if key in rows[0]},
           "peer_chance": chance_agreement(over_connected(layout))}
    if len(rows) >= 2:
        agreement = peer_agreement({r["seed"]: r["peers"] for r in rows})
        out.update(peers_all_agree=agreement["all_agree"], peers_pairwise=agreement["pairwise"],
                   peers=agreement)
    return out


COLUMNS = ("seed", "score", "edges_searched", "edges_kept", "edges_removed", "removed_fraction",
           "object_edges_kept")


def summary_markdown(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    lines = [f"One-shot search of `{summary['layout']}` ({summary['edges_searched']} connections), pruned at "
             f"σ(w) > {summary['threshold']:g}:", "",
             "| seed | validation top-1 of the search model | kept | removed | object edges kept |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {100 * float(r['score']):.2f} | {r['edges_kept']} | {r['edges_removed']} "
                     f"| {r['object_edges_kept']} |")
    removed = summary["removed"]
    lines += ["", f"Removed: {removed['mean']:.2f} ± {removed['std']:.2f} of {summary['edges_searched']} "
              f"({100 * summary['removed_fraction']['mean']:.1f}% ± {100 * summary['removed_fraction']['std']:.1f}%)."]
    if "decoy_removed_fraction" in summary:
        lines.append(f"Decoy edges removed: {100 * summary['decoy_removed_fraction']['mean']:.0f}% ± "
                     f"{100 * summary['decoy_removed_fraction']['std']:.0f}%; real edges removed: "
                     f"{100 * summary['real_removed_fraction']['mean']:.0f}% ± "
                     f"{100 * summary['real_removed_fraction']['std']:.0f}% (the goal: >= 90% and <= 10%).")
    if "peers_all_agree" in summary:
        lines.append(f"Argmax peers: the same in every seed for {100 * summary['peers_all_agree']:.0f}% of the "
                     f"{summary['peers']['blocks']} blocks; pairwise agreement {100 * summary['peers_pairwise']:.0f}% "
                     f"(chance {100 * summary['peer_chance']:.0f}%).")
    return "\n".join(lines) + "\n"


def write_summary(rows: Sequence[Mapping[str, Any]], layout: Structure, folder: str | Path) -> dict[str, Any]:
    """summary.json, summary.md, summary.csv (a line per seed, then mean and std) and oneshot.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, layout)
    write_json(folder / "summary.json", summary)
    write_text(folder / "summary.md", summary_markdown(rows, summary))
    with open(folder / "summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r[c] for c in COLUMNS])
        for name, reduce in (("mean", np.mean), ("std", _std)):
            writer.writerow([name] + [f"{reduce([float(r[c]) for r in rows]):.6g}" for c in COLUMNS[1:]])
    png = plot_oneshot(rows, summary, folder / "oneshot.png")
    caption = [f"One-shot search: {summary['removed']['mean']:.1f} ± {summary['removed']['std']:.1f} of "
               f"{summary['edges_searched']} connections removed at σ(w) > {summary['threshold']:g}"]
    if "peers_all_agree" in summary:
        caption.append(f"argmax peers the same in every seed for {100 * summary['peers_all_agree']:.0f}% of the "
                       f"blocks, pairwise {100 * summary['peers_pairwise']:.0f}% (chance "
                       f"{100 * summary['peer_chance']:.0f}%)")
    write_json(folder / "figures.json", {png.name: "; ".join(caption)})
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
    ax.bar(labels, kept, color="#4c72b0", label=f"kept (σ(w) > {summary['threshold']:g})")
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
