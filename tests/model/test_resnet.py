"""The I3D-ResNet backbone and AttentionNAS cells inserted into it (runs under TensorFlow and JAX)."""

import keras
import numpy as np
import pytest

from model.attention_nas import NONLOCAL, cell_cost
from model.resnet import build_resnet3d, nonlocal_positions, positions, stage_blocks

SMALL = {"blocks": (1, 2, 2, 1), "width": 4}
CELL = {
    "operations": [
        {"inputs": [0], "dimension": "temporal", "type": "dot"},
        {"inputs": [0, 1], "dimension": "spatial", "type": "map", "activation": "softmax"},
    ]
}


def test_nonlocal_positions_of_r50():
    assert nonlocal_positions() == ("res3_0", "res3_2", "res4_0", "res4_2", "res4_4")
    assert nonlocal_positions((1, 2, 2, 1)) == ("res3_0", "res4_0")
    assert positions((1, 1, 1, 1)) == ["res2_0", "res3_0", "res4_0", "res5_0"]


def test_layout_strides_and_inflation():
    assert stage_blocks(50) == (3, 4, 6, 3) and stage_blocks(101) == (3, 4, 23, 3)
    model = build_resnet3d(10, frames=4, size=64, **SMALL)
    assert model.get_layer("res2_0_out").output.shape == (None, 4, 16, 16, 16)
    assert model.get_layer("res5_0_out").output.shape == (None, 4, 2, 2, 128)
    assert model.get_layer("res3_0_a_conv").kernel.shape == (3, 1, 1, 16, 8)  # inflated
    assert model.get_layer("res3_1_a_conv").kernel.shape == (1, 1, 1, 32, 8)  # not inflated
    assert model.output.shape == (None, 10)
    with pytest.raises(ValueError, match="depth must be one of"):
        build_resnet3d(10, depth=34)


def test_cells_add_their_cost_and_bad_positions_fail():
    plain = build_resnet3d(5, frames=4, size=64, **SMALL)
    cells = {"res3_0": CELL, "res4_1": NONLOCAL}
    model = build_resnet3d(5, frames=4, size=64, cells=cells, **SMALL)
    # res3 output: 64 / 8 = 8 pixels, 4·8 channels; res4: 4x4, 4·16 channels.
    expected = cell_cost(CELL, (4, 8, 8, 32))["params"] + cell_cost(NONLOCAL, (4, 4, 4, 64))["params"]
    assert model.count_params() - plain.count_params() == expected
    assert model.get_layer("res4_1_cell").__class__.__name__ == "NonLocalBlock"
    with pytest.raises(ValueError, match=r"unknown position\(s\) \['res3_5'\]"):
        build_resnet3d(5, cells={"res3_5": CELL}, **SMALL)


def test_model_with_cells_survives_keras_save_and_load(tmp_path):
    cells = {
        "res3_0": CELL,
        "res3_1": {
            "kind": "supernet",
            "num_operations": 1,
            "candidates": {
                "dimension": ["temporal", "spatial"],
                "g1": ["conv1x1x1"],
                "g2": ["conv1x1x1"],
                "activation": ["softmax"],
            },
        },
        "res4_0": NONLOCAL,
    }
    model = build_resnet3d(3, frames=4, size=32, cells=cells, **SMALL)
    x = np.random.default_rng(1).uniform(-1, 1, size=(2, 4, 32, 32, 3)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, np.array([0, 2]), epochs=1, verbose=0)  # moves the zero-γ BNs so the cells matter
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
    assert restored.count_params() == model.count_params()
