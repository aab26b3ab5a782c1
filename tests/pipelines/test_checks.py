"""Runs checked against their data before any work: pipelines/checks.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import checks
from pipelines.checks import UserError


def write_records(path, *, dataset="charades", num_classes=4, videos=2, frames=4, side=16, flow=True,
                  objects=True, summary=None, fps=4.0, flow_method=None, first_id=0):
    """A TFRecord file of `videos` random videos (no TensorFlow, no Beam), plus summary.json if given."""
    from pipelines.preprocess import encode_records
    from preprocessing.schema import encode_example

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = [encode_example(
        video_id=f"v{first_id + k}", dataset=dataset, fps=fps, num_classes=num_classes, labels=[k % num_classes],
        label_start=[0.0], label_end=[1.0], rgb=rng.integers(0, 256, (frames, side, side, 3), dtype=np.uint8),
        flow=rng.integers(0, 256, (frames - 1, side, side, 2), dtype=np.uint8) if flow else None,
        objects=rng.integers(0, 151, (frames, side, side), dtype=np.uint8) if objects else None,
        **({"flow_method": flow_method} if flow_method else {}))
        for k in range(videos)]
    path.write_bytes(encode_records(records))
    if summary is not None:
        (path.parent / "summary.json").write_text(json.dumps(summary))
    return path


def test_the_context_reader_agrees_with_the_schema(tmp_path):
    from preprocessing.schema import decode_example

    path = write_records(tmp_path / "a.tfrecord", dataset="toyota", num_classes=31, objects=False)
    serialized = checks.first_record(str(path))
    info = checks.parse_context(serialized, str(path))
    decoded = decode_example(serialized)
    assert (info.dataset, info.num_classes, info.height, info.width) == ("toyota", 31, 16, 16)
    assert info.fps == pytest.approx(decoded["fps"]) and info.modalities == ("rgb", "flow")
    with pytest.raises(UserError, match="not a tf.train.SequenceExample"):
        checks.parse_context(b"\xff\xff\xff", "x")


def test_records_that_do_not_fit_the_run_are_named_in_one_line(tmp_path):
    data = tmp_path / "records"
    shard = write_records(data / "train-00000-of-00001.tfrecord", dataset="toyota", num_classes=31,
                          objects=False, summary={"dataset": "toyota", "segmenter": "none", "flow": "opencv"})
    info = checks.check_records(str(data), dataset="toyota", num_classes=31, modalities=("rgb", "flow"))
    assert info.file == str(shard)
    with pytest.raises(UserError) as err:
        checks.check_records(str(data), dataset="charades", num_classes=None, modalities=("rgb",))
    assert str(err.value) == (
        f"--data {data}: {shard}: they are toyota records but the run uses dataset 'charades' "
        "(pass --dataset toyota, or toyota records)")
    with pytest.raises(UserError, match=r"they have 31 classes but the run has 6$"):
        checks.check_records(str(data), dataset="toyota", num_classes=6, modalities=("rgb",))
    with pytest.raises(UserError) as err:
        checks.check_records(str(data), dataset="toyota", num_classes=None, modalities=("rgb", "flow", "object"))
    assert str(err.value).endswith("they hold only rgb+flow, made with --segmenter none, but the structure's "
                                   "stems need object (preprocess again with a segmenter, or use a structure "
                                   "without those stems)")
    assert "\n" not in str(err.value)


def test_mixed_and_empty_record_folders_are_errors(tmp_path):
    write_records(tmp_path / "mixed" / "a.tfrecord", dataset="charades", num_classes=4)
    write_records(tmp_path / "mixed" / "b.tfrecord", dataset="charades", num_classes=5)
    with pytest.raises(UserError, match="mixed records: .*a.tfrecord holds charades records with 4 classes.*"
                                        "b.tfrecord holds charades records with 5 classes"):
        checks.records_info(str(tmp_path / "mixed"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.tfrecord").write_bytes(b"")
    with pytest.raises(UserError, match="every TFRecord file is empty"):
        checks.records_info(str(tmp_path / "empty"))
    (tmp_path / "torn.tfrecord").write_bytes(write_records(tmp_path / "x.tfrecord").read_bytes()[:100])
    with pytest.raises(UserError, match="torn.tfrecord: truncated TFRecord file"):
        checks.records_info(str(tmp_path / "torn.tfrecord"))


def test_structure_differences_name_the_block_and_field():
    from model.structure import tiny

    old = tiny().to_json()
    new = json.loads(json.dumps(old))
    block = next(n for n in new["nodes"] if n["level"] > 0)
    block["dilation"] = 2
    assert checks.structure_differences(old, new) == [f"block {block['index']}: dilation 1 -> 2"]
    assert checks.structure_differences(old, {**old, "name": "renamed"}) == []


def test_user_files_errors_name_file_and_line(tmp_path):
    (tmp_path / "bad.json").write_text('{\n  "steps": 10,\n}\n')
    with pytest.raises(UserError, match=r"^--config .*bad.json:3:1: not valid JSON \(Expecting property name"):
        checks.read_json(tmp_path / "bad.json", "--config")
    (tmp_path / "latin1.csv").write_bytes("video,prediction\ncafé,Walk\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.csv:2: not UTF-8 text \(byte 0xe9\)"):
        checks.read_text(tmp_path / "latin1.csv")
    with pytest.raises(UserError, match="missing.json: no such file"):
        checks.read_json(tmp_path / "missing.json")


# -- every file is checked, and the settings the records were made with (issue 23 families 1-2) ------

def test_one_foreign_shard_among_many_is_found(tmp_path):
    folder = tmp_path / "records"
    for k in range(6):  # a sample of four files (0, 1, 2 and 5) would miss shard 3
        write_records(folder / f"data-{k:05d}-of-00006.tfrecord", num_classes=5 if k == 3 else 4, videos=1)
    with pytest.raises(UserError) as err:
        checks.records_info(str(folder))
    assert str(err.value) == (
        f"--data {folder}: mixed records: {folder}/data-00000-of-00006.tfrecord holds charades records with 4 "
        f"classes and rgb+flow+object at 4 fps, shorter side 16, {folder}/data-00003-of-00006.tfrecord holds "
        "charades records with 5 classes and rgb+flow+object at 4 fps, shorter side 16; point --data at one "
        "preprocessing output")


def test_shards_made_at_another_fps_or_size_are_mixed_records(tmp_path):
    write_records(tmp_path / "fps" / "a.tfrecord", fps=6.0)
    write_records(tmp_path / "fps" / "b.tfrecord", fps=12.0)
    with pytest.raises(UserError, match=r"a.tfrecord holds .* at 6 fps, .*b.tfrecord holds .* at 12 fps"):
        checks.records_info(str(tmp_path / "fps"))
    write_records(tmp_path / "flow" / "a.tfrecord", flow_method="opencv")
    write_records(tmp_path / "flow" / "b.tfrecord", flow_method="tensor")
    with pytest.raises(UserError, match=r"shorter side 16, --flow opencv, .*b.tfrecord holds .*, --flow tensor;"):
        checks.records_info(str(tmp_path / "flow"))
    write_records(tmp_path / "size" / "a.tfrecord", side=16)
    write_records(tmp_path / "size" / "b.tfrecord", side=24)
    with pytest.raises(UserError, match=r"shorter side 16, .*b.tfrecord holds .*shorter side 24;"):
        checks.records_info(str(tmp_path / "size"))


def test_a_summary_that_contradicts_the_records_is_an_error(tmp_path):
    data = tmp_path / "records"
    write_records(data / "a.tfrecord", fps=4.0, summary={"dataset": "charades", "fps": 6.0, "size": 16,
                                                         "flow": "opencv", "segmenter": "oracle"})
    with pytest.raises(UserError, match=rf"a.tfrecord was made with other settings than {data}/summary.json says "
                                        r"\(--fps 6 -> 4\)"):
        checks.records_settings(str(data))
    (data / "summary.json").write_text(json.dumps({"fps": 4.0, "size": 16, "flow": "tensor", "segmenter": "none"}))
    assert checks.records_settings(str(data)).to_json() == {"dataset": "charades", "num_classes": 4, "fps": 4.0,
                                                            "size": 16, "flow": "tensor", "segmenter": "none"}


def test_records_made_with_other_settings_than_the_runs_data_are_refused(tmp_path):
    from preprocessing.records import RecordSettings

    data = tmp_path / "records"
    shard = write_records(data / "a.tfrecord", fps=4.0, summary={"flow": "opencv", "segmenter": "oracle"})
    run = RecordSettings(dataset="charades", num_classes=4, fps=6.0, size=16, flow="tensor", segmenter="oracle")
    with pytest.raises(UserError) as err:
        checks.check_records(str(data), dataset="charades", num_classes=4, modalities=("rgb",), settings=run,
                             settings_from="RUN/preprocess.json")
    assert str(err.value) == (
        f"--data {data}: {shard}: they were made with other preprocessing settings than the run's data "
        "(RUN/preprocess.json): --fps 6 -> 4; --flow tensor -> opencv (preprocess them with the same settings, "
        "or start a new run)")
    same = RecordSettings(fps=4.0, size=16, flow="opencv")  # what a run does not know is not compared
    assert checks.check_records(str(data), dataset=None, num_classes=None, modalities=(), settings=same).file \
        == str(shard)


def test_a_resumed_run_on_records_of_another_fps_is_refused_and_keeps_its_preprocess_json(tmp_path):
    from pipelines.train import TrainConfig, train

    data = write_records(tmp_path / "records" / "a.tfrecord", fps=12.0, summary={"flow": "opencv"})
    run = tmp_path / "run"
    run.mkdir()
    saved = '{"dataset": "charades", "num_classes": 4, "fps": 6.0, "size": 16, "flow": "opencv"}\n'
    (run / "preprocess.json").write_text(saved)
    config = TrainConfig(structure="tiny", frames=4, size=16, batch_size=2, steps=1, steps_per_epoch=1)
    with pytest.raises(UserError, match=rf"{data}: they were made with other preprocessing settings than the "
                                        rf"run's data \({run}/preprocess.json\): --fps 6 -> 12 "):
        train(config=config, data=str(data.parent), workdir=run, verbose=0)
    assert (run / "preprocess.json").read_text() == saved
    assert sorted(p.name for p in run.iterdir()) == ["preprocess.json"]


def test_validation_records_of_another_size_than_the_training_data_are_refused(tmp_path):
    from pipelines.train import TrainConfig, train

    data = write_records(tmp_path / "train" / "a.tfrecord", side=16)
    val = write_records(tmp_path / "val" / "a.tfrecord", side=32)
    config = TrainConfig(structure="tiny", frames=4, size=16, batch_size=2, steps=1, steps_per_epoch=1)
    with pytest.raises(UserError, match=rf"^--eval-data {val.parent}: {val}: .* than the run's data "
                                        rf"\(--data {data.parent}\): --size 16 -> 32 "):
        train(config=config, data=str(data.parent), workdir=tmp_path / "run", eval_data=str(val.parent), verbose=0)
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_records_of_another_size_than_the_run_was_trained_on(tmp_path):
    from model.structure import tiny
    from pipelines.evaluate import evaluate_model

    data = write_records(tmp_path / "test.tfrecord", side=32)
    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    (run / "config.json").write_text(json.dumps({"structure": "tiny", "dataset": "charades", "num_classes": 4,
                                                 "frames": 4, "size": 16}))
    (run / "preprocess.json").write_text(json.dumps({"dataset": "charades", "num_classes": 4, "fps": 4.0,
                                                     "size": 16}))
    with pytest.raises(UserError, match=rf"than the run {run}'s data \({run}/preprocess.json\): --size 16 -> 32 "):
        evaluate_model(run_dir=run, data=str(data), dataset="charades", clips=1)
    assert not (run / "metrics.json").exists()


def test_search_and_evolution_refuse_records_of_other_settings_before_writing(tmp_path):
    from pipelines.evolve import EvolutionConfig, TrainEvaluator, run_evolution
    from pipelines.search import run_search

    data = write_records(tmp_path / "records" / "a.tfrecord", fps=4.0)
    out = tmp_path / "search"
    (out / "run").mkdir(parents=True)  # a search started on records made at 6 fps
    (out / "run" / "preprocess.json").write_text(json.dumps({"dataset": "charades", "fps": 6.0, "size": 16}))
    small = {"steps": 1, "steps_per_epoch": 1, "frames": 4, "size": 16, "batch_size": 2}
    with pytest.raises(UserError, match=rf"than the search's data \({out}/run/preprocess.json\): --fps 6 -> 4 "):
        run_search(structure="tiny", data=str(data), out_dir=out, train=small)
    assert sorted(p.name for p in out.iterdir()) == ["run"]
    val = write_records(tmp_path / "val" / "a.tfrecord", fps=8.0, first_id=10)
    evaluator = TrainEvaluator(data=str(data), eval_data=str(val), train=small)
    with pytest.raises(UserError, match=rf"^--eval-data {val}: they were made with other "
                                        rf"preprocessing settings than the search's data \(--data {data}\): "
                                        "--fps 4 -> 8 "):
        run_evolution(tmp_path / "evolve", EvolutionConfig(population_size=2, rounds=0), evaluator=evaluator,
                      progress=False)
    assert not (tmp_path / "evolve").exists()


def test_the_attention_search_checks_every_file_of_its_data_before_writing(tmp_path):
    from pipelines.attention_search import SearchConfig, search

    folder = tmp_path / "records"
    for k in range(5):  # the searched label space is 4 classes; one shard has 6
        write_records(folder / f"data-{k:05d}-of-00005.tfrecord", num_classes=6 if k == 3 else 4, videos=1,
                      first_id=k)
    config = SearchConfig(steps=1, batch_size=2, frames=4, size=32, data=str(folder), num_classes=4)
    with pytest.raises(UserError, match=rf"^--data {folder}: mixed records: .*data-00003-of-00005.tfrecord holds "
                                        "charades records with 6 classes"):
        search(config=config, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- every entry point checks before it writes anything (item 2) ------------------------------------

def test_train_refuses_records_of_another_dataset_before_writing(tmp_path):
    from pipelines.train import TrainConfig, train

    data = write_records(tmp_path / "toyota" / "a.tfrecord", dataset="toyota", num_classes=31)
    config = TrainConfig(structure="tiny", frames=4, size=16, batch_size=2, steps=2, steps_per_epoch=1)
    with pytest.raises(UserError, match="they are toyota records but the run uses dataset 'charades'"):
        train(config=config, data=str(data.parent), workdir=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_structure_whose_stems_the_records_lack(tmp_path):
    from pipelines.train import TrainConfig, train

    data = write_records(tmp_path / "records" / "a.tfrecord", objects=False,
                         summary={"dataset": "charades", "segmenter": "none", "flow": "opencv"})
    config = TrainConfig(structure="tiny", frames=4, size=16, batch_size=2, steps=2, steps_per_epoch=1)
    with pytest.raises(UserError, match=r"made with --segmenter none, but the structure's stems need object"):
        train(config=config, data=str(data), workdir=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_records_of_another_label_space(tmp_path):
    from model.structure import tiny
    from pipelines.evaluate import evaluate_model

    data = write_records(tmp_path / "test.tfrecord", dataset="toyota", num_classes=6)
    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    (run / "config.json").write_text(json.dumps({"structure": "tiny", "dataset": "toyota", "num_classes": 31,
                                                 "frames": 4, "size": 16}))
    with pytest.raises(UserError, match=f"the run {run} has 31"):
        evaluate_model(run_dir=run, data=str(data), dataset="toyota", clips=1)
    assert not (run / "metrics.json").exists()


def test_search_and_evolution_refuse_unfitting_records_before_writing(tmp_path):
    from pipelines.evolve import EvolutionConfig, TrainEvaluator, run_evolution
    from pipelines.search import run_search

    data = write_records(tmp_path / "records" / "a.tfrecord", dataset="toyota", num_classes=31, flow=False)
    with pytest.raises(UserError, match="toyota records but the search uses dataset 'charades'"):
        run_search(structure="tiny", data=str(data), out_dir=tmp_path / "search", train={})
    assert not list((tmp_path / "search").glob("*"))
    evaluator = TrainEvaluator(data=str(data), train={"dataset": "toyota"})
    with pytest.raises(UserError, match=r"they hold only rgb\+object, but the structure's stems need flow"):
        run_evolution(tmp_path / "evolve", EvolutionConfig(population_size=2, rounds=0), evaluator=evaluator,
                      progress=False)
    assert not (tmp_path / "evolve").exists()


# -- resuming compares what the run directory trains (item 3) -----------------------------------------

@pytest.mark.slow
def test_resume_refuses_an_edited_structure_and_keeps_the_runs_copy(tmp_path):
    from pipelines.train import TrainConfig, train

    data = write_records(tmp_path / "records" / "a.tfrecord", videos=4)
    structure_file = tmp_path / "mine.json"
    from model.structure import tiny

    tiny().save(structure_file)
    config = TrainConfig(structure=str(structure_file), frames=4, size=16, batch_size=2, steps=2,
                         steps_per_epoch=1, seed=1)
    run = tmp_path / "run"
    train(config=config, data=str(data), workdir=run, verbose=0)
    saved = (run / "structure.json").read_bytes()
    edited = json.loads(structure_file.read_text())
    block = next(n for n in edited["nodes"] if n["level"] > 0)
    block["dilation"] = 2  # same weight shapes: the old weights would load silently
    structure_file.write_text(json.dumps(edited))

    with pytest.raises(UserError) as err:
        train(config=config, data=str(data), workdir=run, verbose=0)
    assert str(err.value) == (
        f"{run / 'structure.json'}: the structure differs from the one this run was started with "
        f"(block {block['index']}: dilation 1 -> 2); its checkpoints are of that one: use a new --workdir, "
        f"or pass --structure {run / 'structure.json'} to resume")
    assert (run / "structure.json").read_bytes() == saved
    with pytest.raises(UserError, match=r"started with another config \(steps: 2 -> 4\)"):
        train(config=TrainConfig(**{**config.to_json(), "steps": 4}), data=str(data), workdir=run, verbose=0)
    # The saved copy resumes (the config names another path to the same structure).
    again = TrainConfig(**{**config.to_json(), "structure": str(run / "structure.json")})
    result = train(config=again, data=str(data), workdir=run, verbose=0)
    assert result["initial_epoch"] == 2 and result["steps"] == 2
    assert (run / "structure.json").read_bytes() == saved


def test_resuming_a_search_with_an_edited_layout_refuses_before_writing(tmp_path):
    from model.oneshot import over_connected
    from model.structure import Structure, tiny
    from pipelines.search import run_search

    data = write_records(tmp_path / "records" / "a.tfrecord")
    out = tmp_path / "search"
    over_connected(tiny()).save(out / "run" / "structure.json")  # as a started search leaves it
    (out / "structure.json").write_text("the search's copy\n")
    edited = tiny().to_json()
    block = next(n for n in edited["nodes"] if n["level"] > 0)
    block["dilation"] = 2
    with pytest.raises(UserError, match=rf"block {block['index']}: dilation 1 -> 2\); its checkpoints are of "
                                        "that one: use a new --out"):
        run_search(structure=Structure.from_json(edited), data=str(data), out_dir=out, train={})
    assert (out / "structure.json").read_text() == "the search's copy\n"
