"""A searched AttentionNAS cell against the non-local block (and no cell) on the synthetic proxy task.

Same small I3D-ResNet, same cell positions (res3_0, res4_0), same training steps, data stream and seeds
for every variant; reports top-1 accuracy on held-out synthetic clips, the model's params and the params
and FLOPs the cells add (model.attention_nas.cell_cost at the cells' input shapes).

    python benchmarks/attention_cells.py --search-steps 120 --steps 150 --search-seeds 0,1
    python benchmarks/attention_cells.py --cell runs/search/cell.json --steps 150

Any backend (the search, too, is Keras's own train_on_batch). With several --search-seeds, one search
per seed: the report says how many of the derived cells' choices agree and how far the architecture
weights moved from uniform, and each distinct derived cell is trained and evaluated.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.attention_nas import NONLOCAL, cell_cost, load_cell  # noqa: E402
from pipelines.attention_search import SearchConfig, search, train_and_evaluate  # noqa: E402


def cell_input_shapes(config: SearchConfig) -> dict:
    """(T, H, W, C) at each ResNet position: res{s} has stride 4·2^(s-2) and 4·width·2^(s-2) channels."""
    shapes = {}
    for position in config.positions:
        stage = int(position[3])
        stride = 4 * 2 ** (stage - 2)
        shapes[position] = (
            config.frames,
            config.size // stride,
            config.size // stride,
            4 * config.width * 2 ** (stage - 2),
        )
    return shapes


def decisiveness(operations: dict) -> dict:
    """How far the softmax weights moved from uniform, over every decision with ≥ 2 candidates: the mean
    and largest top weight, the mean uniform weight, the mean entropy / log(candidates) (1 = uniform)."""
    tops, uniforms, entropies = [], [], []
    for entry in operations.values():
        for choice, probs in entry.items():
            values = list(probs) if choice == "inputs" else list(probs.values())
            if len(values) < 2:
                continue
            tops.append(max(values))
            uniforms.append(1 / len(values))
            entropies.append(-sum(p * math.log(p) for p in values if p > 0) / math.log(len(values)))
    return {
        "mean_top_weight": sum(tops) / len(tops),
        "max_top_weight": max(tops),
        "mean_uniform": sum(uniforms) / len(uniforms),
        "mean_entropy": sum(entropies) / len(entropies),
    }


def agreement(cells: list) -> dict:
    """How many per-operation decisions (every choice and the input set) all derived cells share."""
    agree, differ = 0, []
    for i, ops in enumerate(zip(*(c["operations"] for c in cells), strict=True), start=1):
        for key in ops[0]:
            if all(op[key] == ops[0][key] for op in ops):
                agree += 1
            else:
                differ.append(f"op{i}.{key}")
    return {"agree": agree, "total": agree + len(differ), "differ": differ}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default=None, help="a searched cell.json (skips the search)")
    parser.add_argument("--search-steps", type=int, default=120)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--search-seeds", default="0", help="comma-separated search seeds")
    parser.add_argument("--arch-lr", type=float, default=3e-2)
    parser.add_argument("--final-temperature", type=float, default=1.0)
    parser.add_argument("--out", default="runs/attention_cells")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = SearchConfig(
        steps=args.steps,
        frames=args.frames,
        size=args.size,
        batch_size=args.batch_size,
        lr=1e-3,
        eval_batches=16,
    )
    started = time.time()
    searches = []
    if args.cell:
        candidates = [("searched", load_cell(args.cell))]
    else:
        candidates = []
        for seed in (int(s) for s in args.search_seeds.split(",")):
            search_config = SearchConfig(
                steps=args.search_steps,
                frames=args.frames,
                size=args.size,
                batch_size=args.batch_size // 2,
                lr=1e-3,
                arch_lr=args.arch_lr,
                final_temperature=args.final_temperature,
                seed=seed,
                eval_batches=4,
            )
            record = search(config=search_config, out_dir=out / f"search_seed{seed}")
            weights = json.loads((out / f"search_seed{seed}" / "arch_weights.json").read_text())
            searches.append(
                {"seed": seed, "supernet_accuracy": record["supernet_accuracy"], "cell": record["cell"]}
                | decisiveness(weights["operations"])
            )
            if all(record["cell"] != cell for _, cell in candidates):
                candidates.append((f"searched (search seed {seed})", record["cell"]))
    search_seconds = time.time() - started
    shapes = cell_input_shapes(config)
    rows = []
    for name, cell in [("none", None), ("non-local", NONLOCAL), *candidates]:
        accuracies, params = [], None
        for seed in (int(s) for s in args.seeds.split(",")):
            result = train_and_evaluate(config, cell, seed=seed)
            accuracies.append(result["accuracy"])
            params = result["params"]
        costs = [cell_cost(cell, shape) for shape in shapes.values()] if cell else []
        rows.append(
            {
                "cell": name,
                "accuracy": sum(accuracies) / len(accuracies),
                "accuracies": accuracies,
                "model_params": params,
                "cell_params": sum(c["params"] for c in costs),
                "cell_flops": sum(c["flops"] for c in costs),
            }
        )
    report = {
        "config": {k: v for k, v in vars(args).items()},
        "positions": list(config.positions),
        "searches": searches,
        "agreement": agreement([s["cell"] for s in searches]) if len(searches) > 1 else None,
        "search_seconds": search_seconds,
        "total_seconds": time.time() - started,
        "results": rows,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{args.steps} training steps × batch {args.batch_size}, "
        f"{args.frames}x{args.size}x{args.size} clips, "
        f"cells at {', '.join(config.positions)}, seeds {args.seeds}"
    )
    print("| cell | top-1 (synthetic, 4 classes) | model params | params added | FLOPs added |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['cell']} | {r['accuracy']:.3f} | {r['model_params']:,} | {r['cell_params']:,} | "
            f"{r['cell_flops'] / 1e6:.2f} M |"
        )
    for s in searches:
        print(
            f"search seed {s['seed']}: supernet top-1 {s['supernet_accuracy']:.3f}, mean top softmax weight "
            f"{s['mean_top_weight']:.2f} (uniform {s['mean_uniform']:.2f}), largest "
            f"{s['max_top_weight']:.2f}, mean normalised entropy {s['mean_entropy']:.2f}"
        )
    if report["agreement"]:
        a = report["agreement"]
        print(f"derived cells agree on {a['agree']} of {a['total']} decisions: {', '.join(a['differ']) or '-'}")
    print(f"(search {search_seconds:.0f} s, total {report['total_seconds']:.0f} s; {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
