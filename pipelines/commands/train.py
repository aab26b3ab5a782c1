"""`assemblenet train`: train a structure on preprocessed TFRecords into a resumable run directory."""

import json


def register(subparsers):
    parser = subparsers.add_parser(
        "train", help="train AssembleNet(++) on TFRecords (run again with the same flags to resume)")
    parser.add_argument("--structure", required=True,
                        help="a named structure (tiny, assemblenet50, ...) or a structure JSON file")
    parser.add_argument("--data", required=True, help="training TFRecords: a directory or a file pattern")
    parser.add_argument("--workdir", required=True, help="run directory (config, checkpoints, logs, model)")
    parser.add_argument("--eval-data", help="TFRecords evaluated after every epoch (validation loss/metric)")
    parser.add_argument("--classes", help="class names (.json list, Charades_v1_classes.txt, or one a line); "
                        "default: a classes file found next to the data")
    parser.add_argument("--config", help="a config.json to start from; the flags below override it")
    recipe = parser.add_argument_group("recipe (defaults: the papers' recipe, CPU-sized clips)")
    _add_config_flags(recipe)
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    processes = parser.add_argument_group(
        "several processes and hosts (KERAS_BACKEND=jax; docs/training.md). Every process runs the same "
        "command; --batch-size stays the global batch. Default: the KERAS_DISTRIBUTION_* environment, "
        "else one process")
    processes.add_argument("--coordinator", metavar="HOST:PORT|auto",
                           help="process 0's address, the same for every process; 'auto' lets JAX detect "
                           "SLURM, a Cloud TPU pod slice, Open MPI or Kubernetes")
    processes.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    processes.add_argument("--process-id", type=int, metavar="I",
                           help="this process, 0 .. N-1 (process 0 writes the run directory)")
    parser.set_defaults(func=train_command)


# One flag per TrainConfig field (dashes for underscores): (type, choices, default shown, help).
# Written out rather than read from TrainConfig so that `--help` imports no Keras; a test keeps
# the two in step. Unset flags take TrainConfig's defaults.
FLAGS = {
    "attention": (str, ("none", "static", "self", "peer", "search"), "none",
                  "connection attention (AssembleNet++ §3.4-3.5)"),
    "dataset": (str, ("charades", "toyota"), "charades",
                "label format: multi-label Charades (sigmoid) or Toyota (softmax)"),
    "num_classes": (int, None, None, "default: the num_classes stored in the TFRecords"),
    "frames": (int, None, 16, "clip length T (paper: 128 for Charades)"),
    "size": (int, None, 64, "square crop size in pixels (paper: 224)"),
    "batch_size": (int, None, 8, "global batch size, split over the replicas and processes (paper: 128)"),
    "steps": (int, None, 1000, "training steps (paper: 50000)"),
    "steps_per_epoch": (int, None, 100, "steps between checkpoints; must divide --steps"),
    "momentum": (float, None, 0.9, "SGD momentum"),
    "learning_rate": (float, None, None, "peak learning rate (default: 0.2 x batch size, AssembleNet A.6)"),
    "warmup_steps": (int, None, 0, "linear warm-up steps before the cosine decay (paper: 12000)"),
    "restarts": (int, None, 0, "warm restarts of the cosine (AssembleNet++ §4.3: 1 = two cycles)"),
    "restart_multiplier": (float, None, 1.0, "each cosine cycle this many times longer than the last"),
    "weight_decay": (float, None, 0.0001, "decay of conv/dense kernels"),
    "label_smoothing": (float, None, 0.2, "label smoothing"),
    "precision": (str, ("fp32", "bf16"), "fp32", "bf16 = Keras mixed_bfloat16 policy"),
    "strategy": (str, ("auto", "cpu", "mirrored", "tpu"), "auto", "distribution (docs/training.md)"),
    "tpu": (str, None, None, "TPU name or grpc://host:port, for --strategy tpu"),
    "seed": (int, None, 0, "random seed"),
    "temporal_pool": (str, ("max", "avg"), "max", "pooling of per-frame logits over time"),
}


def _add_config_flags(group) -> None:
    for name, (kind, choices, default, text) in FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, choices=choices,
                           default=None, help=f"{text} (default: {default})")


def train_command(args) -> int:
    from pipelines.distributed import initialize
    from pipelines.train import TrainConfig, train

    initialize(args.coordinator, args.num_processes, args.process_id)
    base = json.loads(open(args.config).read()) if args.config else {}
    overrides = {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
    config = TrainConfig.from_json({**base, **overrides, "structure": args.structure})
    result = train(config=config, data=args.data, workdir=args.workdir, eval_data=args.eval_data,
                   classes=args.classes, verbose=2 if args.quiet else "auto")
    print(json.dumps(result, indent=2))
    return 0
