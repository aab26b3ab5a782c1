"""`assemblenet train`: train a structure on preprocessed TFRecords into a resumable run directory."""

import json

from pipelines.cli.commands import non_negative, positive
from pipelines.configs import add_flags, flag_values, load_config_file
from pipelines.rundir import CONFIG
from pipelines.train_config import TrainConfig


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
    # One flag per TrainConfig field but --structure (pipelines/train_config.py), laid over the --config
    # file: only the flags given override it; unset fields take TrainConfig's defaults.
    add_flags(recipe, TrainConfig, overrides=True)
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


def config_from_args(args):
    """The TrainConfig of `--config` (a recipe name or file) with the flags set on top."""
    base, _ = load_config_file(args.config) if args.config else ({}, None)
    overrides = flag_values(TrainConfig, args)
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
