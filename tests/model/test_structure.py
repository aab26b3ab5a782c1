import json
import os

import pytest

from model.structure import (
    NAMED_STRUCTURES,
    Node,
    Structure,
    assemblenet50,
    assemblenet_plus50,
    get_structure,
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
