"""The papers' recipes: warm restarts (AssembleNet++ §4.3) and the recipe files of configs/."""

import json
import math

import numpy as np
import pytest

from pipelines.configs import load_config_file, recipe_names
from pipelines.train import TrainConfig, WarmupCosine, make_schedule

RECIPES = ("charades_assemblenet50", "charades_assemblenet_plus50", "toyota_cs_assemblenet_plus50")


def _lr(schedule, step):
    return float(np.asarray(schedule(step)))


# -- warm restarts -------------------------------------------------------------------------

def test_restart_cycles_are_equal_with_the_warmup_inside_the_first():
    # §4.3: "100K training iterations with two 50K cycles", with A.6's 12k warm-up.
    schedule = WarmupCosine(25.6, 12_000, 100_000, restarts=1)
    assert schedule.cycle_starts() == [0, 50_000]
    assert _lr(schedule, 6_000) == pytest.approx(12.8)
    assert _lr(schedule, 12_000) == pytest.approx(25.6)
    assert _lr(schedule, 31_000) == pytest.approx(12.8, rel=1e-5)  # half-way from 12k to 50k
    assert _lr(schedule, 49_999) < 1e-3
    assert _lr(schedule, 50_000) == pytest.approx(25.6)  # the restart, exactly half-way
    assert _lr(schedule, 75_000) == pytest.approx(12.8, rel=1e-5)
    assert _lr(schedule, 99_999) < 1e-3
    # Without restarts the warm-up then one cosine over the rest, as before (A.6).
    single = WarmupCosine(2.0, 10, 110)
    assert _lr(single, 60) == pytest.approx(1.0, abs=1e-5)
    assert _lr(single, 35) == pytest.approx(1.0 + math.cos(math.pi / 4), abs=1e-5)


def test_restart_cycles_with_a_multiplier_partition_the_run():
    grow = WarmupCosine(1.0, 5, 70, restarts=2, multiplier=2.0)  # cycles of 10, 20, 40 steps
    assert grow.cycle_starts() == pytest.approx([0, 10, 30])
    assert [round(_lr(grow, s), 4) for s in (5, 10, 20, 30, 50)] == [1.0, 1.0, 0.5, 1.0, 0.5]
    assert _lr(grow, 7.5) == pytest.approx(0.5, abs=1e-5)  # the first cosine runs from 5 to 10


def test_a_warmup_longer_than_the_first_cycle_is_refused():
    with pytest.raises(ValueError, match=r"warmup_steps=60: the warm-up is part of the first cosine cycle "
                                         r"\(50 steps of 100 with restarts=1\)"):
        TrainConfig(steps=100, steps_per_epoch=10, warmup_steps=60, restarts=1)


# -- recipe files ----------------------------------------------------------------------------

def test_shipped_recipes_hold_the_papers_numbers():
    assert set(RECIPES) <= set(recipe_names())
    configs = {name: TrainConfig.from_json(load_config_file(name)[0]) for name in RECIPES}
    a50 = configs["charades_assemblenet50"]  # AssembleNet A.6
    assert (a50.structure, a50.batch_size, a50.frames, a50.size, a50.learning_rate, a50.warmup_steps,
            a50.steps, a50.restarts, a50.weight_decay, a50.label_smoothing, a50.momentum) == (
        "assemblenet50", 128, 128, 224, 25.6, 12_000, 50_000, 0, 1e-4, 0.2, 0.9)
    pp = configs["charades_assemblenet_plus50"]  # AssembleNet++ §4.3
    assert (pp.structure, pp.steps, pp.restarts) == ("assemblenet_plus50", 100_000, 1)
    assert make_schedule(pp).cycle_starts() == [0, 50_000]
    toyota = configs["toyota_cs_assemblenet_plus50"]  # AssembleNet++ §4.3, Table 3: warm restarts
    assert (toyota.dataset, toyota.num_classes, toyota.steps, toyota.restarts) == ("toyota", 31, 30_000, 1)
    assert make_schedule(toyota).cycle_starts() == [0, 15_000]  # §4's 15K cosine, restarted once
    _, whole = load_config_file("charades_assemblenet50")
    assert whole["preprocess"]["fps"] == 6 and whole["evaluate"]["size"] == 256  # A.6, A.7


@pytest.mark.slow  # three full-width models (a few seconds each on an idle machine)
@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_builds_its_model_at_a_small_size(name):
    from model.assemblenet import build_assemblenet
    from model.structure import get_structure

    config = TrainConfig.from_json(load_config_file(name)[0])
    model = build_assemblenet(config.structure, config.num_classes, attention=config.attention,
                              default_peers=config.default_peers, temporal_pool=config.temporal_pool,
                              frames=4, size=32)
    shapes = {"rgb": (1, 4, 32, 32, 3), "flow": (1, 4, 32, 32, 2), "object": (1, 4, 32, 32)}
    x = {m: np.zeros(shapes[m], "int32" if m == "object" else "float32")
         for m in get_structure(config.structure).modalities}
    assert np.asarray(model(x)).shape == (1, config.num_classes)


def test_train_cli_takes_a_recipe_by_name_or_path_and_flags_override_it(monkeypatch, tmp_path):
    from pipelines import cli

    seen = {}
    monkeypatch.setattr("pipelines.train.train",
                        lambda *, config, **kwargs: seen.update(config=config) or {"steps": config.steps})
    assert cli.main(["train", "--config", "charades_assemblenet50", "--data", "d", "--workdir",
                     str(tmp_path / "run"), "--frames", "8", "--size", "32", "--quiet"]) == 0
    expected = TrainConfig.from_json({**load_config_file("charades_assemblenet50")[0], "frames": 8, "size": 32})
    assert seen["config"] == expected and seen["config"].structure == "assemblenet50"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"train": {"structure": "tiny", "steps": 20, "steps_per_epoch": 10}}))
    assert cli.main(["train", "--config", str(path), "--data", "d", "--workdir", str(tmp_path / "r2"),
                     "--default-peers", "--quiet"]) == 0
    assert seen["config"] == TrainConfig(structure="tiny", steps=20, steps_per_epoch=10, default_peers=True)


@pytest.mark.parametrize("content, message", [
    ({"train": {"stpes": 10}}, r"mine.json: unknown TrainConfig field\(s\) \['stpes'\]"),
    ({"train": {}, "preproces": {}}, r"mine.json: unknown recipe section\(s\) \['preproces'\]"),
    ({"train": {}, "preprocess": {"fsp": 6}}, r"mine.json: unknown preprocess key\(s\) \['fsp'\]"),
])
def test_a_recipe_with_an_unknown_key_fails_naming_it(tmp_path, content, message):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_json(load_config_file(path)[0], source=str(path))
    with pytest.raises(ValueError, match="not a shipped recipe; expected a JSON path or one of .*assemblenet50"):
        load_config_file("charades_assemblenet5")
