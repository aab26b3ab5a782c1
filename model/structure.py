"""Structure spec: the graph of an AssembleNet(++) as typed, validated data.

A structure is a list of nodes indexed like the papers' tables (AssembleNet Table 5,
AssembleNet++ supplementary Table 1). Level-0 nodes are stems and take one modality
(`rgb`, `flow` or `object`); nodes at levels 1..4 are convolutional blocks that take a list
of lower-level node indices (§3.1: edges go from a lower to a higher level, so the graph
cannot hold a cycle). Each node carries C (channels; a block outputs 4C), the temporal
dilation r and its spatial stride. A block may also name a fixed `peer` (AssembleNet++ §3.4)
and an attention `cell` (AttentionNAS) applied to its output. The structure also fixes its sink's
order (`sink`: temporal pooling then FC, AssembleNet A.5, or FC then pooling, AssembleNet++ A.3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MODALITIES = ("rgb", "flow", "object")


def stream_modality(stream: str) -> str:
    """The modality of an input stream: a stream is a modality (`flow`) or a second input of a modality's
    kind with a tag of its own (`flow_decoy`: a flow stem fed from the input named `flow_decoy`, e.g. the
    ablation benchmark's decoy stream). Returns "" where `stream` names no modality."""
    modality, separator, tag = str(stream).partition("_")
    if modality not in MODALITIES or (separator and not tag.replace("_", "").isalnum()):
        return ""
    return modality


def is_stream(item) -> bool:
    return isinstance(item, str) and bool(stream_modality(item))


NUM_LEVELS = 4
# Appendix A.2 of AssembleNet: the 3x3 conv width D_v is fixed per level.
LEVEL_WIDTHS = (64, 128, 256, 512)
# Appendix A.4: a block repeats (2D module, (2+1)D module) m times; m = 1.5 means 2D, (2+1)D, 2D.
REPEATS_50 = (1.5, 2.0, 3.0, 1.5)
REPEATS_101 = (1.5, 2.0, 11.5, 1.5)
# ADE20K: 150 classes + 1 "other" (AssembleNet++ §3.2, supplementary Table 1).
NUM_OBJECT_CLASSES = 151
# The order of the sink's temporal pooling and its FC layer. AssembleNet A.5: spatial average →
# combine the top-level blocks → temporal average/max pooling → FC. AssembleNet++ supplementary A.3:
# FC per frame ("block 14 is followed by a FC layer to generate logits") → temporal max pooling of
# the logits. For max pooling the two are different functions (for average pooling, the same one).
SINK_ORDERS = ("pool_then_fc", "fc_then_pool")
# The sink's temporal pooling (of the features, or of the per-frame logits: SINK_ORDERS).
TEMPORAL_POOLS = ("max", "avg")
# How the blocks weigh their inputs (AssembleNet++ §3.4-3.5). `conv` is not attention: AssembleNet++
# Table 4's control, a 1x1 convolution with the parameters of the peer-attention FC (see
# model.layers.ChannelAttention). Declared here, beside the structure and without Keras, so that configs
# and the command line check a mode without loading a model.
ATTENTION_MODES = ("none", "static", "self", "peer", "search", "conv")


def default_sink(nodes: Sequence[Node]) -> str:
    """The sink of a structure file that names none: the paper its stems come from. An object stem
    is AssembleNet++'s (FC then pooling, supplementary A.3); RGB and flow only, AssembleNet's (A.5)."""
    has_object = any(n.is_stem and n.modality == "object" for n in nodes)
    return "fc_then_pool" if has_object else "pool_then_fc"


@dataclasses.dataclass(frozen=True)
class Node:
    """One stem (level 0) or convolutional block (levels 1..NUM_LEVELS)."""

    index: int
    level: int
    inputs: tuple[int | str, ...]
    channels: int
    dilation: int = 1
    stride: int = 1
    peer: int | None = None
    cell: Mapping[str, Any] | None = None

    @property
    def is_stem(self) -> bool:
        return self.level == 0

    @property
    def stream(self) -> str:
        """The input a stem reads: its modality, or a tagged stream of it (`stream_modality`)."""
        if not self.is_stem:
            raise ValueError(f"block {self.index} is not a stem and has no input stream")
        return str(self.inputs[0])

    @property
    def modality(self) -> str:
        """The kind of stem (rgb, flow or object), whichever stream of that kind it reads."""
        return stream_modality(self.stream)

    @property
    def output_channels(self) -> int:
        """Stems output C channels (151 for the one-hot object stem); blocks output 4C (§A.2)."""
        return self.channels if self.is_stem else 4 * self.channels

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "level": self.level,
            "inputs": list(self.inputs),
            "channels": self.channels,
            "dilation": self.dilation,
            "stride": self.stride,
        }
        if self.peer is not None:
            out["peer"] = self.peer
        if self.cell is not None:
            out["cell"] = dict(self.cell)
        return out


@dataclasses.dataclass(frozen=True)
class Structure:
    """A validated AssembleNet graph. Construct it with `Structure.create` or `from_json`."""

    name: str
    nodes: tuple[Node, ...]
    repeats: tuple[float, ...] = REPEATS_50
    level_widths: tuple[int, ...] = LEVEL_WIDTHS
    sink: str = "pool_then_fc"

    def __post_init__(self):
        validate(self)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, nodes: Sequence[Node | Sequence], **kwargs) -> Structure:
        """Builds from Node objects or the papers' table rows `(index, level, inputs, C, r, stride)`."""
        built = []
        for row in nodes:
            if isinstance(row, Node):
                built.append(row)
                continue
            index, level, inputs, channels, dilation, stride = row
            built.append(Node(int(index), int(level), _as_inputs(inputs), int(channels), int(dilation),
                              int(stride)))
        kwargs = {k: v if isinstance(v, str) else tuple(v) for k, v in kwargs.items()}
        return cls(name=name, nodes=tuple(built), **kwargs)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | Path) -> Structure:
        source = "structure"
        if isinstance(data, (str, Path)):
            source = str(data)
            data = json.loads(Path(data).read_text())
        try:
            nodes = tuple(
                Node(index=int(n["index"]), level=int(n["level"]), inputs=_as_inputs(n["inputs"]),
                     channels=int(n["channels"]), dilation=int(n.get("dilation", 1)),
                     stride=int(n.get("stride", 1)),
                     peer=None if n.get("peer") is None else int(n["peer"]), cell=n.get("cell"))
                for n in data["nodes"])
            return cls(name=str(data.get("name", "custom")), nodes=nodes,
                       repeats=tuple(float(m) for m in data.get("repeats", REPEATS_50)),
                       level_widths=tuple(int(d) for d in data.get("level_widths", LEVEL_WIDTHS)),
                       sink=data.get("sink", default_sink(nodes)))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: malformed structure JSON ({err!r}); expected "
                             "{'nodes': [{'index', 'level', 'inputs', 'channels', ...}]}") from err

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "repeats": list(self.repeats), "level_widths": list(self.level_widths),
                "sink": self.sink, "nodes": [n.to_json() for n in self.nodes]}

    def save(self, path: str | Path) -> Path:
        """The one writer of structure files. Atomic, as pipelines.checks.write_text (which model/ does not
        import): the JSON goes to a temporary file in the same folder, is fsync-ed, then replaces `path`,
        so a reader or a resumed run sees the old structure or the new one, never half of one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "w") as handle:
                handle.write(json.dumps(self.to_json(), indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def replace(self, **changes) -> Structure:
        return dataclasses.replace(self, **changes)

    # -- queries -------------------------------------------------------------------------
    def node(self, index: int) -> Node:
        return self._by_index()[index]

    def _by_index(self) -> dict[int, Node]:
        return {n.index: n for n in self.nodes}

    @property
    def stems(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_stem)

    @property
    def blocks(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.is_stem)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The input streams the stems read (the model's input names): modalities in MODALITIES order,
        then tagged streams (`stream_modality`) in name order."""
        used = {n.stream for n in self.stems}
        return tuple(m for m in MODALITIES if m in used) + tuple(sorted(used - set(MODALITIES)))

    @property
    def top_level(self) -> int:
        return max(n.level for n in self.nodes)

    def level(self, index: int) -> int:
        return self.node(index).level

    def nodes_at(self, level: int) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.level == level)

    def edges(self) -> list[tuple[int, int]]:
        """Block-to-block and stem-to-block edges (j, i)."""
        return [(int(j), n.index) for n in self.blocks for j in n.inputs]

    def peers(self, index: int) -> tuple[int, ...]:
        """AssembleNet++ §3.4: the peers of block i are every node p with L(p) < L(i)."""
        level = self.level(index)
        return tuple(n.index for n in self.nodes if n.level < level)

    def live(self, via_peers: bool = False) -> set[int]:
        """Nodes with a path to a top-level block (a pruned graph may leave others unused); with
        `via_peers`, a block's fixed peer counts as one of its inputs (`peer` attention reads it)."""
        live = {n.index for n in self.nodes_at(self.top_level)}
        for n in sorted(self.nodes, key=lambda n: -n.level):
            if n.index in live and not n.is_stem:
                live.update(int(j) for j in n.inputs)
                if via_peers and n.peer is not None:
                    live.add(n.peer)
        return live

    def dead(self, via_peers: bool = False) -> list[int]:
        """Blocks without a path to a top-level block: nothing uses their output, so the built model
        leaves them out (e.g. block 9 of AssembleNet++'s supplementary Table 1, which no block takes as
        input)."""
        live = self.live(via_peers)
        return sorted(n.index for n in self.blocks if n.index not in live)

    def cumulative_stride(self) -> dict[int, int]:
        """Spatial down-sampling factor of every node's output relative to the input frames."""
        by_index = self._by_index()
        strides: dict[int, int] = {}
        for n in sorted(self.nodes, key=lambda n: (n.level, n.index)):
            if n.is_stem:
                strides[n.index] = n.stride
            else:
                # §3.1: inputs of other spatial size are max-pooled to the smallest one.
                strides[n.index] = max(strides[int(j)] for j in n.inputs) * by_index[n.index].stride
        return strides

    def fused_channels(self, index: int) -> int:
        """Width of block i's fused input: the widest non-object input (§3.1: '1x1 conv to match
        the bigger channel size'). Object one-hots never set it; a block fed only by object stems
        uses its own 4C."""
        widths = [self.node(int(j)).output_channels for j in self.node(index).inputs
                  if not self._is_object(int(j))]
        return max(widths) if widths else self.node(index).output_channels

    def _is_object(self, index: int) -> bool:
        n = self.node(index)
        return n.is_stem and n.modality == "object"


def _as_inputs(inputs) -> tuple[int | str, ...]:
    if isinstance(inputs, (str, int)):
        inputs = [inputs]
    out: list[int | str] = []
    for item in inputs:
        if is_stream(item.lower() if isinstance(item, str) else item):
            out.append(item.lower())
        elif isinstance(item, str) and item.strip().lstrip("-").isdigit():
            out.append(int(item))
        else:
            out.append(item)
    return tuple(out)


def validate(structure: Structure) -> None:
    """Raises one ValueError naming the offending block."""
    if not structure.nodes:
        raise ValueError(f"structure {structure.name!r} has no nodes")
    if len(structure.repeats) != NUM_LEVELS or len(structure.level_widths) != NUM_LEVELS:
        raise ValueError(f"structure {structure.name!r}: repeats and level_widths need {NUM_LEVELS} "
                         f"values, got {list(structure.repeats)} and {list(structure.level_widths)}")
    if structure.sink not in SINK_ORDERS:
        raise ValueError(f"structure {structure.name!r}: sink={structure.sink!r}; expected one of {SINK_ORDERS} "
                         "(AssembleNet A.5: pool_then_fc; AssembleNet++ supplementary A.3: fc_then_pool)")
    for m in structure.repeats:
        if m <= 0 or (2 * m) != int(2 * m):
            raise ValueError(f"structure {structure.name!r}: repeat m={m} must be a positive multiple of 0.5")
    by_index: dict[int, Node] = {}
    for n in structure.nodes:
        if n.index in by_index:
            raise ValueError(f"block {n.index}: duplicate index")
        by_index[n.index] = n
    for n in structure.nodes:
        if not 0 <= n.level <= NUM_LEVELS:
            raise ValueError(f"block {n.index}: level {n.level} outside 0..{NUM_LEVELS}")
        if n.channels <= 0:
            raise ValueError(f"block {n.index}: channels must be positive, got {n.channels}")
        if n.dilation <= 0 or n.stride <= 0:
            raise ValueError(f"block {n.index}: dilation and stride must be positive, "
                             f"got r={n.dilation}, stride={n.stride}")
        if not n.inputs:
            raise ValueError(f"block {n.index}: has no inputs")
        if n.is_stem:
            if len(n.inputs) != 1 or not is_stream(n.inputs[0]):
                raise ValueError(f"block {n.index}: a level-0 stem takes exactly one of {MODALITIES} (or a "
                                 f"tagged stream of one, e.g. 'flow_decoy'), got {list(n.inputs)}")
            continue
        for j in n.inputs:
            if is_stream(j):
                raise ValueError(f"block {n.index}: modality {j!r} can feed only a level-0 stem")
            if not isinstance(j, int) or j not in by_index:
                raise ValueError(f"block {n.index}: unknown input {j!r}")
        if len(set(n.inputs)) != len(n.inputs):
            raise ValueError(f"block {n.index}: repeated input in {list(n.inputs)}")
    _check_acyclic(by_index)
    for n in structure.blocks:
        for j in n.inputs:
            if by_index[j].level >= n.level:
                raise ValueError(f"block {n.index}: edge from block {j} (level {by_index[j].level}) to "
                                 f"block {n.index} (level {n.level}) does not go from a lower to a higher level")
        if n.peer is not None:
            if n.peer not in by_index:
                raise ValueError(f"block {n.index}: unknown peer {n.peer!r}")
            if by_index[n.peer].level >= n.level:
                raise ValueError(f"block {n.index}: peer {n.peer} must be at a lower level (§3.4 of AssembleNet++)")
    if not any(n.level == NUM_LEVELS for n in structure.nodes):
        raise ValueError(f"structure {structure.name!r}: missing top level {NUM_LEVELS}: "
                         f"no block at level {NUM_LEVELS}")


def _check_acyclic(by_index: Mapping[int, Node]) -> None:
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done

    def visit(i: int, path: list[int]) -> None:
        state[i] = 1
        for j in by_index[i].inputs:
            if isinstance(j, str):
                continue
            if state.get(j) == 1:
                cycle = path[path.index(j):] + [j] if j in path else [i, j]
                raise ValueError(f"block {i}: cycle through blocks {' -> '.join(map(str, cycle))}")
            if state.get(j) is None:
                visit(j, path + [j])
        state[i] = 2

    for i in by_index:
        if state.get(i) is None:
            visit(i, [i])


# --------------------------------------------------------------------------------------
# The papers' structures.
# Rows: (index, level, inputs, C, r, stride).

_ASSEMBLENET_TABLE5 = [
    (0, 0, "rgb", 32, 4, 4),
    (1, 0, "rgb", 32, 4, 4),
    (2, 0, "flow", 32, 1, 4),
    (3, 0, "flow", 32, 1, 4),
    (4, 1, [1], 32, 1, 1),
    (5, 1, [0], 32, 4, 1),
    (6, 1, [0, 1, 2, 3], 32, 1, 1),
    (7, 1, [2, 3], 32, 2, 1),
    (8, 2, [0, 4, 5, 6, 7], 64, 2, 2),
    (9, 2, [0, 2, 4, 7], 64, 1, 2),
    (10, 2, [0, 5, 7], 64, 4, 2),
    (11, 2, [0, 5], 64, 1, 2),
    (12, 3, [4, 8, 10, 11], 256, 1, 2),
    (13, 3, [8, 9], 256, 4, 2),
    (14, 4, [12, 13], 512, 2, 2),
]

_ASSEMBLENET_PLUS_TABLE1 = [
    (0, 0, "rgb", 32, 2, 4),
    (1, 0, "rgb", 32, 4, 4),
    (2, 0, "flow", 32, 1, 4),
    (3, 0, "flow", 32, 1, 4),
    (4, 0, "object", NUM_OBJECT_CLASSES, 1, 4),
    (5, 1, [0, 1, 2, 3, 4], 32, 1, 1),
    (6, 1, [0, 1, 4], 32, 4, 1),
    (7, 1, [2, 3, 4], 32, 8, 1),
    (8, 1, [2, 3, 4], 32, 1, 1),
    (9, 2, [0, 1, 2, 4, 5, 6, 7, 8], 64, 4, 2),
    (10, 2, [2, 3, 4, 7, 8], 64, 1, 2),
    (11, 2, [0, 4, 5, 6, 7], 128, 8, 2),
    (12, 3, [4, 11], 256, 8, 2),
    (13, 3, [2, 3, 4, 5, 6, 7, 8, 10, 11], 256, 4, 2),
    (14, 4, [4, 12, 13], 512, 2, 2),
]

# A small graph with all three modalities for tests, the demo and quick searches: the layout of
# Table 1 at 1/8 of the width, m = 0.5 per level (one 2D module per block) and thin 3x3 convs.
_TINY = [
    (0, 0, "rgb", 8, 2, 4),
    (1, 0, "flow", 8, 1, 4),
    (2, 0, "object", NUM_OBJECT_CLASSES, 1, 4),
    (3, 1, [0, 1, 2], 4, 1, 1),
    (4, 1, [0, 1, 2], 4, 4, 1),
    (5, 2, [0, 2, 3, 4], 8, 2, 2),
    (6, 2, [1, 2, 3, 4], 8, 1, 2),
    (7, 3, [2, 5, 6], 16, 4, 2),
    (8, 4, [2, 4, 7], 16, 2, 2),
]


def assemblenet50() -> Structure:
    # Sink of AssembleNet A.5: temporal pooling, then the FC layer.
    return Structure.create("assemblenet50", _ASSEMBLENET_TABLE5, repeats=REPEATS_50, sink="pool_then_fc")


def assemblenet101() -> Structure:
    return Structure.create("assemblenet101", _ASSEMBLENET_TABLE5, repeats=REPEATS_101, sink="pool_then_fc")


def assemblenet_plus50() -> Structure:
    # Sink of AssembleNet++ supplementary A.3: FC per frame, then temporal max pooling of the logits.
    return Structure.create("assemblenet_plus50", _ASSEMBLENET_PLUS_TABLE1, repeats=REPEATS_50,
                            sink="fc_then_pool")


def tiny() -> Structure:
    # Table 1's design scaled down, so it takes Table 1's sink too (the project's choice).
    return Structure.create("tiny", _TINY, repeats=(0.5, 0.5, 0.5, 0.5), level_widths=(8, 8, 16, 16),
                            sink="fc_then_pool")


NAMED_STRUCTURES = {
    "assemblenet50": assemblenet50,
    "assemblenet101": assemblenet101,
    "assemblenet_plus50": assemblenet_plus50,
    "tiny": tiny,
}


def get_structure(name_or_path: str | Path | Structure) -> Structure:
    """A named structure (`assemblenet50`, ...) or a JSON file written by `Structure.save`."""
    if isinstance(name_or_path, Structure):
        return name_or_path
    key = str(name_or_path)
    if key in NAMED_STRUCTURES:
        return NAMED_STRUCTURES[key]()
    path = Path(key)
    if path.is_file():
        return Structure.from_json(path)
    raise ValueError(f"unknown structure {key!r}: expected one of {sorted(NAMED_STRUCTURES)} or a JSON file path")
