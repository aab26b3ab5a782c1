import json
import os
import shutil
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline as beam_testing
from apache_beam.testing.util import assert_that, equal_to

from pipelines import preprocess
from pipelines.cli import main
from preprocessing import charades, schema
from tests.preprocessing.data import write_bad_videos


def _csv_with_bad_rows(info, directory):
    """The tiny Charades train CSV plus rows for a missing, zero-byte, non-video and truncated file."""
    videos = charades.read_annotations(info["train_csv"], num_classes=10)
    bad = write_bad_videos(info["videos_dir"], Path(info["videos_dir"]) / f"{videos[0].id}.mp4")
    rows = videos + [charades.CharadesVideo(i, (charades.Action(1, 0.0, 1.0),), 2.0) for i in sorted(bad)]
    path = Path(directory) / "annotations.csv"
    charades.write_annotations(path, rows)
    return path, [v.id for v in videos], bad


def test_process_videos_transform_good_and_dead_letter(tiny_charades, tmp_path):
    annotations, good, bad = _csv_with_bad_rows(tiny_charades, tmp_path)
    tasks = preprocess.charades_tasks(tiny_charades["videos_dir"], str(annotations), 10)
    config = preprocess.PreprocessConfig(dataset="charades", num_classes=10, fps=4.0, size=32, flow="none",
                                         segmenter="oracle", videos_dir=tiny_charades["videos_dir"])
    with beam_testing.TestPipeline(runner=FnApiRunner()) as p:
        results = p | beam.Create(tasks) | preprocess.ProcessVideos(config)
        ids = results.examples | "Ids" >> beam.Map(lambda kv: (kv[0], schema.read_video_id(kv[1])))
        assert_that(ids, equal_to([(i, i) for i in good]), label="CheckGood")
        reasons = results.dead_letter | beam.Map(lambda row: (row["id"], row["reason"].split(":")[0]))
        assert_that(reasons, equal_to(sorted(bad.items())), label="CheckDeadLetter")


def test_process_video_writes_all_modalities(tiny_charades):
    video = charades.read_annotations(tiny_charades["train_csv"], num_classes=10)[0]
    task = preprocess.charades_tasks(tiny_charades["videos_dir"], tiny_charades["train_csv"], 10)[0]
    config = preprocess.PreprocessConfig(dataset="charades", num_classes=10, fps=4.0, size=32, flow="opencv")
    from preprocessing.segment import make_segmenter

    data, frames = preprocess.process_video(task, config, make_segmenter("oracle",
                                                                         videos_dir=tiny_charades["videos_dir"]))
    out = schema.decode_example(data)
    assert out["rgb"].shape == (frames, 32, 43, 3) and out["flow"].shape == (frames, 32, 43, 2)
    assert out["labels"] == [a.label for a in video.actions]
    masks = np.load(Path(tiny_charades["masks_dir"]) / f"{video.id}.npz")["masks"]
    assert set(np.unique(out["object"])) <= set(np.unique(masks))
    assert abs(out["flow"].astype(int) - 128).max() > 2  # objects or the camera moved somewhere


def _records(out):
    return [r.numpy() for f in sorted(Path(out).glob("*.tfrecord")) for r in tf.data.TFRecordDataset(str(f))]


def test_run_preprocess_dead_letters_and_idempotent_rerun(tiny_charades, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(tiny_charades["videos_dir"], videos)
    info = dict(tiny_charades, videos_dir=str(videos))
    annotations, good, bad = _csv_with_bad_rows(info, tmp_path)
    out = tmp_path / "out"
    kwargs = dict(dataset="charades", videos=str(videos), out=str(out), annotations=str(annotations),
                  classes=tiny_charades["classes_file"], fps=4.0, size=32, flow="none", segmenter="none",
                  num_shards=2, progress=False)
    summary = preprocess.run_preprocess(**kwargs)
    assert (summary["input"], summary["written"], summary["dead_lettered"]) == (len(good) + 4, len(good), 4)
    assert summary["input"] == summary["written"] + summary["dead_lettered"] and summary["unaccounted"] == []
    assert json.loads((out / "summary.json").read_text())["written"] == len(good)
    dead = [json.loads(line) for line in (out / "dead_letter.jsonl").read_text().splitlines()]
    assert {d["id"]: d["reason"].split(":")[0] for d in dead} == bad
    assert all(d["path"].endswith(f"{d['id']}.mp4") for d in dead)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == ["data-00000-of-00002.tfrecord",
                                                              "data-00001-of-00002.tfrecord"]
    first = sorted(schema.read_video_id(r) for r in _records(out))
    assert first == sorted(good)

    # Re-run: nothing re-processed, nothing duplicated; then a repaired file is picked up.
    again = preprocess.run_preprocess(**kwargs)
    assert again["this_run"]["skipped_already_written"] == len(good) and again["written"] == len(good)
    assert again["this_run"]["processed"] == 4  # only the dead-lettered videos are retried
    shutil.copy(videos / f"{good[0]}.mp4", videos / "ZEROB.mp4")
    third = preprocess.run_preprocess(**dict(kwargs, num_shards=7))  # the existing shard count wins
    assert (third["written"], third["dead_lettered"], third["num_shards"]) == (len(good) + 1, 3, 2)
    ids = [schema.read_video_id(r) for r in _records(out)]
    assert sorted(ids) == sorted(good + ["ZEROB"]) and len(ids) == len(set(ids))


def test_cli_toyota_split_with_flow_and_oracle(tiny_toyota, tmp_path):
    out = tmp_path / "out"
    rc = main(["preprocess", "--dataset", "toyota", "--videos", tiny_toyota["videos_dir"], "--out", str(out),
               "--split", "cs-train", "--fps", "4", "--size", "24", "--flow", "opencv",
               "--segmenter", "oracle", "--no-progress", "--", "--direct_num_workers=1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    from preprocessing import toyota

    expected = [c.id for c, _ in toyota.list_clips(tiny_toyota["videos_dir"], "cs-train")]
    assert summary["written"] == summary["input"] == len(expected) > 0
    examples = [schema.decode_example(r) for r in _records(out)]
    assert sorted(e["video_id"] for e in examples) == sorted(expected)
    for e in examples:
        assert e["labels"] == [toyota.parse_clip_name(e["video_id"]).label]
        assert e["label_end"][0] > 1.5  # Toyota: the clip's decoded duration
        assert "flow" in e and "object" in e


# ---------------------------------------------------------------------------------------------
# Re-runs never mix settings or hide stale labels.

def _charades_kwargs(info, out, **overrides):
    return dict(dict(dataset="charades", videos=info["videos_dir"], out=str(out), annotations=info["train_csv"],
                     classes=info["classes_file"], fps=4.0, size=32, flow="none", segmenter="none",
                     progress=False), **overrides)


def _preprocessed_from_own_csv(info, tmp_path):
    """Preprocesses the tiny set from a copy of its annotations (tmp_path/train.csv) that the test can
    then edit; returns (out folder, that CSV, its rows, the run's arguments)."""
    out, csv_path = tmp_path / "out", tmp_path / "train.csv"
    rows = charades.read_annotations(info["train_csv"], num_classes=10)
    charades.write_annotations(csv_path, rows)
    kwargs = _charades_kwargs(info, out, annotations=str(csv_path))
    preprocess.run_preprocess(**kwargs)
    return out, csv_path, rows, kwargs


def test_rerun_with_other_settings_refuses_then_replace_redoes_all(tiny_charades, tmp_path):
    out = tmp_path / "out"
    preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out))
    with pytest.raises(ValueError, match=r"holds records made with other settings: fps=4\.0 \(now 8\.0\), "
                                         r"size=32 \(now 48\); pass --replace .* or choose another --out"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out, fps=8.0, size=48))
    assert json.loads((out / "summary.json").read_text())["fps"] == 4.0  # untouched by the refused run
    with pytest.raises(ValueError, match=r"flow='none' \(now 'opencv'\)"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out, flow="opencv"))

    summary = preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out, fps=8.0, size=48, replace=True))
    assert (summary["fps"], summary["size"], summary["this_run"]["processed"]) == (8.0, 48, summary["input"])
    examples = [schema.decode_example(r) for r in _records(out)]
    assert len(examples) == summary["written"] == summary["input"]
    assert {(e["fps"], min(e["rgb"].shape[1:3])) for e in examples} == {(8.0, 48)}


def test_corrected_annotation_row_is_redone(tiny_charades, tmp_path):
    out, csv_path, rows, kwargs = _preprocessed_from_own_csv(tiny_charades, tmp_path)
    fixed = charades.CharadesVideo(rows[0].id, (charades.Action(9, 0.5, 1.5),), rows[0].length)
    charades.write_annotations(csv_path, [fixed, *rows[1:]])
    summary = preprocess.run_preprocess(**kwargs)
    assert (summary["this_run"]["processed"], summary["this_run"]["skipped_already_written"]) == (1, len(rows) - 1)
    labels = {e["video_id"]: (e["labels"], e["label_start"], e["label_end"])
              for e in map(schema.decode_example, _records(out))}
    assert labels[rows[0].id] == ([9], [0.5], [1.5])
    assert labels[rows[1].id][0] == [a.label for a in rows[1].actions]
    entries = json.loads(next(out.glob("*.records.json")).read_text())
    assert all(len(e["key"]) == 16 for e in entries.values())
    tasks = {t.id: t for t in preprocess.charades_tasks(tiny_charades["videos_dir"], str(csv_path), 10)}
    assert {i: e["annotation"] for i, e in entries.items()} == {
        i: preprocess.annotation_hash(tasks[i]) for i in entries}

    # A corrected row whose video can no longer be read: the record with the old label goes too.
    videos = tmp_path / "videos"
    shutil.copytree(tiny_charades["videos_dir"], videos)
    (videos / f"{rows[1].id}.mp4").unlink()
    moved = charades.CharadesVideo(rows[1].id, (charades.Action(8, 0.0, 1.0),), rows[1].length)
    charades.write_annotations(csv_path, [fixed, moved, *rows[2:]])
    summary = preprocess.run_preprocess(**dict(kwargs, videos=str(videos)))
    assert (summary["written"], summary["dead_lettered"], summary["unaccounted"]) == (len(rows) - 1, 1, [])
    assert rows[1].id not in {schema.read_video_id(r) for r in _records(out)}


def test_records_of_videos_not_in_the_input_are_refused_then_removed(tiny_charades, tmp_path):
    out, csv_path, rows, kwargs = _preprocessed_from_own_csv(tiny_charades, tmp_path)
    charades.write_annotations(csv_path, rows[1:])
    with pytest.raises(ValueError, match=f"holds 1 record\\(s\\) of videos that are not in this input "
                                         f"\\(e.g. {rows[0].id}\\)"):
        preprocess.run_preprocess(**kwargs)
    summary = preprocess.run_preprocess(**kwargs, replace=True)
    assert summary["this_run"]["removed_stale"] == [rows[0].id] and summary["this_run"]["processed"] == 0
    ids = sorted(schema.read_video_id(r) for r in _records(out))
    assert ids == sorted(r.id for r in rows[1:]) == sorted(
        line for f in out.glob("*.ids") for line in f.read_text().split())


def test_output_of_an_older_version_is_refused(tiny_charades, tmp_path):
    out = tmp_path / "out"
    preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out))
    (out / "manifest.json").unlink()
    with pytest.raises(ValueError, match="holds records without manifest.json .* settings are unknown"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out))


# ---------------------------------------------------------------------------------------------
# Inputs that match nothing are errors; what users expect is found.

def test_mistyped_videos_folder_is_an_error(tiny_charades, tmp_path):
    with pytest.raises(ValueError, match=r"^--videos /no/such/folder: no such directory$"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, tmp_path / "out", videos="/no/such/folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(preprocess.EmptyInputError, match=r"empty: no \.mp4 file"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, tmp_path / "out", videos=str(tmp_path / "empty")))


def test_header_only_csv_is_an_error(tiny_charades, tmp_path):
    charades.write_annotations(tmp_path / "header.csv", [])
    with pytest.raises(preprocess.EmptyInputError, match=r"header.csv: no video rows \(only the header\)"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, tmp_path / "out",
                                                     annotations=str(tmp_path / "header.csv")))


def test_every_video_failing_is_an_error_after_writing_the_dead_letters(tiny_charades, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "other.mp4").write_bytes(b"")  # the folder has videos, but none of the CSV's ids
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"no video was written: all 3 failed \(missing x3\); reasons in "
                                         r".*dead_letter.jsonl; is --videos .*videos right\?"):
        preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out, videos=str(videos)))
    assert json.loads((out / "summary.json").read_text())["dead_lettered"] == 3
    assert len((out / "dead_letter.jsonl").read_text().splitlines()) == 3


def test_videos_in_sub_folders_and_upper_case_are_found(tiny_charades, tmp_path):
    videos = tmp_path / "videos"
    rows = charades.read_annotations(tiny_charades["train_csv"], num_classes=10)
    (videos / "part1").mkdir(parents=True)
    for i, row in enumerate(rows):
        source = Path(tiny_charades["videos_dir"]) / f"{row.id}.mp4"
        shutil.copy(source, videos / "part1" / f"{row.id}.mp4" if i % 2 else videos / f"{row.id}.MP4")
    summary = preprocess.run_preprocess(**_charades_kwargs(tiny_charades, tmp_path / "out", videos=str(videos)))
    assert summary["written"] == summary["input"] == len(rows) and summary["dead_lettered"] == 0


def test_partly_decodable_video_is_counted_and_flagged(tiny_charades, tmp_path):
    from tests.preprocessing.data import write_partly_corrupt_video

    videos = tmp_path / "videos"
    shutil.copytree(tiny_charades["videos_dir"], videos)
    rows = charades.read_annotations(tiny_charades["train_csv"], num_classes=10)
    write_partly_corrupt_video(videos / f"{rows[0].id}.mp4")
    summary = preprocess.run_preprocess(**_charades_kwargs(tiny_charades, tmp_path / "out", videos=str(videos)))
    assert summary["written"] == len(rows) and summary["dead_lettered"] == 0
    assert (summary["partial"], summary["partial_videos"]) == (1, [rows[0].id])
    entry = json.loads("".join(p.read_text() for p in (tmp_path / "out").glob("*.records.json")
                               if rows[0].id in p.read_text()))[rows[0].id]
    assert entry["partial"] and entry["source_frames"] < entry["declared_frames"] == 40
    assert summary["this_run"]["metrics"]["videos_partial"] == 1


# ---------------------------------------------------------------------------------------------
# A killed job keeps its finished videos and several worker processes give the same output.

def _many_videos(tiny_charades, directory, count):
    """`count` Charades rows, each with its own copy of a tiny video (enough work to kill mid-job)."""
    videos = Path(directory) / "videos"
    videos.mkdir(parents=True)
    source = next(Path(tiny_charades["videos_dir"]).glob("*.mp4"))
    rows = []
    for i in range(count):
        video_id = f"V{i:03d}"
        shutil.copy(source, videos / f"{video_id}.mp4")
        rows.append(charades.CharadesVideo(video_id, (charades.Action(i % 10, 0.0, 1.0 + i % 3),), 2.0))
    rows.append(charades.CharadesVideo("GONE1", (charades.Action(1, 0.0, 1.0),), 2.0))  # a dead letter too
    charades.write_annotations(Path(directory) / "many.csv", rows)
    return str(videos), str(Path(directory) / "many.csv")


def _output_files(out):
    """Every file of the output folder; summary.json without the part that describes one run."""
    files = {p.name: p.read_bytes() for p in Path(out).iterdir() if p.is_file()}
    summary = json.loads(files.pop("summary.json"))
    summary.pop("this_run")
    return files, summary


def _assert_same_output(a, b):
    (files_a, summary_a), (files_b, summary_b) = _output_files(a), _output_files(b)
    assert sorted(files_a) == sorted(files_b)
    assert [name for name in sorted(files_a) if files_a[name] != files_b[name]] == []
    assert summary_a == summary_b


@pytest.mark.slow
def test_killed_preprocess_keeps_finished_videos_and_resumes_to_identical_output(tiny_charades, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    videos, csv_path = _many_videos(tiny_charades, tmp_path, 40)
    kwargs = _charades_kwargs(tiny_charades, tmp_path / "killed", videos=videos, annotations=csv_path,
                              num_shards=3)
    code = f"from pipelines.preprocess import run_preprocess; run_preprocess(**{kwargs!r})"
    env = dict(os.environ, PYTHONPATH=str(Path(preprocess.__file__).resolve().parents[2]))
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    staging = tmp_path / "killed" / preprocess.STAGING
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(staging.glob("*.rec"))) < 3:
        assert process.poll() is None, "the job ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    staged = len(list(staging.glob("*.rec")))
    assert 3 <= staged < 40 and not list((tmp_path / "killed").glob("*.tfrecord"))  # killed mid-job

    resumed = preprocess.run_preprocess(**kwargs)
    assert resumed["this_run"]["resumed_from_staging"] >= staged
    assert resumed["this_run"]["metrics"]["videos_in"] == 41 - resumed["this_run"]["resumed_from_staging"]
    assert not staging.exists()
    once = preprocess.run_preprocess(**dict(kwargs, out=str(tmp_path / "once")))
    assert once["this_run"]["processed"] == 41 and (once["written"], once["dead_lettered"]) == (40, 1)
    _assert_same_output(tmp_path / "killed", tmp_path / "once")


@pytest.mark.slow
def test_worker_processes_give_the_single_process_output(tiny_charades, tmp_path, capfd):
    videos, csv_path = _many_videos(tiny_charades, tmp_path, 8)
    kwargs = _charades_kwargs(tiny_charades, tmp_path / "one", videos=videos, annotations=csv_path, num_shards=2)
    one = preprocess.run_preprocess(**kwargs)
    two = preprocess.run_preprocess(**dict(kwargs, out=str(tmp_path / "two"), workers=2, progress=True))
    _assert_same_output(tmp_path / "one", tmp_path / "two")
    # Counters add up over the worker processes; the bar (drawn from the staged files) reached the end.
    assert two["this_run"]["metrics"] == one["this_run"]["metrics"]
    assert two["this_run"]["metrics"]["videos_in"] == 9 and two["this_run"]["metrics"]["videos_processed"] == 8
    assert "9/9" in capfd.readouterr().err


def test_staging_progress_counts_the_staged_videos_of_this_run(tmp_path):
    staging = str(tmp_path / "staging")
    todo = {"A": "k1", "B": "k1", "C": "k1"}
    preprocess.stage_record(staging, "Z", "k1", b"x", {})  # of an earlier run: not counted
    preprocess.stage_record(staging, "A", "k0", b"x", {})  # other settings: not counted
    progress = preprocess.StagingProgress(staging, todo, interval=0.01)
    assert progress.count() == 0
    preprocess.stage_record(staging, "A", "k1", b"x", {"frames": 1})
    preprocess.stage_dead_letter(staging, "k1", {"id": "B", "path": "b", "reason": "missing: b"})
    assert progress.count() == 2
    assert preprocess.read_staged_record(staging, "A", "k1") == (b"x", {"frames": 1})


def test_workers_flag_reaches_the_job(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(preprocess, "run_preprocess", lambda **kwargs: seen.update(kwargs) or {
        "input": 1, "written": 1, "dead_lettered": 0, "unaccounted": []})
    rc = main(["preprocess", "--dataset", "toyota", "--videos", str(tmp_path), "--out", str(tmp_path / "o"),
               "--workers", "3", "--replace"])
    assert rc == 0 and (seen["workers"], seen["replace"]) == (3, True)
    assert seen["compile_cache"] is None  # each worker resolves the default folder itself
    main(["preprocess", "--dataset", "toyota", "--videos", str(tmp_path), "--out", str(tmp_path / "o"),
          "--flow", "tensor", "--compile-cache", str(tmp_path / "xla")])
    assert (seen["flow"], seen["compile_cache"]) == ("tensor", str(tmp_path / "xla"))


def test_preprocess_flags_are_the_config_fields_with_their_defaults(monkeypatch, tmp_path, capsys):
    import dataclasses

    from pipelines.cli import build_parser
    from pipelines.preprocess.config import FLOWS, PreprocessConfig

    fields = {f.name: f for f in dataclasses.fields(PreprocessConfig)}
    args = build_parser().parse_args(["preprocess", "--dataset", "toyota", "--videos", "v", "--out", "o"])
    assert (args.fps, args.size, args.flow, args.segmenter, args.max_seconds) == (6.0, 256, "opencv", "none", None)
    for name in ("fps", "size", "flow", "segmenter", "max_seconds"):
        assert getattr(args, name) == fields[name].default, name
    assert args.compile_cache is None and fields["compile_cache"].default == ""  # each worker resolves ""
    assert (args.flow_batch, args.segment_batch, args.decode_threads) == (
        fields["flow_batch"].default, fields["segment_batch"].default, fields["decode_threads"].default) == (256, 32, 4)
    assert FLOWS == ("opencv", "tensor", "none")
    seen = {}
    monkeypatch.setattr(preprocess, "run_preprocess", lambda **kwargs: seen.update(kwargs) or {
        "input": 1, "written": 1, "dead_lettered": 0, "unaccounted": []})
    assert main(["preprocess", "--dataset", "charades", "--videos", "v", "--out", str(tmp_path / "o"),
                 "--fps", "12.5", "--size", "128", "--flow", "none", "--segmenter", "oracle",
                 "--max-seconds", "3", "--flow-batch", "64", "--segment-batch", "8", "--decode-threads", "2"]) == 0
    assert {k: seen[k] for k in ("dataset", "fps", "size", "flow", "segmenter", "max_seconds", "flow_batch",
                                 "segment_batch", "decode_threads")} == {
        "dataset": "charades", "fps": 12.5, "size": 128, "flow": "none", "segmenter": "oracle", "max_seconds": 3.0,
        "flow_batch": 64, "segment_batch": 8, "decode_threads": 2}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # --dataset is a field without a default: required
        main(["preprocess", "--videos", "v", "--out", "o"])
    assert exit_info.value.code == 1
    assert "the following arguments are required: --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preprocess", "--dataset", "toyota", "--videos", "v", "--out", "o", "--flow", "farneback"])
    assert "argument --flow: invalid choice: 'farneback'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preprocess", "--dataset", "toyota", "--videos", "v", "--out", "o", "--flow-batch", "0"])
    assert "--flow-batch" in capsys.readouterr().err


def test_the_preprocess_settings_load_without_beam():
    """The CLI makes its flags from PreprocessConfig: importing it must not load Beam (a slow `--help`)."""
    import subprocess
    import sys

    code = ("import sys, pipelines.preprocess.config, pipelines.cli; pipelines.cli.build_parser(); "
            "print(sorted(m for m in ('apache_beam', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
    assert preprocess.run_preprocess.__module__ == "pipelines.preprocess.job"  # the package still re-exports


# ---------------------------------------------------------------------------------------------
# Toyota protocols (cross-subject, cross-view).

def test_toyota_unknown_activity_is_dead_lettered_and_the_job_finishes(tiny_toyota, tmp_path):
    from preprocessing import toyota

    videos = tmp_path / "mp4"
    shutil.copytree(tiny_toyota["videos_dir"], videos)
    source = next(videos.glob("*.mp4"))
    shutil.copy(source, videos / "Pour.Fromcup_p03_r07_v01_c01.mp4")  # in the authors' lists, not in the 31
    out = tmp_path / "out"
    summary = preprocess.run_preprocess(dataset="toyota", videos=str(videos), out=str(out), split="cs-train",
                                        fps=4.0, size=24, flow="none", progress=False)
    expected = [c.id for c, _ in toyota.scan_clips(videos, "cs-train")[0]]
    assert summary["written"] == len(expected) > 0 and summary["dead_lettered"] == 1
    assert summary["input"] == len(expected) + 1 and preprocess.summary_ok(summary)
    (dead,) = [json.loads(line) for line in (out / "dead_letter.jsonl").read_text().splitlines()]
    assert dead["id"] == "Pour.Fromcup_p03_r07_v01_c01"
    assert dead["reason"].startswith("unknown_activity: unknown activity 'Pour.Fromcup'; expected one of the 31")
    assert json.loads((out / "classes.json").read_text()) == list(toyota.CLASSES)


def test_toyota_cross_view_uses_the_19_classes(tiny_toyota, tmp_path):
    from preprocessing import toyota

    out = tmp_path / "out"
    summary = preprocess.run_preprocess(dataset="toyota", videos=tiny_toyota["videos_dir"], out=str(out),
                                        split="cv2-train", fps=4.0, size=24, flow="none", progress=False)
    clips = [toyota.parse_clip_name(p.name, classes=None) for p in Path(tiny_toyota["videos_dir"]).glob("*.mp4")]
    in_split = [c for c in clips if toyota.in_split(c, "cv2-train")]
    kept = sorted(c.id for c in in_split if c.activity in toyota.CROSS_VIEW_CLASSES)
    assert kept and len(kept) < len(in_split)  # the tiny set has clips of both kinds in this split
    assert summary["num_classes"] == 19 and summary["written"] == len(kept)
    assert summary["dead_lettered"] == len(in_split) - len(kept)
    examples = [schema.decode_example(r) for r in _records(out)]
    assert sorted(e["video_id"] for e in examples) == kept
    for e in examples:
        assert e["num_classes"] == 19
        assert e["labels"] == [toyota.CROSS_VIEW_CLASSES.index(e["video_id"].split("_")[0])]
    assert json.loads((out / "classes.json").read_text()) == list(toyota.CROSS_VIEW_CLASSES)
    from pipelines.train import find_class_names, num_classes_in

    assert num_classes_in(str(out)) == 19 and find_class_names(str(out), 19) == list(toyota.CROSS_VIEW_CLASSES)


def test_toyota_split_matching_nothing_is_an_error(tmp_path):
    (tmp_path / "mp4").mkdir()
    (tmp_path / "mp4" / "Walk_p03_r00_v01_c01.mp4").write_bytes(b"x")
    with pytest.raises(preprocess.EmptyInputError, match=r"none of its 1 clips is in split cs-test"):
        preprocess.run_preprocess(dataset="toyota", videos=str(tmp_path / "mp4"), out=str(tmp_path / "out"),
                                  split="cs-test", progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(preprocess.EmptyInputError, match=r"nothing: no \.mp4 clip"):
        preprocess.run_preprocess(dataset="toyota", videos=str(tmp_path / "nothing"), out=str(tmp_path / "o"),
                                  progress=False)


# ---------------------------------------------------------------------------------------------
# --flow tensor inside the job: the job reports
# where the flow time went, compiles each shape once per process, and the compilation cache changes
# no record.

def test_flow_summary_separates_compilation_from_the_flow_rate():
    metrics = {"flow_pairs": 100, "flow_pairs_computed": 128, "flow_calls": 4, "flow_compiled_shapes": 2,
               "flow_ms": 5000, "flow_compile_ms": 3000, "videos_in": 3}
    assert preprocess.flow_summary(metrics) == {
        "pairs": 100, "pairs_computed": 128, "calls": 4, "compiled_shapes": 2, "seconds": 5.0,
        "compile_seconds": 3.0, "pairs_per_s": 20.0, "pairs_per_s_compiled": 50.0}
    assert preprocess.flow_summary({"videos_in": 3}) == {}


@pytest.fixture
def own_compile_cache(monkeypatch):
    """The in-process job points this process's compilation cache at the test's folder: put it back after,
    so the rest of the session does not write every compiled program there."""
    import keras

    monkeypatch.setenv("TF_XLA_FLAGS", os.environ.get("TF_XLA_FLAGS", ""))
    if keras.backend.backend() != "jax":
        yield
        return
    import jax
    from jax._src import compilation_cache

    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    compilation_cache.reset_cache()


def test_tensor_flow_job_reports_its_flow_stage_and_the_cache_changes_no_record(tiny_charades, tmp_path,
                                                                               own_compile_cache):
    import keras

    videos = tmp_path / "videos"
    shutil.copytree(tiny_charades["videos_dir"], videos)
    info = dict(tiny_charades, videos_dir=str(videos))
    annotations, good, bad = _csv_with_bad_rows(info, tmp_path)
    # 2 s at 4 fps: 8 frames, 7 pairs per video, in batches of 8 pairs across videos (the last padded);
    # 24 px: a shape of this test only.
    kwargs = dict(dataset="charades", videos=str(videos), annotations=str(annotations),
                  classes=tiny_charades["classes_file"], fps=4.0, size=24, flow="tensor", segmenter="none",
                  max_seconds=2.0, num_shards=1, progress=False, flow_batch=8)
    cache = tmp_path / "cache"
    first = preprocess.run_preprocess(out=str(tmp_path / "a"), compile_cache=str(cache), **kwargs)
    dead = [json.loads(line) for line in (tmp_path / "a" / "dead_letter.jsonl").read_text().splitlines()]
    assert {d["id"]: d["reason"].split(":")[0] for d in dead} == bad  # failures stay per video
    records = json.loads((tmp_path / "a" / "data-00000-of-00001.records.json").read_text())
    frames = [records[i]["frames"] for i in good]
    assert frames == [8] * len(good)
    flow = first["this_run"]["flow"]
    calls = -(-7 * len(good) // 8)
    assert (flow["pairs"], flow["pairs_computed"], flow["calls"], flow["compiled_shapes"]) == (
        7 * len(good), 8 * calls, calls, 1)
    assert 0 < flow["compile_seconds"] <= flow["seconds"] <= first["this_run"]["seconds"]
    assert first["this_run"]["metrics"]["flow_pairs"] == 7 * len(good)
    if keras.backend.backend() == "jax":
        assert list(cache.iterdir()), "the job wrote no compiled program to its cache"
    else:
        assert f"--tf_xla_persistent_cache_directory={cache}" in os.environ["TF_XLA_FLAGS"]
    # Another job in the same process (no cache this time) compiles nothing and writes the same files.
    second = preprocess.run_preprocess(out=str(tmp_path / "b"), compile_cache="none", **kwargs)
    assert second["this_run"]["flow"]["compiled_shapes"] == 0
    assert second["this_run"]["flow"]["compile_seconds"] == 0
    _assert_same_output(tmp_path / "a", tmp_path / "b")
    decoded = schema.decode_example(_records(tmp_path / "b")[0])
    assert decoded["flow"].shape == (8, 24, 32, 2) and abs(decoded["flow"].astype(int) - 128).max() > 2


# ---------------------------------------------------------------------------------------------
# Flow and masks batched across videos: the same bytes whatever the batch sizes; failures stay per video.

def _random_segmenter_file(path):
    """A .keras segmenter with random weights: RGB (B, H, W, 3) -> 151 scores per pixel (any frame size)."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(151, 1)(x)
    keras.Model(inputs, outputs).save(path)
    return str(path)


def test_records_are_byte_identical_whatever_the_batch_sizes(tiny_charades, tmp_path, own_compile_cache):
    videos = tmp_path / "videos"
    shutil.copytree(tiny_charades["videos_dir"], videos)
    info = dict(tiny_charades, videos_dir=str(videos))
    annotations, good, bad = _csv_with_bad_rows(info, tmp_path)
    segmenter = _random_segmenter_file(tmp_path / "segmenter.keras")
    # 8 frames and 7 pairs per video: batches of 5 pairs and 3 frames split videos across batches; 64 holds
    # every video of the job in one padded batch; 1 is one pair (frame) per call.
    kwargs = dict(dataset="charades", videos=str(videos), annotations=str(annotations),
                  classes=tiny_charades["classes_file"], fps=4.0, size=24, flow="tensor", segmenter=segmenter,
                  max_seconds=2.0, num_shards=2, progress=False, compile_cache="none")
    summaries = {}
    for flow_batch, segment_batch, threads in ((1, 1, 1), (5, 3, 3), (64, 64, 4)):  # and videos decoded at once
        out = tmp_path / f"out_{flow_batch}_{segment_batch}"
        summaries[flow_batch] = preprocess.run_preprocess(out=str(out), flow_batch=flow_batch,
                                                          segment_batch=segment_batch, decode_threads=threads,
                                                          **kwargs)
    for flow_batch, segment_batch in ((5, 3), (64, 64)):
        _assert_same_output(tmp_path / "out_1_1", tmp_path / f"out_{flow_batch}_{segment_batch}")
        this_run = summaries[flow_batch]["this_run"]
        pairs, frames = 7 * len(good), 8 * len(good)
        flow_calls, segment_calls = -(-pairs // flow_batch), -(-frames // segment_batch)
        assert (this_run["flow"]["pairs"], this_run["flow"]["calls"], this_run["flow"]["pairs_computed"]) == (
            pairs, flow_calls, flow_calls * flow_batch)
        assert (this_run["segment"]["frames"], this_run["segment"]["calls"],
                this_run["segment"]["frames_computed"]) == (frames, segment_calls, segment_calls * segment_batch)
        assert this_run["segment"]["compiled_shapes"] == 1 and this_run["flow"]["compiled_shapes"] <= 1
    dead = [json.loads(line) for line in (tmp_path / "out_5_3" / "dead_letter.jsonl").read_text().splitlines()]
    assert {d["id"]: d["reason"].split(":")[0] for d in dead} == bad
    # The same batch sizes with other neighbours in every batch (a job of two of the videos): the same records.
    rows = [r for r in charades.read_annotations(str(annotations), num_classes=10) if r.id in good[1:3]]
    charades.write_annotations(tmp_path / "two.csv", rows)
    preprocess.run_preprocess(out=str(tmp_path / "two"), flow_batch=5, segment_batch=3,
                              **dict(kwargs, annotations=str(tmp_path / "two.csv")))
    alone = {schema.read_video_id(r): r for r in _records(tmp_path / "two")}
    assert sorted(alone) == sorted(good[1:3])
    assert alone == {schema.read_video_id(r): r for r in _records(tmp_path / "out_5_3")
                     if schema.read_video_id(r) in alone}
    # The per-video function (8 pairs and 16 frames a call) gives the same record at this size, with real
    # flow and masks.
    from preprocessing.segment import make_segmenter

    task = next(t for t in preprocess.charades_tasks(str(videos), str(annotations), 10) if t.id == good[0])
    config = preprocess.PreprocessConfig(dataset="charades", num_classes=10, fps=4.0, size=24, flow="tensor",
                                         segmenter=segmenter, max_seconds=2.0)
    alone, _ = preprocess.encode_video(task, config, make_segmenter(segmenter))
    written = {schema.read_video_id(r): r for r in _records(tmp_path / "out_5_3")}
    assert written[good[0]] == alone
    decoded = schema.decode_example(alone)
    assert abs(decoded["flow"].astype(int) - 128).max() > 2 and len(np.unique(decoded["object"])) > 1


def test_a_video_failing_inside_a_batch_is_the_only_one_dead_lettered(tiny_charades, tmp_path):
    rows = charades.read_annotations(tiny_charades["train_csv"], num_classes=10)
    masks = tmp_path / "masks"
    shutil.copytree(tiny_charades["masks_dir"], masks)
    culprit = rows[1].id
    kwargs = _charades_kwargs(tiny_charades, None, flow="opencv", num_shards=1, segment_batch=64,
                              segmenter=f"oracle:{masks}")
    whole = preprocess.run_preprocess(**dict(kwargs, out=str(tmp_path / "whole")))
    (masks / f"{culprit}.npz").unlink()  # the oracle segmenter now fails on this video's frames only
    broken = preprocess.run_preprocess(**dict(kwargs, out=str(tmp_path / "broken")))
    assert whole["this_run"]["segment"]["calls"] == 1  # every video's frames in one batch
    assert (broken["written"], broken["dead_lettered"]) == (len(rows) - 1, 1)
    (dead,) = [json.loads(line) for line in (tmp_path / "broken" / "dead_letter.jsonl").read_text().splitlines()]
    assert dead["id"] == culprit
    assert dead["reason"] == f"FileNotFoundError: oracle segmenter: no ground-truth masks {masks / culprit}.npz"
    # The others are written exactly as by the job where nothing failed.
    assert [r for r in _records(tmp_path / "whole") if schema.read_video_id(r) != culprit] == \
        _records(tmp_path / "broken")


# -- a full disk: one line naming the path, the finished work kept ---------------------------------------

FULL_DISK = '''
import builtins, errno, os

_real_open = builtins.open
_writes = {"staged": 0}


class _Full:
    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises: no file named


def _open(path, mode="r", *args, **kwargs):
    handle = _real_open(path, mode, *args, **kwargs)
    if "_staging" in str(path) and "w" in mode and ".rec.tmp-" in str(path):
        _writes["staged"] += 1
        if _writes["staged"] > 1:  # the disk fills up after the first video
            return _Full(handle)
    return handle


builtins.open = _open  # Beam itself is imported later, by the command, as in a real run
'''


def test_a_full_disk_is_one_line_naming_the_path_and_the_finished_videos_resume(tiny_charades, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FULL_DISK)
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("ASSEMBLENET_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    args = ["preprocess", "--dataset", "charades", "--videos", tiny_charades["videos_dir"], "--out", str(out),
            "--annotations", tiny_charades["train_csv"], "--classes", tiny_charades["classes_file"], "--fps", "4",
            "--size", "32", "--flow", "none", "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], text=True, capture_output=True,
                            timeout=600, env={**env, "PYTHONPATH": os.pathsep.join([str(inject), str(root)])})
    staged = sorted((out / "_staging").glob("*.rec"))
    assert len(staged) == 1, result.stderr[-3000:]
    assert (result.returncode, result.stdout, result.stderr.count("\n")) == (1, "", 1), result.stderr[-3000:]
    assert result.stderr.startswith(f"assemblenet preprocess: error: {out}/_staging/")
    assert result.stderr.endswith(f": No space left on device; the 1 video(s) finished so far are kept in "
                                  f"{out}/_staging and the shards already written are untouched: run the same "
                                  "command again to resume\n")
    assert not list((out / "_staging").glob("*.tmp-*"))  # no half-written file left behind

    summary = preprocess.run_preprocess(**_charades_kwargs(tiny_charades, out))
    assert summary["this_run"]["resumed_from_staging"] == 1 and preprocess.summary_ok(summary)
    assert summary["this_run"]["processed"] == summary["written"] - 1
    from preprocessing.records import read_header  # every record says how it was made

    header = read_header(str(sorted(out.glob("*.tfrecord"))[0]))
    assert (header.settings.flow, header.settings.segmenter, header.settings.fps) == ("none", "none", 4.0)


def test_video_batcher_returns_each_video_once_all_its_frames_are_done(tiny_charades):
    from preprocessing.segment import make_segmenter

    config = preprocess.PreprocessConfig(dataset="charades", num_classes=10, fps=4.0, size=32, flow="none",
                                         segmenter="oracle", max_seconds=2.0, segment_batch=10)
    segmenter = make_segmenter("oracle", videos_dir=tiny_charades["videos_dir"])
    tasks = preprocess.charades_tasks(tiny_charades["videos_dir"], tiny_charades["train_csv"], 10)[:3]
    videos = [preprocess.decode_task(t, config) for t in tasks]
    assert [len(v.frames) for v in videos] == [8, 8, 8]
    batcher = preprocess.VideoBatcher(config, segmenter)
    assert batcher.add(tasks[0], videos[0]) == []  # 8 frames queued, fewer than a batch of 10
    (first,) = batcher.add(tasks[1], videos[1])  # a batch of 10: video 0's 8 frames and 2 of video 1
    assert first.task is tasks[0] and first.error is None
    (second,) = batcher.add(tasks[2], videos[2])  # 14 queued: a batch of video 1's last 6 and 4 of video 2
    assert second.task is tasks[1]
    assert [item.task.id for item in batcher.flush()] == [tasks[2].id]  # its last 4 frames
    _, stats = batcher.take_stats()
    assert (stats.frames, stats.calls, stats.computed) == (24, 3, 24)  # the oracle reads files: no padding
    assert np.array_equal(first.objects, segmenter(videos[0].frames, videos[0].times, tasks[0].id))


def test_video_batcher_in_the_background_stores_what_it_stores_in_the_caller(tiny_charades, tmp_path):
    """The same batches on a thread of their own: every video returned once, with the same class maps and
    stats as run in the caller; a video that fails alone is returned with its error, the others intact."""
    from preprocessing.segment import make_segmenter

    masks = tmp_path / "masks"
    shutil.copytree(tiny_charades["masks_dir"], masks)
    config = preprocess.PreprocessConfig(dataset="charades", num_classes=10, fps=4.0, size=32, flow="none",
                                         segmenter=f"oracle:{masks}", max_seconds=2.0, segment_batch=5)
    segmenter = make_segmenter(f"oracle:{masks}")
    tasks = preprocess.charades_tasks(tiny_charades["videos_dir"], tiny_charades["train_csv"], 10)
    videos = [preprocess.decode_task(t, config) for t in tasks]
    assert [len(v.frames) for v in videos] == [8, 8, 8]

    def run(background):
        batcher = preprocess.VideoBatcher(config, segmenter, background=background, in_flight=1)
        done = [item for task, video in zip(tasks, videos, strict=True) for item in batcher.add(task, video)]
        done += batcher.flush()
        batcher.close()
        return {item.task.id: item for item in done}, batcher.take_stats()[1]

    caller, caller_stats = run(background=False)
    behind, behind_stats = run(background=True)
    assert sorted(behind) == sorted(caller) == sorted(t.id for t in tasks)  # each video once
    for video_id, item in caller.items():
        assert behind[video_id].error is None and np.array_equal(behind[video_id].objects, item.objects)
    assert (behind_stats.frames, behind_stats.calls) == (caller_stats.frames, caller_stats.calls) == (24, 5)
    (masks / f"{tasks[1].id}.npz").unlink()  # frames 8-15 of 24: batches shared with videos 0 and 2
    broken, _ = run(background=True)
    assert sorted(broken) == sorted(caller)
    assert isinstance(broken[tasks[1].id].error, FileNotFoundError) and broken[tasks[1].id].objects is None
    for task in (tasks[0], tasks[2]):
        assert broken[task.id].error is None and np.array_equal(broken[task.id].objects, caller[task.id].objects)
