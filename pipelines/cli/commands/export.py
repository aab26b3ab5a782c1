"""`assemblenet export RUN_DIR`: the trained model as a .keras file and a TensorFlow SavedModel."""

import json

from pipelines.rundir import MODEL


def register(subparsers):
    parser = subparsers.add_parser("export", help=f"export RUN_DIR/{MODEL} as .keras + TF SavedModel")
    parser.add_argument("run_dir", help=f"a training run directory (holds {MODEL})")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/export)")
    parser.set_defaults(func=export_command)


def export_command(args) -> int:
    from pipelines.export import export

    result = export(run_dir=args.run_dir, out_dir=args.out)
    print(json.dumps(result, indent=2))
    return 0
