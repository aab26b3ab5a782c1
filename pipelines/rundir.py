"""The run directory: the folder `assemblenet train` writes and evaluate, predict, export, report,
search and evolve read (docs/CONTRACTS.md, "Run directory"). This module is its one owner: the
names of its files, a `RunDir` that turns them into paths, and the JSON reader and atomic writer
every stage uses, so two stages cannot come to disagree on a name.

    run = RunDir(workdir)
    run.write(CONFIG, config.to_json())        # atomic: temp file in the folder, fsync, os.replace
    config = run.read(CONFIG)                   # missing or bad JSON: one-line UserError naming the file
    if run.metrics.exists(): ...

It imports no Keras and no TensorFlow (only `pipelines.checks`, for UserError and the one
implementation of the JSON reader and writer), so any stage, the CLI and the DAGs import it freely.
What is inside `checkpoints/` (latest.json, epoch-NNNNNN/) is `pipelines.train`'s checkpoint format.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipelines import checks
from pipelines.checks import UserError

# -- the files (one name each; what they hold: docs/CONTRACTS.md) ------------------------------------

CONFIG = "config.json"  # TrainConfig as JSON
STRUCTURE = "structure.json"  # the structure trained (the run's own copy; a resume compares with it)
CHECKPOINTS = "checkpoints"  # resumable state (a folder; its inside: pipelines.train)
LOGS = "logs"  # TensorBoard (a folder)
HISTORY = "history.csv"  # one row per epoch (Keras CSVLogger)
MODEL = "model.keras"  # the final model
CONNECTION_WEIGHTS = "connection_weights.json"  # {"<block>": {"<input>": sigmoid(w)}}
ATTENTION_WEIGHTS = "attention_weights.json"  # {"<block>": {"<peer>": softmax(h)}} (search models)
SUMMARY = "summary.json"  # params, FLOPs, structure name, attention mode
CLASSES = "classes.json"  # class names of the training data
PREPROCESS = "preprocess.json"  # RecordSettings of the training data (written once)
RECIPE = "recipe.json"  # the recipe file the run was trained from, if any
METRICS = "metrics.json"  # `evaluate run`'s results and protocol
CHARADES_PREDICTIONS = "predictions.txt"  # Charades submission format
TOYOTA_PREDICTIONS = "predictions.csv"  # Toyota `video,prediction`
LOCK = ".assemblenet.lock"  # held while a process writes the folder (pipelines.locks)

FILES = (CONFIG, STRUCTURE, CHECKPOINTS, LOGS, HISTORY, MODEL, CONNECTION_WEIGHTS, ATTENTION_WEIGHTS, SUMMARY,
         CLASSES, PREPROCESS, RECIPE, METRICS, CHARADES_PREDICTIONS, TOYOTA_PREDICTIONS, LOCK)

# -- reading and writing ------------------------------------------------------------------------------
# One implementation, in pipelines.checks (which cannot import this module back: it would be a cycle);
# the stages take them from here.

read_json = checks.read_json  # (path, what="") -> value; UserError "PATH: no such file" | "PATH:L:C: not valid JSON"
write_json = checks.write_json  # (path, value, *, indent=1, default=None): atomic
write_text = checks.write_text  # (path, text): atomic


class _File:
    """A RunDir attribute: the path of one of the run's files."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: RunDir | None, owner: type | None = None) -> Path:
        if run is None:
            return self  # type: ignore[return-value]  (on the class: the descriptor itself)
        return run.path / self.name


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A run directory at `path`: its files' paths, and their JSON read and written through this module."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    config = _File(CONFIG)
    structure = _File(STRUCTURE)
    checkpoints = _File(CHECKPOINTS)
    logs = _File(LOGS)
    history = _File(HISTORY)
    model = _File(MODEL)
    connection_weights = _File(CONNECTION_WEIGHTS)
    attention_weights = _File(ATTENTION_WEIGHTS)
    summary = _File(SUMMARY)
    classes = _File(CLASSES)
    preprocess = _File(PREPROCESS)
    recipe = _File(RECIPE)
    metrics = _File(METRICS)
    charades_predictions = _File(CHARADES_PREDICTIONS)
    toyota_predictions = _File(TOYOTA_PREDICTIONS)
    lock = _File(LOCK)

    def require(self, *names: str, why: str = "") -> None:
        """Raises a UserError `RUN_DIR: no NAME<why>` for the first of `names` the folder lacks."""
        for name in names:
            if not (self.path / name).exists():
                raise UserError(f"{self.path}: no {name}{why}")

    def read(self, name: str) -> Any:
        """The JSON file `name`; missing or not valid JSON: a one-line UserError naming the file."""
        return read_json(self.path / name)

    def read_if_exists(self, name: str, default: Any = None) -> Any:
        """The JSON file `name`, or `default` when the run has none (bad JSON is still an error)."""
        path = self.path / name
        return read_json(path) if path.exists() else default

    def write(self, name: str, value: Any, *, default=None) -> Path:
        """Writes `value` as the JSON file `name` (indented by 2, as every run-directory JSON file),
        atomically; `default`: json.dumps's converter for values JSON lacks. Returns the path."""
        path = self.path / name
        write_json(path, value, indent=2, default=default)
        return path
