"""Children per hour of an architecture search: the harness (a model built and compiled per child) vs the
fast path (ablation/fastpath.py: one compiled masked model per shape).

The children are random edge subsets of one layout's maximal structure (model.edge_masks) with its shape
signature, so the fast path compiles once; each child has its own seed. Runs under JAX, as on a GPU:

    KERAS_BACKEND=jax python benchmarks/child_throughput.py --children 6 --mode both

Defaults are the ablation budget (`tiny`, 16 x 64², batch 32, 1,500 steps). Prints one JSON line per
child and one summary line per mode (seconds per child, children per hour, compile seconds).
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def sample_children(layout, count: int, seed: int, keep: float = 0.5):
    """`count` structures with `layout`'s signature: each edge of its maximal structure kept with
    probability `keep` (rejection-sampled until every block keeps its fused stride and width)."""
    from model import edge_masks
    from model.evolution import with_edges

    maximal = edge_masks.maximal(layout)
    signature = edge_masks.signature(layout)
    rng = np.random.default_rng(seed)
    children = []
    while len(children) < count:
        edges = [e for e in maximal.edges() if rng.uniform() < keep]
        if {i for _, i in edges} != {n.index for n in maximal.blocks}:
            continue
        child = with_edges(maximal, edges).replace(name=f"child{len(children)}")
        if edge_masks.signature(child) == signature:
            children.append(child)
    return children


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", default="tiny")
    parser.add_argument("--children", type=int, default=6)
    parser.add_argument("--mode", choices=("plain", "fast", "both"), default="both")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-clips", type=int, default=3072)
    parser.add_argument("--val-clips", type=int, default=768)
    parser.add_argument("--fusion-order", default="project_first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from ablation import harness
    from ablation.benchmark import BenchmarkConfig, generate
    from ablation.fastpath import ChildTrainer

    budget = harness.Budget(steps=args.steps, batch_size=args.batch, frames=args.frames, size=args.size,
                            warmup_steps=args.steps // 10)
    started = time.time()
    bench = generate(BenchmarkConfig(frames=args.frames, size=args.size, train_clips=args.train_clips,
                                     val_clips=args.val_clips, test_clips=8))
    print(json.dumps({"benchmark_seconds": round(time.time() - started, 1)}), flush=True)
    children = sample_children(args.structure, args.children, args.seed)
    modes = ("plain", "fast") if args.mode == "both" else (args.mode,)
    trainer = ChildTrainer(bench, budget) if "fast" in modes else None
    for mode in modes:
        rows = []
        began = time.time()
        for k, child in enumerate(children):
            t = time.time()
            options = {"fusion_order": args.fusion_order}
            if mode == "plain":
                result = harness.train_and_score(child, bench, seed=k, budget=budget, **options)
            else:
                result = trainer(child, seed=k, **options)
            row = {"mode": mode, "child": k, "seconds": round(time.time() - t, 2),
                   "compile_seconds": round(result["compile_seconds"], 2), "score": result["score"],
                   "final_loss": round(result["final_loss"], 4), "compiled": result.get("compiled", True)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        total = time.time() - began
        later = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
        print(json.dumps({"mode": mode, "children": len(rows), "seconds": round(total, 1),
                          "seconds_per_child": round(total / len(rows), 2),
                          "children_per_hour": round(3600 * len(rows) / total, 1),
                          "steady_seconds_per_child": round(float(np.mean(later)), 2),
                          "budget": dataclasses.asdict(budget)}), flush=True)


if __name__ == "__main__":
    main()
