"""The AttentionNAS search driver, its synthetic task, the drawing and the CLI (TensorFlow backend)."""

import json

import numpy as np
import pytest

from model.attention_nas import normalize_cell
from pipelines.attention_search import SearchConfig, draw_cell, search, synthetic_batch, train_and_evaluate
from pipelines.cli import build_parser

SMALL_SPACE = {
    "dimension": ["temporal", "spatiotemporal"],
    "g1": ["conv1x1x1"],
    "g2": ["conv1x1x1"],
    "activation": ["sigmoid", "softmax"],
}


def test_synthetic_task_is_deterministic_and_needs_time():
    a, labels = synthetic_batch(
        np.random.default_rng(3), 32, frames=6, size=24, modalities=("rgb", "flow", "object")
    )
    b, same = synthetic_batch(
        np.random.default_rng(3), 32, frames=6, size=24, modalities=("rgb", "flow", "object")
    )
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    np.testing.assert_array_equal(labels, same)
    assert a["rgb"].shape == (32, 6, 24, 24, 3) and a["rgb"].min() >= -1 and a["rgb"].max() <= 1
    disc = a["object"] == 1
    moving = np.abs(a["flow"]).sum(axis=(1, 2, 3, 4)) > 0
    # Only the linear (1) and jumping (3) discs move; static (0) and blinking (2) ones never do.
    assert set(labels[moving]) <= {1, 3} and not moving[np.isin(labels, (0, 2))].any()
    visible_frames = disc.any(axis=(2, 3)).sum(axis=1)
    assert (visible_frames[labels == 2] < 6).all() and (visible_frames[labels != 2] == 6).all()



def _tiny_search(*, steps, eval_batches):
    """A search small enough for a test: 2 operations over SMALL_SPACE on 4 x 32² clips."""
    return SearchConfig(steps=steps, batch_size=4, frames=4, size=32, num_operations=2, candidates=SMALL_SPACE,
                        arch_start=0.0, eval_batches=eval_batches, recalibration_batches=2, eager=True)

def test_search_writes_cell_weights_and_drawing(tmp_path):
    config = _tiny_search(steps=3, eval_batches=1)
    record = search(config=config, out_dir=tmp_path)
    cell = json.loads((tmp_path / "cell.json").read_text())
    assert normalize_cell(cell) == cell == record["cell"] and len(cell["operations"]) == 2
    weights = json.loads((tmp_path / "arch_weights.json").read_text())
    assert weights["cells"] == ["res3_0_cell", "res4_0_cell"]
    probs = weights["operations"]["op2"]["dimension"]
    assert set(probs) == {"temporal", "spatiotemporal"} and abs(sum(probs.values()) - 1) < 1e-6
    assert probs["temporal"] != 0.5  # three architecture steps moved the uniform start
    assert (tmp_path / "cell.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(record["history"]) == 3 and record["arch_variables"] == 2 * (2 * 8 - 1)


def test_draw_cell_rejects_invalid_cells(tmp_path):
    with pytest.raises(ValueError, match="cannot take input 3"):
        draw_cell({"operations": [{"inputs": [0]}, {"inputs": [3]}]}, tmp_path / "x.png")


def test_cli_parses_into_the_search_function():
    args = build_parser().parse_args(
        [
            "attention-search",
            "--backbone",
            "assemblenet",
            "--out",
            "o",
            "--steps",
            "5",
            "--after-levels",
            "2",
            "--blocks",
            "1,2,2,1",
        ]
    )
    assert args.func.__module__ == "pipelines.commands.attention_search"
    assert (args.backbone, args.steps, args.after_levels, args.blocks) == (
        "assemblenet",
        5,
        (2,),
        (1, 2, 2, 1),
    )
    with pytest.raises(ValueError, match="backbone must be"):
        SearchConfig(backbone="vgg")


@pytest.mark.slow
def test_end_to_end_search_then_train_the_derived_cell(tmp_path):
    """Short search on the synthetic task → derived cell inserted into a small ResNet and an AssembleNet
    → short training lowers the loss."""
    config = _tiny_search(steps=4, eval_batches=2)
    cell = search(config=config, out_dir=tmp_path)["cell"]
    result = train_and_evaluate(
        SearchConfig(
            steps=40, batch_size=8, frames=8, size=32, lr=1e-3, eval_batches=2, recalibration_batches=2
        ),
        cell,
    )
    assert result["model"].get_layer("res3_0_cell_op1").__class__.__name__ == "AttentionOperation"
    assert result["final_loss"] < result["first_loss"]
    assert 0.0 <= result["accuracy"] <= 1.0
    tiny = SearchConfig(
        backbone="assemblenet",
        structure="tiny",
        steps=2,
        batch_size=2,
        frames=4,
        size=32,
        eval_batches=1,
        recalibration_batches=2,
    )
    model = train_and_evaluate(tiny, cell)["model"]
    assert {"block5_cell_op1", "block7_cell_op2"} <= {layer.name for layer in model.layers}
