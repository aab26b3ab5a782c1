"""The sink order of each paper (AssembleNet A.5, AssembleNet++ supplementary A.3), peers from the
search (AssembleNet++ §3.5) and dead blocks."""

import json

import keras
import numpy as np
import pytest

from model.assemblenet import build_assemblenet
from model.structure import SINK_ORDERS, Structure, assemblenet50, assemblenet101, assemblenet_plus50, tiny
from model.summary import model_summary
from tests.model.test_assemblenet import S, T, _inputs  # one clip maker for the model tests

K = 5  # classes; clips are test_assemblenet's (T = 4 frames of S = 32 px)


def test_each_paper_structure_has_its_sink_and_json_round_trips_it():
    assert assemblenet50().sink == "pool_then_fc"  # AssembleNet A.5
    assert assemblenet101().sink == "pool_then_fc"
    assert assemblenet_plus50().sink == "fc_then_pool"  # AssembleNet++ supplementary A.3
    assert tiny().sink == "fc_then_pool"  # Table 1 scaled down
    for order in SINK_ORDERS:
        s = tiny().replace(sink=order)
        restored = Structure.from_json(json.loads(json.dumps(s.to_json())))
        assert restored == s and restored.sink == order
    data = tiny().to_json()
    data["sink"] = "fc_pool"
    with pytest.raises(ValueError, match=r"sink='fc_pool'; expected one of \('pool_then_fc', 'fc_then_pool'\)"):
        Structure.from_json(data)


@pytest.mark.parametrize("temporal_pool", ["max", "avg"])
def test_each_sink_order_computes_what_it_says(temporal_pool):
    x = _inputs(tiny())
    outputs, weights = {}, None
    for order in SINK_ORDERS:
        model = build_assemblenet(tiny().replace(sink=order), K, temporal_pool=temporal_pool)
        if weights is None:
            weights = model.get_weights()
        else:  # the same weights for both orders
            model.set_weights(weights)
        fc = model.get_layer("sink_logits")
        fc.bias.assign(np.linspace(-1, 1, K).astype("float32"))
        # The final features: per-frame spatial average of the top block 8, (B, T, C).
        features = keras.Model(model.inputs, model.get_layer("sink_gap8").output)
        f = np.asarray(features(x), "float64")
        w, b = (np.asarray(keras.ops.convert_to_numpy(v), "float64") for v in (fc.kernel, fc.bias))
        pool = np.max if temporal_pool == "max" else np.mean
        if order == "pool_then_fc":  # A.5: temporal pooling, then the FC layer
            expected = pool(f, axis=1) @ w + b
        else:  # ++ A.3: FC per frame, then temporal pooling of the logits
            expected = pool(f @ w + b, axis=1)
        outputs[order] = np.asarray(model(x))
        np.testing.assert_allclose(outputs[order], expected, rtol=1e-4, atol=1e-5)
    if temporal_pool == "max":  # different functions ...
        assert np.abs(outputs["pool_then_fc"] - outputs["fc_then_pool"]).max() > 1e-3
    else:  # ... except for average pooling, which commutes with the linear FC
        np.testing.assert_allclose(outputs["pool_then_fc"], outputs["fc_then_pool"], rtol=1e-4, atol=1e-5)


def test_peer_attention_without_searched_peers_fails_unless_default_peers():
    with pytest.raises(ValueError, match=r"blocks \[3, 4, 5, 6, 7, 8\] have none.*assemblenet search "
                                         r"--structure tiny.*--default-peers"):
        build_assemblenet(tiny(), K, attention="peer")
    model = build_assemblenet(tiny(), K, attention="peer", default_peers=True)
    assert np.asarray(model(_inputs(tiny()))).shape == (2, K)
    # A structure whose every block names its peer (as pruning writes it) needs no flag.
    peered = tiny().replace(nodes=tuple(n if n.is_stem else n.__class__(**{**n.__dict__, "peer": 0})
                                        for n in tiny().nodes))
    assert np.asarray(build_assemblenet(peered, K, attention="peer")(_inputs(tiny()))).shape == (2, K)


def test_summary_names_the_dead_blocks():
    # Supplementary Table 1: no block takes block 9 as input, so it feeds nothing.
    assert assemblenet_plus50().dead() == [9]
    assert assemblenet50().dead() == [] and tiny().dead() == []
    # Under peer attention a block read as a live block's peer is used (block 14 reading block 9).
    peered = assemblenet_plus50().replace(nodes=tuple(
        n.__class__(**{**n.__dict__, "peer": 9}) if n.index == 14 else n for n in assemblenet_plus50().nodes))
    assert peered.dead() == [9] and peered.dead(via_peers=True) == []
    # tiny with block 5 cut from block 7's inputs: block 5 is still built, but feeds nothing.
    cut = tiny().replace(nodes=tuple(n.__class__(**{**n.__dict__, "inputs": (2, 6)}) if n.index == 7 else n
                                     for n in tiny().nodes))
    summary = model_summary(cut, frames=T, size=S, num_classes=K)
    assert summary["dead_blocks"] == [5] and summary["sink"] == "fc_then_pool"


def test_the_a5_sink_applies_its_fc_once_per_clip():
    fc = 2 * 4 * 16 * K  # tiny's top block outputs 4C = 64 channels
    flops = {(order, frames): model_summary(tiny().replace(sink=order), frames=frames, size=S, num_classes=K)["flops"]
             for order in SINK_ORDERS for frames in (T, 2 * T)}
    assert flops["pool_then_fc", 2 * T] - fc == 2 * (flops["pool_then_fc", T] - fc)
    assert flops["fc_then_pool", T] - flops["pool_then_fc", T] == (T - 1) * fc
