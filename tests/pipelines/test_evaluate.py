"""Scoring official-format Charades submissions and Toyota Smarthome prediction CSVs."""

import json

import numpy as np
import pytest

from pipelines import cli
from pipelines.evaluate import (
    evaluate_charades_submission,
    evaluate_toyota_predictions,
    read_charades_submission,
    write_charades_submission,
)
from preprocessing import toyota

HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"


def _annotations(tmp_path, rows):
    path = tmp_path / "Charades_v1_test.csv"
    lines = [f'{video},S1,Kitchen,6,7,Yes,"a script",cup;dish,"a description",{actions},30.0\n'
             for video, actions in rows]
    path.write_text(HEADER + "".join(lines))
    return path


def _classes(tmp_path, n):
    path = tmp_path / "classes.txt"
    path.write_text("".join(f"c{c:03d} Action number {c}\n" for c in range(n)))
    return path


@pytest.fixture
def charades(tmp_path):
    annotations = _annotations(tmp_path, [
        ("VID01", "c000 1.0 5.0;c002 0.0 3.5"),
        ("VID02", "c001 2.0 9.0"),
        ("VID03", "c000 0.0 4.0"),
        ("VID04", ""),  # no action: excluded
        ("VID05", "c001 1.0 2.0"),
    ])
    return annotations, _classes(tmp_path, 3)


def test_charades_submission_scores_official_way(tmp_path, charades):
    annotations, classes = charades
    submission = tmp_path / "submission.txt"
    submission.write_text("VID01 0.9 0.1 0.8\nVID02 0.2 0.7 0.1\nVID03 0.3 0.8 0.2\n\nVID04 5 5 5\n"
                          "VID05 0.1 0.6 0.3\n")
    result = evaluate_charades_submission(submission, annotations, classes)
    # Class 0 positives VID01 (0.9, rank 1), VID03 (0.3, rank 2) -> 1.
    # Class 1 ranking 0.8 (VID03, neg), 0.7 (VID02, pos), 0.6 (VID05, pos), 0.1 -> (1/2)(1/2 + 2/3).
    # Class 2 single positive VID01 at 0.8, top -> 1.
    ap1 = 0.5 * (0.5 + 2 / 3)
    assert result["per_class_ap"] == pytest.approx({"c000": 1.0, "c001": ap1, "c002": 1.0})
    assert result["mAP"] == pytest.approx((2 + ap1) / 3)
    assert result["wAP"] == pytest.approx((2 * 1.0 + 2 * ap1 + 1 * 1.0) / 5)
    assert result["num_videos"] == 4
    assert result["missing_classes"] == []


def test_missing_video_scores_minus_inf(tmp_path, charades):
    annotations, classes = charades
    submission = tmp_path / "submission.txt"
    # VID03 is missing: class 0's positive VID03 ranks after all 3 scored labelled videos -> rank 4.
    submission.write_text("VID01 0.9 0.1 0.8\nVID02 0.2 0.7 0.1\nVID05 0.1 0.6 0.3\n")
    result = evaluate_charades_submission(submission, annotations, classes)
    assert result["per_class_ap"]["c000"] == pytest.approx(0.5 * (1.0 + 2 / 4))
    assert result["num_missing_predictions"] == 2  # VID03 and the unlabelled VID04


def test_wrong_number_of_scores_names_file_and_line(tmp_path, charades):
    annotations, classes = charades
    submission = tmp_path / "submission.txt"
    submission.write_text("VID01 0.9 0.1 0.8\nVID02 0.2 0.7\n")
    with pytest.raises(ValueError, match=rf"{submission}:2: video 'VID02' has 2 scores, expected 3"):
        evaluate_charades_submission(submission, annotations, classes)


def test_unknown_id_and_bad_score_fail_clearly(tmp_path, charades):
    annotations, classes = charades
    submission = tmp_path / "submission.txt"
    submission.write_text("VID01 0.9 0.1 0.8\nNOPE 0.2 0.7 0.1\n")
    with pytest.raises(ValueError, match=rf"{submission}:2: unknown video id 'NOPE'"):
        evaluate_charades_submission(submission, annotations, classes)
    submission.write_text("VID01 0.9 x 0.8\n")
    with pytest.raises(ValueError, match=rf"{submission}:1: .*non-numeric"):
        evaluate_charades_submission(submission, annotations, classes)
    submission.write_text("VID01 0.9 0.1 0.8\nVID01 0.9 0.1 0.8\n")
    with pytest.raises(ValueError, match=rf"{submission}:2: duplicate"):
        evaluate_charades_submission(submission, annotations, classes)


def test_default_157_classes_and_cli_json(tmp_path, capsys):
    annotations = _annotations(tmp_path, [("A", "c156 0 1;c010 0 1"), ("B", "c010 0 2"), ("C", "c020 1 2")])
    rng = np.random.default_rng(0)
    predictions = {v: rng.random(157) for v in ("A", "B", "C")}
    submission = write_charades_submission(tmp_path / "sub.txt", predictions)
    assert read_charades_submission(submission, 157)["B"] == pytest.approx(predictions["B"], rel=1e-5)
    with pytest.warns(UserWarning, match="154 of 157 classes have no positive"):
        code = cli.main(["evaluate", "charades", "--submission", str(submission),
                         "--annotations", str(annotations), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["per_class_ap"]) == {"c010", "c020", "c156"}
    assert printed["per_class_ap"]["c156"] == 1.0  # a single labelled video for c156: its AP is 1
    assert len(printed["missing_classes"]) == 154
    assert printed["num_videos"] == 3
    # c010: positives A and B among A, B, C, ranked by their random scores.
    ranks = np.argsort(-np.array([predictions[v][10] for v in "ABC"]), kind="stable")
    hits = np.isin(ranks, [0, 1])
    ap10 = (np.cumsum(hits) / np.arange(1, 4))[hits].sum() / 2
    assert printed["per_class_ap"]["c010"] == pytest.approx(ap10, rel=1e-5)
    assert printed["mAP"] == pytest.approx((ap10 + printed["per_class_ap"]["c020"] + 1.0) / 3, rel=1e-5)


def _toyota_csv(tmp_path, rows):
    path = tmp_path / "predictions.csv"
    path.write_text("video,prediction\n" + "".join(f"{v},{p}\n" for v, p in rows))
    return path


def test_toyota_predictions_hand_case(tmp_path, capsys):
    path = _toyota_csv(tmp_path, [
        ("Walk_p01_r00_v01_c01.mp4", "Walk"),
        ("/data/mp4/Walk_p01_r01_v01_c01.mp4", "Walk"),  # a path: the true class is read from its name
        ("Walk_p02_r00_v01_c02.mp4", "Sitdown"),
        ("Sitdown_p03_r00_v01_c01.mp4", "Sitdown"),
    ])
    result = evaluate_toyota_predictions(path)
    assert result["accuracy"] == pytest.approx(3 / 4)
    # Mean over the two classes present: (2/3 + 1) / 2; the 29 absent classes do not count.
    assert result["mean_per_class_accuracy"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert result["per_class_accuracy"] == pytest.approx({"Sitdown": 1.0, "Walk": 2 / 3})
    assert result["classes"] == list(toyota.CLASSES)
    matrix = np.array(result["confusion_matrix"])
    walk, sit = toyota.CLASSES.index("Walk"), toyota.CLASSES.index("Sitdown")
    assert matrix.sum() == 4 and matrix[walk, walk] == 2 and matrix[walk, sit] == 1 and matrix[sit, sit] == 1
    assert cli.main(["evaluate", "toyota", "--predictions", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accuracy"] == pytest.approx(0.75)
    assert printed["mean_per_class_accuracy"] == pytest.approx(5 / 6)


def test_toyota_bad_input_fails_with_file_and_line(tmp_path):
    path = _toyota_csv(tmp_path, [("Walk_p01_r00_v01_c01.mp4", "Walk"),
                                  ("Walk_p01_r01_v01_c01.mp4", "Dance")])
    with pytest.raises(ValueError, match=rf"{path}:3: predicted class 'Dance'"):
        evaluate_toyota_predictions(path)
    path = _toyota_csv(tmp_path, [("Walk_p01_r00_v01_c01.mp4", "Walk"), ("walk.mp4", "Walk")])
    with pytest.raises(ValueError, match=rf"{path}:3: .*does not match"):
        evaluate_toyota_predictions(path)
    path = _toyota_csv(tmp_path, [("Walk_p01_r00_v01_c01.mp4", "Walk"), ("Walk_p01_r00_v01_c01.mp4", "Walk")])
    with pytest.raises(ValueError, match=rf"{path}:3: duplicate video"):
        evaluate_toyota_predictions(path)


def _write_tfrecords(path, videos, *, dataset, num_classes, frames=8, side=32):
    import tensorflow as tf

    from preprocessing.schema import encode_example

    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for video_id, labels in videos:
            writer.write(encode_example(
                video_id=video_id, dataset=dataset, fps=4.0, num_classes=num_classes, labels=labels,
                label_start=[0.0] * len(labels), label_end=[2.0] * len(labels),
                rgb=rng.integers(0, 256, (frames, side, side, 3), dtype=np.uint8),
                flow=rng.integers(0, 256, (frames - 1, side, side, 2), dtype=np.uint8),
                objects=rng.integers(0, 151, (frames, side, side), dtype=np.uint8)))
    return path


@pytest.mark.slow
def test_evaluate_run_charades_writes_rescorable_predictions(tmp_path, capsys):
    from model.assemblenet import build_assemblenet
    from model.structure import tiny
    from pipelines.evaluate import score_charades

    videos = [("v0", [0, 1]), ("v1", [1]), ("v2", []), ("v3", [0])]
    data = _write_tfrecords(tmp_path / "test.tfrecord", videos, dataset="charades", num_classes=4)
    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    build_assemblenet(tiny(), 4, frames=4, size=32).save(run / "model.keras")
    # The settings come from the run's config.json (a TrainConfig), through the CLI.
    (run / "config.json").write_text(json.dumps({"structure": "tiny", "dataset": "charades", "num_classes": 4,
                                                 "frames": 4, "size": 32, "batch_size": 2}))
    with pytest.warns(UserWarning, match="2 of 4 classes have no positive"):
        assert cli.main(["evaluate", "run", str(run), "--data", str(data), "--clips", "2",
                         "--batch-size", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((run / "metrics.json").read_text()) == result
    assert result["num_videos"] == 3  # v2 has no action
    assert result["missing_classes"] == ["c002", "c003"]
    assert result["clips"] == 2
    # predictions.txt holds one pooled row per video, and re-scoring it gives the same numbers.
    predictions = read_charades_submission(run / "predictions.txt", 4)
    assert list(predictions) == ["v0", "v1", "v2", "v3"]
    assert all(((0 < row) & (row < 1)).all() for row in predictions.values())
    labels = {v: np.isin(np.arange(4), c).astype(int) for v, c in videos}
    with pytest.warns(UserWarning):
        again = score_charades(predictions, labels)
    assert again["mAP"] == pytest.approx(result["mAP"], abs=1e-5)
    assert again["per_class_ap"] == pytest.approx(result["per_class_ap"], abs=1e-5)


@pytest.mark.slow
def test_evaluate_model_toyota_max_pools_and_writes_csv(tmp_path):
    from model.structure import tiny
    from pipelines.evaluate import evaluate_model

    walk, sit = toyota.CLASSES.index("Walk"), toyota.CLASSES.index("Sitdown")
    videos = [("Walk_p01_r00_v01_c01", [walk]), ("Sitdown_p01_r00_v01_c01", [sit]),
              ("Walk_p02_r00_v01_c01", [walk])]
    data = _write_tfrecords(tmp_path / "test.tfrecord", videos, dataset="toyota", num_classes=31)
    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    calls = []

    def model(inputs, training=False):
        # Of each video's two clips (consecutive rows), one scores Walk 2 and the other Walk 0, while
        # Sitdown always scores 1: only max-pooling predicts Walk for every video (a mean would tie).
        batch = int(inputs["rgb"].shape[0])
        logits = np.zeros((batch, 31), dtype="float32")
        logits[:, sit] = 1.0
        logits[0::2, walk] = 2.0
        calls.append(batch)
        return logits

    result = evaluate_model(run_dir=run, data=str(data), dataset="toyota", clips=2, frames=4, size=32,
                            num_classes=31, batch_size=2, model=model)
    assert sum(calls) == 6  # 3 videos x 2 clips
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["mean_per_class_accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    rescored = evaluate_toyota_predictions(run / "predictions.csv")
    assert rescored["accuracy"] == pytest.approx(2 / 3)
