"""Evaluation: official-format Charades submissions, Toyota Smarthome predictions, and trained runs.

- `evaluate_charades_submission` scores a submission file (one line per video: id then one score per
  class, whitespace-separated, as the official `Charades_v1_classify.m` reads it) against
  `Charades_v1_test.csv`; a video missing from the submission scores -inf for every class.
- `evaluate_toyota_predictions` scores a `video,prediction` CSV; the true class is read from the
  Toyota Smarthome file name `<Activity>_p<subject>_r<take>_v<view>_c<camera>.mp4`.
The file formats themselves are parsed by `preprocessing.charades` and `preprocessing.toyota`.
- `evaluate_model` runs a trained RUN_DIR/model.keras on N clips per video (AssembleNet A.7: five
  clips, max-pooled), scores it and writes RUN_DIR/metrics.json and the predictions.

Bad input never turns into a silent 0: an unknown id, a wrong number of scores, an unknown class
name, a duplicate video raise a ValueError naming the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines import configs, locks, metrics
from pipelines.checks import UserError, check_utf8, read_text
from pipelines.configs import SEED, SIDE, Range, positive, setting
from pipelines.rundir import CONFIG, METRICS, MODEL, RECIPE, RunDir
from pipelines.train_config import DATASETS
from preprocessing import charades, toyota

CHARADES_NUM_CLASSES = charades.NUM_CLASSES


# ----------------------------------------------------------------------------------------------
# Charades.

def read_charades_annotations(path: str | Path,
                              num_classes: int = CHARADES_NUM_CLASSES) -> dict[str, np.ndarray]:
    """`Charades_v1_test.csv` -> {video id: (num_classes,) multi-hot of its actions}, in file order.

    Parsing (and its file:line errors) is `preprocessing.charades.read_annotations`; a video with
    an empty `actions` field gets an all-zero row (and is left out by `metrics.charades_map`).
    """
    labels: dict[str, np.ndarray] = {}
    for video in charades.read_annotations(path, num_classes=num_classes):
        hot = np.zeros(num_classes, dtype=np.int8)
        hot[[a.label for a in video.actions]] = 1
        labels[video.id] = hot
    if not labels:
        raise ValueError(f"{path}: no video found")
    return labels


def read_charades_submission(path: str | Path, num_classes: int,
                             known_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """An official-format submission -> {video id: (num_classes,) float64 scores}.

    Each non-empty line is `<id> <score_0> ... <score_{C-1}>`, whitespace-separated. Raises a
    ValueError naming `path:line` on a wrong number of scores, a non-numeric or NaN score, a
    duplicate id, or an id not in `known_ids` (when given).
    """
    known = None if known_ids is None else set(known_ids)
    scores: dict[str, np.ndarray] = {}
    for number, line in enumerate(read_text(path, "submission").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        video, values = fields[0], fields[1:]
        where = f"{path}:{number}"
        if len(values) != num_classes:
            raise ValueError(f"{where}: video {video!r} has {len(values)} scores, expected {num_classes}")
        if known is not None and video not in known:
            raise ValueError(f"{where}: unknown video id {video!r} (not in the annotations)")
        if video in scores:
            raise ValueError(f"{where}: duplicate video id {video!r}")
        try:
            row = np.array([float(v) for v in values], dtype=np.float64)
        except ValueError as err:
            raise ValueError(f"{where}: video {video!r}: non-numeric score ({err})") from None
        if np.isnan(row).any():
            column = int(np.argmax(np.isnan(row)))
            raise ValueError(f"{where}: video {video!r}: NaN score in column {column}")
        scores[video] = row
    if not scores:
        raise UserError(f"{path}: empty submission (no line '<video id> <score> ...'); nothing to score")
    return scores


def score_charades(predictions: dict[str, np.ndarray], annotations: dict[str, np.ndarray],
                   class_names: Sequence[str] | None = None) -> dict:
    """Official Charades mAP/wAP of `predictions` against `annotations` (both keyed by video id).

    Videos are ranked in annotation order on ties (the official script's order); a video with no
    prediction scores -inf for every class.
    """
    ids = list(annotations)
    num_classes = len(next(iter(annotations.values())))
    missing_row = np.full(num_classes, -np.inf)
    scores = np.stack([predictions.get(v, missing_row) for v in ids])
    labels = np.stack([annotations[v] for v in ids])
    names = list(class_names) if class_names is not None else [f"c{c:03d}" for c in range(num_classes)]
    result = metrics.charades_map(scores, labels).to_json(names)
    result["num_missing_predictions"] = sum(v not in predictions for v in ids)
    result["num_annotated_videos"] = len(ids)
    return result


def evaluate_charades_submission(submission: str | Path, annotations: str | Path,
                                 classes: str | Path | None = None) -> dict:
    """`assemblenet evaluate charades`: {"mAP", "wAP", "per_class_ap", "num_videos", "missing_classes"}."""
    check_utf8(annotations, "annotations")
    check_utf8(classes, "classes")
    class_list = charades.read_classes(classes) if classes else None
    num_classes = len(class_list) if class_list else CHARADES_NUM_CLASSES
    labels = read_charades_annotations(annotations, num_classes)
    predictions = read_charades_submission(submission, num_classes, known_ids=list(labels))
    return score_charades(predictions, labels, [c for c, _ in class_list] if class_list else None)


def write_charades_submission(path: str | Path, predictions: dict[str, np.ndarray]) -> Path:
    """Writes {id: scores} in the official submission format (readable by `read_charades_submission`)."""
    path = Path(path)
    with open(path, "w") as f:
        for video, row in predictions.items():
            f.write(video + " " + " ".join(f"{float(s):.6g}" for s in row) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# Toyota Smarthome.

def read_toyota_predictions(path: str | Path) -> list[tuple[str, str, str]]:
    """A `video,prediction` CSV -> [(video, true activity, predicted activity)].

    The true activity comes from the clip's file name (`preprocessing.toyota.parse_clip_name`; a
    path is reduced to its name). A duplicate video, a bad file name or a predicted name outside the
    31 classes raises a ValueError naming path:line.
    """
    rows = []
    seen: dict[str, int] = {}
    check_utf8(path, "predictions")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"video", "prediction"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {sorted(missing)}; header is {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            video, predicted = (row["video"] or "").strip(), (row["prediction"] or "").strip()
            if not video or not predicted:
                raise ValueError(f"{where}: empty video or prediction")
            clip = toyota.parse_clip_name(Path(video).name, where)
            if clip.id in seen:
                raise ValueError(f"{where}: duplicate video {video!r} (first on line {seen[clip.id]})")
            seen[clip.id] = reader.line_num
            if predicted not in toyota.CLASSES:
                raise ValueError(f"{where}: predicted class {predicted!r} of {video!r} is not one of the "
                                 f"{toyota.NUM_CLASSES} Toyota Smarthome classes (preprocessing.toyota)")
            rows.append((video, clip.activity, predicted))
    if not rows:
        raise ValueError(f"{path}: no prediction found")
    return rows


def score_toyota(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> dict:
    """Accuracy, mean per-class accuracy (over classes present), per-class accuracy, confusion matrix."""
    index = {name: i for i, name in enumerate(classes)}
    for name in list(true) + list(predicted):
        if name not in index:
            raise ValueError(f"unknown class {name!r}; known classes: {list(classes)}")
    t = np.array([index[n] for n in true])
    p = np.array([index[n] for n in predicted])
    matrix = metrics.confusion_matrix(t, p, len(classes))
    per_class = metrics.per_class_accuracy(matrix)
    return {
        "accuracy": metrics.accuracy(t, p),
        "mean_per_class_accuracy": metrics.mean_per_class_accuracy(t, p, len(classes)),
        "num_videos": int(len(t)),
        "per_class_accuracy": {classes[c]: float(a) for c, a in enumerate(per_class) if not math.isnan(a)},
        "classes": list(classes),
        "confusion_matrix": matrix.tolist(),
    }


def evaluate_toyota_predictions(predictions: str | Path) -> dict:
    """`assemblenet evaluate toyota`: {"accuracy", "mean_per_class_accuracy", ...} over the 31 classes."""
    rows = read_toyota_predictions(predictions)
    return score_toyota([r[1] for r in rows], [r[2] for r in rows], toyota.CLASSES)


# ----------------------------------------------------------------------------------------------
# Trained runs.

CHARADES_TEST_SIZE = 256  # AssembleNet A.7: "the spatial resolution used for the testing is 256x256"
CHARADES_TRAIN_SIZE = 224  # ... for a network trained at 224x224 (A.6)
CLIP_STARTS = ("random", "even")
CLIPS = 5  # AssembleNet A.7: five clips per test video, max-pooled


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The settings of `evaluate run` (`evaluate_run`), whose flags are made from these fields. None: the
    run's own (`dataset`) or the recipe's `evaluate` section, else the dataset's protocol (A.7)."""

    dataset: str | None = setting(None, f"default: from RUN_DIR/{CONFIG}", choices=DATASETS)
    clips: int | None = setting(None, f"clips per video (default: the recipe's, else {CLIPS}, AssembleNet A.7)",
                                type=Range(int, 1, 1000))
    clip_starts: str | None = setting(
        None, "where the clips start: random from a fixed seed or evenly spaced (default: the recipe's `crops`; "
        "without a recipe random for Charades, AssembleNet A.7, even for Toyota)", choices=CLIP_STARTS)
    size: int | None = setting(
        None, "test resolution (default: the recipe's, scaled if the run trained at another size than the "
        "recipe's; without a recipe Charades 256 x train size / 224 rounded to a multiple of 32, AssembleNet "
        "A.7, and Toyota the training size)", type=SIDE)
    seed: int = setting(0, "seed of the random clip starts", type=SEED)
    batch_size: int = setting(4, None, type=positive())

    def __post_init__(self):
        configs.check(self)


MODEL_STRIDE = 32  # input sides must be multiples of the network's total stride (build_assemblenet)


def default_test_size(dataset: str, train_size: int) -> int:
    """Charades: 256 for the paper's 224 training (A.7), i.e. the training size scaled by 256/224 and
    rounded to a multiple of 32 (the model's total stride: 112 -> 128, 64 -> 64). Toyota: the
    training size (AssembleNet++ §4 gives no other test resolution)."""
    if dataset == "charades":
        return scaled_test_size(CHARADES_TEST_SIZE, CHARADES_TRAIN_SIZE, train_size)
    return int(train_size)


def scaled_test_size(test_size: int, recipe_train_size: int, train_size: int) -> int:
    """A recipe's test size (`test_size` for its `recipe_train_size` training crops) for a run trained at
    `train_size`: the same ratio, rounded to a multiple of 32 (the model's total stride); the recipe's
    own size when the run trained at the recipe's size."""
    if train_size == recipe_train_size:
        return int(test_size)
    scaled = train_size * test_size / recipe_train_size
    return int(max(round(scaled / MODEL_STRIDE), 1) * MODEL_STRIDE)


def at_size(model, size: int):
    """`model` (functional) with inputs of side `size`: the same layers and weights. AssembleNet is
    fully convolutional up to its global pooling, so it runs at a size other than its training size
    (A.7 tests at 256 a network trained at 224); the saved model.keras has the training size baked in."""
    import keras

    config = model.get_config()
    changed = False
    for layer in config.get("layers", []):
        if layer.get("class_name") == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            if len(shape) >= 4 and (shape[2], shape[3]) != (size, size):
                shape[2] = shape[3] = size
                layer["config"]["batch_shape"] = shape
                changed = True
    if not changed:
        return model
    resized = keras.Model.from_config(config)
    resized.set_weights(model.get_weights())
    return resized


def evaluate_model(*, run_dir: str | Path, data: str, dataset: str, clips: int = CLIPS,
                   batch_size: int = EvaluateConfig.batch_size,
                   frames: int | None = None, size: int | None = None, num_classes: int | None = None,
                   class_names: Sequence[str] | None = None, model=None, clip_starts: str | None = None,
                   seed: int = EvaluateConfig.seed, input_pipeline: str = "auto", input_workers: int | None = None,
                   recipe: str | None = None) -> dict:
    """Scores RUN_DIR/model.keras on the TFRecords `data` (folder or glob); writes RUN_DIR/metrics.json.

    Each test video is seen through `clips` clips, max-pooled (AssembleNet A.7). Charades defaults to
    A.7's protocol: "five random 128 frame crops" -- random starts drawn from `seed` (fixed, so the
    result repeats) -- at "256x256" (`default_test_size`: 256 x train size / 224, rounded to a multiple
    of 32; the loaded model is rebuilt at that size by `at_size`). Toyota defaults to
    evenly spaced clips at the training size. `clip_starts` ('random' | 'even') and `size` override.
    Clips are read by `preprocessing.dataset.make_dataset` or the TensorFlow-free
    `preprocessing.loader.NativeReader` (`input_pipeline`, as in `pipelines.train.build_dataset`).
    Frames and the training size come from RUN_DIR/config.json (a TrainConfig), the number of classes
    from the config or else the data.
    Writes RUN_DIR/predictions.txt (Charades submission format, re-scorable with `evaluate
    charades`) or RUN_DIR/predictions.csv (Toyota `video,prediction`). `model` skips loading.
    `recipe` (the name of the recipe the protocol came from, `evaluate_run`) is recorded in metrics.json.
    """
    import keras

    from model import assemblenet  # noqa: F401  (registers the custom layers for load_model)
    from model.structure import Structure
    from pipelines.checks import check_records, run_settings
    from pipelines.train import find_class_names, num_classes_in, tfrecord_files
    from preprocessing import loader

    if dataset is None:
        raise ValueError(f"evaluate_model: dataset=None; expected one of {DATASETS}")
    configs.check_values(EvaluateConfig, {"dataset": dataset, "clips": clips, "clip_starts": clip_starts,
                                          "size": size, "seed": seed, "batch_size": batch_size})
    if clip_starts is None:
        clip_starts = "random" if dataset == "charades" else "even"
    run = RunDir(run_dir)
    config = _run_config(run)
    frames = frames or _config_value(config, "frames", run)
    size = size or default_test_size(dataset, _config_value(config, "size", run))
    num_classes = num_classes or (config.num_classes if config else None) or num_classes_in(data)
    structure = Structure.from_json(run.structure)
    check_records(data, dataset=dataset, num_classes=num_classes, modalities=structure.modalities,
                  source=f"the run {run.path}", settings=run_settings(run.preprocess),
                  settings_from=str(run.preprocess))
    if model is None:
        model = at_size(keras.models.load_model(run.model), size)
    ds = loader.make_reader(tfrecord_files(data), pipeline=input_pipeline, workers=input_workers,
                            modalities=structure.modalities, frames=frames, size=size, training=False,
                            batch_size=batch_size, dataset=dataset, num_classes=num_classes,
                            clips_per_video=clips, with_ids=True, eval_starts=clip_starts, seed=seed)
    ids, clip_scores, clip_labels = [], [], []
    for inputs, labels, batch_ids in ds:
        batch_ids = loader.to_numpy(batch_ids).reshape(-1)
        clip_scores.append(np.array(keras.ops.convert_to_numpy(model(inputs, training=False))))
        clip_labels.append(np.array(loader.to_numpy(labels)))
        ids.extend(v.decode() if isinstance(v, bytes) else str(v) for v in batch_ids)
    if not ids:
        raise ValueError(f"{data}: no test clip")
    videos, scores = metrics.max_pool_clips(ids, np.concatenate(clip_scores))
    # A video's label is the union of its clips' labels (max-pooled like the scores).
    _, labels = metrics.max_pool_clips(ids, np.concatenate(clip_labels))
    if dataset == "charades":
        names = list(class_names or [f"c{c:03d}" for c in range(num_classes)])
        # Sigmoid is monotonic, so AP is the same as on logits; the file holds probabilities.
        predictions = dict(zip(videos, 1.0 / (1.0 + np.exp(-scores)), strict=True))
        result = score_charades(predictions, dict(zip(videos, labels, strict=True)), names)
        result["chance_mAP"] = metrics.chance_map(labels)
        write_charades_submission(run.charades_predictions, predictions)
    else:
        default = list(toyota.CLASSES) if num_classes == toyota.NUM_CLASSES else None
        names = list(class_names or default or find_class_names(data, num_classes)
                     or [str(c) for c in range(num_classes)])
        true = [names[int(c)] for c in labels.argmax(axis=1)]
        predicted = [names[int(c)] for c in scores.argmax(axis=1)]
        result = score_toyota(true, predicted, names)
        with open(run.toyota_predictions, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["video", "prediction"])
            writer.writerows(zip(videos, predicted, strict=True))
    result.update(dataset=dataset, clips=clips, clip_starts=clip_starts, seed=seed, size=size,
                  frames=frames, data=str(data), recipe=recipe)
    run.write(METRICS, result)
    return result


def evaluate_run(run_dir: str | Path, data: str, *, dataset: str | None = None, clips: int | None = None,
                 batch_size: int = EvaluateConfig.batch_size, size: int | None = None, clip_starts: str | None = None,
                 config: str | Path | None = None, **kwargs) -> dict:
    """Evaluates a training run directory; the dataset kind defaults to the run's config.json.

    The protocol (clips, clip starts, test size) follows a recipe's `evaluate` section: `config` (a
    recipe name or file, as `train --config`), else the recipe the run was trained from
    (RUN_DIR/recipe.json); arguments given here win. The recipe's `size` is for its own training size
    (256 for 224, A.7): a run trained at another size is tested at the same ratio (`scaled_test_size`).
    Without a recipe: CLIPS (5) clips and `evaluate_model`'s dataset defaults. The settings' choices and
    ranges are EvaluateConfig's."""
    from pipelines.configs import recipe_of, run_recipe

    run = RunDir(run_dir)
    run.require(MODEL, why=" (train the run first)")
    run_config = _run_config(run)
    if dataset is None:
        dataset = _config_value(run_config, "dataset", run)
    recipe = recipe_of(config) if config else run_recipe(run_dir)
    if config and recipe is None:
        raise UserError(f"--config {config}: not a recipe (no 'train' and 'evaluate' sections); name one of "
                        "configs/ or a recipe file")
    protocol = (recipe or {}).get("evaluate", {})
    if clips is None:
        clips = int(protocol.get("clips", CLIPS))
    if clip_starts is None:
        clip_starts = protocol.get("crops")
    if size is None and "size" in protocol:
        recipe_size = recipe.get("train", {}).get("size")
        size = protocol["size"] if recipe_size is None else scaled_test_size(
            protocol["size"], recipe_size, _config_value(run_config, "size", run))
    with locks.writer_lock(run.path, "run directory"):  # metrics.json and predictions: one writer
        return evaluate_model(run_dir=run.path, data=data, dataset=dataset, clips=clips, batch_size=batch_size,
                              size=size, clip_starts=clip_starts,
                              recipe=None if recipe is None else recipe.get("name", str(config or RECIPE)),
                              **kwargs)


def _run_config(run: RunDir):
    """RUN_DIR/config.json as the TrainConfig it holds (a bad value: one line naming the file and the
    field), or None when the run has none."""
    from pipelines.train_config import TrainConfig

    return TrainConfig.from_json(run.config) if run.config.exists() else None


def _config_value(config, key: str, run: RunDir):
    """A setting of the run's TrainConfig; without config.json the caller must pass it."""
    if config is None:
        raise ValueError(f"{run.config}: no {key!r}; pass {key}= explicitly")
    return getattr(config, key)
