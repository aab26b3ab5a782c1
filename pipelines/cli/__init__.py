"""The `assemblenet` command line.

Each module in `pipelines/cli/commands/` defines `register(subparsers)`, which adds one subcommand
and sets `func` to the importable function that does the work. The CLI only parses arguments.
Heavy imports (TensorFlow, Beam, OpenCV) happen inside those functions, so `--help` is fast.

Errors a user can cause (USER_ERRORS: a bad file, flag value, JSON, encoding, a run that does not
fit its data) are printed as one line `assemblenet <command>: error: <message>` with exit status
1 and no traceback; `--debug` anywhere on the command line (or ASSEMBLENET_DEBUG=1) shows the
traceback and TensorFlow's start-up logging, which is otherwise silenced.
"""

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import json
import logging
import math
import os
import pkgutil
import sys
import tempfile

from pipelines.checks import UserError
from pipelines.cli import commands

DEBUG_ENV = "ASSEMBLENET_DEBUG"
# TensorFlow/XLA/gRPC start-up logging (CUDA probing, CPU features, oneDNN) that would bury a one-line
# error; set before anything imports TensorFlow. An explicit setting in the environment wins.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions printed as one line: mistakes in the files, flags and data a user passes.

    UserError (pipelines.checks) is what the library raises at the common mistakes; ValueError also
    covers json.JSONDecodeError, UnicodeDecodeError and the validation of TrainConfig, Structure
    and the readers; OSError covers missing or unreadable files and folders. A TensorFlow OpError
    (a corrupt record, say) counts when TensorFlow was loaded."""
    errors: list[type[BaseException]] = list(USER_ERRORS)
    tf_errors = sys.modules.get("tensorflow.python.framework.errors_impl")
    if tf_errors is not None:
        errors.append(tf_errors.OpError)
    return tuple(errors)


USER_ERRORS = (UserError, ValueError, OSError)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit status 1, like every other user error."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _get_value(self, action, arg_string):
        # Numbers are declared with pipelines.configs.Range (finite, within the flag's bounds); a flag
        # still declared with a bare float gets the finite check here: nan and inf never reach a command.
        value = super()._get_value(action, arg_string)
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentError(action, f"expected a finite number, got {arg_string!r}")
        return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="assemblenet", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help=f"show tracebacks and library logging (also: {DEBUG_ENV}=1); "
                             "accepted anywhere on the command line")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (OSError: 'path: reason'; JSON: its position)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    elif isinstance(error, json.JSONDecodeError):
        text = f"not valid JSON at line {error.lineno} column {error.colno} ({error.msg})"
    elif getattr(error, "message", None) and type(error).__module__.startswith("tensorflow"):
        text = str(error.message).splitlines()[0]  # a tf.errors.OpError: its first line, no graph dump
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere before a `--` (after it come Beam's pipeline options).
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end] or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for i, a in enumerate(argv) if not (a == "--debug" and i < end)]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not debug:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        _quiet_import("tensorflow")
        _quiet_logging()
    prog = f"assemblenet {args.command}"
    try:
        return int(args.func(args) or 0)
    except _user_errors() as error:
        if debug:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


# -- quiet start-up --------------------------------------------------------------------------------

@contextlib.contextmanager
def _stderr_to_file():
    """Sends file descriptor 2 (C++ logging writes there directly) to a temporary file; replays it
    if the block raises, so a failing import still shows why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with _stderr_to_file():
            self.loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Imports `name` (when something first imports it) with its start-up logging silenced.

    TensorFlow logs CUDA probing through absl before its own log level applies ("All log messages
    before absl::InitializeLog() is called are written to STDERR"), so TF_CPP_MIN_LOG_LEVEL alone
    does not silence it; the import stays lazy, so `--help` and light commands stay fast."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _quiet_logging() -> None:
    """Library logging below ERROR is dropped, and Beam's own logging altogether: its import warns
    through the root logger ("apitools not found ...", which installs a handler that then prints
    everything), and a failed worker is logged with its whole traceback before the job raises; the
    command's one-line error says what failed. `--debug` shows both."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.ERROR)
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        root.addHandler(handler)
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)


def _quiet_import(name: str) -> None:
    if name not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder(name))
