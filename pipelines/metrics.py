"""Evaluation metrics, pure numpy.

Charades (AssembleNet A.7, AssembleNet++ §4): the official `Charades_v1_classify` definition.
For each class, all test videos are ranked by score and

    AP_c = (1 / npos_c) · Σ_{k : video at rank k is positive} precision@k        (non-interpolated)

mAP is the mean of AP_c over the classes with at least one positive; the weighted AP (wAP) of the
official scripts weights each class by its number of positives, Σ npos_c·AP_c / Σ npos_c.

Conventions, chosen to match the official MATLAB script (`sort(conf, 'descend')`):
- ties keep the order of the videos as given (a stable sort), so a tie costs the same whatever
  the scores are; callers pass videos in annotation-file order;
- a score of -inf (a video missing from a submission) ranks after every finite score;
- videos with no action at all are excluded before ranking (the official script gives them -inf,
  which is the same unless a labelled video also scores -inf);
- a class with no positive video is reported in `missing_classes` and left out of both means,
  with a warning (its AP is undefined, not 0).

Toyota Smarthome: overall accuracy and mean per-class accuracy (the mean over the classes present
in the ground truth of the recall of that class), and the confusion matrix behind both.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Hashable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# Charades: average precision.

def average_precision(scores, labels) -> float:
    """Non-interpolated AP of one class (official Charades definition); NaN without a positive.

    `scores`: (V,) floats, -inf allowed, NaN not; `labels`: (V,) 0/1. Ties keep input order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-D of the same length, got {scores.shape} and "
                         f"{labels.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scores contain NaN at positions {np.flatnonzero(np.isnan(scores))[:10].tolist()}")
    positive = labels.astype(bool)
    npos = int(positive.sum())
    if npos == 0:
        return float("nan")
    # Stable sort on the negated scores = MATLAB's sort(conf, 'descend'): ties stay in input order.
    order = np.argsort(-scores, kind="stable")
    tp = positive[order]
    precision_at_k = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    return float(precision_at_k[tp].sum() / npos)


@dataclasses.dataclass(frozen=True)
class CharadesResult:
    """The result of `charades_map`. `per_class_ap[c]` is NaN for the classes in `missing_classes`."""

    mAP: float
    wAP: float
    per_class_ap: np.ndarray
    num_positives: np.ndarray
    num_videos: int
    missing_classes: tuple[int, ...]

    def to_json(self, class_names: Sequence[str] | None = None) -> dict:
        """JSON-ready dict; `per_class_ap` keyed by class name (or index) and without missing classes."""
        num_classes = len(self.per_class_ap)
        names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        if len(names) != len(self.per_class_ap):
            raise ValueError(f"{len(names)} class names for {len(self.per_class_ap)} classes")
        return {
            "mAP": self.mAP,
            "wAP": self.wAP,
            "per_class_ap": {names[c]: float(ap) for c, ap in enumerate(self.per_class_ap)
                             if not np.isnan(ap)},
            "num_videos": self.num_videos,
            "missing_classes": [names[c] for c in self.missing_classes],
        }


def charades_map(scores, labels) -> CharadesResult:
    """mAP and wAP over classes (official Charades_v1_classify definition, see the module docstring).

    `scores`: (V, C) floats (-inf for a video without a prediction); `labels`: (V, C) multi-hot.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must both be (videos, classes), got {scores.shape} and "
                         f"{labels.shape}")
    labels = labels.astype(bool)
    labelled = labels.any(axis=1)
    scores, labels = scores[labelled], labels[labelled]
    if len(scores) == 0:
        raise ValueError("no video with at least one action: nothing to evaluate")
    per_class = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])
    num_positives = labels.sum(axis=0)
    missing = tuple(int(c) for c in np.flatnonzero(num_positives == 0))
    if missing:
        more = " ..." if len(missing) > 20 else ""
        warnings.warn(f"{len(missing)} of {scores.shape[1]} classes have no positive video and are left out "
                      f"of mAP and wAP: {list(missing)[:20]}{more}", stacklevel=2)
    present = num_positives > 0
    return CharadesResult(
        mAP=float(per_class[present].mean()),
        wAP=float((per_class[present] * num_positives[present]).sum() / num_positives[present].sum()),
        per_class_ap=per_class,
        num_positives=num_positives,
        num_videos=int(len(scores)),
        missing_classes=missing,
    )


def max_pool_clips(video_ids: Sequence[Hashable], clip_scores) -> tuple[list, np.ndarray]:
    """Multi-view testing (AssembleNet A.7): the scores of a video's N clips are max-pooled.

    `video_ids`: one id per clip (a video's clips need not be adjacent); `clip_scores`: (clips, C).
    Returns the ids in first-seen order and their pooled (videos, C) scores.
    """
    clip_scores = np.asarray(clip_scores, dtype=np.float64)
    if clip_scores.ndim != 2 or len(video_ids) != len(clip_scores):
        raise ValueError(f"need one id per clip row: {len(video_ids)} ids for scores of shape "
                         f"{clip_scores.shape}")
    index: dict = {}
    rows = np.array([index.setdefault(v, len(index)) for v in video_ids], dtype=np.int64)
    pooled = np.full((len(index), clip_scores.shape[1]), -np.inf)
    np.maximum.at(pooled, rows, clip_scores)
    return list(index), pooled


# ----------------------------------------------------------------------------------------------
# Toyota Smarthome: accuracies.

def confusion_matrix(true, predicted, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predicted classes."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError(f"true and predicted must be 1-D of the same length, got {true.shape} and "
                         f"{predicted.shape}")
    for name, values in (("true", true), ("predicted", predicted)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(f"{name} class ids must be in 0..{num_classes - 1}, got "
                             f"{values[bad][:10].tolist()}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def accuracy(true, predicted) -> float:
    """Overall (top-1) accuracy: the fraction of videos whose predicted class is the true one."""
    true = np.asarray(true)
    predicted = np.asarray(predicted)
    if true.shape != predicted.shape or true.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {true.shape} and {predicted.shape}")
    return float((true == predicted).mean())


def per_class_accuracy(matrix) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for classes absent from the ground truth."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)


def mean_per_class_accuracy(true, predicted, num_classes: int | None = None) -> float:
    """Toyota Smarthome's main metric: per-class accuracy averaged over the classes present in `true`."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.size == 0:
        raise ValueError("no video to evaluate")
    if num_classes is None:
        num_classes = int(max(true.max(), predicted.max())) + 1
    return float(np.nanmean(per_class_accuracy(confusion_matrix(true, predicted, num_classes))))


def chance_map(labels, draws: int = 200, seed: int = 0) -> float:
    """Expected mAP of uniformly random scores on these labels (Monte Carlo over `draws` rankings).

    The reference a model's mAP must clear: with few test videos or frequent classes it is far above 0
    (on 5 videos and 6 classes, ~0.57).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes without positives: warned once by the real score
        return float(np.mean([charades_map(rng.random(labels.shape), labels).mAP for _ in range(draws)]))
