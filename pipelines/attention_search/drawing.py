"""The drawing of a cell (cell.png): its operations, the combine node and the edges with their weights."""

from __future__ import annotations

import os
from pathlib import Path


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
