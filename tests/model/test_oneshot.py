"""The over-connected one-shot model (AssembleNet++ §3.3, §3.5) and pruning a trained one."""

import dataclasses
import math

import numpy as np

from model import evolution
from model.assemblenet import build_assemblenet
from model.oneshot import over_connected
from model.pruning import attention_weights, connection_weights, prune
from model.structure import Structure, tiny


def test_over_connected_has_every_edge_from_a_lower_level():
    layout = evolution.random_structure(evolution.SearchSpace(object_stem=True), np.random.default_rng(0))
    layout = layout.replace(nodes=tuple(dataclasses.replace(n, peer=0) if n.level >= 1 else n
                                        for n in layout.nodes))
    supernet = over_connected(layout)
    assert set(supernet.edges()) == evolution.possible_edges(layout)
    for node, old in zip(supernet.nodes, layout.nodes, strict=True):
        assert (node.index, node.level, node.channels, node.dilation, node.stride) == \
               (old.index, old.level, old.channels, old.dilation, old.stride)
        assert node.peer is None  # the search learns the peers
    assert supernet.name == f"{layout.name}_oneshot"
    # tiny: 3 stems; 2 blocks at level 1 (3 inputs each), 2 at level 2 (5), 1 at 3 (7), 1 at 4 (8).
    assert len(over_connected("tiny").edges()) == 2 * 3 + 2 * 5 + 7 + 8


def test_over_connected_reads_a_json_layout(tmp_path):
    path = tiny().save(tmp_path / "layout.json")
    assert over_connected(str(path)).to_json() == over_connected(tiny()).to_json()


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_pruning_a_search_model_keeps_strong_edges_and_the_argmax_peer():
    supernet = over_connected("tiny")
    model = build_assemblenet(supernet, 4, attention="search", frames=4, size=32)
    expected_inputs, expected_peer = {}, {}
    for node in supernet.blocks:
        # Alternate strong (0.9) and weak (0.1) connections; one exactly at the 0.2 threshold is dropped.
        probs = [0.9 if k % 2 == 0 else 0.1 for k in range(len(node.inputs))]
        probs[-1] = 0.2
        model.get_layer(f"block{node.index}_fusion").w.assign(np.array([_logit(p) for p in probs], "float32"))
        expected_inputs[node.index] = tuple(j for j, p in zip(node.inputs, probs, strict=True) if p > 0.2)
        peers = supernet.peers(node.index)
        h = np.zeros(len(peers), "float32")
        h[len(peers) // 2] = 3.0
        model.get_layer(f"block{node.index}_attention").h.assign(h)
        expected_peer[node.index] = peers[len(peers) // 2]
    weights = connection_weights(model, supernet)
    assert abs(weights["8"]["2"] - 0.9) < 1e-6 and abs(weights["8"]["7"] - 0.2) < 1e-6
    mix = attention_weights(model, supernet)
    assert abs(sum(mix["8"].values()) - 1.0) < 1e-6

    final = prune(supernet, model, threshold=0.2)
    for node in final.blocks:
        assert node.inputs == expected_inputs[node.index]
        assert node.peer == expected_peer[node.index]
    assert [n.to_json() for n in final.stems] == [n.to_json() for n in supernet.stems]
    # The pruned structure round-trips through JSON (the end-to-end test trains it with peer attention).
    assert Structure.from_json(final.to_json()) == final
