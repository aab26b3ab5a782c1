"""`assemblenet attention-search`: the AttentionNAS cell search (pipelines/attention_search/).

Its flags are SearchConfig's fields (pipelines/attention_search/config.py), made by pipelines.configs.add_flags.
"""

from pipelines.attention_search.config import FLAGS_FIRST, FLAGS_REST, SearchConfig
from pipelines.configs import add_flags, from_args


def register(subparsers):
    p = subparsers.add_parser(
        "attention-search",
        help="search an AttentionNAS attention cell (one-shot, DARTS-style)",
        description="Trains a supernet cell inside a small backbone and writes OUT/cell.json, "
        "OUT/arch_weights.json, OUT/cell.png, OUT/entropy.png and OUT/search.json (per step: the entropy "
        "of every choice and the cell the weights would give).",
    )
    add_flags(p, SearchConfig, FLAGS_FIRST)
    p.add_argument("--out", required=True, help="output directory")
    add_flags(p, SearchConfig, FLAGS_REST)
    p.set_defaults(func=run)


def run(args):
    from pipelines.attention_search import search

    config = from_args(SearchConfig, args, FLAGS_FIRST + FLAGS_REST)  # no --num-classes: the task's classes
    record = search(config=config, out_dir=args.out)
    accuracy = record["supernet_accuracy"]
    print(
        f"derived cell: {args.out}/cell.json (mean normalised entropy {record['final_mean_entropy']:.3f}"
        + (f", supernet accuracy {accuracy:.3f})" if accuracy is not None else ")")
    )
    undecided = record["undecided_choices"]
    if undecided:
        print(f"undecided: {len(undecided)} of {len(record['final_entropy'])} choices end with a normalised entropy "
              f"above {record['undecided_threshold']} ({', '.join(undecided)}); the cell takes the lead of "
              f"near-equal weights there. See {args.out}/entropy.png; search longer or with a larger "
              "--arch-lr to decide them.")
    return 0
