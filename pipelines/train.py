"""Training: the papers' recipe, a resumable run directory, and the distribution strategies.

`train(*, config, data, workdir)` trains one AssembleNet(++) from the preprocessing TFRecords and
writes the run directory of docs/CONTRACTS.md. The recipe (AssembleNet A.6, AssembleNet++ §4):
SGD with momentum 0.9, linear warm-up then cosine decay, optional warm restarts (§4.3 of
AssembleNet++, SGDR: equal cycles, the warm-up inside the first), weight decay 1e-4 as an L2 term
whose gradient goes through the momentum (`MomentumL2`), label smoothing 0.2, no dropout; sigmoid
cross-entropy for multi-label Charades, softmax cross-entropy for Toyota Smarthome. The papers'
full recipes are files in configs/ (`assemblenet train --config charades_assemblenet50`).

Resuming: every `steps_per_epoch` steps the weights, the optimizer variables (momentum slots and
the step counter `iterations`) and the epoch number are written to a fresh folder under
`checkpoints/`, and only then does `checkpoints/latest.json` (replaced atomically) point at it,
so a SIGKILL at any moment leaves the last good checkpoint intact. Started again with the same
config, training continues from that epoch (`initial_epoch`) and `history.csv` is cut back to the
epochs the checkpoint holds, so no epoch is lost or logged twice.

Several processes (JAX, `pipelines.distributed`): every process runs `train` and trains the same
replicated weights on its own shard of the records; only process 0 writes the run directory.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from model.assemblenet import check_peers
from model.optimizer import MomentumL2
from pipelines import compile_cache, distributed, locks, rundir
from pipelines.rundir import RunDir, write_json
from pipelines.train_config import TrainConfig, first_cycle  # the settings, declared without Keras
from preprocessing import charades, records

LATEST = "latest.json"  # in RUN_DIR/checkpoints/: names the newest complete checkpoint
KEEP_CHECKPOINTS = 2


def train(*, config: TrainConfig, data: str, workdir: str | Path, eval_data: str | None = None,
          classes: str | None = None, verbose: int | str = "auto", input_pipeline: str = "auto",
          input_workers: int | None = None, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains `config.structure` on the TFRecords `data` (a directory or glob) into `workdir`.

    Running it again with the same config and workdir resumes from the last checkpoint.
    `eval_data` is scored after every epoch (val_loss, val_pr_auc | val_accuracy). `classes` is a
    class-names file (see `find_class_names`; default: one found next to the data).
    Returns the final epoch's logs plus `steps` (the optimizer's step counter), `epochs`,
    `initial_epoch` (where this call started) and `workdir`. `input_pipeline` ('auto', 'tfdata',
    'native') and `input_workers` choose the reader (`build_dataset`); neither changes the clips, so a run
    may resume with the other one. `recipe` (the whole recipe file `config` came from, if any) is kept
    as RUN_DIR/recipe.json, whose `evaluate` section `pipelines.evaluate.evaluate_run` follows.
    """
    distributed.initialize()  # a no-op unless the environment describes a multi-process run
    # One writer per run directory (pipelines.locks): process 0 of a multi-process run writes it.
    with locks.writer_lock(workdir, "run directory") if distributed.is_chief() else contextlib.nullcontext():
        return _train(config=config, data=data, workdir=workdir, eval_data=eval_data, classes=classes,
                      verbose=verbose, input_pipeline=input_pipeline, input_workers=input_workers,
                      recipe=recipe)


def _train(*, config: TrainConfig, data: str, workdir: str | Path, eval_data: str | None,
           classes: str | None, verbose: int | str, input_pipeline: str,
           input_workers: int | None, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """`train` once the run directory's lock is held."""
    from model.structure import get_structure
    from pipelines.checks import check_records, records_settings, run_settings

    compile_cache.enable()  # under JAX: a resumed run or an equal-shaped child loads its program
    workdir = Path(workdir)
    run = RunDir(workdir)
    distributed.initialize()  # a no-op unless the environment describes a multi-process run
    chief = distributed.is_chief()
    distributed.local_batch_size(config.batch_size)  # fails now if the processes cannot split the batch
    if eval_data and distributed.process_count() > 1:
        raise ValueError(f"--eval-data {eval_data}: validation during a multi-process run is not supported "
                         "(processes would see unequal batches); run `assemblenet evaluate` on the run directory")
    structure = get_structure(config.structure)
    check_peers(structure, config.attention, config.default_peers)  # before anything is written
    # The settings the run's data was made with are written once (preprocess.json, what `predict`
    # repeats); a resume, and the validation data, must be records made with the same ones.
    settings_path = run.preprocess
    saved = run_settings(settings_path)
    info = check_records(data, dataset=config.dataset, num_classes=config.num_classes,
                         modalities=structure.modalities, source="the run", settings=saved,
                         settings_from=str(settings_path))
    settings = records_settings(data, info)
    if eval_data:
        check_records(eval_data, dataset=config.dataset, num_classes=config.num_classes,
                      modalities=structure.modalities, flag="--eval-data", source="the run",
                      settings=settings, settings_from=f"--data {data}")
    if config.num_classes is None:
        config = dataclasses.replace(config, num_classes=num_classes_in(data))
    prepare_workdir(workdir, config, structure, write=chief)
    class_names = find_class_names(data, config.num_classes, classes)
    if class_names is not None and chief:
        _write_json(run.classes, class_names)
    if saved is None and chief:  # what `predict` needs to preprocess a raw video the same way
        _write_json(settings_path, settings.to_json())
    if recipe is not None and chief:  # the evaluation protocol `evaluate run` follows
        _write_json(run.recipe, recipe)

    reader = dict(input_pipeline=input_pipeline, input_workers=input_workers)

    def train_data(initial_epoch: int):
        # A resumed run draws fresh (still deterministic) clips rather than replaying epoch 0's.
        return build_dataset(config, structure, data, training=True, seed=config.seed + initial_epoch, **reader)

    def val_data():
        return build_dataset(config, structure, eval_data, training=False, **reader)

    _, result = train_model(config, structure, workdir, train_data=train_data,
                            val_data=val_data if eval_data else None, verbose=verbose)
    return result


def train_model(config: TrainConfig, structure, workdir: str | Path, *, train_data, val_data=None,
                verbose: int | str = "auto"):
    """The training loop of `train`, given the inputs: returns `(model, result)` (result as `train`'s).

    Seeds, builds and compiles the model under `config`'s precision and distribution, restores the
    latest checkpoint of `workdir` (every process the same one), fits up to `config.steps` and
    writes the final model. `train_data(initial_epoch)` returns this process's infinite stream of
    `(inputs, labels)` batches of `distributed.local_batch_size(config.batch_size)` clips;
    `val_data()` (optional) the validation batches. With several processes only process 0 writes
    the run directory (history.csv, checkpoints, TensorBoard logs, the final model); the others
    train the same replicated weights and save into scratch folders (`_chief_or_scratch`).
    """
    workdir = Path(workdir)
    run = RunDir(workdir)
    chief = distributed.is_chief()
    distributed.check_same_across_processes(
        [zlib.crc32(json.dumps(config.to_json(), sort_keys=True).encode())], "the training config (CRC-32)")
    keras.utils.set_random_seed(config.seed)  # the same initial weights in every process
    with precision_scope(config.precision), distribution_scope(config.strategy, config.tpu):
        schedule = make_schedule(config)
        model = _build_and_compile(config, structure, schedule)
        initial_epoch = restore_checkpoint(model, run.checkpoints)
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        distributed.check_same_across_processes(
            [initial_epoch, step], f"the checkpoint restored from {run.checkpoints} as [epoch, step] (every "
            "process must read the same run directory: put --workdir on a filesystem all hosts share)")
        if chief:
            workdir.mkdir(parents=True, exist_ok=True)
            _truncate_history(run.history, initial_epoch)
        keras.utils.set_random_seed(config.seed + initial_epoch)
        train_ds = train_data(initial_epoch)
        val_ds = val_data() if val_data is not None else None
        callbacks = [_LearningRateLog(schedule),
                     *([_History(str(run.history), append=True)] if chief else []),
                     _Checkpoint(run.checkpoints), *(_tensorboard(run.logs) if chief else [])]
        history = model.fit(train_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=config.steps_per_epoch, validation_data=val_ds,
                            callbacks=callbacks, shuffle=False, verbose=verbose)  # make_dataset shuffles
        steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        with _chief_or_scratch(workdir) as folder:
            write_final(model, structure, config, folder)
    logs = {k: float(v[-1]) for k, v in history.history.items() if v}
    return model, {**logs, "steps": steps, "epochs": config.epochs, "initial_epoch": initial_epoch,
                   "workdir": str(workdir)}


# -- run directory -------------------------------------------------------------------------

def prepare_workdir(workdir: Path, config: TrainConfig, structure, write: bool = True) -> None:
    """Writes structure.json and config.json (the run's own copy of what it trains; only if `write`:
    process 0 of a multi-process run), or, resuming, checks that the config and the structure's content
    are the ones the run was started with before writing anything (pipelines.checks.check_resume)."""
    from pipelines.checks import check_resume

    run = RunDir(workdir)
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
    if run.config.exists():
        check_resume(run.config, run.structure, config.to_json(), structure.to_json(),
                     TrainConfig.from_json(run.config).to_json())
        if run.structure.exists():
            return
    if write:
        _write_json(run.structure, structure.to_json())
        _write_json(run.config, config.to_json())


def _write_json(path: Path, value: Any) -> None:
    write_json(path, value, indent=2, default=_plain)


def _plain(value):
    """numpy scalars and arrays in JSON (connection weights come back as numpy floats)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _truncate_history(path: Path, initial_epoch: int) -> None:
    """Keeps the header and the complete rows of epochs < initial_epoch (they are in the checkpoint).

    CSVLogger writes its row before the checkpoint callback runs, so a kill between the two leaves
    a row for an epoch that will be trained again; a kill mid-write leaves a torn last line.
    """
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, kept = rows[0], []
    for row in rows[1:]:
        if len(row) == len(header) and row[0].isdigit() and int(row[0]) < initial_epoch:
            kept.append(row)
    text = io.StringIO(newline="")
    csv.writer(text).writerows([header, *kept] if kept or initial_epoch else [])
    rundir.write_text(path, text.getvalue())


# -- checkpoints ---------------------------------------------------------------------------

def save_checkpoint(model, directory: Path, epoch: int) -> Path:
    """Writes weights + optimizer variables + {epoch, step} for `epoch` completed epochs."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:06d}"
    tmp = directory / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    try:
        tmp.mkdir()
        model.save_weights(str(tmp / "model.weights.h5"))
        optimizer_values = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        with (tmp / "optimizer.npz").open("wb") as f:
            np.savez(f, *optimizer_values)
        _write_json(tmp / "state.json", {"epoch": epoch, "step": step})
        for f in tmp.iterdir():  # the data must be on disk before latest.json points at it
            _fsync(f)
    except OSError as error:  # a full disk: free what was written, keep the last complete checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the checkpoint {directory / LATEST} names is kept" if (directory / LATEST).exists() \
            else "no earlier checkpoint"
        raise OSError(error.errno, f"{error.strerror or error} while writing the checkpoint of epoch {epoch}; "
                      f"{kept}: free space and run the same command again to resume", str(directory / name)) \
            from None
    final = directory / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_json(directory / LATEST, {"checkpoint": name, "epoch": epoch, "step": step})  # fsync-ed, then renamed
    for old in sorted(directory.glob("epoch-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore_checkpoint(model, directory: Path) -> int:
    """Loads the checkpoint `latest.json` names into the compiled `model`; returns its epoch (0 if none).

    A checkpoint that cannot be read (a truncated or corrupt file: a full disk, a copy cut short) is
    reported in one line naming the file, and the newest intact one is loaded instead (KEEP_CHECKPOINTS
    are kept); when none is intact, a UserError names the newest one's file."""
    from pipelines.checks import UserError

    latest = directory / LATEST
    if not latest.exists():
        return 0
    try:
        named = [json.loads(latest.read_text())["checkpoint"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"warning: {latest}: unreadable ({_first_line(err)}); looking for the newest intact checkpoint",
              file=sys.stderr)
        named = []
    folders = [directory / name for name in dict.fromkeys(
        named + sorted((p.name for p in directory.glob("epoch-*") if p.is_dir()), reverse=True))]
    first_error = None
    for folder in folders:
        try:
            return _load_checkpoint(model, folder)
        except _ForeignCheckpoint:
            raise
        except Exception as err:  # noqa: BLE001  (h5py, zipfile, numpy and JSON each fail their own way)
            where = getattr(err, "checkpoint_file", folder)
            message = f"{where}: truncated or corrupt checkpoint ({_first_line(err)})"
            first_error = first_error or message
            print(f"warning: {message}; trying the one before", file=sys.stderr)
    raise UserError(f"{first_error or directory}: no intact checkpoint to resume from; use a new --workdir")


class _ForeignCheckpoint(ValueError):
    """A readable checkpoint of another model: never skipped over."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_checkpoint(model, folder: Path) -> int:
    def reading(name, load):
        try:
            return load(folder / name)
        except _ForeignCheckpoint:
            raise
        except Exception as err:
            err.checkpoint_file = folder / name
            raise

    state = reading("state.json", lambda path: json.loads(path.read_text()))
    reading("model.weights.h5", lambda path: model.load_weights(str(path)))
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    def load_npz(path):
        with np.load(path) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    values = reading("optimizer.npz", load_npz)
    if len(values) != len(optimizer.variables):
        raise _ForeignCheckpoint(f"{folder}/optimizer.npz holds {len(values)} optimizer variables, the model's "
                                 f"optimizer has {len(optimizer.variables)}: the checkpoint is from another model")
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)
    return int(state["epoch"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- model, loss, optimizer ----------------------------------------------------------------

def make_schedule(config: TrainConfig) -> WarmupCosine:
    return WarmupCosine(config.peak_learning_rate, config.warmup_steps, config.steps,
                        restarts=config.restarts, multiplier=config.restart_multiplier)


def _build_and_compile(config: TrainConfig, structure, schedule):
    from model.assemblenet import build_assemblenet

    model = build_assemblenet(structure, config.num_classes, attention=config.attention,
                              default_peers=config.default_peers, temporal_pool=config.temporal_pool,
                              frames=config.frames, size=config.size)
    return compile_model(model, config, schedule)


def compile_model(model, config: TrainConfig, schedule):
    """Compiles `model` with `config`'s optimizer (MomentumL2 on `schedule`), loss and metrics, and
    builds the optimizer's variables: what every training run of the project trains with."""
    optimizer = MomentumL2(learning_rate=schedule, momentum=config.momentum, l2=config.weight_decay)
    if config.dataset == "charades":
        loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        metrics = [keras.metrics.AUC(curve="PR", multi_label=True, from_logits=True, name="pr_auc")]
    else:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    optimizer.build(model.trainable_variables)
    return model


@keras.saving.register_keras_serializable(package="assemblenet")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then cosine decay to 0 (AssembleNet A.6: 12k warm-up, cosine).

    With `restarts > 0` the run is split into `restarts + 1` cosine cycles that each start again at
    `peak` (SGDR warm restarts, §4.3 of AssembleNet++: "100K training iterations with two 50K
    cycles"). The cycles partition all `total_steps`, so with `multiplier` 1 they are equal
    (total / (restarts + 1)); the warm-up is the start of the first cycle, whose cosine runs from the
    end of the warm-up to the end of that cycle. Cycle k lasts `multiplier` times cycle k-1 (SGDR's
    T_mult).
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, *, restarts: int = 0,
                 multiplier: float = 1.0):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.restarts = int(restarts)
        self.multiplier = float(multiplier)
        if self.restarts < 0 or self.multiplier < 1:
            raise ValueError(f"WarmupCosine: restarts={restarts} must be >= 0 and multiplier={multiplier} >= 1")
        if not 0 <= self.warmup_steps < self.first_cycle:
            raise ValueError(f"WarmupCosine: warmup_steps={warmup_steps} must be shorter than the first "
                             f"cosine cycle ({self.first_cycle:g} of {total_steps} steps with "
                             f"{restarts} restart(s))")

    @property
    def first_cycle(self) -> float:
        """Length of cycle 0 (warm-up included): the cycles' lengths L, mL, m²L, ... sum to total_steps."""
        return first_cycle(self.total_steps, self.restarts, self.multiplier)

    def cycle_starts(self) -> list[float]:
        """The step at which each cycle starts (0 for the first)."""
        first, m = self.first_cycle, self.multiplier
        return [first * k if m == 1 else first * (m**k - 1) / (m - 1) for k in range(self.restarts + 1)]

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = max(self.warmup_steps, 1)
        warmup_lr = self.peak * ops.minimum(step, warm) / warm
        t = ops.clip(step, 0.0, float(self.total_steps))
        first, m = self.first_cycle, self.multiplier
        if m == 1:
            cycle = ops.minimum(ops.floor(t / first), float(self.restarts))
            start, length = cycle * first, ops.ones_like(t) * first
        else:
            cycle = ops.floor(ops.log(1 + t * (m - 1) / first) / math.log(m))
            cycle = ops.minimum(cycle, float(self.restarts))
            start = first * (ops.power(m, cycle) - 1) / (m - 1)
            length = first * ops.power(m, cycle)
        # The first cycle's cosine starts where its warm-up ends.
        offset = ops.where(cycle == 0, float(self.warmup_steps), 0.0)
        progress = ops.clip((t - start - offset) / (length - offset), 0.0, 1.0)
        decay_lr = 0.5 * self.peak * (1 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup_lr, decay_lr)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "restarts": self.restarts, "multiplier": self.multiplier}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# -- data ----------------------------------------------------------------------------------

def build_dataset(config: TrainConfig, structure, pattern: str, *, training: bool, seed: int | None = None,
             input_pipeline: str = "auto", input_workers: int | None = None, shard_index: int = 0,
             num_shards: int = 1):
    """Training: endless batches of exactly `batch_size` clips (runs are counted in steps; epochs are
    checkpoint intervals, and TPUs/XLA want static shapes). Evaluation: one pass.

    `input_pipeline`: 'tfdata' (`preprocessing.dataset`), 'native' (`preprocessing.loader`, no
    TensorFlow), or 'auto' (`preprocessing.loader.select_pipeline`). Both cut the same clips.
    With several processes (`pipelines.distributed`) each reads its own disjoint shard of the records
    and batches of its part of the global batch.
    """
    from preprocessing import loader

    options = dict(modalities=structure.modalities, frames=config.frames, size=config.size,
                   training=training, batch_size=distributed.local_batch_size(config.batch_size),
                   dataset=config.dataset, num_classes=config.num_classes,
                   seed=config.seed if seed is None else seed, repeat=training, **distributed.input_shard())
    if loader.select_pipeline(input_pipeline) == "tfdata":
        from preprocessing.dataset import make_dataset

        return make_dataset(tfrecord_files(pattern), **options)
    return loader.keras_data(loader.NativeReader(tfrecord_files(pattern), workers=input_workers, **options))


def tfrecord_files(data: str) -> list[str]:
    """The TFRecord files of `data`: a glob, a file, or a directory (preprocessing.records owns the listing)."""
    from preprocessing.records import tfrecord_files as listing

    return listing(data)


def file_pattern(data: str) -> list[str]:
    """`data` as make_dataset's `file_pattern` (a list of files is a list of globs)."""
    return tfrecord_files(data)


def _data_folder(data: str) -> Path:
    from preprocessing.records import data_folder

    return data_folder(data)


def num_classes_in(data: str) -> int:
    """The label-space size stored in the records (the schema's `num_classes` context key of the first
    non-empty file's header; check_records has made sure every file agrees)."""
    from preprocessing.records import read_header

    files = tfrecord_files(data)
    for path in files:
        header = read_header(path)
        if header is not None:
            return header.num_classes
    raise ValueError(f"--data {data}: every TFRecord file is empty; cannot read num_classes")


CLASS_FILES = (records.CLASSES, "classes.txt", charades.CLASSES_FILE)


def find_class_names(data: str, num_classes: int, classes: str | None = None) -> list[str] | None:
    """Class names from `classes`, else from a classes file in the TFRecords' folder or the two above.

    A `.json` file is a list of names; `Charades_v1_classes.txt` (or any file of `cNNN Name` lines)
    gives the names without their codes; any other text file is one name per line.
    """
    if classes is not None:
        candidates = [Path(classes)]
        if not candidates[0].is_file():
            raise ValueError(f"--classes {classes}: no such file")
    else:
        folder = _data_folder(data)
        candidates = [d / name for d in (folder, folder.parent, folder.parent.parent) for name in CLASS_FILES]
    for path in candidates:
        if not path.is_file():
            continue
        if path.suffix == ".json":
            names = [str(n) for n in rundir.read_json(path)]
        else:
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            coded = all(re.match(r"^c\d{3} ", line) for line in lines)
            names = [line.partition(" ")[2] for line in lines] if coded else lines
        if len(names) != num_classes:
            raise ValueError(f"{path}: {len(names)} class names, but the data has {num_classes} classes")
        return names
    return None


# -- final artifacts -----------------------------------------------------------------------

def write_final(model, structure, config: TrainConfig, workdir: Path) -> None:
    """model.keras, connection/attention weights and summary.json (docs/CONTRACTS.md run directory)."""
    from model.pruning import attention_weights, connection_weights
    from model.summary import model_summary

    run = RunDir(workdir)
    tmp = workdir / ".model.tmp.keras"
    try:
        model.save(str(tmp))
    except OSError as error:  # a full disk: the checkpoints are complete, the final model can be redone
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, f"{error.strerror or error}; the checkpoints in {run.checkpoints} are "
                      "kept: free space and run the same command again to write the model",
                      str(run.model)) from None
    os.replace(tmp, run.model)
    _write_json(run.connection_weights, connection_weights(model, structure))
    if config.attention == "search":
        _write_json(run.attention_weights, attention_weights(model, structure))
    summary = model_summary(structure, attention=config.attention, default_peers=config.default_peers,
                            frames=config.frames, size=config.size, num_classes=config.num_classes,
                            temporal_pool=config.temporal_pool)
    _write_json(run.summary,
                {**summary, "structure": structure.name, "attention": config.attention})


# -- callbacks -----------------------------------------------------------------------------

class _LearningRateLog(keras.callbacks.Callback):
    """Adds the step counter and the learning rate of the epoch's last step to its logs (before CSVLogger)."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        logs["step"] = step
        logs["lr"] = float(keras.ops.convert_to_numpy(self.schedule(step - 1)))


class _History(keras.callbacks.CSVLogger):
    """CSVLogger with exactly this run's columns (Keras pads every key with a `val_` twin otherwise)."""

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and logs:
            self.keys = sorted(logs)
        super().on_epoch_end(epoch, logs)


class _Checkpoint(keras.callbacks.Callback):
    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        with _chief_or_scratch(self.directory) as directory:
            save_checkpoint(self.model, directory, epoch + 1)


@contextlib.contextmanager
def _chief_or_scratch(path: Path) -> Iterator[Path]:
    """`path` on process 0; on the others a scratch folder, deleted afterwards.

    Every process runs the save itself because Keras/JAX saving is not local: assigning or reading
    replicated variables may run cross-process checks (JAX's device_put compares values across
    processes), which wait for every process; only process 0's copy lands in the run directory.
    """
    if distributed.is_chief():
        yield path
        return
    scratch = Path(tempfile.mkdtemp(prefix="assemblenet-process-"))
    try:
        (scratch / path.name).mkdir()
        yield scratch / path.name
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tensorboard(logdir: Path) -> list:
    try:
        import tensorflow  # noqa: F401  (Keras' TensorBoard writer needs it)
    except ImportError:
        return []
    return [keras.callbacks.TensorBoard(str(logdir), update_freq="epoch", write_graph=False)]


# -- precision and distribution ------------------------------------------------------------

@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def distribution_scope(strategy: str, tpu: str | None = None) -> Iterator[Any]:
    """Builds, compiles and fits inside this scope.

    TensorFlow backend: `tpu` → TPUStrategy on the TPU `tpu` names (a Cloud TPU name or
    grpc://host:8470); `mirrored` → MirroredStrategy over the local GPUs; `cpu` → one CPU device;
    `auto` → TPU if an address is given, else MirroredStrategy with more than one GPU, else the
    default strategy. JAX backend: data parallelism with keras.distribution.DataParallel over all
    devices (TPU cores or GPUs) when there is more than one, those of every process after
    `pipelines.distributed.initialize`; `cpu` pins JAX to the CPU (its CPU devices, several processes).
    Yields the strategy (TensorFlow) or distribution (JAX), or None.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        with _tf_strategy(strategy, tpu) as scope:
            yield scope
    elif backend == "jax":
        with _jax_distribution(strategy) as scope:
            yield scope
    else:
        raise ValueError(f"KERAS_BACKEND={backend!r}: training supports 'tensorflow' and 'jax'")


@contextlib.contextmanager
def _tf_strategy(strategy: str, tpu: str | None):
    import tensorflow as tf

    if strategy == "tpu" or (strategy == "auto" and tpu):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        chosen = tf.distribute.TPUStrategy(resolver)
    elif strategy == "mirrored" or (strategy == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        chosen = tf.distribute.MirroredStrategy()
    elif strategy == "cpu":
        chosen = tf.distribute.OneDeviceStrategy("/cpu:0")
    else:
        chosen = tf.distribute.get_strategy()
    with chosen.scope():
        yield chosen


@contextlib.contextmanager
def _jax_distribution(strategy: str):
    import jax

    multi_process = distributed.process_count() > 1
    if strategy == "cpu" and not multi_process:
        with jax.default_device(jax.devices("cpu")[0]):
            yield None
        return
    # After distributed.initialize these are the devices of every process (all hosts).
    devices = keras.distribution.list_devices("cpu" if strategy == "cpu" else None)
    if len(devices) <= 1:
        yield None
        return
    previous = keras.distribution.distribution()
    # Each process already reads its own shard of the records (distributed.input_shard), so Keras
    # must not shard the dataset again: it assembles the global batch from the processes' batches.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=not multi_process)
    keras.distribution.set_distribution(distribution)
    try:
        yield distribution
    finally:
        keras.distribution.set_distribution(previous)
