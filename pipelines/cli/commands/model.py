"""`assemblenet model summary`: params and FLOPs of a structure, its sink order and dead blocks."""

import json

from pipelines.cli.commands import SIDE, positive


def register(subparsers):
    parser = subparsers.add_parser("model", help="inspect a model structure")
    sub = parser.add_subparsers(dest="model_command", required=True)
    summary = sub.add_parser("summary", help="params and FLOPs (multiply-adds x2, per clip)")
    summary.add_argument("--structure", default="assemblenet_plus50", help="a named structure or a JSON path")
    summary.add_argument("--attention", default="none", choices=["none", "static", "self", "peer", "search"])
    summary.add_argument("--default-peers", action="store_true",
                         help="with --attention peer on a structure without peers: the project's default "
                              "peers (the papers' come from `assemblenet search`)")
    summary.add_argument("--frames", type=positive(int, 4096), default=32)
    summary.add_argument("--size", type=SIDE, default=224)
    summary.add_argument("--num-classes", type=positive(), default=157)
    summary.add_argument("--cell", default=None,
                         help="an AttentionNAS cell JSON inserted after the blocks of --cell-levels")
    summary.add_argument("--cell-levels", default="2,3", help="levels whose blocks get the cell")
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.set_defaults(func=summary_command)


def summary_command(args):
    from pipelines.checks import check_structure_file, read_json

    check_structure_file(args.structure)  # before the Keras import: a typo is reported at once
    from model.structure import get_structure
    from model.summary import model_summary

    structure = get_structure(args.structure)
    if args.cell:
        from model.attention_nas import insert_cells

        cell = read_json(args.cell, "--cell")
        levels = tuple(int(v) for v in args.cell_levels.split(","))
        structure = insert_cells(structure, cell, after_levels=levels)
    result = model_summary(structure, attention=args.attention, default_peers=args.default_peers,
                           frames=args.frames, size=args.size, num_classes=args.num_classes)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>12}: {value}")
