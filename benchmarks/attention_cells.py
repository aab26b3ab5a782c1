"""Searched AttentionNAS cells vs the non-local block vs no cell, over search seeds and training seeds.

AttentionNAS's claim (abstract): searched cells inserted into I3D-R50 beat non-local blocks. Here, on the
synthetic proxy task of pipelines/attention_search/ (in-memory clips, no TFRecords, no TensorFlow
needed), for each backbone:
  - `resnet`: the small I3D-style ResNet of model/resnet.py, cells after res3_0 and res4_0;
  - `assemblenet`: AssembleNet structure `tiny`, cells after every block of levels 2 and 3;
With --task relation, the same on the planted relation task of ablation/benchmark.py (same/different
glyphs far apart in space and time, a local cue right on 60 %; scored on its whole test split), where
local features alone stop at the cue and attention can go further (docs/attention_nas.md).
One search per --search-seeds seed (DARTS settings of SearchConfig unless overridden), then every
variant — no cell, non-local block, non-local block widened to the searched cells' mean added params
("non-local (matched)", where a reduction ≤ 1 reaches it), each search seed's derived cell, and that
design at the cell `width` whose added params come closest to the non-local block's ("searched, matched
cost": the comparison at matched added cost) — is
trained from scratch under every --seeds seed and scored on held-out synthetic clips (BN statistics
re-estimated for every model alike). Reported: mean ± std (ddof 1) of top-1 per variant, the searched
cells pooled over search seeds × training seeds, two-sided permutation tests of the difference of means
(searched vs non-local, searched vs none, non-local vs none), the per-choice entropy at the end of each
search (1 = uniform) and how many decisions the search seeds' cells share.

    python benchmarks/attention_cells.py --backbones resnet,assemblenet --search-seeds 0,1,2 \\
        --seeds 0,1,2,3,4 --search-steps 300 --steps 200 --out runs/attention_cells

writes OUT/results.json and OUT/results.md (the table) and per search OUT/<backbone>/search_seed<k>/
(cell.json, arch_weights.json, cell.png, entropy.png, search.json). Any Keras backend; on a GPU use
KERAS_BACKEND=jax. Compiled models are reused across seeds (one compile per variant).
Parallel processes: `--cells a/cell.json,... --variants searched` (or `none`, `non-local`) trains only
those variants of cells searched earlier; `--merge DIR,DIR,...` writes one report from their folders
(partial_<backbone>.json, written after every finished training seed, and <backbone>/search_seed*/search.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablation.stats import permutation_test  # noqa: E402
from model.attention_nas import NONLOCAL, cell_cost, load_cell  # noqa: E402
from pipelines.attention_search import (  # noqa: E402
    SearchConfig,
    cell_input_shapes,
    search,
    train_and_evaluate,
)

JOINT = ("type", "dimension")  # chosen as one pair by derive_cell (agreement's docstring)


def agreement(cells: list, candidates: dict | None = None, *, draws: int = 20000) -> dict:
    """How many per-operation decisions (every choice and the input set) all derived cells share, and,
    given the search space's `candidates` ({choice: [candidate, ...]}), how often two search seeds pick
    the same candidate of a categorical choice ("pairwise", over every pair of seeds and every op's
    dimension / type / g1-g3 / activation / reduction) against chance: seeds that pick uniformly at random
    agree on a choice of n candidates with probability 1/n ("chance", the mean of 1/n). "p" is the
    one-sided Monte-Carlo probability that such random seeds agree at least as often ("draws" draws of
    every seed's every choice, a fixed generator). The input sets are left out of the pairwise rate: a
    derived cell keeps the inputs above a share of the strongest (derive_cell), which has no uniform
    counterpart. So are `type` and `dimension` (JOINT): derive_cell takes them as one pair by the
    supernet's weight p_d · p_type|d, and where a pair is excluded (dot-product on a spatial map) the
    dimension with fewer allowed types gets its whole p_d, so near-uniform weights — a search that
    learned nothing — give every seed the same pair. Uniform-pick chance would count that as agreement;
    "joint_agree" / "joint_total" only count the operations whose pair all seeds share."""
    agree, differ = 0, []
    for i, ops in enumerate(zip(*(c["operations"] for c in cells), strict=True), start=1):
        for key in ops[0]:
            if all(op[key] == ops[0][key] for op in ops):
                agree += 1
            else:
                differ.append(f"op{i}.{key}")
    out = {"agree": agree, "total": agree + len(differ), "differ": differ}
    if candidates is None or len(cells) < 2:
        return out
    sizes, same, joint = [], 0, []
    pairs = [(a, b) for a in range(len(cells)) for b in range(a + 1, len(cells))]
    for ops in zip(*(c["operations"] for c in cells), strict=True):
        if any(key in ops[0] for key in JOINT):
            joint.append(all([op.get(k) for k in JOINT] == [ops[0].get(k) for k in JOINT] for op in ops))
        for key in ops[0]:
            if key == "inputs" or key in JOINT:
                continue
            n = len(candidates[key])
            sizes.append(n)
            same += sum(ops[a][key] == ops[b][key] for a, b in pairs)
    joint_counts = {"joint_agree": int(sum(joint)), "joint_total": len(joint)}
    if not sizes:  # no choice derived one by one: nothing to compare with chance
        return {**out, **joint_counts}
    observed = same / (len(pairs) * len(sizes))
    rng = np.random.default_rng(0)
    picks = np.stack([rng.integers(0, n, size=(draws, len(cells))) for n in sizes], axis=1)  # draw, choice, seed
    random_rate = np.mean([np.mean(picks[:, :, a] == picks[:, :, b], axis=1) for a, b in pairs], axis=0)
    return {**out, "pairwise": observed, "chance": float(np.mean([1 / n for n in sizes])),
            "choices": len(sizes), "p": float((np.sum(random_rate >= observed - 1e-12) + 1) / (draws + 1)),
            **joint_counts}


def summary(values) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": values,
    }


def added_cost(cell, shapes: dict) -> dict:
    costs = [cell_cost(cell, shape) for shape in shapes.values()] if cell else []
    return {"params": sum(c["params"] for c in costs), "flops": sum(c["flops"] for c in costs)}


def closest_on_grid(cell: dict, field: str, target_params: float, shapes: dict) -> tuple[dict, int]:
    """`cell` with `field` (a ratio in (0, 1]) set to the multiple of 1/64 whose added params over all
    positions come closest to `target_params`, and those params (the first such multiple on a tie)."""
    best = None
    for k in range(1, 65):
        candidate = {**cell, field: k / 64}
        params = added_cost(candidate, shapes)["params"]
        if best is None or abs(params - target_params) < abs(best[1] - target_params):
            best = (candidate, params)
    return best


def matched_nonlocal(target_params: float, shapes: dict):
    """The non-local block whose reduction (a multiple of 1/64, ≤ 1) brings its added params closest to
    `target_params`; None when even reduction 1 stays below 90 % of the target."""
    cell, params = closest_on_grid(NONLOCAL, "reduction", target_params, shapes)
    return None if params < 0.9 * target_params else cell


def matched_width(cell: dict, target_params: float, shapes: dict) -> dict:
    """`cell` at the width (a multiple of 1/64 below 1, or 1) whose added params over all positions come
    closest to `target_params` (the non-local block's): the searched design at matched added cost."""
    return closest_on_grid(cell, "width", target_params, shapes)[0]


def variant_kind(name: str) -> str:
    """The --variants key of a variant's name."""
    if name.startswith("non-local (matched"):
        return "matched"
    if name.startswith("searched, matched"):
        return "searched-matched"
    return name.split(" (")[0]


def run_backbone(backbone: str, args, out: Path) -> dict:
    base = SearchConfig(
        backbone=backbone,
        structure=args.structure,
        frames=args.frames,
        size=args.size,
        num_operations=args.num_operations,
        eval_batches=args.eval_batches,
        recalibration_batches=args.recalibration_batches,
        **task_fields(args),
    )
    shapes = cell_input_shapes(base)
    cache: dict = {}
    started = time.time()
    searches = []
    for seed in [] if args.cells else args.search_seeds:
        config = dataclasses.replace(
            base,
            steps=args.search_steps,
            batch_size=args.search_batch_size,
            seed=seed,
            lr=args.lr,
            arch_lr=args.arch_lr,
            arch_start=args.arch_start,
            final_temperature=args.final_temperature,
        )
        search(config=config, out_dir=out / backbone / f"search_seed{seed}", model_cache=cache)
        searches.append(search_summary(out / backbone / f"search_seed{seed}" / "search.json", shapes))
    search_seconds = time.time() - started
    cache.clear()  # the supernet is not trained again
    partial = out / f"partial_{backbone}.json"  # what has finished so far, should the run be cut short
    partial.write_text(json.dumps({"searches": searches, "results": []}, indent=2) + "\n")

    train = dataclasses.replace(base, steps=args.steps, batch_size=args.batch_size, train_lr=args.train_lr)
    searched_costs = [s["cost"]["params"] for s in searches] or [
        added_cost(load_cell(path), shapes)["params"] for path in args.cells
    ]
    variants = [("none", None), ("non-local", NONLOCAL)]
    matched = matched_nonlocal(float(np.mean(searched_costs)), shapes) if searched_costs else None
    if matched is not None and matched["reduction"] != NONLOCAL["reduction"]:
        variants.append((f"non-local (matched, reduction {matched['reduction']:g})", matched))
    distinct = {}
    for s in searches:
        distinct.setdefault(json.dumps(s["cell"], sort_keys=True), []).append(s["seed"])
    found = [(f"search seed {','.join(map(str, seeds))}", json.loads(key)) for key, seeds in distinct.items()]
    found += [(f"cell {path}", load_cell(path)) for path in args.cells]  # cells searched earlier
    target = added_cost(NONLOCAL, shapes)["params"]
    for label, cell in found:
        variants.append((f"searched ({label})", cell))
    for label, cell in found:  # the same designs at the non-local block's added params (cell "width")
        cell = matched_width(cell, target, shapes)
        variants.append((f"searched, matched cost ({label}, width {cell['width']:g})", cell))
    wanted = {v.strip() for v in args.variants.split(",")}
    variants = [(name, cell) for name, cell in variants if variant_kind(name) in wanted]

    rows = []
    for name, cell in variants:
        accuracies = []
        for seed in args.seeds:
            result = train_and_evaluate(train, cell, seed=seed, model_cache=cache)
            accuracies.append(result["accuracy"])
            row = {"variant": name, "cell": cell, "model_params": result["params"], **added_cost(cell, shapes)}
            row |= {"top1": summary(accuracies), "seeds": list(args.seeds[: len(accuracies)])}
            # after every seed, so that a run cut short keeps the seeds it finished
            partial.write_text(json.dumps({"searches": searches, "results": [*rows, row]}, indent=2) + "\n")
        rows.append(row)
        print(f"[{backbone}] {name}: {np.mean(accuracies):.3f} ± {np.std(accuracies, ddof=1):.3f}", flush=True)
    cache.clear()

    return {
        "backbone": backbone,
        "positions": list(shapes),
        "shapes": {k: list(v) for k, v in shapes.items()},
        "search_config": dataclasses.asdict(
            dataclasses.replace(
                base,
                steps=args.search_steps,
                batch_size=args.search_batch_size,
                lr=args.lr,
                arch_lr=args.arch_lr,
                arch_start=args.arch_start,
                final_temperature=args.final_temperature,
            )
        ),
        "train_config": dataclasses.asdict(train),
        **statistics(searches, rows),
        "search_seconds": search_seconds,
        "seconds": time.time() - started,
    }


def statistics(searches: list, rows: list) -> dict:
    """Pooled searched accuracies (full width and matched cost apart), permutation tests and agreement of
    the search seeds' cells."""
    by_name = {r["variant"]: r for r in rows}
    pools = {"searched": [], "searched, matched cost": []}
    for r in rows:
        kind = variant_kind(r["variant"])
        if kind in ("searched", "searched-matched"):
            found = re.search(r"search seed (\d+(?:,\d+)*)", r["variant"])
            copies = len(found.group(1).split(",")) if found else 1
            key = "searched" if kind == "searched" else "searched, matched cost"
            pools[key] += r["top1"]["values"] * copies  # one entry per search seed × training seed
    tests = {}
    groups = {k: v for k, v in pools.items() if v}
    for name in ("non-local", "none"):
        if name in by_name:
            groups[name] = by_name[name]["top1"]["values"]
    pairs = [(a, b) for a in pools for b in ("non-local", "none")] + [("non-local", "none")]
    for a, b in pairs:
        if groups.get(a) and groups.get(b):
            tests[f"{a} vs {b}"] = permutation_test(groups[a], groups[b])
    return {
        "searches": searches,
        "agreement": (agreement([s["cell"] for s in searches], searches[0].get("candidates"))
                      if len(searches) > 1 else None),
        "results": rows,
        "searched_pooled": summary(pools["searched"]) if pools["searched"] else None,
        "searched_matched_pooled": (
            summary(pools["searched, matched cost"]) if pools["searched, matched cost"] else None
        ),
        "p_values": tests,
    }


def search_summary(path: Path, shapes: dict) -> dict:
    """The report entry of one finished search from its search.json."""
    record = json.loads(path.read_text())
    entropy = record["final_entropy"]
    return {
        "seed": record["config"]["seed"],
        "supernet_accuracy": record["supernet_accuracy"],
        "mean_entropy": record["final_mean_entropy"],
        "final_temperature": record.get("final_temperature", 1.0),
        "mean_entropy_at_temperature": record.get("final_mean_entropy_at_temperature", record["final_mean_entropy"]),
        "mean_logit_spread": record.get("mean_logit_spread"),
        "max_entropy": max(entropy.values()),
        "min_entropy": min(entropy.values()),
        "mean_entropy_by_step": [h["mean_entropy"] for h in record["history"]],
        "excluded": record["search_space"]["excluded"],
        "candidates": record["search_space"]["candidates"],
        "messages": record["search_space"]["messages"],
        "cell": record["cell"],
        "cost": added_cost(record["cell"], shapes),
    }


def merge(directories: list, args) -> dict:
    """One report from several runs of this benchmark (e.g. variants trained in parallel processes):
    their partial_<backbone>.json rows and every <backbone>/search_seed*/search.json below them. A
    searched cell given by --cells is attributed to the search seed whose cell.json it is."""
    backbones = {}
    for directory in map(Path, directories):
        for partial in sorted(directory.glob("partial_*.json")):
            backbone = partial.stem[len("partial_") :]
            entry = backbones.setdefault(backbone, {"rows": [], "searches": {}})
            entry["rows"] += json.loads(partial.read_text())["results"]
    for backbone, entry in backbones.items():
        config = SearchConfig(
            backbone=backbone, structure=args.structure, frames=args.frames, size=args.size, **task_fields(args)
        )
        shapes = cell_input_shapes(config)
        for directory in map(Path, directories):
            for path in sorted(directory.glob(f"{backbone}/search_seed*/search.json")):
                summary_ = search_summary(path, shapes)
                entry["searches"][summary_["seed"]] = summary_
        searches = [entry["searches"][k] for k in sorted(entry["searches"])]
        for row in entry["rows"]:
            for s in searches:
                if variant_kind(row["variant"]) == "searched" and row["cell"] == s["cell"]:
                    row["variant"] = f"searched (search seed {s['seed']})"
                elif variant_kind(row["variant"]) == "searched-matched" and row["cell"] == {
                    **s["cell"], "width": row["cell"]["width"]
                }:
                    row["variant"] = f"searched, matched cost (search seed {s['seed']}, width {row['cell']['width']:g})"
        entry["rows"] = pool_rows(entry["rows"])
        entry["report"] = {
            "backbone": backbone,
            "positions": list(shapes),
            **statistics(searches, entry["rows"]),
            "seconds": float("nan"),
            "search_seconds": float("nan"),
        }
    return {"args": vars(args), "merged_from": directories, "backbones": [e["report"] for e in backbones.values()]}


def pool_rows(rows: list) -> list:
    """Rows of the same variant (e.g. its training seeds run in several processes) as one row over their
    seeds, a seed trained twice counted once (the first); rows without seeds stay as they are."""
    pooled, order = {}, []
    for row in rows:
        name = row["variant"]
        if name not in pooled or "seeds" not in row or "seeds" not in pooled[name]:
            if name in pooled:  # no seeds to pool by: keep both rows apart
                name = f"{name} [{len(order)}]"
            pooled[name] = {**row, "variant": row["variant"]}
            order.append(name)
            continue
        have = pooled[name]
        values = dict(zip(have["seeds"], have["top1"]["values"], strict=True))
        for seed, value in zip(row["seeds"], row["top1"]["values"], strict=True):
            values.setdefault(seed, value)
        have["seeds"] = sorted(values)
        have["top1"] = summary([values[k] for k in have["seeds"]])
    return [pooled[name] for name in order]


def table(report: dict) -> str:
    lines = []
    for b in report["backbones"]:
        lines.append(
            f"\n### {b['backbone']} ({report['args'].get('task', 'synthetic')} task; "
            f"cells at {', '.join(b['positions'])}; "
            f"{report['args']['steps']} training steps × batch {report['args']['batch_size']}, "
            f"{report['args']['frames']}×{report['args']['size']}² clips, training seeds "
            f"{','.join(map(str, report['args']['seeds']))})\n"
        )
        lines.append("| variant | top-1 mean ± std (n) | model params | params added | FLOPs added |")
        lines.append("|---|---|---|---|---|")
        for r in b["results"]:
            t = r["top1"]
            lines.append(
                f"| {r['variant']} | {t['mean']:.3f} ± {t['std']:.3f} ({t['n']}) | {r['model_params']:,} | "
                f"{r['params']:,} | {r['flops'] / 1e6:.2f} M |"
            )
        for key, label in (("searched_pooled", "searched"), ("searched_matched_pooled", "searched, matched cost")):
            t = b.get(key)
            if t:
                pooled = f"{t['mean']:.3f} ± {t['std']:.3f} ({t['n']})"
                lines.append(f"| {label}, pooled over search seeds | {pooled} | | | |")
        lines.append("")
        lines.append(
            "Permutation tests (two-sided, difference of means): "
            + "; ".join(f"{k}: p = {v:.3f}" for k, v in b["p_values"].items())
        )
        for s in b["searches"]:
            lines.append(
                f"- search seed {s['seed']}: final entropy per choice mean {s['mean_entropy']:.3f} "
                f"(min {s['min_entropy']:.3f}, max {s['max_entropy']:.3f}; 1 = uniform; "
                f"{s.get('mean_entropy_at_temperature', s['mean_entropy']):.3f} at the final temperature "
                f"{s.get('final_temperature', 1.0):g}), supernet top-1 "
                f"{'-' if s['supernet_accuracy'] is None else format(s['supernet_accuracy'], '.3f')}, "
                f"cell adds {s['cost']['params']:,} params"
            )
        if b["searches"] and b["searches"][0]["messages"]:
            lines.append(f"- search space: {'; '.join(b['searches'][0]['messages'])}")
        if b["agreement"]:
            a = b["agreement"]
            lines.append(
                f"- derived cells of the search seeds agree on {a['agree']} of {a['total']} decisions "
                f"(differ: {', '.join(a['differ']) or '-'})"
            )
            if "pairwise" in a:
                lines.append(
                    f"- pairwise agreement of the search seeds on the {a['choices']} categorical choices derived "
                    f"one by one: {a['pairwise']:.0%} (chance {a['chance']:.0%}; seeds picking at random agree "
                    f"this often with p = {a['p']:.3g}); type and dimension, derived as one pair (which "
                    f"near-uniform weights make the same for every seed): all seeds share it in "
                    f"{a['joint_agree']} of {a['joint_total']} operations"
                )
        if b["seconds"] == b["seconds"]:  # not NaN (a merged report has no single duration)
            lines.append(f"- {b['seconds']:.0f} s ({b['search_seconds']:.0f} s searching)")
    return "\n".join(lines) + "\n"


def task_fields(args) -> dict:
    """The SearchConfig fields of --task (synthetic: the proxy task; relation: the planted task)."""
    return {"task": args.task, "task_seed": args.task_seed, "task_clips": args.task_clips,
            "task_cache": args.task_cache}


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="resnet,assemblenet", help="resnet and/or assemblenet")
    parser.add_argument("--structure", default="tiny", help="AssembleNet structure of the assemblenet backbone")
    parser.add_argument("--search-seeds", type=_ints, default=[0, 1, 2])
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--search-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200, help="training steps of every compared model")
    parser.add_argument(
        "--task", choices=("synthetic", "relation"), default="synthetic",
        help="synthetic: the 4-class temporal proxy; relation: the planted task that needs attention "
        "(ablation/benchmark.py's relation variant; use --frames 16)",
    )
    parser.add_argument("--task-seed", type=int, default=0, help="relation: the benchmark's seed")
    parser.add_argument("--task-clips", type=int, default=4096, help="relation: training clips (val, test: 1/4)")
    parser.add_argument("--task-cache", default=None, help="relation: folder caching the benchmark's arrays")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--search-batch-size", type=int, default=8)
    parser.add_argument("--num-operations", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.025, help="search: SGD rate of the network weights")
    parser.add_argument(
        "--arch-lr", type=float, default=None,
        help="search: Adam rate of α (default: DARTS 3e-4 scaled to the search length, see attention_search)",
    )
    parser.add_argument("--arch-start", type=float, default=0.0)
    parser.add_argument("--final-temperature", type=float, default=1.0)
    parser.add_argument("--train-lr", type=float, default=1e-3, help="Adam rate of the compared models")
    parser.add_argument("--eval-batches", type=int, default=16)
    parser.add_argument("--recalibration-batches", type=int, default=20)
    parser.add_argument(
        "--cells", type=lambda t: [v for v in t.split(",") if v], default=[],
        help="comma-separated cell.json files to compare instead of searching (skips the search)",
    )
    parser.add_argument(
        "--variants", default="none,non-local,matched,searched,searched-matched",
        help="which variants to train: none, non-local, matched (non-local widened to the searched cells' "
        "params), searched (the derived cells), searched-matched (the derived cells at the width that matches "
        "the non-local block's added params)",
    )
    parser.add_argument(
        "--merge", default=None, help="comma-separated output folders of earlier runs: write one report of them"
    )
    parser.add_argument("--out", default="runs/attention_cells")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.search_seeds)) != len(args.search_seeds):
        parser.error("--seeds and --search-seeds must not repeat a seed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import keras

    if args.merge:
        report = merge([d for d in args.merge.split(",") if d], args)
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "results.md").write_text(table(report))
        print(table(report))
        return 0
    started = time.time()
    report = {"args": vars(args), "keras_backend": keras.backend.backend(), "backbones": []}
    for backbone in (b.strip() for b in args.backbones.split(",") if b.strip()):
        report["backbones"].append(run_backbone(backbone, args, out))
        report["seconds"] = time.time() - started
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "results.md").write_text(table(report))
    print(table(report))
    print(f"total {report['seconds']:.0f} s; {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
