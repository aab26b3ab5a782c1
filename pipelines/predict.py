"""Prediction on one raw video with a trained run: the training data's preprocessing, then top classes.

The video goes through exactly the path of the training data: `pipelines.preprocess.process_video`
(decode at the run's fps and frame size, TV-L1 flow, the segmenter's object masks, one
SequenceExample) and the evaluation reader with `evaluate run`'s protocol (Charades: `clips` random
starts from seed 0 at the test size, AssembleNet A.7; Toyota: evenly spaced; centre crop), so the model
sees what it saw in evaluation. Clip scores are max-pooled
(AssembleNet A.7), then turned into probabilities: sigmoid per class for multi-label Charades,
softmax for Toyota Smarthome.

The preprocessing settings come from RUN_DIR/preprocess.json, which `train` copies from the
TFRecords' summary.json; class names from RUN_DIR/classes.json when training found a classes file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.checks import dataset_class_names
from pipelines.rundir import CLASSES, CONFIG, MODEL, STRUCTURE, RunDir
from pipelines.train_config import TrainConfig


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """config.json (a TrainConfig), structure.json, preprocess.json and classes.json of a run (the last two
    optional). A bad value in config.json is one line naming the file and the field."""
    from model.structure import Structure
    from pipelines.checks import run_settings

    run = RunDir(run_dir)
    run.require(CONFIG, STRUCTURE, MODEL, why="; is this a finished training run directory?")
    settings = run_settings(run.preprocess)  # preprocessing.records.RecordSettings
    return {
        "config": TrainConfig.from_json(run.config),
        "structure": Structure.from_json(run.structure),
        "preprocess": settings.to_json() if settings is not None else None,
        "classes": run.read_if_exists(CLASSES),
    }


def predict(*, run_dir: str | Path, video: str | Path, top: int = 5, clips: int = 5,
            segmenter: str | None = None, fps: float | None = None, size: int | None = None,
            flow: str | None = None, model=None) -> list[tuple[str, float]]:
    """The `top` (class name, probability) pairs for `video`, best first.

    `segmenter`, `fps`, `size` and `flow` default to the run's preprocess.json; pass them for a run
    trained on data without one. `model` skips loading RUN_DIR/model.keras (tests, repeated calls).
    """
    scores = video_scores(run_dir=run_dir, video=video, clips=clips, segmenter=segmenter, fps=fps,
                          size=size, flow=flow, model=model)
    run = load_run(run_dir)
    names = run["classes"] or dataset_class_names(run["config"].dataset, None, len(scores)) \
        or [f"class {i}" for i in range(len(scores))]
    order = np.argsort(-scores, kind="stable")[:top]
    return [(names[i], float(scores[i])) for i in order]


def video_scores(*, run_dir: str | Path, video: str | Path, clips: int = 5, segmenter: str | None = None,
                 fps: float | None = None, size: int | None = None, flow: str | None = None,
                 model=None) -> np.ndarray:
    """Per-class probabilities (num_classes,) of one video."""
    import keras

    import pipelines.train  # noqa: F401  (registers the learning-rate schedule in model.keras)
    from model import assemblenet  # noqa: F401  (registers the custom layers for load_model)
    from pipelines.evaluate import at_size, default_test_size
    from pipelines.preprocess import PreprocessConfig, VideoTask, process_video
    from preprocessing.loader import make_reader, to_numpy, write_records
    from preprocessing.segment import make_segmenter

    folder, video = RunDir(run_dir), Path(video)
    run = load_run(folder.path)
    config, structure, stored = run["config"], run["structure"], run["preprocess"] or {}
    settings = {"fps": fps, "size": size, "flow": flow, "segmenter": segmenter}
    for key, value in settings.items():
        if value is None:
            if key not in stored:
                raise ValueError(f"{folder.preprocess} has no {key!r} (the training data had no "
                                 f"summary.json): pass --{key}")
            settings[key] = stored[key]
    if "flow" in structure.modalities and settings["flow"] == "none":
        raise ValueError(f"{folder.path}: the model takes flow, but flow='none'")
    if "object" in structure.modalities and settings["segmenter"] in (None, "", "none"):
        raise ValueError(f"{folder.path}: the model takes object masks: pass a segmenter (--segmenter)")
    if not video.is_file():
        raise ValueError(f"{video}: no such video file")

    if config.num_classes is None:
        raise ValueError(f"{folder.config}: num_classes is null (a finished run records its classes)")
    num_classes = config.num_classes
    pre = PreprocessConfig(dataset=config.dataset, num_classes=num_classes, fps=float(settings["fps"]),
                           size=int(settings["size"]), flow=settings["flow"], segmenter=settings["segmenter"],
                           videos_dir=str(video.parent))
    segment = make_segmenter(pre.segmenter, videos_dir=video.parent) if "object" in structure.modalities \
        else None
    task = VideoTask(id=video.stem, path=str(video), labels=(), label_start=(), label_end=())
    serialized, _ = process_video(task, pre, segment)
    if model is None:
        model = keras.models.load_model(folder.model)
    # The clips `evaluate run` scores (pipelines.evaluate: Charades = AssembleNet A.7's random starts
    # from seed 0 at the test size; Toyota = evenly spaced at the training size): clip decisions depend
    # on the video id only, so predict reproduces the evaluation's scores of a test video.
    test_size = default_test_size(config.dataset, config.size)
    if hasattr(model, "get_config"):
        model = at_size(model, test_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "video.tfrecord")
        write_records(path, [serialized])
        ds = make_reader(path, modalities=structure.modalities, frames=config.frames,
                         size=test_size, training=False, batch_size=clips, workers=0, seed=0,
                         eval_starts="random" if config.dataset == "charades" else "even",
                         dataset=config.dataset, num_classes=num_classes, clips_per_video=clips)
        logits = [np.array(keras.ops.convert_to_numpy(model({k: to_numpy(v) for k, v in element[0].items()},
                                                            training=False))) for element in ds]
    pooled = np.concatenate(logits).astype("float64").max(axis=0)  # AssembleNet A.7: max over clips
    if config.dataset == "charades":
        return 1.0 / (1.0 + np.exp(-pooled))
    shifted = np.exp(pooled - pooled.max())
    return shifted / shifted.sum()
