"""The real `assemblenet` CLI on broken inputs: one line naming the file, line or field; exit status 1;
no traceback unless --debug or ASSEMBLENET_DEBUG=1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.test_checks import write_records

ROOT = Path(__file__).resolve().parents[2]
CHARADES_HEADER = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"


def run_cli(*args, cwd, env=None):
    # No TF_CPP_MIN_LOG_LEVEL from the test environment: the CLI itself must keep start-up noise out.
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "ASSEMBLENET_DEBUG", "GRPC_VERBOSITY", "GLOG_minloglevel")}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=cwd, text=True,
                          capture_output=True, timeout=600,
                          env={**base, "PYTHONPATH": str(ROOT), **(env or {})})


def assert_one_line(result, line):
    assert (result.returncode, result.stdout, result.stderr) == (1, "", line + "\n"), result.stderr[-3000:]


def test_bad_json_names_file_line_and_column(tmp_path):
    bad = tmp_path / "structure.json"
    bad.write_text('{"name": "mine",\n "nodes": [}\n')
    assert_one_line(run_cli("model", "summary", "--structure", bad, cwd=tmp_path),
                    f"assemblenet model: error: --structure {bad}:2:12: not valid JSON (Expecting value)")
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"nodes": [{"index": 0, "level": 0, "inputs": ["rgb"], "channels": 8},
                                           {"index": 1, "level": 4, "inputs": [7], "channels": 8}]}))
    assert_one_line(run_cli("model", "summary", "--structure", graph, cwd=tmp_path),
                    f"assemblenet model: error: --structure {graph}: block 1: unknown input 7")
    config = tmp_path / "config.json"
    config.write_text('{\n  "steps": 10,\n}\n')
    assert_one_line(run_cli("train", "--structure", "tiny", "--data", tmp_path, "--workdir", tmp_path / "run",
                            "--config", config, cwd=tmp_path),
                    f"assemblenet train: error: --config {config}:3:1: not valid JSON (Expecting property name "
                    "enclosed in double quotes)")


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "structure.json"
    bad.write_text("[")
    for flags, env in ((["--debug"], None), ([], {"ASSEMBLENET_DEBUG": "1"})):
        result = run_cli("model", "summary", "--structure", bad, *flags, cwd=tmp_path, env=env)
        assert result.returncode == 1 and result.stderr.startswith("Traceback (most recent call last):")
        assert result.stderr.rstrip().endswith(f"pipelines.checks.UserError: --structure {bad}:1:2: not valid "
                                               "JSON (Expecting value)")


def test_bad_flag_values_are_one_line_with_status_1(tmp_path):
    assert_one_line(run_cli("train", "--structure", "tiny", "--data", tmp_path, "--workdir", tmp_path,
                            "--steps", "abc", cwd=tmp_path),
                    "assemblenet train: error: argument --steps: invalid int value: 'abc' "
                    "(see assemblenet train --help)")
    assert_one_line(run_cli("evolve", "--data", tmp_path, "--out", tmp_path, "--keep-threshold", "2",
                            cwd=tmp_path),
                    "assemblenet evolve: error: argument --keep-threshold: expected a number in [0, 1] or "
                    "'random', got '2' (see assemblenet evolve --help)")
    assert_one_line(run_cli("evolve", "--data", tmp_path, "--out", tmp_path, "--stems", "2,x", cwd=tmp_path),
                    "assemblenet evolve: error: argument --stems: expected comma-separated ints, e.g. 2,4; "
                    "got '2,x' (see assemblenet evolve --help)")


def test_non_utf8_and_missing_files_name_the_file(tmp_path):
    latin = tmp_path / "predictions.csv"
    latin.write_bytes("video,prediction\nCook.Cut_p02_r00_v02_c03.mp4,Caf\xe9\n".encode("latin-1"))
    assert_one_line(run_cli("evaluate", "toyota", "--predictions", latin, cwd=tmp_path),
                    f"assemblenet evaluate: error: predictions {latin}:2: not UTF-8 text (byte 0xe9); "
                    "save the file as UTF-8")
    missing = tmp_path / "missing.csv"
    assert_one_line(run_cli("evaluate", "toyota", "--predictions", missing, cwd=tmp_path),
                    f"assemblenet evaluate: error: {missing}: No such file or directory")


def _charades_annotations(tmp_path):
    annotations = tmp_path / "Charades_v1_test.csv"
    annotations.write_text(CHARADES_HEADER + "".join(
        f"V{k},s,Kitchen,5,5,Yes,script,obj,desc,c{k % 2:03d} 0.0 1.0,3.0\n" for k in range(4)))
    classes = tmp_path / "Charades_v1_classes.txt"
    classes.write_text("c000 Holding a cup\nc001 Opening a door\n")
    return annotations, classes


def test_evaluate_charades_counts_missing_videos_and_refuses_an_empty_submission(tmp_path):
    annotations, classes = _charades_annotations(tmp_path)
    submission = tmp_path / "submission.txt"
    submission.write_text("V0 0.9 0.1\nV1 0.2 0.8\n")
    result = run_cli("evaluate", "charades", "--submission", submission, "--annotations", annotations,
                     "--classes", classes, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # V2, V3 score -inf (ranked last, in annotation order): AP c000 = (1/1 + 2/3)/2, c001 = (1/1 + 2/4)/2.
    assert result.stdout == "mAP=0.7917  wAP=0.7917  num_videos=4  num_missing_predictions=2\n"
    assert result.stderr == (f"warning: 2 of 4 annotated videos have no line in {submission}; they are "
                             "ranked last for every class\n")
    submission.write_text("\n\n")
    assert_one_line(run_cli("evaluate", "charades", "--submission", submission, "--annotations", annotations,
                            "--classes", classes, cwd=tmp_path),
                    f"assemblenet evaluate: error: {submission}: empty submission (no line '<video id> "
                    "<score> ...'); nothing to score")


@pytest.mark.slow
def test_missing_modality_is_one_line_without_tensorflow_noise(tmp_path):
    """This one imports TensorFlow (the file listing): its CUDA/absl start-up logging must not show."""
    records = tmp_path / "records"
    shard = write_records(records / "train-00000-of-00001.tfrecord", objects=False,
                          summary={"dataset": "charades", "segmenter": "none", "flow": "opencv"})
    assert_one_line(run_cli("train", "--structure", "tiny", "--data", records, "--workdir", tmp_path / "run",
                            cwd=tmp_path),
                    f"assemblenet train: error: --data {records}: {shard}: they hold only rgb+flow, made with "
                    "--segmenter none, but the structure's stems need object (preprocess again with a "
                    "segmenter, or use a structure without those stems)")
    assert not (tmp_path / "run").exists()


# -- numbers: range-checked where the flags are declared (pipelines/cli/commands Range) ----------------------

def _flag_error(capsys, *argv):
    from pipelines import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    assert (exit_.value.code, out, err.count("\n")) == (1, "", 1), err
    return err.rstrip("\n")


@pytest.mark.parametrize("argv, line", [
    (["preprocess", "--dataset", "toyota", "--videos", "v", "--out", "o", "--fps", "1e9"],
     "assemblenet preprocess: error: argument --fps: expected a number in (0, 240], got '1e9'"),
    (["preprocess", "--dataset", "toyota", "--videos", "v", "--out", "o", "--fps", "nan"],
     "assemblenet preprocess: error: argument --fps: expected a number in (0, 240], got 'nan'"),
    (["preprocess", "--dataset", "toyota", "--videos", "v", "--out", "o", "--max-seconds", "inf"],
     "assemblenet preprocess: error: argument --max-seconds: expected a number > 0, got 'inf'"),
    (["train", "--data", "d", "--workdir", "w", "--learning-rate=-inf"],
     "assemblenet train: error: argument --learning-rate: expected a number in (0, 10000], got '-inf'"),
    (["train", "--data", "d", "--workdir", "w", "--label-smoothing", "1"],
     "assemblenet train: error: argument --label-smoothing: expected a number in [0, 1), got '1'"),
    (["evolve", "--data", "d", "--out", "o", "--holdout", "0"],
     "assemblenet evolve: error: argument --holdout: expected a number in (0, 1), got '0'"),
    (["predict", "--model", "m", "--video", "v.mp4", "--clips", "0"],
     "assemblenet predict: error: argument --clips: expected an integer in [1, 1000], got '0'"),
])
def test_numeric_flags_refuse_nan_inf_and_values_out_of_range(capsys, argv, line):
    assert _flag_error(capsys, *argv) == f"{line} (see {line.split(': error')[0]} --help)"


def test_every_numeric_flag_declares_its_range_and_bare_floats_are_still_finite(capsys):
    import argparse

    from pipelines import cli
    from pipelines.cli.commands import Range

    def actions(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from actions(sub)
            else:
                yield parser.prog, action

    bare = [f"{prog} {action.option_strings}" for prog, action in actions(cli.build_parser())
            if action.type in (int, float)]
    assert bare == []
    ranged = [action for _, action in actions(cli.build_parser()) if isinstance(action.type, Range)]
    assert len(ranged) > 60
    parser = cli.Parser(prog="p")
    parser.add_argument("--x", type=float)
    with pytest.raises(SystemExit):
        parser.parse_args(["--x", "nan"])
    assert capsys.readouterr().err == "p: error: argument --x: expected a finite number, got 'nan' (see p --help)\n"


def test_the_library_refuses_nan_and_huge_frame_rates_too(tmp_path):
    from pipelines.preprocess import run_preprocess
    from preprocessing.video import decode_video

    for fps, problem in ((float("nan"), "must be a finite number"), (1e9, r"expected a number in \(0, 240\]")):
        with pytest.raises(ValueError, match=rf"^PreprocessConfig.fps={fps!r}: {problem}$"):
            run_preprocess(dataset="toyota", videos=str(tmp_path), out=str(tmp_path / "out"), fps=fps)
        with pytest.raises(ValueError, match=r"fps must be in \(0, 240\]"):
            decode_video(tmp_path / "missing.mp4", fps=fps)
    for settings, message in (({"size": 4}, "PreprocessConfig.size=4: expected an integer in [8, 4096]"),
                              ({"flow": "farneback"},
                               "PreprocessConfig.flow='farneback': expected one of ('opencv', 'tensor', 'none')"),
                              ({"max_seconds": float("inf")},
                               "PreprocessConfig.max_seconds=inf: must be a finite number"),
                              ({"dataset": "kinetics"}, "PreprocessConfig.dataset='kinetics': expected one of "
                               "('charades', 'toyota')")):
        with pytest.raises(ValueError) as error:
            run_preprocess(**{"dataset": "toyota", "videos": str(tmp_path), "out": str(tmp_path / "out"), **settings})
        assert str(error.value) == message
    assert not (tmp_path / "out").exists()  # refused before anything is read or written


def test_predict_and_evaluate_read_the_run_config_typed_naming_file_and_field(tmp_path, capsys):
    """RUN_DIR/config.json is read back into a TrainConfig: a bad value is one line naming both."""
    from model.structure import tiny
    from pipelines import cli

    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    (run / "model.keras").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"dataset": "charades", "frames": "eight", "num_classes": 4}))
    line = f"{run / 'config.json'}: TrainConfig.frames='eight': expected an integer"
    assert cli.main(["evaluate", "run", str(run), "--data", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err == f"assemblenet evaluate: error: {line}\n"
    assert cli.main(["predict", "--model", str(run), "--video", str(tmp_path / "v.mp4")]) == 1
    assert capsys.readouterr().err == f"assemblenet predict: error: {line}\n"
    (run / "config.json").write_text(json.dumps({"dataset": "charades", "frames": 8, "stpes": 4}))
    assert cli.main(["evaluate", "run", str(run), "--data", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.startswith(
        f"assemblenet evaluate: error: {run / 'config.json'}: unknown TrainConfig field(s) ['stpes']")
