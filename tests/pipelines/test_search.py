"""The one-shot search driver, the CLI of both searches, and the end-to-end search path:
evolution (tiny proxy trainings) → one-shot attention search on the best structure → final training.

The end-to-end test writes its TFRecords straight through `preprocessing.schema.encode_example`
(a moving square whose direction is the class), not through the Beam job: the Beam job costs
~40 s of start-up on the CI machine and is tested by the preprocessing suite.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from model.evolution import SearchSpace, parse_edge_weights
from model.oneshot import over_connected
from model.structure import Structure, get_structure
from pipelines import cli
from pipelines.cli.commands import evolve as evolve_command
from pipelines.evolve import EvolutionConfig, TrainEvaluator, load_state
from pipelines.search import search_summary


def test_evolve_flags_build_the_configs(tmp_path):
    args = cli.build_parser().parse_args([
        "evolve", "--data", "train/", "--eval-data", "val/", "--out", str(tmp_path), "--population", "8",
        "--rounds", "12", "--strategy", "random-edges", "--keep-threshold", "0.3", "--object-stem",
        "--width-scale", "8", "--repeats", "0.5,0.5,0.5,0.5", "--stems", "4", "--steps", "20",
        "--steps-per-epoch", "10", "--frames", "4", "--size", "32", "--dataset", "toyota", "--workers", "2"])
    config, evaluator = evolve_command.configs_from_args(args)
    assert config == EvolutionConfig(
        population_size=8, rounds=12, strategy="random-edges", keep_threshold=0.3,
        space=SearchSpace(stem_counts=(4,), object_stem=True, width_scale=8, repeats=(0.5,) * 4))
    assert evaluator == TrainEvaluator(data="train/", eval_data="val/", train={
        "steps": 20, "steps_per_epoch": 10, "frames": 4, "size": 32, "dataset": "toyota"})
    assert args.workers == 2
    default, _ = evolve_command.configs_from_args(cli.build_parser().parse_args(
        ["evolve", "--data", "d", "--out", "o"]))
    assert default.keep_threshold is None and default.space == SearchSpace()  # B ~ unif(0, 1)
    with pytest.raises(ValueError, match="typo_field"):
        TrainEvaluator(data="d", train={"typo_field": 1})


def test_search_space_flags_are_made_from_the_search_space_fields(capsys):
    """--stems, --object-stem, --width-scale and --repeats: SearchSpace's fields (model/), whose plain
    metadata holds their help text and range."""
    import dataclasses

    args = cli.build_parser().parse_args(["evolve", "--data", "d", "--out", "o"])
    space = SearchSpace()
    assert (args.stems, args.object_stem, args.width_scale, args.repeats) == (
        space.stem_counts, space.object_stem, space.width_scale, space.repeats) == ((2, 4), False, 1,
                                                                                      (1.5, 2.0, 3.0, 1.5))
    fields = {f.name: f for f in dataclasses.fields(SearchSpace)}
    evolve = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["evolve"]
    help_of = {a.dest: a.help for a in evolve._actions}
    assert help_of["width_scale"] == fields["width_scale"].metadata["help"]
    assert help_of["stems"] == fields["stem_counts"].metadata["help"] == "stem counts to draw from (paper: 2,4)"
    for flag, value, message in (
            ("--width-scale", "0", "argument --width-scale: expected an integer in [1, 1024], got '0'"),
            ("--stems", "2,x", "argument --stems: expected comma-separated ints, e.g. 2,4; got '2,x'"),
            ("--repeats", "1,a", "argument --repeats: expected comma-separated floats, e.g. 2,4; got '1,a'")):
        with pytest.raises(SystemExit):
            cli.main(["evolve", "--data", "d", "--out", "o", flag, value])
        assert message in capsys.readouterr().err


def test_search_summary_lists_what_was_kept():
    layout = get_structure("tiny")
    supernet = over_connected(layout)
    weights = {str(n.index): {str(j): (0.9 if j in n.inputs else 0.1) for j in supernet.node(n.index).inputs}
               for n in layout.blocks}
    attention = {str(n.index): {str(p): 1 / len(supernet.peers(n.index)) for p in supernet.peers(n.index)}
                 for n in layout.blocks}
    from model.pruning import prune_weights

    final = prune_weights(supernet, weights, attention, threshold=0.2)
    assert set(final.edges()) == set(layout.edges())  # the strong edges are tiny's own
    summary = search_summary(layout, supernet, final, weights, attention, 0.2)
    assert summary["edges_searched"] == len(supernet.edges()) == 31
    assert summary["edges_kept"] == len(layout.edges())
    assert summary["object_edges_kept"] == sum(1 for j, _ in layout.edges() if j == 2)  # node 2: object stem
    assert summary["blocks"]["8"]["kept_inputs"] == [2, 4, 7]
    assert summary["blocks"]["8"]["connection_weights"]["0"] == 0.1


# -- end to end ------------------------------------------------------------------------------

def _write_tfrecords(folder: Path, *, videos: int, num_classes: int, frames: int, size: int) -> str:
    import tensorflow as tf

    from preprocessing.flow import quantize_flow
    from preprocessing.schema import encode_example

    rng = np.random.default_rng(0)
    directions = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    folder.mkdir(parents=True)
    path = folder / "data-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for v in range(videos):
            c = v % num_classes
            dx, dy = directions[c % 4]
            rgb = rng.integers(0, 40, size=(frames, size, size, 3), dtype=np.uint8)
            x, y = rng.integers(8, size - 16, size=2)
            for t in range(frames):
                px, py = (x + 2 * dx * t) % (size - 8), (y + 2 * dy * t) % (size - 8)
                rgb[t, py:py + 8, px:px + 8] = (255, 60 * c, 0)
            flow = np.zeros((frames - 1, size, size, 2), np.float32)
            flow[..., 0], flow[..., 1] = 2 * dx, 2 * dy
            writer.write(encode_example(video_id=f"vid{v:03d}", dataset="toyota", fps=4.0, rgb=rgb,
                                        num_classes=num_classes, labels=[c], label_start=[0.0],
                                        label_end=[frames / 4.0], flow=quantize_flow(flow)))
    return str(folder)


@pytest.mark.slow
def test_evolution_then_one_shot_search_then_final_training(tmp_path):
    import keras

    data = _write_tfrecords(tmp_path / "data", videos=8, num_classes=4, frames=8, size=32)
    proxy = ["--dataset", "toyota", "--frames", "4", "--size", "32", "--batch-size", "4", "--steps", "2",
             "--steps-per-epoch", "2"]
    evo = tmp_path / "evolution"
    assert cli.main(["evolve", "--data", data, "--out", str(evo), "--population", "2", "--rounds", "2",
                     "--stems", "2", "--width-scale", "16", "--repeats", "0.5,0.5,0.5,0.5", *proxy]) == 0
    history = json.loads((evo / "history.json").read_text())
    assert len(history) == 4 and [h["phase"] for h in history] == ["initial"] * 2 + ["child"] * 2
    for h in history:
        run = evo / "children" / h["child"] / "run"
        metrics = json.loads((run / "metrics.json").read_text())
        assert h["fitness"] == pytest.approx(metrics["top1"] + metrics["top5"])  # §3.2 fitness
        # No --eval-data: fitness on the held-out videos of --data (vid003, vid006 by their id hash).
        assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["num_videos"] == 2
        learned = parse_edge_weights(json.loads((run / "connection_weights.json").read_text()))
        assert parse_edge_weights(h["edge_weights"]) == pytest.approx(learned)
        assert set(learned) == set(Structure.from_json(h["structure"]).edges())
    assert len(load_state(evo)["population"]) == 2
    assert load_state(evo)["evaluation"]["heldout_ids"] == ["vid003", "vid006"]
    best = get_structure(str(evo / "best_structure.json"))
    assert best.nodes == Structure.from_json(max(history, key=lambda h: h["fitness"])["structure"]).nodes
    assert (evo / "fitness.png").stat().st_size > 0

    search = tmp_path / "search"
    assert cli.main(["search", "--structure", str(evo / "best_structure.json"), "--data", data,
                     "--out", str(search), *proxy, "--quiet"]) == 0
    supernet = Structure.from_json(search / "structure.json")
    assert set(supernet.edges()) == {(j.index, i.index) for i in best.blocks for j in best.nodes
                                     if j.level < i.level}
    final = Structure.from_json(search / "final_structure.json")
    summary = json.loads((search / "search_summary.json").read_text())
    weights = json.loads((search / "connection_weights.json").read_text())
    for node in final.blocks:
        assert node.peer in supernet.peers(node.index)
        block = summary["blocks"][str(node.index)]
        assert node.peer == int(max(block["attention_weights"], key=block["attention_weights"].get))
        assert sum(block["attention_weights"].values()) == pytest.approx(1.0, abs=1e-5)
        strong = [int(j) for j, w in weights[str(node.index)].items() if w > 0.2]
        assert list(node.inputs) == sorted(strong) or (not strong and len(node.inputs) == 1)

    run = tmp_path / "final"
    assert cli.main(["train", "--structure", str(search / "final_structure.json"), "--attention", "peer",
                     "--data", data, "--workdir", str(run), *proxy, "--quiet"]) == 0
    model = keras.models.load_model(run / "model.keras")
    assert model.output_shape == (None, 4)
    assert Structure.from_json(run / "structure.json") == final


def test_search_threshold_flag_is_the_one_shot_config_field(monkeypatch, capsys):
    """--threshold: OneShotConfig.threshold, whose default is model.pruning's PRUNE_THRESHOLD (§3.5, 0.2)."""
    import dataclasses

    from model.pruning import PRUNE_THRESHOLD
    from pipelines.search import OneShotConfig

    field = {f.name: f for f in dataclasses.fields(OneShotConfig)}["threshold"]
    args = cli.build_parser().parse_args(["search", "--structure", "tiny", "--data", "d", "--out", "o"])
    assert args.threshold == field.default == PRUNE_THRESHOLD == 0.2
    args = cli.build_parser().parse_args(["search", "--structure", "tiny", "--data", "d", "--out", "o",
                                          "--threshold", "0.35"])
    assert args.threshold == 0.35
    with pytest.raises(SystemExit):
        cli.main(["search", "--structure", "tiny", "--data", "d", "--out", "o", "--threshold", "1"])
    assert "argument --threshold: expected a number in [0, 1), got '1'" in capsys.readouterr().err
