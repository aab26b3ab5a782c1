"""`assemblenet ablate`: the papers' ablations on the controlled benchmark (docs/ablations.md)."""

import argparse

from pipelines.cli.commands import SEED, positive


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative integers separated by commas, e.g. "
                                         f"0,1,2; got {text!r}")
    return seeds


def _suites(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected suite names separated by commas, got {text!r}")
    return names


def _size(text: str) -> int:
    value = _positive(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"expected a multiple of 32 (the model's total stride), got {text!r}")
    return value


def register(subparsers):
    parser = subparsers.add_parser(
        "ablate", help="run ablation suites (AssembleNet++ Tables 1 and 4, Fig. 4b, ...) on the controlled "
                       "benchmark; run again with the same flags to resume")
    parser.add_argument("--suite", required=True, type=_suites,
                        help="comma-separated suites: table1, table4, objects, modalities, evolution, oneshot; "
                             "on --benchmark v2 also connections, attention (docs/ablations.md)")
    parser.add_argument("--out", required=True, help="output folder: results.jsonl, tables, results.md, report/")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="training seeds (default: 0,1,2)")
    budget = parser.add_argument_group("budget (the same for every row)")
    budget.add_argument("--steps", type=_positive, help="training steps per model (default: 1500)")
    budget.add_argument("--batch-size", type=_positive, help="clips per step (default: 32)")
    budget.add_argument("--learning-rate", type=positive(float, 1e4), help="peak learning rate (default: 0.4)")
    budget.add_argument("--frames", type=_positive, help="frames per clip (default: 16)")
    budget.add_argument("--size", type=_size, help="frame side in pixels, a multiple of 32 (default: 64)")
    budget.add_argument("--no-xla", action="store_true",
                        help="TensorFlow on a CPU: compile the train step without XLA (minutes less per model)")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--benchmark", choices=("v1", "v2"), default="v1",
                       help="v1, or v2 with planted answers: a decoy stream and per-clip segmenter failure "
                            "(suites connections and attention need v2; default: v1)")
    bench.add_argument("--bench-seed", type=SEED, default=0, help="the benchmark's seed (default: 0)")
    bench.add_argument("--train-clips", type=_positive, help="training clips (default: 3072)")
    bench.add_argument("--val-clips", type=_positive, help="validation clips, the scored split (default: 768)")
    bench.add_argument("--test-clips", type=_positive, help="test clips, kept for a final check (default: 768)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=ablate_command)


def ablate_command(args) -> int:
    from ablation.benchmark import versioned
    from ablation.harness import Budget
    from ablation.runner import run_suites

    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "learning_rate", "frames", "size")
                 if getattr(args, k) is not None}
    if args.no_xla:
        overrides["jit_compile"] = False
    if "steps" in overrides:
        overrides["warmup_steps"] = overrides["steps"] // 10  # the default budget's 10% warm-up
    budget = Budget(**overrides)
    bench = {k: getattr(args, k) for k in ("train_clips", "val_clips", "test_clips") if getattr(args, k) is not None}
    config = versioned(args.benchmark, seed=args.bench_seed, frames=budget.frames, size=budget.size, **bench)
    # No writer lock: an ablation folder is written by cooperating processes by design (one per suite on
    # one GPU, say); its store is append-only and takes the first row of a run (ablation.runner).
    tables = run_suites(args.suite, out=args.out, seeds=args.seeds, budget=budget, benchmark=config,
                        progress=not args.quiet)
    print(f"{args.out}/results.md ({', '.join(f'{name}: {len(rows)} rows' for name, rows in tables.items())})")
    return 0
