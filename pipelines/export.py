"""Export of a trained run for serving: the Keras file and a TensorFlow SavedModel.

`export(run_dir=..., out_dir=...)` writes
  OUT/model.keras      the Keras 3 model (reload with keras.models.load_model, any backend);
  OUT/saved_model/     a TensorFlow SavedModel whose `serve` endpoint (also the
                       `serving_default` signature) takes the dict of modalities of
                       docs/CONTRACTS.md and returns logits (TF Serving, tf.saved_model.load);
  OUT/export.json      the inputs' names, shapes and dtypes and the output, for the serving side;
and copies the run's classes.json when there is one.
The SavedModel needs TensorFlow (Keras' `model.export(format="tf_saved_model")`); under the JAX
backend Keras converts the model with jax2tf, which also needs TensorFlow installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipelines import locks
from pipelines.checks import UserError
from pipelines.rundir import CLASSES, MODEL, RunDir, write_json


def export(*, run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Exports RUN_DIR/model.keras to `out_dir` (default RUN_DIR/export); returns what was written."""

    import pipelines.train  # noqa: F401  (registers the learning-rate schedule held by the optimizer)
    from model import assemblenet  # noqa: F401  (registers the custom layers for load_model)

    run = RunDir(run_dir)
    if not run.model.is_file():
        raise UserError(f"{run.path}: no {MODEL} to export (train the run first)")
    out_dir = Path(out_dir) if out_dir is not None else run.path / "export"
    with locks.writer_lock(out_dir, "export folder"):  # one writer of the export at a time
        return _write_export(run, out_dir)


def _write_export(run: RunDir, out_dir: Path) -> dict[str, Any]:
    import keras

    trained = keras.models.load_model(run.model)
    keras_path = out_dir / MODEL
    # The same graph without the optimizer: serving needs no training state.
    bare = keras.Model(trained.input, trained.output, name=trained.name)
    bare.save(str(keras_path))
    saved_model = out_dir / "saved_model"
    if saved_model.exists():
        shutil.rmtree(saved_model)
    bare.export(str(saved_model), format="tf_saved_model", verbose=False)
    signature = {
        "inputs": {name: {"shape": list(t.shape), "dtype": str(t.dtype)} for name, t in bare.input.items()},
        "output": {"shape": list(bare.outputs[0].shape), "kind": "logits"},
        "endpoint": "serve",
    }
    if run.classes.exists():
        shutil.copyfile(run.classes, out_dir / CLASSES)
    write_json(out_dir / "export.json", signature, indent=2)
    return {"keras": str(keras_path), "saved_model": str(saved_model), **signature}
