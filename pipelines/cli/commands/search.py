"""`assemblenet search`: the one-shot attention search of AssembleNet++ (§3.5) on a block layout."""

import json

from pipelines.configs import add_flags, flag_values, settings
from pipelines.search import OneShotConfig
from pipelines.train_config import TrainConfig

# Every training flag but --attention and --default-peers (the search model always uses
# attention="search": it learns the peers).
SEARCH_TRAIN_FLAGS = tuple(f.name for f in settings(TrainConfig) if f.name not in ("attention", "default_peers"))


def register(subparsers):
    parser = subparsers.add_parser(
        "search", help="train the over-connected one-shot attention model of a layout and prune it "
                       "(AssembleNet++ §3.5)")
    parser.add_argument("--structure", required=True,
                        help="block layout: a named structure or a structure JSON (e.g. evolve's "
                             "best_structure.json)")
    parser.add_argument("--data", required=True, help="training TFRecords: a directory or a file pattern")
    parser.add_argument("--eval-data", help="TFRecords evaluated after every epoch")
    parser.add_argument("--out", required=True,
                        help="output folder: final_structure.json, search_summary.json, run/")
    add_flags(parser, OneShotConfig, ("threshold",))
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    recipe = parser.add_argument_group("training recipe (TrainConfig)")
    add_flags(recipe, TrainConfig, SEARCH_TRAIN_FLAGS, overrides=True)
    parser.set_defaults(func=search_command)


def search_command(args) -> int:
    from pipelines.checks import check_structure_file
    from pipelines.search import run_search

    check_structure_file(args.structure)
    train = flag_values(TrainConfig, args, SEARCH_TRAIN_FLAGS)
    summary = run_search(structure=args.structure, data=args.data, out_dir=args.out, train=train,
                         eval_data=args.eval_data, threshold=args.threshold,
                         verbose=2 if args.quiet else "auto")
    print(json.dumps({k: v for k, v in summary.items() if k != "blocks"}, indent=2))
    return 0
