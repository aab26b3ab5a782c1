"""Plots of AttentionNAS searches on the planted relation task (benchmarks/attention_nas_planted.sh).

    python benchmarks/attention_nas_planted.py plot --searches OUT/search --out OUT/report

reads every OUT/search/<backbone>/search_seed<k>/search.json (the per-step history that
`assemblenet attention-search` records: each choice's normalised entropy and the cell the weights
would give at that step) and writes, per backbone, choices_<backbone>.png — the mean entropy per step
of every search seed, and per choice the index of the chosen candidate per step and seed — and
choices.md: each seed's final choices and the step from which it kept them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_searches(folder: Path) -> dict:
    """{backbone: {seed: search.json record}} under `folder`."""
    out: dict = {}
    for path in sorted(folder.glob("*/search_seed*/search.json")):
        record = json.loads(path.read_text())
        out.setdefault(path.parent.parent.name, {})[record["config"]["seed"]] = record
    return out


def settled_at(history: list, key: str) -> int:
    """The first step from which the chosen candidate of `key` never changes again."""
    final = history[-1]["chosen"][key]
    step = history[-1]["step"]
    for entry in reversed(history):
        if entry["chosen"][key] != final:
            break
        step = entry["step"]
    return step


def choice_table(searches: dict) -> str:
    lines = []
    for backbone, by_seed in searches.items():
        keys = sorted(next(iter(by_seed.values()))["history"][-1]["entropy"])
        lines += [f"\n### {backbone}: final choice (normalised entropy; kept from step)\n",
                  "| choice | " + " | ".join(f"search seed {k}" for k in by_seed) + " |",
                  "|---|" + "---|" * len(by_seed)]
        for key in keys:
            cells = []
            for record in by_seed.values():
                history = record["history"]
                cells.append(f"{history[-1]['chosen'][key]} ({history[-1]['entropy'][key]:.3f}; "
                             f"{settled_at(history, key)})")
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        accuracy = " | ".join(f"{r['supernet_accuracy']:.3f}" if r["supernet_accuracy"] is not None else "-"
                              for r in by_seed.values())
        lines.append(f"| supernet top-1 (test split) | {accuracy} |")
    return "\n".join(lines) + "\n"


def plot(searches: dict, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for backbone, by_seed in searches.items():
        keys = sorted(next(iter(by_seed.values()))["history"][-1]["entropy"])
        columns = 4
        rows = 1 + -(-len(keys) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
        for ax in axes[0][1:]:
            ax.axis("off")
        for seed, record in by_seed.items():
            steps = [h["step"] for h in record["history"]]
            axes[0][0].plot(steps, [h["mean_entropy"] for h in record["history"]], label=f"seed {seed}")
        axes[0][0].set(title=f"{backbone}: mean entropy", xlabel="search step", ylim=(0, 1.05))
        axes[0][0].legend(fontsize=7)
        for n, key in enumerate(keys):
            ax = axes[1 + n // columns][n % columns]
            labels: list = []
            for seed, record in by_seed.items():
                chosen = [json.dumps(h["chosen"][key]) for h in record["history"]]
                for value in chosen:
                    if value not in labels:
                        labels.append(value)
                ax.step([h["step"] for h in record["history"]], [labels.index(v) for v in chosen],
                        where="post", label=f"seed {seed}", lw=1)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
            ax.set_title(key, fontsize=8)
        for n in range(len(keys), (rows - 1) * columns):
            axes[1 + n // columns][n % columns].axis("off")
        fig.tight_layout()
        path = out / f"choices_{backbone}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plot", help="choice plots and table of the searches under --searches")
    p.add_argument("--searches", required=True, help="folder of <backbone>/search_seed<k>/search.json")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    searches = load_searches(Path(args.searches))
    if not searches:
        parser.error(f"no <backbone>/search_seed*/search.json under {args.searches}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = plot(searches, out)
    (out / "choices.md").write_text(choice_table(searches))
    print("\n".join(map(str, paths + [out / "choices.md"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
