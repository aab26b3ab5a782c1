"""pipelines.configs.check: a config made in code is held to its fields' types, choices and ranges,
as its flags and files are; each refusal is one line naming the field and the value."""

import dataclasses
import json

import numpy as np
import pytest

from pipelines import configs
from pipelines.attention_search.config import SearchConfig
from pipelines.evolve import EvolutionConfig
from pipelines.train_config import TrainConfig

CONFIGS = (TrainConfig, SearchConfig, EvolutionConfig)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TrainConfig(frames=0), "TrainConfig.frames=0: expected an integer in [1, 4096]"),
    (lambda: TrainConfig(size=4), "TrainConfig.size=4: expected an integer in [8, 4096]"),
    (lambda: TrainConfig(precision="fp16"), "TrainConfig.precision='fp16': expected one of ('fp32', 'bf16')"),
    (lambda: TrainConfig(weight_decay=2.0), "TrainConfig.weight_decay=2.0: expected a number in [0, 1]"),
    (lambda: TrainConfig(learning_rate=-0.1), "TrainConfig.learning_rate=-0.1: expected a number in (0, 10000]"),
    (lambda: TrainConfig(frames="16"), "TrainConfig.frames='16': expected an integer"),
    (lambda: TrainConfig(momentum=float("inf")), "TrainConfig.momentum=inf: must be a finite number"),
    (lambda: SearchConfig(optimizer="rmsprop"), "SearchConfig.optimizer='rmsprop': expected one of ('sgd', 'adam')"),
    (lambda: SearchConfig(heldout_fraction=1.0), "SearchConfig.heldout_fraction=1.0: expected a number in (0, 1)"),
    (lambda: SearchConfig(arch_start=1.0), "SearchConfig.arch_start=1.0: expected a number in [0, 1)"),
    (lambda: SearchConfig(final_temperature=0.0), "SearchConfig.final_temperature=0.0: expected a number in (0, 1]"),
    (lambda: SearchConfig(task_clips=3), "SearchConfig.task_clips=3: expected an integer in [4, 1000000000]"),
    (lambda: SearchConfig(steps=0), "SearchConfig.steps=0: expected an integer in [1, 1000000000]"),
    (lambda: EvolutionConfig(strategy="greedy"),
     "EvolutionConfig.strategy='greedy': expected one of ('guided', 'random-edges', 'random-search')"),
    (lambda: EvolutionConfig(rounds=-1), "EvolutionConfig.rounds=-1: expected an integer in [0, 1000000000]"),
    (lambda: EvolutionConfig(keep_threshold=1.5), "EvolutionConfig.keep_threshold=1.5: expected a number in [0, 1]"),
    (lambda: EvolutionConfig(population_size=0),
     "EvolutionConfig.population_size=0: expected an integer in [1, 100000]"),
])
def test_a_bad_field_is_one_line_naming_the_field_and_the_value(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_declared_choice_and_range_is_checked(cls):
    """Each field with choices refuses a value outside them, and each field with a range refuses the
    value just below it (and above it), whether or not a flag is made from the field."""
    checked = 0
    for field in dataclasses.fields(cls):
        choices, bounds = field.metadata.get("choices"), field.metadata.get("type")
        bad = []
        if choices:
            bad.append("not-a-choice")
        if isinstance(bounds, configs.Range):
            step = 1 if bounds.kind is int else 1e-3
            if bounds.low is not None:
                bad.append(bounds.low if bounds.low_open else bounds.low - step)
            if bounds.high is not None:
                bad.append(bounds.high if bounds.high_open else bounds.high + step)
        for value in bad:
            with pytest.raises(ValueError) as error:
                cls(**{field.name: value})
            assert str(error.value).startswith(f"{cls.__name__}.{field.name}={value!r}: expected "), str(error.value)
            checked += 1
    assert checked >= {TrainConfig: 25, SearchConfig: 25, EvolutionConfig: 8}[cls]


def test_the_rules_between_fields_stay_with_the_config():
    with pytest.raises(ValueError, match=r"^TrainConfig.steps=10 must be a multiple of steps_per_epoch=3"):
        TrainConfig(steps=10, steps_per_epoch=3)
    with pytest.raises(ValueError, match=r"^TrainConfig.warmup_steps=10: expected 0 <= warmup_steps < steps=10$"):
        TrainConfig(steps=10, steps_per_epoch=5, warmup_steps=10)
    with pytest.raises(ValueError, match="needs TrainConfig.tpu"):
        TrainConfig(strategy="tpu")
    with pytest.raises(ValueError, match="relation task has 2 classes, got num_classes=4"):
        SearchConfig(task="relation", num_classes=4)
    with pytest.raises(ValueError, match="--data needs num_classes"):
        SearchConfig(data="records/")


def test_numpy_numbers_and_good_values_pass():
    config = TrainConfig(frames=np.int64(8), learning_rate=np.float32(0.5), steps=10, steps_per_epoch=5)
    assert (config.frames, config.learning_rate) == (8, 0.5)
    assert EvolutionConfig(population_size=1, keep_threshold=0.0).population_size == 1
    assert SearchConfig(task="relation").num_classes == 2


def test_a_bad_value_in_a_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"frames": 8, "label_smoothing": 1.0}))
    with pytest.raises(ValueError) as error:
        TrainConfig.from_json(path)
    assert str(error.value) == f"{path}: TrainConfig.label_smoothing=1.0: expected a number in [0, 1)"


def test_the_jobs_check_their_settings_against_the_same_fields(tmp_path):
    """run_search, evaluate_model and the end-to-end job refuse a bad setting with the message of the
    config field that declares it, before they read anything."""
    from pipelines.evaluate import EvaluateConfig, evaluate_model
    from pipelines.orchestration.end_to_end import EndToEndConfig
    from pipelines.search import OneShotConfig, run_search

    with pytest.raises(ValueError) as error:
        run_search(structure="tiny", data=str(tmp_path), out_dir=tmp_path / "search", threshold=1.0)
    assert str(error.value) == "OneShotConfig.threshold=1.0: expected a number in [0, 1)"
    for settings, message in (({"clips": 0}, "EvaluateConfig.clips=0: expected an integer in [1, 1000]"),
                              ({"clip_starts": "middle"},
                               "EvaluateConfig.clip_starts='middle': expected one of ('random', 'even')"),
                              ({"dataset": "kinetics"},
                               "EvaluateConfig.dataset='kinetics': expected one of ('charades', 'toyota')")):
        with pytest.raises(ValueError) as error:
            evaluate_model(**{"run_dir": tmp_path, "data": str(tmp_path), "dataset": "charades", **settings})
        assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        EvaluateConfig(batch_size=0)
    assert str(error.value) == "EvaluateConfig.batch_size=0: expected an integer in [1, 1000000000]"
    assert OneShotConfig().threshold == 0.2
    with pytest.raises(ValueError) as error:
        EndToEndConfig(videos=3)
    assert str(error.value) == "EndToEndConfig.videos=3: expected an integer in [4, 1000000000]"
    with pytest.raises(ValueError) as error:
        EndToEndConfig(fps=float("nan"))
    assert str(error.value) == "EndToEndConfig.fps=nan: must be a finite number"
    with pytest.raises(ValueError, match=r"^EndToEndConfig.train_steps=30 must be a multiple of steps_per_epoch=20"):
        EndToEndConfig(train_steps=30)
