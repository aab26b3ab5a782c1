"""The metrics' edges: input checks and their messages, the JSON keys, one-video inputs, inferred class
counts and the chance level's defaults (each found by mutation testing, docs/testing.md)."""

import warnings

import numpy as np
import pytest

from pipelines import metrics


def test_average_precision_checks_shapes_and_names_nan_positions():
    with pytest.raises(ValueError, match=r"1-D of the same length, got \(2, 2\) and \(2, 2\)"):
        metrics.average_precision(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"got \(3,\) and \(2,\)"):
        metrics.average_precision([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match=r"NaN at positions \[1, 3\]"):
        metrics.average_precision([0.1, np.nan, 0.3, np.nan], [1, 0, 1, 0])
    assert np.isnan(metrics.average_precision([0.3, 0.2], [0, 0]))


def test_charades_map_on_one_video_and_its_checks():
    result = metrics.charades_map([[0.9, 0.1]], [[1, 1]])
    assert (result.mAP, result.num_videos, result.num_positives.tolist()) == (1.0, 1, [1, 1])
    with pytest.raises(ValueError, match=r"\(videos, classes\), got \(3,\) and \(3,\)"):
        metrics.charades_map([0.1, 0.2, 0.3], [1, 0, 1])
    with pytest.raises(ValueError, match=r"got \(2, 2\) and \(2, 3\)"):
        metrics.charades_map(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="^no video with at least one action: nothing to evaluate$"):
        metrics.charades_map(np.ones((2, 2)), np.zeros((2, 2)))


def test_missing_classes_warning_lists_twenty_and_says_there_are_more():
    labels = np.zeros((2, 23), int)
    labels[:, 0] = 1
    with pytest.warns(UserWarning) as record:
        metrics.charades_map(np.ones((2, 23)), labels)
    (message,) = [str(w.message) for w in record]
    assert message == ("22 of 23 classes have no positive video and are left out of mAP and wAP: "
                       f"{list(range(1, 21))} ...")
    labels[:, 1:3] = 1
    with pytest.warns(UserWarning) as record:
        metrics.charades_map(np.ones((2, 23)), labels)
    assert str(record[0].message).endswith(f"{list(range(3, 23))}")  # exactly 20: no " ..."


def test_result_json_keys_and_default_class_names():
    with pytest.warns(UserWarning, match="^1 of 3 classes"):
        result = metrics.charades_map([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], [[1, 0, 0], [0, 1, 0]])
    assert result.to_json() == {"mAP": 1.0, "wAP": 1.0, "per_class_ap": {"0": 1.0, "1": 1.0},
                                "num_videos": 2, "missing_classes": ["2"]}
    assert result.to_json(["a", "b", "c"])["missing_classes"] == ["c"]
    with pytest.raises(ValueError, match="^2 class names for 3 classes$"):
        result.to_json(["a", "b"])


def test_toyota_checks_and_messages():
    with pytest.raises(ValueError, match=r"same length, got \(2,\) and \(3,\)"):
        metrics.confusion_matrix([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match=r"^true class ids must be in 0\.\.1, got \[2\]$"):
        metrics.confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match=r"^predicted class ids must be in 0\.\.1, got \[-1\]$"):
        metrics.confusion_matrix([0, 1], [0, -1], 2)
    with pytest.raises(ValueError, match=r"need equal, non-empty shapes, got \(2,\) and \(1,\)"):
        metrics.accuracy([0, 1], [1])
    with pytest.raises(ValueError, match="non-empty"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="^no video to evaluate$"):
        metrics.mean_per_class_accuracy([], [])
    assert metrics.accuracy([3], [3]) == 1.0
    assert metrics.mean_per_class_accuracy([2], [2]) == 1.0


def test_mean_per_class_accuracy_infers_the_classes_from_both_sides():
    # A prediction of class 3 (absent from the truth) needs 4 classes; classes 0 and 1: recalls 1/2 and 1.
    assert metrics.mean_per_class_accuracy([0, 0, 1], [0, 3, 1]) == pytest.approx(0.75)
    assert metrics.mean_per_class_accuracy([0, 0, 1], [0, 3, 1], num_classes=5) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="class ids must be in 0..2"):
        metrics.mean_per_class_accuracy([0, 0, 1], [0, 3, 1], num_classes=3)


def test_per_class_accuracy_of_an_absent_class_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recall = metrics.per_class_accuracy([[2, 0, 1], [0, 0, 0], [1, 0, 3]])
    np.testing.assert_allclose(recall, [2 / 3, np.nan, 3 / 4])


def test_chance_map_is_the_mean_over_200_seeded_random_rankings():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    rng = np.random.default_rng(0)
    expected = np.mean([metrics.charades_map(rng.random(labels.shape), labels).mAP for _ in range(200)])
    assert metrics.chance_map(labels) == pytest.approx(expected, abs=1e-12)


def test_messages_list_at_most_ten_offenders():
    scores = np.full(12, np.nan)
    with pytest.raises(ValueError, match=rf"NaN at positions \[{', '.join(map(str, range(10)))}\]$"):
        metrics.average_precision(scores, np.ones(12))
    with pytest.raises(ValueError, match=rf"got \[{', '.join(['5'] * 10)}\]$"):
        metrics.confusion_matrix(np.full(12, 5), np.zeros(12, int), 2)


def test_more_than_twenty_missing_classes_end_with_an_ellipsis():
    labels = np.zeros((2, 22), int)
    labels[:, 0] = 1  # 21 classes missing: 20 listed, then " ..."
    with pytest.warns(UserWarning) as record:
        metrics.charades_map(np.ones((2, 22)), labels)
    assert str(record[0].message).endswith(f"{list(range(1, 21))} ...")


def test_unsigned_scores_rank_by_value_and_counts_are_integers():
    # uint8 scores negated without a float conversion wrap around: -0 = 0 would rank before -5 = 251.
    assert metrics.average_precision(np.array([0, 5, 3], np.uint8), [0, 1, 0]) == 1.0
    assert metrics.confusion_matrix([0, 1], [1, 1], 2).dtype.kind == "i"
