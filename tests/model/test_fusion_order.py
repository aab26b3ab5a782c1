"""The two fusion orders of model.assemblenet: where σ(w) sits relative to the inputs' width matching."""

import keras
import numpy as np
import pytest

from model.assemblenet import build_assemblenet
from model.layers import EdgeGates
from model.pruning import connection_weights
from model.structure import get_structure


def test_edge_gates_weigh_each_input_by_sigmoid_w():
    layer = EdgeGates(2)
    x = [np.full((1, 2, 4, 4, 3), 2.0, "float32"), np.full((1, 2, 4, 4, 5), -1.0, "float32")]
    layer.build([a.shape for a in x])
    layer.w.assign(np.array([0.0, np.log(3.0)], "float32"))  # σ = 0.5 and 0.75
    out = [keras.ops.convert_to_numpy(y) for y in layer(x)]
    np.testing.assert_allclose(out[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[1], -0.75, rtol=1e-6)
    assert out[1].shape == (1, 2, 4, 4, 5)  # widths are not matched here


def test_edge_gates_config_round_trip_and_errors():
    layer = EdgeGates(3, name="g")
    assert EdgeGates.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.get_config()["num_inputs"] == 3
    with pytest.raises(ValueError, match="num_inputs"):
        EdgeGates(0)


def test_weight_first_builds_reads_and_is_the_reference_sum():
    tiny = get_structure("tiny")
    model = build_assemblenet(tiny, 5, frames=4, size=32, fusion_order="weight_first")
    weights = connection_weights(model, tiny)
    assert set(weights) == {str(n.index) for n in tiny.blocks}
    assert all(v == pytest.approx(0.5) for row in weights.values() for v in row.values())
    # Block 5 takes rgb stem 0 (8 ch), object stem 2 (151 ch) and blocks 3, 4 (16 ch): one 1x1 conv per width
    # other than the block's (16), no batch norm after it.
    names = {layer.name for layer in model.layers}
    assert {"block5_proj8", "block5_proj151", "block5_sum16"} <= names
    assert not any(n.startswith("block5_from") and n.endswith("_proj_bn") for n in names)
    with pytest.raises(ValueError, match="project_first"):
        build_assemblenet(tiny, 5, attention="self", frames=4, size=32, fusion_order="weight_first")
    with pytest.raises(ValueError, match="fusion_order"):
        build_assemblenet(tiny, 5, frames=4, size=32, fusion_order="sideways")
