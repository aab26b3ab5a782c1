"""The recipe drives the whole run: defaults that follow the dataset, the evaluation protocol a run
keeps from its recipe, and a failing run that writes nothing."""

import json

import pytest

from pipelines import cli
from pipelines.configs import load_config_file
from pipelines.train import TrainConfig, train
from tests.pipelines.test_checks import write_records


def test_the_default_learning_rate_follows_the_dataset_loss():
    # AssembleNet A.6: 25.6 at batch 128 for Charades' sigmoid loss; 3.2 at batch 512 for a softmax loss.
    assert TrainConfig(dataset="charades", batch_size=128).peak_learning_rate == pytest.approx(25.6)
    assert TrainConfig(dataset="toyota", batch_size=128).peak_learning_rate == pytest.approx(0.8)
    assert TrainConfig(dataset="toyota", batch_size=8).peak_learning_rate == pytest.approx(0.05)
    assert TrainConfig(dataset="toyota", learning_rate=0.3).peak_learning_rate == 0.3
    # the Toyota recipe's own rate is the default's at its batch
    toyota = TrainConfig.from_json(load_config_file("toyota_cs_assemblenet_plus50")[0])
    assert toyota.learning_rate == pytest.approx(TrainConfig(dataset="toyota", batch_size=128).peak_learning_rate)


def test_peer_attention_without_peers_fails_before_writing_the_run(tmp_path):
    data = write_records(tmp_path / "records" / "a.tfrecord", num_classes=4)
    workdir = tmp_path / "run"
    config = TrainConfig(attention="peer", frames=4, size=32, batch_size=2, steps=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"attention 'peer' needs a peer for every block"):
        train(config=config, data=str(data), workdir=workdir)
    assert not workdir.exists()  # so the retry with --default-peers is a new run, not a refused resume


def test_a_run_keeps_its_recipe_and_evaluate_run_follows_its_evaluate_section(tmp_path, monkeypatch, capsys):
    from pipelines import evaluate
    from pipelines import train as train_module

    data = write_records(tmp_path / "records" / "a.tfrecord", dataset="toyota", num_classes=31, side=128)
    workdir = tmp_path / "run"
    monkeypatch.setattr(train_module, "train_model", lambda *args, **kwargs: (None, {"loss": 1.0}))
    assert cli.main(["train", "--config", "toyota_cs_assemblenet_plus50", "--structure", "tiny", "--data",
                     str(data), "--workdir", str(workdir), "--frames", "4", "--size", "112", "--batch-size", "2",
                     "--steps", "2", "--steps-per-epoch", "1", "--warmup-steps", "0", "--restarts", "0"]) == 0
    recipe = json.loads((workdir / "recipe.json").read_text())
    assert recipe == load_config_file("toyota_cs_assemblenet_plus50")[1]
    assert recipe["evaluate"] == {"clips": 5, "size": 256, "crops": "random"}

    calls = []
    monkeypatch.setattr(evaluate, "evaluate_model", lambda **kwargs: calls.append(kwargs) or {"accuracy": 0.5})
    (workdir / "model.keras").write_bytes(b"")
    run = ["evaluate", "run", str(workdir), "--data", str(data)]
    assert cli.main(run) == 0
    # the recipe's five random clips at 256 for its 224 training: 128 for this run's 112
    assert {k: calls[-1][k] for k in ("dataset", "clips", "clip_starts", "size", "recipe")} == {
        "dataset": "toyota", "clips": 5, "clip_starts": "random", "size": 128,
        "recipe": "toyota_cs_assemblenet_plus50"}
    assert cli.main([*run, "--clips", "2", "--clip-starts", "even", "--size", "64"]) == 0  # flags win
    assert (calls[-1]["clips"], calls[-1]["clip_starts"], calls[-1]["size"]) == (2, "even", 64)
    (workdir / "recipe.json").unlink()  # without a recipe: the dataset's defaults (evaluate_model's)
    assert cli.main(run) == 0
    assert (calls[-1]["clips"], calls[-1]["clip_starts"], calls[-1]["size"], calls[-1]["recipe"]) == (
        5, None, None, None)
    custom = tmp_path / "recipe.json"
    custom.write_text(json.dumps({"train": {"size": 112}, "evaluate": {"clips": 3, "size": 160, "crops": "even"}}))
    assert cli.main([*run, "--config", str(custom)]) == 0  # --config names the protocol
    assert (calls[-1]["clips"], calls[-1]["clip_starts"], calls[-1]["size"], calls[-1]["recipe"]) == (
        3, "even", 160, str(custom))
    capsys.readouterr()
    assert cli.main([*run, "--config", str(workdir / "config.json")]) == 1  # a plain TrainConfig has no protocol
    assert "not a recipe" in capsys.readouterr().err


def test_a_recipes_test_size_scales_with_the_runs_training_size():
    from pipelines.evaluate import default_test_size, scaled_test_size

    # A.7: 256 for 224 training; other sizes keep the ratio, rounded to the model's stride of 32.
    assert [scaled_test_size(256, 224, s) for s in (224, 112, 64, 32)] == [256, 128, 64, 32]
    assert scaled_test_size(160, 112, 112) == 160  # a run at the recipe's own size: the recipe's size
    assert [default_test_size("charades", s) for s in (224, 112)] == [256, 128]
