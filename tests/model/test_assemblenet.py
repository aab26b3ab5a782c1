import keras
import numpy as np
import pytest

from model.assemblenet import build_assemblenet
from model.pruning import attention_weights, connection_weights, prune
from model.structure import Structure, tiny
from model.summary import model_summary

T, S, K = 4, 32, 3


def _inputs(structure, b=2, seed=0):
    rng = np.random.default_rng(seed)
    data = {"rgb": rng.uniform(-1, 1, (b, T, S, S, 3)).astype("float32"),
            "flow": rng.uniform(-1, 1, (b, T, S, S, 2)).astype("float32"),
            "object": rng.integers(0, 151, (b, T, S, S)).astype("int32")}
    return {m: data[m] for m in structure.modalities}


def _fit_one_step(model, x):
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    y = np.eye(K, dtype="float32")[[0, 1]]
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)


def test_one_step_changes_connection_weights_w_and_search_weights_h():
    s = tiny()
    model = build_assemblenet(s, K, attention="search")
    x = _inputs(s)
    w0, h0 = connection_weights(model, s), attention_weights(model, s)
    assert set(h0) == {str(b.index) for b in s.blocks}
    assert all(abs(v - 0.5) < 1e-6 for gates in w0.values() for v in gates.values())
    _fit_one_step(model, x)
    w1, h1 = connection_weights(model, s), attention_weights(model, s)
    changed_w = sum(abs(w1[b][j] - w0[b][j]) > 1e-7 for b in w0 for j in w0[b])
    changed_h = sum(abs(h1[b][p] - h0[b][p]) > 1e-7 for b in h0 for p in h0[b])
    n_w = sum(len(g) for g in w0.values())
    n_h = sum(len(g) for g in h0.values())
    # Every w and every h receives a gradient: none stays a constant.
    assert changed_w == n_w, f"{changed_w}/{n_w} connection weights changed"
    assert changed_h == n_h, f"{changed_h}/{n_h} peer-attention weights changed"


@pytest.mark.parametrize("attention", ["none", "static", "self", "peer", "search"])
def test_saved_model_reloads_with_identical_outputs(tmp_path, attention):
    s = tiny()
    model = build_assemblenet(s, K, attention=attention, default_peers=True)
    x = _inputs(s)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    assert np.asarray(model(x)).shape == (2, K)


def test_only_the_used_modalities_are_inputs():
    rgb_only = Structure.create("rgb", [(0, 0, "rgb", 8, 1, 4), (1, 1, [0], 4, 1, 1), (2, 2, [1], 4, 2, 2),
                                        (3, 3, [2], 4, 1, 2), (4, 4, [3], 4, 1, 2)],
                                repeats=(0.5, 1, 0.5, 0.5), level_widths=(8, 8, 8, 8))
    model = build_assemblenet(rgb_only, K)
    assert sorted(model.input.keys()) == ["rgb"]
    assert np.asarray(model(_inputs(rgb_only))).shape == (2, K)


def test_temporal_max_pool_takes_the_max_over_frames():
    s = tiny()
    avg = build_assemblenet(s, K, temporal_pool="avg")
    mx = build_assemblenet(s, K, temporal_pool="max")
    mx.set_weights(avg.get_weights())
    x = _inputs(s)
    assert np.all(np.asarray(mx(x)) >= np.asarray(avg(x)) - 1e-6)


def test_pruning_round_trip_rebuilds_as_a_peer_model():
    s = tiny()
    model = build_assemblenet(s, K, attention="search")
    fusion = model.get_layer("block8_fusion")  # inputs (2, 4, 7)
    fusion.w.assign(np.array([3.0, -3.0, 0.0], "float32"))  # σ = 0.95, 0.05, 0.5
    attn = model.get_layer("block8_attention")
    h = np.zeros(len(s.peers(8)), "float32")
    h[s.peers(8).index(5)] = 4.0
    attn.h.assign(h)
    pruned = prune(s, model)
    assert pruned.node(8).inputs == (2, 7)
    assert pruned.node(8).peer == 5
    assert all(b.peer is not None for b in pruned.blocks)
    restored = Structure.from_json(pruned.to_json())
    assert restored == pruned
    peer_model = build_assemblenet(restored, K, attention="peer")
    assert np.asarray(peer_model(_inputs(s))).shape == (2, K)
    # A block whose every σ(w) is below the threshold keeps its strongest input.
    model.get_layer("block3_fusion").w.assign(np.array([-5.0, -2.0, -4.0], "float32"))
    assert prune(s, model).node(3).inputs == (1,)


def test_summary_reports_what_an_attention_cell_adds():
    from model.attention_nas import insert_cells
    from model.attention_nas.nonlocal_block import nonlocal_cost

    plain = model_summary(tiny(), frames=4, size=32, num_classes=K)
    with_cells = model_summary(insert_cells(tiny(), {"kind": "nonlocal"}, after_levels=(3,)),
                               frames=4, size=32, num_classes=K)
    (cost,) = with_cells["cells"].values()
    # tiny's level-3 block 7 outputs 4 x 16 = 64 channels at stride 16: 4 x 2 x 2 at 32².
    assert cost == nonlocal_cost((4, 2, 2, 64))
    assert with_cells["flops"] - plain["flops"] == cost["flops"] > 0
    assert with_cells["params"] - plain["params"] == cost["params"] > 0
