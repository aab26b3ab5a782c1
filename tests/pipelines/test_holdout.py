"""Evolution fitness on videos the children did not train on (AssembleNet §3.2): distinct
--eval-data, or a held-out split of --data by video-id hash, recorded in the search state."""

import json
from pathlib import Path

import numpy as np
import pytest

from model import evolution
from pipelines import evolve
from pipelines.holdout import held_out, holdout_split, video_ids
from tests.pipelines.test_evolve import fake_score


def _records(folder: Path, ids: list[str], shards: int = 2) -> str:
    import tensorflow as tf

    from preprocessing.schema import encode_example

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    writers = [tf.io.TFRecordWriter(str(folder / f"data-{k:05d}-of-{shards:05d}.tfrecord")) for k in range(shards)]
    for n, video_id in enumerate(ids):
        rgb = rng.integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8)
        flow = rng.integers(0, 255, size=(2, 8, 8, 2), dtype=np.uint8)  # the stems every child has
        writers[n % shards].write(encode_example(video_id=video_id, dataset="charades", fps=4.0, rgb=rgb,
                                                 flow=flow, num_classes=3, labels=[n % 3], label_start=[0.0],
                                                 label_end=[0.5]))
    for writer in writers:
        writer.close()
    (folder / "summary.json").write_text(json.dumps({"dataset": "charades", "fps": 4.0, "size": 8}))
    return str(folder)


IDS = [f"v{n:03d}" for n in range(40)]


def test_the_split_is_by_video_id_hash_disjoint_complete_and_recorded(tmp_path):
    data = _records(tmp_path / "records", IDS)
    split = holdout_split(data, tmp_path / "holdout", 0.25)
    train = {i for ids in video_ids(split["train"]).values() for i in ids}
    heldout = {i for ids in video_ids(split["eval"]).values() for i in ids}
    assert train.isdisjoint(heldout) and train | heldout == set(IDS)
    assert heldout == {i for i in IDS if held_out(i, 0.25)} and 0 < len(heldout) < len(IDS)
    assert split["heldout_ids"] == sorted(heldout) and split["eval_videos"] == len(heldout)
    recorded = json.loads((tmp_path / "holdout" / "split.json").read_text())
    assert recorded == split and recorded["mode"] == "held-out" and recorded["fraction"] == 0.25
    # The preprocessing settings travel with both parts; the split is reused, never silently changed.
    assert json.loads((Path(split["eval"]) / "summary.json").read_text())["fps"] == 4.0
    assert holdout_split(data, tmp_path / "holdout", 0.25) == split
    with pytest.raises(ValueError, match="held out 0.25 of .*records, not 0.5"):
        holdout_split(data, tmp_path / "holdout", 0.5)


def test_a_resumed_split_of_data_preprocessed_again_at_another_fps_is_refused(tmp_path):
    from pipelines.checks import UserError
    from tests.pipelines.test_checks import write_records

    data = _records(tmp_path / "records", IDS)
    split = holdout_split(data, tmp_path / "holdout", 0.25)
    for old in Path(data).glob("*.tfrecord"):
        old.unlink()
    write_records(Path(data) / "data-00000-of-00001.tfrecord", num_classes=3, side=8, flow=True, objects=False,
                  fps=8.0, summary={"dataset": "charades", "fps": 8.0, "size": 8})
    with pytest.raises(UserError, match=rf"other preprocessing settings than the search's data \({split['train']}, "
                                        r"its copy of --data\): --fps 4 -> 8 "):
        holdout_split(data, tmp_path / "holdout", 0.25)


def test_a_search_without_eval_data_scores_on_held_out_videos(tmp_path):
    data = _records(tmp_path / "records", IDS)
    out = tmp_path / "search"
    evaluator = evolve.TrainEvaluator(data=data, train={"steps": 2, "steps_per_epoch": 2})
    config = evolve.EvolutionConfig(population_size=2, rounds=1, space=evolution.SearchSpace(width_scale=16))
    summary = evolve.run_evolution(out, config, evaluator=evaluator, evaluate=lambda s, w: fake_score(s),
                                   progress=False)
    state = evolve.load_state(out)
    evaluation = state["evaluation"]
    assert evaluation["mode"] == "held-out" and evaluation["source"] == data and evaluation["fraction"] == 0.2
    stored = state["evaluator"]
    assert (stored["data"], stored["eval_data"]) == (evaluation["train"], evaluation["eval"])
    trained = {i for ids in video_ids(stored["data"]).values() for i in ids}
    scored = {i for ids in video_ids(stored["eval_data"]).values() for i in ids}
    assert trained.isdisjoint(scored) and sorted(scored) == evaluation["heldout_ids"]
    assert summary["evaluation"]["mode"] == "held-out" and "heldout_ids" not in summary["evaluation"]
    assert summary["evaluation"]["eval_videos"] == len(scored)


def test_eval_data_sharing_videos_with_the_training_data_is_refused(tmp_path):
    data = _records(tmp_path / "train", IDS[:10])
    config = evolve.EvolutionConfig(population_size=2, rounds=0)
    with pytest.raises(ValueError, match="shares 2 TFRecord file"):
        evolve.init_search(tmp_path / "a", config, evolve.TrainEvaluator(data=data, eval_data=data))
    overlapping = _records(tmp_path / "val", IDS[8:14])
    with pytest.raises(ValueError, match=r"2 of its videos are also in --data .*\(e.g. 'v008'\)"):
        evolve.init_search(tmp_path / "b", config, evolve.TrainEvaluator(data=data, eval_data=overlapping))
    distinct = _records(tmp_path / "val2", IDS[10:14])
    state = evolve.init_search(tmp_path / "c", config, evolve.TrainEvaluator(data=data, eval_data=distinct))
    assert state["evaluation"] == {"mode": "eval-data", "train": data, "eval": distinct, "train_videos": 10,
                                   "eval_videos": 4}


def test_the_evaluator_never_falls_back_to_the_training_data(tmp_path):
    evaluator = evolve.TrainEvaluator(data="records", train={"steps": 2, "steps_per_epoch": 2})
    with pytest.raises(ValueError, match="no eval_data"):
        evaluator(evolution.random_structure(evolution.SearchSpace(width_scale=16), np.random.default_rng(0)),
                  tmp_path / "child")


def test_the_report_says_where_the_fitness_was_measured():
    from pipelines.report import _fitness_data_line

    line = _fitness_data_line({"mode": "held-out", "fraction": 0.2, "source": "records/train", "train_videos": 32,
                               "eval_videos": 8, "heldout_ids": ["a"]})
    assert line == ("Fitness on 8 held-out training videos (fraction 0.2 of records/train, by video-id hash); "
                    "the children trained on the other 32.")
    assert "none of them among the 10 training videos" in _fitness_data_line(
        {"mode": "eval-data", "train": "t", "eval": "v", "train_videos": 10, "eval_videos": 4})
