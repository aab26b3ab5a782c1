import dataclasses
import json
import os
import re

import pytest

from model.structure import (
    NAMED_STRUCTURES,
    Node,
    Structure,
    assemblenet50,
    assemblenet_plus50,
    get_structure,
    stream_modality,
    tiny,
)


def test_named_structures_match_the_papers_tables():
    a50 = assemblenet50()
    assert [n.channels for n in a50.nodes_at(3)] == [256, 256]
    assert a50.node(8).inputs == (0, 4, 5, 6, 7) and a50.node(8).dilation == 2
    assert get_structure("assemblenet101").repeats == (1.5, 2.0, 11.5, 1.5)
    plus = assemblenet_plus50()
    assert plus.modalities == ("rgb", "flow", "object")
    assert plus.node(4).channels == 151 and plus.node(14).inputs == (4, 12, 13)
    # Per-level channel sums of AssembleNet++ §3.6: 128, 256, 512, 512 at levels 1..4.
    assert [sum(n.channels for n in plus.nodes_at(v)) for v in (1, 2, 3, 4)] == [128, 256, 512, 512]


@pytest.mark.parametrize("name", sorted(NAMED_STRUCTURES))
def test_json_round_trip(tmp_path, name):
    s = get_structure(name)
    path = s.save(tmp_path / "s.json")
    assert Structure.from_json(path) == s
    assert get_structure(str(path)) == s
    assert json.loads(path.read_text())["nodes"][0]["inputs"] == list(s.nodes[0].inputs)


def test_fused_width_ignores_object_inputs():
    plus = assemblenet_plus50()
    # Block 12 takes the object stem (151 one-hot channels) and block 11 (4 x 128): 512, not 151.
    assert plus.fused_channels(12) == 512
    assert plus.fused_channels(5) == 32
    assert plus.cumulative_stride()[14] == 32


def _rows(**changes):
    rows = [(0, 0, "rgb", 8, 1, 4), (1, 1, [0], 4, 1, 1), (2, 2, [1], 4, 1, 2), (3, 3, [2], 4, 1, 2),
            (4, 4, [3], 4, 1, 2)]
    for index, row in changes.items():
        rows[int(index[1:])] = row
    return rows


@pytest.mark.parametrize("changes, message", [
    ({"b2": (2, 2, [3], 4, 1, 2)}, "cycle through blocks 2 -> 3 -> 2"),
    ({"b3": (3, 3, [9], 4, 1, 2)}, "block 3: unknown input 9"),
    ({"b3": (3, 1, [2], 4, 1, 2)}, "block 3: edge from block 2 (level 2) to block 3 (level 1)"),
    ({"b2": (2, 2, [1], 0, 1, 2)}, "block 2: channels must be positive"),
    ({"b4": (4, 3, [2], 4, 1, 2)}, "missing top level 4"),
    ({"b1": (1, 1, ["depth"], 4, 1, 1)}, "block 1: unknown input 'depth'"),
])
def test_validation_names_the_block(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Structure.create("bad", _rows(**changes))


def test_peer_must_be_lower_level():
    s = Structure.create("ok", _rows())
    with pytest.raises(ValueError, match="block 3: peer 4 must be at a lower level"):
        s.replace(nodes=s.nodes[:3] + (Node(3, 3, (2,), 4, 1, 2, peer=4),) + s.nodes[4:])


def test_unknown_structure_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="assemblenet50"):
        get_structure("assemblenet18")


def test_save_replaces_the_file_whole_and_a_failed_save_keeps_the_old_one(tmp_path, monkeypatch):
    path = get_structure("tiny").save(tmp_path / "s.json")
    before = path.read_text()

    def full_disk(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", full_disk)  # the write fails after the new text went out
    with pytest.raises(OSError, match="disk full"):
        get_structure("tiny").replace(name="other").save(path)
    assert path.read_text() == before  # not truncated by the failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # no temporary file left


@pytest.mark.parametrize("stream, modality", [
    ("flow", "flow"), ("flow_decoy", "flow"), ("rgb_decoy_2", "rgb"), ("object_b", "object"),
    ("flow_", ""), ("flow__", ""), ("flow_de-coy", ""), ("depth", ""), ("depth_x", ""),
])
def test_stream_modality_reads_tagged_streams(stream, modality):
    assert stream_modality(stream) == modality


def test_named_structures_carry_their_name_sink_and_settings():
    for name in NAMED_STRUCTURES:
        assert get_structure(name).name == name
    sinks = {name: get_structure(name).sink for name in NAMED_STRUCTURES}
    # AssembleNet A.5 pools then applies the FC; AssembleNet++ supplementary A.3 (and tiny, its layout) the reverse.
    assert sinks == {"assemblenet50": "pool_then_fc", "assemblenet101": "pool_then_fc",
                     "assemblenet_plus50": "fc_then_pool", "tiny": "fc_then_pool"}
    small = tiny()
    assert small.repeats == (0.5, 0.5, 0.5, 0.5)  # one 2D module per block
    assert small.level_widths == (8, 8, 16, 16)


def _peer_rows():
    # Block 2 feeds nothing; only block 5's peer reads it.
    return [(0, 0, "rgb", 8, 1, 4), (1, 1, [0], 4, 1, 1), (2, 1, [0], 4, 1, 1), (3, 2, [1], 4, 1, 2),
            (4, 3, [3], 4, 1, 2), (5, 4, [4], 4, 1, 2), (6, 4, [3], 4, 1, 2)]


def _with_peer(rows, index, peer):
    s = Structure.create("peer", rows)
    return s.replace(nodes=tuple(dataclasses.replace(n, peer=peer) if n.index == index else n for n in s.nodes))


def test_live_and_dead_blocks():
    # AssembleNet++ supplementary Table 1: no block takes block 9 as input.
    plus = assemblenet_plus50()
    assert plus.dead() == [9]
    assert plus.live() == set(range(15)) - {9}
    s = _with_peer(_peer_rows(), 5, 2)
    # Both level-4 blocks count as outputs; the chain 5 -> 4 -> 3 -> 1 -> 0 is followed to the stem.
    assert s.live() == {0, 1, 3, 4, 5, 6}
    assert s.dead() == [2]
    assert s.live(via_peers=True) == {0, 1, 2, 3, 4, 5, 6}
    assert s.dead(via_peers=True) == []


def test_fused_width_of_a_block_fed_only_by_object_stems():
    s = Structure.create("obj", [(0, 0, "object", 151, 1, 4), (1, 0, "rgb", 8, 1, 4), (2, 1, [0], 4, 1, 1),
                                 (3, 2, [1, 2], 8, 1, 2), (4, 3, [3], 8, 1, 2), (5, 4, [4], 8, 1, 2)])
    assert s.fused_channels(2) == 16  # its own 4C, not the 151 one-hot channels
    assert s.fused_channels(3) == 16  # max(8 from the RGB stem, 4 x 4 from block 2)


def test_create_accepts_node_objects_and_normalises_rows():
    nodes = Structure.create("a", _rows()).nodes
    assert Structure.create("a", list(nodes)) == Structure("a", nodes)
    s = Structure.create("b", [(0, 0, "RGB", 8, 1, 4), (1, 1, [" 0 "], 4, 1, 1), *_rows()[2:]],
                         repeats=[0.5, 1, 1.5, 2], level_widths=[1, 2, 3, 4])
    assert s.node(0).inputs == ("rgb",) and s.node(1).inputs == (0,)
    assert s.repeats == (0.5, 1, 1.5, 2) and isinstance(s.repeats, tuple)
    assert s.level_widths == (1, 2, 3, 4) and isinstance(s.level_widths, tuple)


def test_json_keeps_peers_cells_and_an_explicit_sink(tmp_path):
    cell = {"operations": [{"dimension": "temporal"}]}
    s = _with_peer(_peer_rows(), 5, 2)
    s = s.replace(nodes=tuple(dataclasses.replace(n, cell=cell) if n.index == 4 else n for n in s.nodes))
    data = s.to_json()
    assert data["sink"] == "pool_then_fc"
    assert data["nodes"][5] == {"index": 5, "level": 4, "inputs": [4], "channels": 4, "dilation": 1, "stride": 2,
                                "peer": 2}
    assert data["nodes"][4]["cell"] == cell and "peer" not in data["nodes"][4]
    assert "cell" not in data["nodes"][5]
    path = s.save(tmp_path / "new" / "folder" / "s.json")  # missing parent folders are made
    assert path.read_text() == json.dumps(data, indent=2) + "\n"
    back = Structure.from_json(path)
    assert back == s and back.node(5).peer == 2 and back.node(4).cell == cell
    # A sink other than the stems' default is kept.
    plus = assemblenet_plus50().replace(sink="pool_then_fc")
    assert Structure.from_json(plus.to_json()).sink == "pool_then_fc"


def test_from_json_defaults():
    nodes = [{"index": i, "level": level, "inputs": inputs, "channels": c}
             for i, level, inputs, c, _, _ in _rows()]
    s = Structure.from_json({"nodes": nodes})
    assert s.name == "custom"
    assert s.repeats == (1.5, 2.0, 3.0, 1.5) and s.level_widths == (64, 128, 256, 512)  # AssembleNet-50
    assert all(n.dilation == 1 and n.stride == 1 and n.peer is None and n.cell is None for n in s.nodes)
    assert s.sink == "pool_then_fc"  # RGB and flow stems: AssembleNet A.5
    nodes[0]["inputs"] = "object"
    nodes[0]["channels"] = 151
    assert Structure.from_json({"nodes": nodes}).sink == "fc_then_pool"  # an object stem: AssembleNet++ A.3


def test_malformed_json_names_its_source(tmp_path):
    expected = r"malformed structure JSON \(KeyError\('level'\)\); expected \{'nodes': \[\{'index', 'level'"
    with pytest.raises(ValueError, match="^structure: " + expected):
        Structure.from_json({"nodes": [{"index": 0}]})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"nodes": [{"index": 0}]}))
    with pytest.raises(ValueError, match="^" + re.escape(str(path)) + ": " + expected):
        Structure.from_json(path)


@pytest.mark.parametrize("changes, kwargs, message", [
    ({"b1": (1, 1, ["-1"], 4, 1, 1)}, {}, "block 1: unknown input -1$"),
    ({"b1": (1, 1, ["X0"], 4, 1, 1)}, {}, "block 1: unknown input 'X0'"),
    ({"b1": (1, 1, ["rgb"], 4, 1, 1)}, {}, "block 1: modality 'rgb' can feed only a level-0 stem"),
    ({"b1": (1, 1, [0, 0], 4, 1, 1)}, {}, r"block 1: repeated input in \[0, 0\]"),
    ({"b1": (1, 1, [], 4, 1, 1)}, {}, "block 1: has no inputs"),
    ({"b0": (0, 0, ["rgb", "flow"], 8, 1, 4)}, {},
     r"block 0: a level-0 stem takes exactly one of .* got \['rgb', 'flow'\]"),
    ({"b1": (0, 1, [0], 4, 1, 1)}, {}, "block 0: duplicate index"),
    ({"b1": (1, 5, [0], 4, 1, 1)}, {}, "block 1: level 5 outside 0..4"),
    ({"b1": (1, 1, [0], 4, 0, 1)}, {}, "block 1: dilation and stride must be positive, got r=0, stride=1"),
    ({"b1": (1, 1, [0], 4, 1, 0)}, {}, "block 1: dilation and stride must be positive, got r=1, stride=0"),
    ({"b3": (3, 2, [2], 4, 1, 2)}, {}, r"block 3: edge from block 2 \(level 2\) to block 3 \(level 2\)"),
    ({}, {"repeats": (1.5, 2.0, 3.0)},
     r"structure 'bad': repeats and level_widths need 4 values, got \[1.5, 2.0, 3.0\] and \[64, 128, 256, 512\]"),
    ({}, {"repeats": (1.5, 2.0, 3.0, 0.75)}, "structure 'bad': repeat m=0.75 must be a positive multiple of 0.5"),
    ({}, {"repeats": (1.5, 2.0, 3.0, 0)}, "structure 'bad': repeat m=0 must be"),
    ({}, {"sink": "fc"}, r"structure 'bad': sink='fc'; expected one of .* \(AssembleNet A.5: pool_then_fc; "
                         r"AssembleNet\+\+ supplementary A.3: fc_then_pool\)"),
])
def test_validation_messages(changes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Structure.create("bad", _rows(**changes), **kwargs)


def test_validation_of_peers_empty_structures_and_one_channel_blocks():
    assert Structure.create("thin", _rows(b1=(1, 1, [0], 1, 1, 1))).node(1).output_channels == 4
    with pytest.raises(ValueError, match="structure 'empty' has no nodes"):
        Structure("empty", ())
    with pytest.raises(ValueError, match="block 3: unknown peer 9"):
        _with_peer(_rows(), 3, 9)
    with pytest.raises(ValueError, match="block 3: peer 3 must be at a lower level"):
        _with_peer(_rows(), 3, 3)
