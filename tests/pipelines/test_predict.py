"""Prediction on one raw video: the training data's preprocessing, the run's classes, top-k."""

import json

import numpy as np
import pytest

from tests.pipelines.test_train import EVAL_CLIPS, trained_run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory.getbasetemp())


def _submission(path):
    """Evaluation's predictions.txt (Charades submission format): {video id: probabilities}."""
    out = {}
    for line in path.read_text().splitlines():
        video, *scores = line.split()
        out[video] = np.array([float(s) for s in scores])
    return out


@pytest.mark.slow
def test_predict_gives_the_evaluation_scores_of_a_test_video(run_dir, capsys):
    """Same preprocessing as the TFRecords, same clips: the scores evaluation wrote for that video."""
    from pipelines import cli
    from pipelines.predict import predict

    expected = _submission(run_dir / "predictions.txt")
    video_id = sorted(expected)[0]
    video = run_dir.parent / "synthetic_charades" / "videos" / f"{video_id}.mp4"
    names = json.loads((run_dir / "classes.json").read_text())

    top = predict(run_dir=run_dir, video=video, top=len(names), clips=EVAL_CLIPS)
    scores = dict(top)
    assert sorted(scores) == sorted(names)
    np.testing.assert_allclose([scores[n] for n in names], expected[video_id], atol=2e-4)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)

    assert cli.main(["predict", "--model", str(run_dir), "--video", str(video), "--top", "3",
                     "--clips", str(EVAL_CLIPS), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [name for name, _ in printed] == [name for name, _ in top[:3]]


@pytest.mark.slow
def test_predict_fails_clearly_without_inputs_the_model_needs(run_dir, tmp_path):
    from pipelines.predict import predict

    video = next((run_dir.parent / "synthetic_charades" / "videos").glob("*.mp4"))
    with pytest.raises(ValueError, match="takes object masks"):
        predict(run_dir=run_dir, video=video, segmenter="none")
    with pytest.raises(ValueError, match="no such video file"):
        predict(run_dir=run_dir, video=tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="no config.json; is this a finished training run"):
        predict(run_dir=tmp_path, video=video)


def test_class_names_travel_from_the_annotations_to_the_records_to_the_run(tiny_charades, tmp_path):
    """The records' folder holds classes.json, wherever it is (not only next to the CSV): training
    finds it there and copies it into the run directory."""
    from pipelines.preprocess import run_preprocess
    from pipelines.train import find_class_names
    from preprocessing import charades

    out = tmp_path / "elsewhere" / "deep" / "records"
    summary = run_preprocess(dataset="charades", videos=tiny_charades["videos_dir"], out=str(out),
                             annotations=tiny_charades["train_csv"], fps=4.0, size=32, flow="none",
                             segmenter="none", progress=False)
    names = [name for _, name in charades.read_classes(tiny_charades["classes_file"])]
    assert json.loads((out / "classes.json").read_text()) == names
    assert find_class_names(str(out), summary["num_classes"]) == names


def test_predict_prints_class_names_not_indices(tmp_path, monkeypatch, capsys):
    """A Toyota run without classes.json still prints the Toyota activity names (the fixed label space)."""
    from model.structure import tiny
    from pipelines import cli
    from pipelines import predict as predict_module
    from preprocessing import toyota

    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    (run / "config.json").write_text(json.dumps({"dataset": "toyota", "num_classes": 31}))
    (run / "model.keras").write_bytes(b"")
    scores = np.linspace(0.0, 1.0, 31)
    monkeypatch.setattr(predict_module, "video_scores", lambda **kwargs: scores)
    assert cli.main(["predict", "--model", str(run), "--video", "v.mp4", "--top", "2"]) == 0
    assert capsys.readouterr().out == f"1.0000  {toyota.CLASSES[30]}\n0.9667  {toyota.CLASSES[29]}\n"


def test_predict_settings_flags_take_the_preprocess_fields_ranges_and_default_to_the_run(capsys):
    """--fps/--size/--flow/--segmenter hold PreprocessConfig's settings; absent, they are None (the run's)."""
    from pipelines import cli

    args = cli.build_parser().parse_args(["predict", "--model", "r", "--video", "v.mp4"])
    assert (args.fps, args.size, args.flow, args.segmenter) == (None, None, None, None)
    args = cli.build_parser().parse_args(["predict", "--model", "r", "--video", "v.mp4", "--fps", "12.5",
                                          "--size", "128", "--flow", "tensor", "--segmenter", "oracle"])
    assert (args.fps, args.size, args.flow, args.segmenter) == (12.5, 128, "tensor", "oracle")
    for flag, value, message in (
            ("--fps", "300", "argument --fps: expected a number in (0, 240], got '300'"),
            ("--size", "4", "argument --size: expected an integer in [8, 4096], got '4'"),
            ("--flow", "none", "argument --flow: invalid choice: 'none'")):  # predict computes a flow
        with pytest.raises(SystemExit):
            cli.main(["predict", "--model", "r", "--video", "v.mp4", flag, value])
        assert message in capsys.readouterr().err
