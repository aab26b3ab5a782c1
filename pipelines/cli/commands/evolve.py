"""`assemblenet evolve`: connection-learning-guided evolution of AssembleNet structures (§3.2)."""

import argparse
import json

from model.evolution import SearchSpace
from pipelines.cli.commands import WORKERS, fraction
from pipelines.configs import add_flags, flag_values, from_args
from pipelines.evolve import EvolutionConfig
from pipelines.train_config import TrainConfig

# The proxy training budget of each child: these TrainConfig flags are passed through.
# (--strategy is the search strategy here; children train with the default distribution strategy.)
PROXY_FLAGS = ("dataset", "num_classes", "frames", "size", "batch_size", "steps", "steps_per_epoch",
               "learning_rate", "warmup_steps", "weight_decay", "label_smoothing", "precision", "seed",
               "temporal_pool")
# The search space's flags (--stems, --object-stem, --width-scale, --repeats).
SPACE_FLAGS = ("stem_counts", "object_stem", "width_scale", "repeats")


def _threshold(text: str):
    """--keep-threshold: 'random' or a number in [0, 1] (a bad value is a one-line argparse error)."""
    if text == "random":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'random', got {text!r}")
    return value


def register(subparsers):
    parser = subparsers.add_parser(
        "evolve", help="evolve multi-stream structures (AssembleNet §3.2); run again with the same flags "
                       "to resume")
    parser.add_argument("--data", required=True,
                        help="training TFRecords of the proxy task (directory or glob)")
    parser.add_argument("--eval-data",
                        help="validation TFRecords the fitness is measured on (AssembleNet §3.2); they must "
                             "share no video with --data. Default: --holdout of the --data videos")
    parser.add_argument("--holdout", type=fraction(low_open=True, high_open=True), default=0.2,
                        help="without --eval-data: the fraction of --data's videos (by video-id hash) held out "
                             "to measure fitness; the children train on the rest (default: 0.2)")
    parser.add_argument("--out", required=True,
                        help="search folder: state, children, history, best structure")
    search = parser.add_argument_group("search")
    add_flags(search, EvolutionConfig, ("population_size", "rounds", "tournament_size", "strategy"))
    search.add_argument("--keep-threshold", type=_threshold, default="random",
                        help="B of Eq. 2: a number in [0, 1], or 'random' for B ~ unif(0, 1) per child")
    add_flags(search, EvolutionConfig, ("seed", "fast_path"))  # --search-seed, --fast-path
    search.add_argument("--workers", type=WORKERS, default=1, help="children trained in parallel processes")
    space = parser.add_argument_group("search space")
    add_flags(space, SearchSpace, SPACE_FLAGS)  # model.evolution.SearchSpace's fields and their metadata
    proxy = parser.add_argument_group("proxy training of each child (TrainConfig; paper: 10k steps)")
    add_flags(proxy, TrainConfig, PROXY_FLAGS, overrides=True)
    parser.set_defaults(func=evolve_command)


def configs_from_args(args):
    """(EvolutionConfig, TrainEvaluator) from the parsed flags."""
    from pipelines.evolve import TrainEvaluator

    threshold = None if args.keep_threshold == "random" else float(args.keep_threshold)
    space = from_args(SearchSpace, args, SPACE_FLAGS)
    config = from_args(EvolutionConfig, args, keep_threshold=threshold, space=space)
    train = flag_values(TrainConfig, args, PROXY_FLAGS)
    return config, TrainEvaluator(data=args.data, eval_data=args.eval_data, train=train, holdout=args.holdout)


def evolve_command(args) -> int:
    from pipelines.evolve import run_evolution

    config, evaluator = configs_from_args(args)
    summary = run_evolution(args.out, config, evaluator=evaluator, workers=args.workers)
    print(json.dumps({k: v for k, v in summary.items() if k != "population"}, indent=2))
    return 0
