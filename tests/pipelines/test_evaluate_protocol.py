"""Charades evaluation follows AssembleNet A.7 by default: "five random 128 frame crops ... max-pooled
... the spatial resolution used for the testing is 256x256"; evenly spaced clips stay an option."""

import json

import numpy as np
import pytest

from preprocessing import loader, schema

FRAMES, NUM_FRAMES, TRAIN_SIZE = 4, 60, 28


def _write(path, dataset, num_classes):
    """Frame t of every video is flat with value 4 t, so a clip's first frame tells its start."""
    records = []
    for v in range(3):
        rgb = np.stack([np.full((30, 40, 3), 4 * t, np.uint8) for t in range(NUM_FRAMES)])
        records.append(schema.encode_example(video_id=f"Video{v}", dataset=dataset, fps=4.0, rgb=rgb,
                                             num_classes=num_classes, labels=[v % 2], label_start=[0.0],
                                             label_end=[15.0],
                                             flow=np.full((NUM_FRAMES - 1, 30, 40, 2), 128, np.uint8),
                                             objects=np.zeros((NUM_FRAMES, 30, 40), np.uint8)))
    loader.write_records(path, records)


def _run(tmp_path, dataset, num_classes):
    from model.structure import tiny

    run = tmp_path / "run"
    tiny().save(run / "structure.json")
    (run / "config.json").write_text(json.dumps({"structure": "tiny", "dataset": dataset, "frames": FRAMES,
                                                 "size": TRAIN_SIZE, "num_classes": num_classes}))
    _write(tmp_path / "test.tfrecord", dataset, num_classes)
    return run


def _evaluate(tmp_path, run, dataset, num_classes, **kwargs):
    from pipelines.evaluate import evaluate_model

    seen = []

    def model(inputs, training=False):
        rgb = np.asarray(inputs["rgb"])
        seen.extend((rgb.shape[2], int(round((v + 1) * 127.5 / 4))) for v in rgb[:, 0, 0, 0, 0])
        return np.zeros((rgb.shape[0], num_classes), np.float32)

    result = evaluate_model(run_dir=run, data=str(tmp_path / "test.tfrecord"), dataset=dataset, clips=5,
                            num_classes=num_classes, batch_size=5, model=model, **kwargs)
    sizes = {s for s, _ in seen}
    starts = [start for _, start in seen]
    return result, sizes, [starts[i:i + 5] for i in range(0, len(starts), 5)]


@pytest.mark.parametrize("pipeline", ["native", "tfdata"])
def test_charades_default_is_a7_random_crops_at_256_over_224_of_the_training_size(tmp_path, pipeline):
    run = _run(tmp_path, "charades", 2)
    result, sizes, starts = _evaluate(tmp_path, run, "charades", 2, input_pipeline=pipeline, input_workers=0)
    assert sizes == {32} and result["size"] == 32  # round(28 * 256 / 224): 256 for the paper's 224
    assert result["clip_starts"] == "random" and result["seed"] == 0
    even = [0, 14, 28, 42, 56]
    assert all(s != even and len(set(s)) > 1 and max(s) <= NUM_FRAMES - FRAMES for s in starts), starts
    assert len({tuple(s) for s in starts}) == 3  # each video draws its own starts
    _, _, again = _evaluate(tmp_path, run, "charades", 2, input_pipeline=pipeline, input_workers=0)
    assert again == starts  # a fixed seed: the result repeats
    # the evenly spaced protocol and another size stay available
    result, sizes, starts = _evaluate(tmp_path, run, "charades", 2, clip_starts="even", size=24,
                                      input_pipeline=pipeline, input_workers=0)
    assert sizes == {24} and starts == [even] * 3 and result["clip_starts"] == "even"


def test_toyota_default_keeps_the_training_size_and_even_clips(tmp_path):
    run = _run(tmp_path, "toyota", 31)
    result, sizes, starts = _evaluate(tmp_path, run, "toyota", 31, input_pipeline="native", input_workers=0)
    assert sizes == {TRAIN_SIZE} and starts == [[0, 14, 28, 42, 56]] * 3 and result["clip_starts"] == "even"


def test_a_saved_model_is_evaluated_at_the_test_size_with_its_weights(tmp_path):
    from model.assemblenet import build_assemblenet
    from model.structure import tiny
    from pipelines.evaluate import at_size, evaluate_model

    trained = build_assemblenet(tiny(), 2, frames=FRAMES, size=32)
    run = _run(tmp_path, "charades", 2)
    trained.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"structure": "tiny", "dataset": "charades", "frames": FRAMES,
                                                 "size": 56, "num_classes": 2}))
    result = evaluate_model(run_dir=run, data=str(tmp_path / "test.tfrecord"), dataset="charades", clips=2,
                            batch_size=6, input_pipeline="native", input_workers=0)
    assert result["size"] == 64 and result["num_videos"] == 3  # 56 * 256 / 224 = 64
    resized = at_size(trained, 64)
    direct = build_assemblenet(tiny(), 2, frames=FRAMES, size=64)
    direct.set_weights(trained.get_weights())
    x = {m: np.random.default_rng(0).normal(size=(1, FRAMES, 64, 64, c)).astype("float32")
         for m, c in (("rgb", 3), ("flow", 2)) if m in tiny().modalities}
    if "object" in tiny().modalities:
        x["object"] = np.zeros((1, FRAMES, 64, 64), "int32")
    np.testing.assert_allclose(np.asarray(resized(x)), np.asarray(direct(x)), atol=1e-5)
    assert at_size(trained, 32) is trained


def test_evaluate_run_flags_are_the_evaluate_config_fields(capsys):
    """`evaluate run`'s settings flags hold EvaluateConfig's defaults, choices and ranges."""
    import dataclasses

    from pipelines import cli
    from pipelines.evaluate import CLIP_STARTS, EvaluateConfig

    args = cli.build_parser().parse_args(["evaluate", "run", "RUN", "--data", "d"])
    for field in dataclasses.fields(EvaluateConfig):
        assert getattr(args, field.name) == field.default, field.name
    assert (args.dataset, args.clips, args.clip_starts, args.size, args.seed, args.batch_size) == (
        None, None, None, None, 0, 4)
    args = cli.build_parser().parse_args(["evaluate", "run", "RUN", "--data", "d", "--clips", "3",
                                          "--clip-starts", "even", "--size", "160", "--dataset", "toyota"])
    assert (args.clips, args.clip_starts, args.size, args.dataset) == (3, "even", 160, "toyota")
    assert CLIP_STARTS == ("random", "even")
    for flag, value, message in (
            ("--clips", "0", "argument --clips: expected an integer in [1, 1000], got '0'"),
            ("--clip-starts", "middle", "argument --clip-starts: invalid choice: 'middle'"),
            ("--batch-size", "0", "argument --batch-size: expected an integer in [1, 1000000000], got '0'")):
        with pytest.raises(SystemExit):
            cli.main(["evaluate", "run", "RUN", "--data", "d", flag, value])
        assert message in capsys.readouterr().err
