"""The `assemblenet` command line.

Each module in `pipelines/commands/` defines `register(subparsers)`, which adds one subcommand
and sets `func` to the importable function that does the work. The CLI only parses arguments.
Heavy imports (TensorFlow, Beam, OpenCV) happen inside those functions, so `--help` is fast.
"""

import argparse
import importlib
import pkgutil
import sys

from pipelines import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assemblenet", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
