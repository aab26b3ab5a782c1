"""`assemblenet attention-search`: the AttentionNAS cell search (pipelines/attention_search/)."""

from pipelines.cli.commands import SEED, SIDE, fraction, non_negative, positive


def _ints(text):
    return tuple(int(v) for v in text.split(",") if v.strip())


def _strs(text):
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(subparsers):
    p = subparsers.add_parser(
        "attention-search",
        help="search an AttentionNAS attention cell (one-shot, DARTS-style)",
        description="Trains a supernet cell inside a small backbone and writes OUT/cell.json, "
        "OUT/arch_weights.json, OUT/cell.png, OUT/entropy.png and OUT/search.json (per step: the entropy "
        "of every choice and the cell the weights would give).",
    )
    p.add_argument("--backbone", choices=("resnet", "assemblenet"), default="resnet")
    p.add_argument(
        "--structure", default="tiny", help="AssembleNet structure name or JSON path (assemblenet)"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=positive(), default=200)
    p.add_argument("--frames", type=positive(int, 4096), default=8)
    p.add_argument("--size", type=SIDE, default=32)
    p.add_argument(
        "--data", default=None, help="TFRecord pattern; without it the in-memory --task is used"
    )
    p.add_argument(
        "--task", choices=("synthetic", "relation"), default="synthetic",
        help="without --data: synthetic (4 temporal patterns, endless clips) or relation (same/different "
        "glyphs far apart in space and time, plus a local cue right on 60%%: needs attention; "
        "ablation/benchmark.py, docs/attention_nas.md)",
    )
    p.add_argument("--task-seed", type=SEED, default=0, help="relation: the benchmark's seed (not the search's)")
    p.add_argument("--task-clips", type=positive(), default=4096,
                   help="relation: training clips (val and test: a quarter each)")
    p.add_argument("--task-cache", default=None, help="relation: folder caching the benchmark's arrays")
    p.add_argument("--dataset", choices=("charades", "toyota"), default="charades")
    p.add_argument("--num-classes", type=positive(), default=None,
                   help="classes of --data (without it: the task's, synthetic 4, relation 2)")
    p.add_argument("--batch-size", type=positive(), default=8)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--optimizer", choices=("sgd", "adam"), default="sgd", help="network weights (DARTS: SGD, cosine)"
    )
    p.add_argument("--lr", type=positive(float, 1e4), default=0.025,
                   help="network weights' learning rate (DARTS 0.025)")
    p.add_argument("--lr-min", type=non_negative(float, 1e4), default=0.001,
                   help="end of the cosine schedule (DARTS 0.001)")
    p.add_argument("--weight-decay", type=fraction(), default=3e-4, help="L2 on the network weights (DARTS)")
    p.add_argument(
        "--arch-lr",
        type=positive(float, 1e4),
        default=None,
        help="Adam rate of the architecture weights (default: DARTS's 3e-4 x 19 550 steps spread over this "
        "search's architecture steps, docs/attention_nas.md)",
    )
    p.add_argument("--arch-weight-decay", type=fraction(), default=1e-3, help="L2 on the architecture weights")
    p.add_argument("--arch-start", type=fraction(high_open=True), default=0.0,
                   help="fraction of steps before arch updates")
    p.add_argument(
        "--final-temperature", type=positive(float, 1e4), default=1.0,
        help="softmax temperature at the last step (1 = none)"
    )
    p.add_argument(
        "--heldout-fraction",
        type=fraction(low_open=True, high_open=True),
        default=0.5,
        help="--data: share of the videos (split by id) used only for the architecture steps",
    )
    p.add_argument("--num-operations", type=positive(int, 1000), default=3)
    p.add_argument("--width", type=positive(int, 4096), default=8, help="ResNet base width")
    p.add_argument("--blocks", type=_ints, default=(1, 1, 1, 1), help="ResNet blocks per stage, e.g. 1,1,1,1")
    p.add_argument("--positions", type=_strs, default=("res3_0", "res4_0"), help="ResNet cell positions")
    p.add_argument("--after-levels", type=_ints, default=(2, 3), help="AssembleNet levels that get a cell")
    p.add_argument("--eager", action="store_true", help="no tf.function (faster for a few steps)")
    p.set_defaults(func=run)


def run(args):
    from pipelines.attention_search import SearchConfig, search

    config = SearchConfig(
        backbone=args.backbone,
        structure=args.structure,
        steps=args.steps,
        frames=args.frames,
        size=args.size,
        batch_size=args.batch_size,
        seed=args.seed,
        optimizer=args.optimizer,
        lr=args.lr,
        lr_min=args.lr_min,
        weight_decay=args.weight_decay,
        arch_lr=args.arch_lr,
        arch_weight_decay=args.arch_weight_decay,
        arch_start=args.arch_start,
        final_temperature=args.final_temperature,
        heldout_fraction=args.heldout_fraction,
        num_operations=args.num_operations,
        width=args.width,
        blocks=args.blocks,
        positions=args.positions,
        after_levels=args.after_levels,
        data=args.data,
        dataset=args.dataset,
        num_classes=args.num_classes,
        task=args.task,
        task_seed=args.task_seed,
        task_clips=args.task_clips,
        task_cache=args.task_cache,
        eager=args.eager,
    )
    record = search(config=config, out_dir=args.out)
    accuracy = record["supernet_accuracy"]
    print(
        f"derived cell: {args.out}/cell.json (mean normalised entropy {record['final_mean_entropy']:.3f}"
        + (f", supernet accuracy {accuracy:.3f})" if accuracy is not None else ")")
    )
    return 0
