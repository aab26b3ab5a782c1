"""The params and FLOPs of the papers' structures, counted from the tables alone.

The count below reads only the structure table and the block recipe (AssembleNet A.2/A.4, §3.1, A.5;
AssembleNet++ Eq. 2 and supplementary A.1-A.3): no Keras model. `model_summary` walks the built model;
the two must agree exactly. FLOPs are 2 × multiply-adds of convolutions and FC layers; params include
batch norm's four vectors (γ, β and the moving mean and variance) and the connection weights.
"""

import pytest

from model.assemblenet import default_peer
from model.blocks import module_kinds
from model.structure import assemblenet50, assemblenet_plus50
from model.summary import model_summary

FRAMES, SIZE, CLASSES = 4, 64, 10
INPUT_CHANNELS = {"rgb": 3, "flow": 2}


class _Count:
    def __init__(self):
        self.flops = 0
        self.params = 0

    def conv(self, positions, kernel, c_in, c_out):
        """A bias-free conv and its batch norm; `positions` = T·H·W of the output."""
        self.flops += 2 * positions * kernel * c_in * c_out
        self.params += kernel * c_in * c_out + 4 * c_out

    def fc(self, positions, c_in, c_out):
        self.flops += 2 * positions * c_in * c_out
        self.params += (c_in + 1) * c_out


def independent_count(structure, *, peer_attention):
    count = _Count()
    t = FRAMES
    side = {}  # spatial side of each node's output
    channels = {}
    for node in structure.stems:
        side[node.index] = SIZE // node.stride
        channels[node.index] = node.channels
        if node.modality == "object":
            continue  # one-hot and max pool: no weights, no FLOPs
        half = t * (SIZE // 2) ** 2
        count.conv(half, 49, INPUT_CHANNELS[node.modality], node.channels)  # 7x7/2
        if node.modality == "rgb":
            count.conv(half, 5, node.channels, node.channels)  # temporal k=5
    live = structure.live(via_peers=peer_attention)
    for node in sorted(structure.blocks, key=lambda n: (n.level, n.index)):
        i = node.index
        inputs = [int(j) for j in node.inputs]
        fused_side = min(side[j] for j in inputs)
        width = max((channels[j] for j in inputs if not structure._is_object(j)), default=4 * node.channels)
        side[i] = fused_side // node.stride
        channels[i] = 4 * node.channels
        if i not in live:
            continue
        count.params += len(inputs)  # Eq. 1: one connection weight w per input
        for j in inputs:  # §3.1: pool to the smallest size, 1x1 conv to the widest channel count
            if channels[j] != width:
                count.conv(t * fused_side ** 2, 1, channels[j], width)
        if peer_attention:  # Eq. 2: one FC per frame on the peer's GAP vector
            peer = node.peer if node.peer is not None else default_peer(structure, i)
            count.fc(t, channels[peer], width)
        c, dv = node.channels, structure.level_widths[node.level - 1]
        c_in, s_in = width, fused_side
        for k, temporal in enumerate(module_kinds(structure.repeats[node.level - 1])):
            stride = node.stride if k == 0 else 1
            out = t * (s_in // stride) ** 2
            if c_in != 4 * c or stride != 1:
                count.conv(out, 1, c_in, 4 * c)  # shortcut
            count.conv(t * s_in ** 2, 3 if temporal else 1, c_in, c)
            count.conv(out, 9, c, dv)
            count.conv(out, 1, dv, 4 * c)
            c_in, s_in = 4 * c, s_in // stride
    tops = [n.index for n in structure.nodes_at(structure.top_level)]
    width = sum(channels[i] for i in tops) if len({channels[i] for i in tops}) > 1 else channels[tops[0]]
    # A.5: pool then FC (one vector per clip); ++ A.3: FC per frame, then pool.
    count.fc(1 if structure.sink == "pool_then_fc" else t, width, CLASSES)
    return count


@pytest.mark.parametrize("make, attention", [(assemblenet50, "none"), (assemblenet_plus50, "peer")])
def test_summary_equals_the_count_from_the_table(make, attention):
    structure = make()
    summary = model_summary(structure, attention=attention, default_peers=True, frames=FRAMES, size=SIZE,
                            num_classes=CLASSES)
    expected = independent_count(structure, peer_attention=attention == "peer")
    assert (summary["params"], summary["flops"]) == (expected.params, expected.flops)


def test_peer_attention_adds_a_small_fraction_of_the_computation():
    # AssembleNet++ supplementary A.2 reports +0.151 % FLOPs for peer-attention at 32 x 224²; the FC per
    # frame costs little against the convolutions at any size.
    structure = assemblenet_plus50()
    plain = independent_count(structure, peer_attention=False).flops
    peer = independent_count(structure, peer_attention=True).flops
    assert 0 < peer - plain < 0.01 * plain
