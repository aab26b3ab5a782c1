"""`assemblenet train`: train a structure on preprocessed TFRecords into a resumable run directory."""

import json

from pipelines.cli.commands import SEED, SIDE, Range, fraction, non_negative, positive
from pipelines.rundir import CONFIG


def register(subparsers):
    parser = subparsers.add_parser(
        "train", help="train AssembleNet(++) on TFRecords (run again with the same flags to resume)")
    parser.add_argument("--structure",
                        help="a named structure (tiny, assemblenet50, ...) or a structure JSON file "
                             "(default: the --config file's)")
    parser.add_argument("--data", required=True, help="training TFRecords: a directory or a file pattern")
    parser.add_argument("--workdir", required=True, help="run directory (config, checkpoints, logs, model)")
    parser.add_argument("--eval-data", help="TFRecords evaluated after every epoch (validation loss/metric)")
    parser.add_argument("--classes", help="class names (.json list, Charades_v1_classes.txt, or one a line); "
                        "default: a classes file found next to the data")
    parser.add_argument("--config",
                        help="a recipe to start from: a shipped one by name (charades_assemblenet50, "
                             "charades_assemblenet_plus50, toyota_cs_assemblenet_plus50; see configs/) or "
                             f"a JSON file (a recipe or a run's {CONFIG}); the flags below override it")
    recipe = parser.add_argument_group("recipe (defaults: the papers' recipe, CPU-sized clips)")
    _add_config_flags(recipe)
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    add_input_flags(parser)
    processes = parser.add_argument_group(
        "several processes and hosts (KERAS_BACKEND=jax; docs/training.md). Every process runs the same "
        "command; --batch-size stays the global batch. Default: the KERAS_DISTRIBUTION_* environment, "
        "else one process")
    processes.add_argument("--coordinator", metavar="HOST:PORT|auto",
                           help="process 0's address, the same for every process; 'auto' lets JAX detect "
                           "SLURM, a Cloud TPU pod slice, Open MPI or Kubernetes")
    processes.add_argument("--num-processes", type=positive(int, 100000), metavar="N", help="processes in the run")
    processes.add_argument("--process-id", type=non_negative(int, 100000), metavar="I",
                           help="this process, 0 .. N-1 (process 0 writes the run directory)")
    parser.set_defaults(func=train_command)


def add_input_flags(parser) -> None:
    """--input-pipeline / --input-workers (shared by train and evaluate; docs/training.md "Input path")."""
    parser.add_argument("--input-pipeline", choices=["auto", "tfdata", "native"], default="auto",
                        help="TFRecord reader: tf.data, or the TensorFlow-free native reader; auto = native "
                        "when TensorFlow is missing or KERAS_BACKEND is jax/torch, else tf.data "
                        "(env ASSEMBLENET_INPUT_PIPELINE)")
    parser.add_argument("--input-workers", type=non_negative(int, 1024), default=None,
                        help="native reader: processes building batches (0 = in the main process; default: "
                        "one per core up to 16, env ASSEMBLENET_INPUT_WORKERS)")


# One flag per TrainConfig field (dashes for underscores): (type, choices, default shown, help).
# Written out rather than read from TrainConfig so that `--help` imports no Keras; a test keeps
# the two in step. Unset flags take TrainConfig's defaults.
FLAGS = {
    "attention": (str, ("none", "static", "self", "peer", "search", "conv"), "none",
                  "connection attention (AssembleNet++ §3.4-3.5)"),
    "default_peers": (bool, None, False, "with --attention peer on a structure without peers, use the "
                      "project's default peers instead of failing (the papers' come from `assemblenet search`)"),
    "dataset": (str, ("charades", "toyota"), "charades",
                "label format: multi-label Charades (sigmoid) or Toyota (softmax)"),
    "num_classes": (positive(), None, None, "default: the num_classes stored in the TFRecords"),
    "frames": (positive(int, 4096), None, 16, "clip length T (paper: 128 for Charades)"),
    "size": (SIDE, None, 64, "square crop size in pixels (paper: 224)"),
    "batch_size": (positive(), None, 8, "global batch size, split over the replicas and processes (paper: 128)"),
    "steps": (positive(), None, 1000, "training steps (paper: 50000)"),
    "steps_per_epoch": (positive(), None, 100, "steps between checkpoints; must divide --steps"),
    "momentum": (fraction(high_open=True), None, 0.9, "SGD momentum"),
    "learning_rate": (positive(float, 1e4), None, None, "peak learning rate (default: per video of the batch, "
                      "AssembleNet A.6: Charades 0.2 x batch size, i.e. 25.6 at 128; Toyota's softmax loss "
                      "3.2/512 x batch size)"),
    "warmup_steps": (non_negative(), None, 0, "linear warm-up steps before the cosine decay (paper: 12000)"),
    "restarts": (non_negative(int, 1000), None, 0, "warm restarts of the cosine (AssembleNet++ §4.3: 1 = two cycles)"),
    "restart_multiplier": (Range(float, 1.0, 1000.0), None, 1.0,
                           "each cosine cycle this many times longer than the last"),
    "weight_decay": (fraction(), None, 0.0001, "L2 of conv/dense kernels, through the momentum (AssembleNet A.6)"),
    "label_smoothing": (fraction(high_open=True), None, 0.2, "label smoothing"),
    "precision": (str, ("fp32", "bf16"), "fp32", "bf16 = Keras mixed_bfloat16 policy"),
    "strategy": (str, ("auto", "cpu", "mirrored", "tpu"), "auto", "distribution (docs/training.md)"),
    "tpu": (str, None, None, "TPU name or grpc://host:port, for --strategy tpu"),
    "seed": (SEED, None, 0, "random seed"),
    "temporal_pool": (str, ("max", "avg"), "max", "the sink's pooling over time: of the features before the FC "
                      "(structure sink pool_then_fc, AssembleNet A.5) or of the per-frame logits (fc_then_pool, "
                      "AssembleNet++ A.3); max for Charades (A.5)"),
}


def _add_config_flags(group, names=None) -> None:
    for name in names or FLAGS:
        kind, choices, default, text = FLAGS[name]
        flag = f"--{name.replace('_', '-')}"
        if kind is bool:  # a switch: absent leaves the config file's value
            group.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=text)
            continue
        group.add_argument(flag, dest=name, type=kind, choices=choices, default=None,
                           help=f"{text} (default: {default})")


def config_from_args(args):
    """The TrainConfig of `--config` (a recipe name or file) with the flags set on top."""
    from pipelines.configs import load_config_file
    from pipelines.train import TrainConfig

    base, _ = load_config_file(args.config) if args.config else ({}, None)
    overrides = {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
    if args.structure is not None:
        overrides["structure"] = args.structure
    elif "structure" not in base:
        raise ValueError("assemblenet train: give --structure, or a --config that names one")
    source = args.config or "flags"
    return TrainConfig.from_json({**base, **overrides}, source=source)


def train_command(args) -> int:
    from pipelines.checks import check_structure_file
    from pipelines.distributed import initialize

    if args.structure:
        check_structure_file(args.structure)  # before the Keras import: a typo is reported at once
    initialize(args.coordinator, args.num_processes, args.process_id)
    from pipelines.configs import recipe_of
    from pipelines.train import train

    config = config_from_args(args)
    result = train(config=config, data=args.data, workdir=args.workdir, eval_data=args.eval_data,
                   classes=args.classes, verbose=2 if args.quiet else "auto",
                   input_pipeline=args.input_pipeline, input_workers=args.input_workers,
                   recipe=recipe_of(args.config))
    print(json.dumps(result, indent=2))
    return 0
