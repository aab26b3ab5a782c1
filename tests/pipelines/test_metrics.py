"""Metrics on hand-computed cases (and sklearn where the definitions agree)."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pipelines import metrics


def test_average_precision_hand_case():
    # Positives at ranks 1 and 3: AP = (1/2)(1/1 + 2/3).
    ap = metrics.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert ap == pytest.approx(0.5 * (1.0 + 2.0 / 3.0))


def test_average_precision_order_independent_of_input_order():
    ap = metrics.average_precision([0.6, 0.7, 0.9, 0.8], [0, 1, 1, 0])
    assert ap == pytest.approx(0.5 * (1.0 + 2.0 / 3.0))


def test_ties_keep_input_order_like_matlab_sort():
    # All scores equal: the ranking is the input order, so the positive at position 3 has precision 1/3.
    assert metrics.average_precision([0.5, 0.5, 0.5], [0, 0, 1]) == pytest.approx(1 / 3)
    assert metrics.average_precision([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(1.0)


def _reference_ap(scores, labels):
    """The official MATLAB definition written out: rank by a stable descending sort (Python's `sorted` is
    stable, so tied videos keep their input order), then average precision@k over the positives' ranks."""
    ranking = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, total = 0, 0.0
    for k, i in enumerate(ranking, start=1):
        if labels[i]:
            hits += 1
            total += hits / k
    return total / hits


def test_ties_among_many_videos_keep_input_order():
    # 60 videos on 4 score levels: long runs of ties mixing positives and negatives. An unstable sort
    # (numpy's default introsort, stable only on short arrays) or one that reverses tied runs ranks them
    # otherwise and changes the AP.
    rng = np.random.default_rng(3)
    for _ in range(5):
        scores = rng.integers(0, 4, size=60) / 4.0
        labels = (rng.random(60) < 0.4).astype(int)
        assert metrics.average_precision(scores, labels) == pytest.approx(_reference_ap(scores, labels), abs=1e-12)
    scores = np.repeat([0.5, 0.25], 20)
    labels = np.tile([0, 1], 20)
    # Within each tied run negatives come first: precision at the j-th positive is j / (2j).
    assert metrics.average_precision(scores, labels) == pytest.approx(0.5)


def test_minus_inf_ranks_last():
    # The positive with -inf comes after both negatives: AP = (1/2)(1/1 + 2/4).
    ap = metrics.average_precision([0.9, -np.inf, 0.1, 0.2], [1, 1, 0, 0])
    assert ap == pytest.approx(0.5 * (1.0 + 0.5))


def test_average_precision_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        metrics.average_precision([0.1, float("nan")], [1, 0])


def test_average_precision_agrees_with_sklearn_without_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.normal(size=50)
        labels = (rng.random(50) < 0.3).astype(int)
        labels[0] = 1
        expected = average_precision_score(labels, scores)
        assert metrics.average_precision(scores, labels) == pytest.approx(expected)


def test_charades_map_and_weighted_ap_hand_case():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.7, 0.2], [0.6, 0.3]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    result = metrics.charades_map(scores, labels)
    ap0 = 0.5 * (1.0 + 2.0 / 3.0)
    ap1 = 0.5 * (1.0 + 2.0 / 2.0)  # class 1: ranks 0.7, 0.3 are the positives at ranks 1 and 2
    assert result.per_class_ap == pytest.approx([ap0, ap1])
    assert result.mAP == pytest.approx((ap0 + ap1) / 2)
    assert result.wAP == pytest.approx((2 * ap0 + 2 * ap1) / 4)
    assert result.num_videos == 4
    assert result.missing_classes == ()


def test_weighted_ap_weights_by_positives():
    scores = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2]])
    labels = np.array([[1, 0], [1, 1], [0, 0]])  # the last video has no action: excluded
    result = metrics.charades_map(scores, labels)
    assert result.num_videos == 2
    assert result.per_class_ap == pytest.approx([1.0, 1.0])
    labels = np.array([[1, 0], [1, 0], [0, 1]])
    result = metrics.charades_map(scores, labels)
    ap1 = 1 / 2  # class 1's positive (0.2) ranks second, after 0.9
    assert result.wAP == pytest.approx((2 * 1.0 + 1 * ap1) / 3)
    assert result.mAP == pytest.approx((1.0 + ap1) / 2)


def test_video_without_action_is_excluded_not_ranked():
    # If the empty video (score 0.95 for class 0) were ranked, class 0's AP would be 1/2, not 1.
    scores = np.array([[0.95, 0.0], [0.9, 0.1], [0.1, 0.9]])
    labels = np.array([[0, 0], [1, 0], [0, 1]])
    result = metrics.charades_map(scores, labels)
    assert result.per_class_ap == pytest.approx([1.0, 1.0])
    assert result.num_videos == 2


def test_class_without_positive_is_listed_and_left_out_with_warning():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.4, 0.8]])
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    with pytest.warns(UserWarning, match="no positive"):
        result = metrics.charades_map(scores, labels)
    assert result.missing_classes == (1,)
    assert np.isnan(result.per_class_ap[1])
    assert result.mAP == pytest.approx(1.0)
    as_json = result.to_json(["a", "b", "c"])
    assert as_json["missing_classes"] == ["b"]
    assert set(as_json["per_class_ap"]) == {"a", "c"}


def test_no_warning_when_every_class_has_a_positive():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.charades_map(np.eye(3), np.eye(3))


def test_max_pool_clips():
    ids = ["a", "b", "a", "b", "a"]
    clip_scores = np.array([[0.1, 0.9], [0.5, 0.5], [0.7, 0.2], [0.4, 0.6], [0.3, -1.0]])
    videos, pooled = metrics.max_pool_clips(ids, clip_scores)
    assert videos == ["a", "b"]
    np.testing.assert_allclose(pooled, [[0.7, 0.9], [0.5, 0.6]])
    with pytest.raises(ValueError, match="one id per clip"):
        metrics.max_pool_clips(["a"], clip_scores)


def test_toyota_accuracies_hand_case():
    # Class 0: 3 videos, 2 right; class 1: 1 video, right; class 2: never true (predicted once).
    true = [0, 0, 0, 1]
    predicted = [0, 0, 2, 1]
    assert metrics.accuracy(true, predicted) == pytest.approx(3 / 4)
    # Mean over the classes present (0 and 1): (2/3 + 1) / 2; class 2 does not count.
    assert metrics.mean_per_class_accuracy(true, predicted, 3) == pytest.approx((2 / 3 + 1) / 2)
    matrix = metrics.confusion_matrix(true, predicted, 3)
    np.testing.assert_array_equal(matrix, [[2, 0, 1], [0, 1, 0], [0, 0, 0]])
    per_class = metrics.per_class_accuracy(matrix)
    assert per_class[:2] == pytest.approx([2 / 3, 1.0])
    assert np.isnan(per_class[2])


def test_confusion_matrix_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="0..1"):
        metrics.confusion_matrix([0, 2], [0, 1], 2)


def test_chance_map_matches_the_exact_expectation_of_one_positive():
    from pipelines.metrics import chance_map

    # Class 0: one positive among n videos at a uniformly random rank k, E[AP] = E[1/k] = H_n / n.
    # Class 1: every video positive (so none is excluded as unlabelled), AP = 1.
    n = 5
    labels = np.zeros((n, 2))
    labels[2, 0] = 1
    labels[:, 1] = 1
    expected = (sum(1 / k for k in range(1, n + 1)) / n + 1) / 2
    assert abs(chance_map(labels, draws=4000) - expected) < 0.02
    assert chance_map(np.eye(4)) < 1.0
