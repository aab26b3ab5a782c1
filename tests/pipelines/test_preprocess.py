import json
import shutil
from pathlib import Path

import apache_beam as beam
import numpy as np
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
    assert again["skipped_already_written"] == len(good) and again["written"] == len(good)
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
