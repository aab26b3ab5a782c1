"""Suites of benchmark v2 (planted answers, docs/ablations.md): does a search find what was planted?

`connections` (AssembleNet §3.2, connection learning): the over-connected model of the layout with the
decoy stem (model.oneshot: every L(j) < L(i) edge, the decoy stem's included) trained without attention,
σ(w) of every edge recorded over training. The decoy stream shows another clip's flow, so each of its
edges is wrong by construction; the planted answer is found in a seed when every decoy edge ends below
the median of the real edges; both fusion orders (model.assemblenet.FUSION_ORDERS). Per order:
OUT/connections/summary_<order>.json, summary_<order>.md and sigma_<order>.png (σ(w) and top-1 over steps).

`attention` (AssembleNet++ Table 1, on the clips whose reliable modality changes): attention
none / static / self / peer on the one-shot search's pruned structure with objects (the structure
table1 and table4 use), each row also scored separately on the clips whose segmenter failed and on
the others (rows' `score_segmenter_failed`, `score_segmenter_ok`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ablation.harness import decoy_stems
from ablation.runner import SuiteContext, suite
from ablation.suites import ATTENTIONS, layout_for, searched_structure
from model.oneshot import over_connected
from model.pruning import PRUNE_THRESHOLD
from pipelines.checks import UserError, read_json, write_json, write_text

FUSION_ORDERS = ("project_first", "weight_first")  # model.assemblenet.FUSION_ORDERS, without importing Keras
CONNECTIONS = {order: f"over-connected, {order.replace('_', ' ')}" for order in FUSION_ORDERS}
TRACE_POINTS = 30  # σ(w) recorded this many times over a training run


def _needs_v2(ctx: SuiteContext, what: str) -> None:
    if not ctx.bench.config.decoy or not ctx.bench.config.object_failure_rate:
        raise UserError(f"suite {ctx.name}: {what} needs benchmark v2 (assemblenet ablate --benchmark v2)")


def decoy_verdict(edge_weights: Mapping[str, Mapping[str, float]], decoys: Sequence[int]) -> dict[str, Any]:
    """Final σ(w) of the decoy edges against the real edges: found = every decoy edge below the real
    edges' median (the planted answer of `connections`)."""
    decoys = {str(d) for d in decoys}
    decoy = [float(v) for row in edge_weights.values() for j, v in row.items() if j in decoys]
    real = [float(v) for row in edge_weights.values() for j, v in row.items() if j not in decoys]
    if not decoy or not real:
        raise ValueError("decoy_verdict: needs both decoy and real edges")
    median = float(np.median(real))
    # Per block: is a decoy edge the block's weakest input? (What connection learning can tell locally.)
    lowest = sum(min(row, key=lambda j: row[j]) in decoys for row in edge_weights.values()
                 if decoys & set(row) and len(row) > 1)
    return {"decoy_max": max(decoy), "decoy_mean": float(np.mean(decoy)), "real_median": median,
            "real_min": min(real), "decoy_below_median": sum(v < median for v in decoy), "decoy_edges": len(decoy),
            "decoy_lowest_in_block": lowest, "found": bool(max(decoy) < median)}


@suite("connections", title="AssembleNet §3.2: connection learning turns the decoy stream's edges down",
       paper={}, paper_source="AssembleNet §3.2 (connection weights σ(w) guide evolution; the paper reports "
                              "no planted edge)", order=tuple(CONNECTIONS.values()),
       compare=[tuple(CONNECTIONS[o] for o in reversed(FUSION_ORDERS))])
def connections(ctx: SuiteContext) -> None:
    """Per fusion order (where σ(w) sits relative to the inputs' 1x1 conv + batch norm,
    model.assemblenet.FUSION_ORDERS) and seed: the over-connected model with σ(w) traced."""
    _needs_v2(ctx, "the decoy stream")
    supernet = over_connected(layout_for(ctx))
    decoys = decoy_stems(supernet)
    every = max(1, ctx.budget.steps // TRACE_POINTS)
    ctx.expect(len(FUSION_ORDERS) * len(ctx.seeds))
    for order in FUSION_ORDERS:
        for seed in ctx.seeds:
            key = f"over-connected/seed{seed}" if order == "project_first" else f"over-connected/{order}/seed{seed}"
            ctx.run(key, functools.partial(ctx.train, supernet, attention="none", seed=seed, trace_every=every,
                                           fusion_order=order),
                    variant=CONNECTIONS[order], seed=seed)
        rows = [{"seed": row["seed"], "score": row["score"], **decoy_verdict(row["edge_weights"], decoys),
                 "trace": row["edge_trace"]} for row in ctx.folder_rows(CONNECTIONS[order])]
        write_connections(rows, decoys, ctx.out, tag=order)


def write_connections(rows: Sequence[Mapping[str, Any]], decoys: Sequence[int], folder: str | Path,
                      tag: str = "project_first") -> dict:
    """summary_<tag>.json / .md and sigma_<tag>.png for one fusion order's seeds; figures.json lists them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"fusion_order": tag, "seeds": [r["seed"] for r in rows], "decoy_stems": list(decoys),
               "found_in": sum(r["found"] for r in rows),
               "per_seed": [{k: v for k, v in r.items() if k != "trace"} for r in rows]}
    write_json(folder / f"summary_{tag}.json", summary)
    lines = ["| seed | top-1 | decoy edges: max σ(w) | mean | lowest of their block | real edges: median σ(w) "
             "| min | found |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {100 * r['score']:.1f} | {r['decoy_max']:.3f} | {r['decoy_mean']:.3f} | "
              f"{r['decoy_lowest_in_block']} of {r['decoy_edges']} | {r['real_median']:.3f} | {r['real_min']:.3f} | "
              f"{'yes' if r['found'] else 'no'} |" for r in rows]
    lines += ["", f"Fusion order {tag}: every decoy edge below the real edges' median in {summary['found_in']} "
                  f"of {len(rows)} seeds."]
    write_text(folder / f"summary_{tag}.md", "\n".join(lines) + "\n")
    png = plot_sigma(rows, decoys, folder / f"sigma_{tag}.png")
    figures_path = folder / "figures.json"
    figures = read_json(figures_path) if figures_path.exists() else {}
    figures[png.name] = (f"σ(w) of every connection over training, fusion order {tag} (decoy edges red); "
                         f"found in {summary['found_in']} of {len(rows)} seeds")
    write_json(figures_path, figures)
    return summary


def plot_sigma(rows: Sequence[Mapping[str, Any]], decoys: Sequence[int], path: str | Path) -> Path:
    """σ(w) of each connection over training steps, one panel per seed: decoy edges red, real grey."""
    from matplotlib.figure import Figure

    decoys = {str(d) for d in decoys}
    fig = Figure(figsize=(3.2 * len(rows), 3.0))
    for k, r in enumerate(rows):
        ax = fig.add_subplot(1, len(rows), k + 1)
        steps = r["trace"]["steps"]
        for row in r["trace"]["weights"].values():
            for j, values in row.items():
                bad = j in decoys
                ax.plot(steps, values, color="#c44e52" if bad else "#999999", lw=1.2 if bad else 0.6,
                        alpha=1.0 if bad else 0.6, zorder=3 if bad else 2)
        ax.axhline(PRUNE_THRESHOLD, color="k", ls=":", lw=0.8)
        if r["trace"].get("score"):  # the learning curve on a second axis: where training stops paying
            acc = ax.twinx()
            acc.plot(steps, [100 * v for v in r["trace"]["score"]], color="#4c72b0", ls="--", lw=1.0)
            acc.set_ylim(0, 100)
            if k == len(rows) - 1:
                acc.set_ylabel("validation top-1 % (blue, dashed)")
        ax.set_title(f"seed {r['seed']}: {'found' if r['found'] else 'not found'}", fontsize=9)
        ax.set_xlabel("step")
        if k == 0:
            ax.set_ylabel("σ(w)  (red: decoy edges)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


ATTENTION_ROWS = tuple(f"{a}, with object" for a in ATTENTIONS)
ATTENTION_PAPER = dict(zip(ATTENTION_ROWS, (50.43, 51.15, 55.40, 56.38), strict=True))  # Table 1, with objects


@suite("attention", title="AssembleNet++ Table 1 on per-clip reliability: attention none / static / "
                          "self / peer", paper=ATTENTION_PAPER,
       paper_source="AssembleNet++ Table 1 (Charades mAP, with objects)", order=ATTENTION_ROWS,
       compare=[(f"{a}, with object", f"{b}, with object") for a in ("self", "peer") for b in ("none", "static")]
       + [("static, with object", "none, with object")])
def attention(ctx: SuiteContext) -> None:
    _needs_v2(ctx, "per-clip reliability")
    ctx.expect(1 + len(ATTENTIONS) * len(ctx.seeds))
    structure = searched_structure(ctx, object_stem=True)
    for name, row in zip(ATTENTIONS, ATTENTION_ROWS, strict=True):
        for seed in ctx.seeds:
            ctx.run(f"{row}/seed{seed}", functools.partial(ctx.train, structure, attention=name, seed=seed),
                    variant=row, seed=seed)
