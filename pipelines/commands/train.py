"""`assemblenet train`: train a structure on preprocessed TFRecords into a resumable run directory."""

import json

from pipelines.checks import UserError


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
    add_input_flags(parser)
    parser.set_defaults(func=train_command)


def add_input_flags(parser) -> None:
    """--input-pipeline / --input-workers (shared by train and evaluate; docs/training.md "Input path")."""
    parser.add_argument("--input-pipeline", choices=["auto", "tfdata", "native"], default="auto",
                        help="TFRecord reader: tf.data, or the TensorFlow-free native reader; auto = native "
                        "when TensorFlow is missing or KERAS_BACKEND is jax/torch, else tf.data "
                        "(env ASSEMBLENET_INPUT_PIPELINE)")
    parser.add_argument("--input-workers", type=int, default=None,
                        help="native reader: processes building batches (0 = in the main process; default: "
                        "one per core up to 16, env ASSEMBLENET_INPUT_WORKERS)")


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
    "batch_size": (int, None, 8, "global batch size, split over the replicas (paper: 128)"),
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
    from pipelines.checks import check_structure_file, read_json

    check_structure_file(args.structure)  # before the Keras import: a typo is reported at once
    base = read_json(args.config, "--config") if args.config else {}
    if not isinstance(base, dict):
        raise UserError(f"--config {args.config}: expected a JSON object of TrainConfig fields")
    from pipelines.train import TrainConfig, train

    overrides = {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
    config = TrainConfig.from_json({**base, **overrides, "structure": args.structure})
    result = train(config=config, data=args.data, workdir=args.workdir, eval_data=args.eval_data,
                   classes=args.classes, verbose=2 if args.quiet else "auto",
                   input_pipeline=args.input_pipeline, input_workers=args.input_workers)
    print(json.dumps(result, indent=2))
    return 0
