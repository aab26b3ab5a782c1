"""Connection-learning-guided architecture evolution (AssembleNet §3.2, Appendix A.2).

Search logic only: the search space, random initial architectures, the node mutations
(split, merge, temporal resolution change), edge inheritance from learned connection
weights (Eq. 2), the two baselines of Figure 4 (random search; evolution with random edge
mutations) and tournament selection. Training and scoring a child live in
`pipelines/evolve.py`; nothing here trains a model.

Edges are pairs `(j, i)`: node j feeds block i, with L(j) < L(i) (§3.1). Learned weights
are `{(j, i): sigmoid(w_ji)}`, read from a trained child's `connection_weights.json`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from model.structure import (
    LEVEL_WIDTHS,
    NUM_LEVELS,
    NUM_OBJECT_CLASSES,
    REPEATS_50,
    Node,
    Structure,
)

Edge = tuple[int, int]

# §3.2 "Evolution Implementation Details": temporal resolutions a node may take.
DILATIONS = (1, 2, 4, 8)
# AssembleNet++ §3.6: the channel sum per level is constant: 128, 256, 512, 512 at levels 1..4.
LEVEL_TOTALS = (128, 256, 512, 512)
# Appendix A.4: stems stride 4, level-1 blocks keep the resolution, levels 2..4 stride 2.
STEM_STRIDE = 4
LEVEL_STRIDES = (1, 2, 2, 2)
STRATEGIES = ("guided", "random-edges", "random-search")
# §4.2: the standard-evolution baseline "randomly modifies 1/3 of the total connections".
RANDOM_EDGE_FRACTION = 1 / 3
MUTATIONS = ("split", "merge", "dilation")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What evolution may build. `width_scale` divides every channel count (level totals,
    the 3x3 widths D_v and the stems) for tiny proxy searches.

    The metadata of the first four fields is the help text and range of the `assemblenet evolve` flags
    made from them: plain dicts that pipelines.configs reads (model/ imports nothing of pipelines)."""

    stem_counts: tuple[int, ...] = dataclasses.field(default=(2, 4), metadata={
        "help": "stem counts to draw from (paper: 2,4)", "flag_name": "stems", "item": int})
    object_stem: bool = dataclasses.field(default=False, metadata={"help": "add the object stem (AssembleNet++)"})
    width_scale: int = dataclasses.field(default=1, metadata={
        "help": "divide every channel count by this (tiny proxy searches, e.g. 8 or 16)", "minimum": 1,
        "maximum": 1024})
    repeats: tuple[float, ...] = dataclasses.field(default=REPEATS_50, metadata={
        "help": "module repeats m per level (paper: 1.5,2,3,1.5; tiny proxies: 0.5,0.5,0.5,0.5)", "item": float})
    dilations: tuple[int, ...] = DILATIONS
    initial_splits: tuple[int, int] = (1, 5)
    edge_probability: float = 0.5
    max_mutations: int = 4
    max_blocks_per_level: int = 8
    min_depth: int = NUM_LEVELS

    def __post_init__(self):
        for count in self.stem_counts:
            if count not in (2, 4):
                raise ValueError(f"SearchSpace.stem_counts: {count} stems; expected 2 or 4 (§3.2)")
        if self.width_scale < 1 or any(t % self.width_scale for t in (*LEVEL_TOTALS, *LEVEL_WIDTHS, 64)):
            raise ValueError(f"SearchSpace.width_scale={self.width_scale} must be a positive divisor of "
                             f"the channel totals {LEVEL_TOTALS}, widths {LEVEL_WIDTHS} and 64")
        if len(self.repeats) != NUM_LEVELS:
            raise ValueError(f"SearchSpace.repeats={self.repeats}: expected {NUM_LEVELS} values")
        low, high = self.initial_splits
        if not 0 <= low <= high:
            raise ValueError(f"SearchSpace.initial_splits={self.initial_splits}: expected 0 <= low <= high")
        if not 0.0 < self.edge_probability <= 1.0:
            raise ValueError(f"SearchSpace.edge_probability={self.edge_probability} must be in (0, 1]")
        if not self.dilations or any(r <= 0 for r in self.dilations):
            raise ValueError(f"SearchSpace.dilations={self.dilations} must be positive")
        if not 1 <= self.min_depth <= NUM_LEVELS:
            raise ValueError(f"SearchSpace.min_depth={self.min_depth} must be in 1..{NUM_LEVELS}")

    @property
    def level_totals(self) -> tuple[int, ...]:
        return tuple(t // self.width_scale for t in LEVEL_TOTALS)

    @property
    def level_widths(self) -> tuple[int, ...]:
        return tuple(d // self.width_scale for d in LEVEL_WIDTHS)

    def stem_channels(self, num_stems: int) -> int:
        # Appendix A.2: "64 channels if there are only two stems and 32 if there are four".
        return (64 if num_stems == 2 else 32) // self.width_scale

    def to_json(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"SearchSpace: unknown fields {sorted(unknown)}; "
                             f"expected some of {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# -- graph queries --------------------------------------------------------------------------

def edge_set(structure: Structure) -> set[Edge]:
    return set(structure.edges())


def possible_edges(structure: Structure) -> set[Edge]:
    """E_*: every edge (j, i) with L(j) < L(i) into a block (§3.1; AssembleNet++ §3.3)."""
    return {(j.index, i.index) for i in structure.blocks for j in structure.nodes if j.level < i.level}


def level_channel_sums(structure: Structure) -> dict[int, int]:
    """Sum of C over the blocks of each level 1..4 (held constant by split and merge, §3.1)."""
    return {level: sum(n.channels for n in structure.nodes_at(level)) for level in range(1, NUM_LEVELS + 1)}


def depth(structure: Structure) -> int:
    """Graph depth: the most edges on a path from a stem to a top-level block (§3.2)."""
    longest: dict[int, int] = {}
    for n in sorted(structure.nodes, key=lambda n: n.level):
        longest[n.index] = 0 if n.is_stem else 1 + max(longest[int(j)] for j in n.inputs)
    return max(longest[n.index] for n in structure.nodes_at(structure.top_level))


def with_edges(structure: Structure, edges: Iterable[Edge]) -> Structure:
    """The structure with its block inputs replaced by `edges` (validated by `Structure`)."""
    inputs: dict[int, list[int]] = {n.index: [] for n in structure.blocks}
    for j, i in edges:
        if i not in inputs:
            raise ValueError(f"edge ({j}, {i}): block {i} is not a block of {structure.name!r}")
        inputs[i].append(j)
    nodes = tuple(n if n.is_stem else dataclasses.replace(n, inputs=tuple(sorted(inputs[n.index])))
                  for n in structure.nodes)
    return structure.replace(nodes=nodes)


def parse_edge_weights(raw: Mapping[Any, Mapping[Any, float]]) -> dict[Edge, float]:
    """`{"<block>": {"<input>": sigmoid(w)}}` (connection_weights.json) -> `{(j, i): weight}`.

    Keys may be indices or names ending in the index (`block_5`)."""
    def index(key: Any) -> int:
        if isinstance(key, int):
            return key
        found = re.search(r"(\d+)$", str(key))
        if not found:
            raise ValueError(f"connection weights: key {key!r} names no block index")
        return int(found.group(1))

    return {(index(j), index(i)): float(w) for i, row in raw.items() for j, w in row.items()}


def edge_weights_to_json(weights: Mapping[Edge, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (j, i), w in sorted(weights.items(), key=lambda item: (item[0][1], item[0][0])):
        out.setdefault(str(i), {})[str(j)] = float(w)
    return out


# -- node mutations (Appendix A.2) ------------------------------------------------------

def split_node(structure: Structure, index: int) -> Structure:
    """Splits block `index` into two with C/2 each and identical input/output edges (A.2)."""
    node = structure.node(index)
    if node.is_stem:
        raise ValueError(f"split: node {index} is a stem; only blocks at levels 1..{NUM_LEVELS} split")
    if node.channels < 2 or node.channels % 2:
        raise ValueError(f"split: block {index} has C={node.channels}; a split needs an even C >= 2")
    new = max(n.index for n in structure.nodes) + 1
    nodes = []
    for n in structure.nodes:
        if n.index == index:
            n = dataclasses.replace(n, channels=node.channels // 2)
        elif index in n.inputs:
            n = dataclasses.replace(n, inputs=(*n.inputs, new))
        nodes.append(n)
    nodes.append(dataclasses.replace(node, index=new, channels=node.channels // 2))
    return structure.replace(nodes=tuple(nodes))


def merge_nodes(structure: Structure, a: int, b: int, rng: np.random.Generator) -> Structure:
    """Merges blocks a and b of one level into a: C sums, edges are the union, and the
    temporal dilation is one of the two at random (A.2)."""
    na, nb = structure.node(a), structure.node(b)
    if a == b or na.is_stem or nb.is_stem or na.level != nb.level:
        raise ValueError(f"merge: blocks {a} (level {na.level}) and {b} (level {nb.level}) must be two "
                         "different blocks of one level")
    merged = dataclasses.replace(
        na, channels=na.channels + nb.channels, dilation=int(rng.choice([na.dilation, nb.dilation])),
        inputs=tuple(sorted(set(na.inputs) | set(nb.inputs))))
    nodes = []
    for n in structure.nodes:
        if n.index == b:
            continue
        if n.index == a:
            n = merged
        elif b in n.inputs:
            n = dataclasses.replace(n, inputs=tuple(sorted({a if j == b else j for j in n.inputs})))
        nodes.append(n)
    return structure.replace(nodes=tuple(nodes))


def change_dilation(structure: Structure, index: int, dilation: int) -> Structure:
    """Sets the temporal resolution r of one node (§3.2 mutation (1))."""
    if dilation <= 0:
        raise ValueError(f"change_dilation: dilation must be positive, got {dilation}")
    return structure.replace(nodes=tuple(dataclasses.replace(n, dilation=dilation) if n.index == index else n
                                         for n in structure.nodes))


def _splittable(structure: Structure, space: SearchSpace) -> list[int]:
    return [n.index for n in structure.blocks if n.channels >= 2 and n.channels % 2 == 0
            and len(structure.nodes_at(n.level)) < space.max_blocks_per_level]


def _mergeable(structure: Structure) -> list[tuple[int, int]]:
    pairs = []
    for level in range(1, NUM_LEVELS + 1):
        ids = [n.index for n in structure.nodes_at(level)]
        pairs += [(a, b) for k, a in enumerate(ids) for b in ids[k + 1:]]
    return pairs


def _retimable(structure: Structure) -> list[int]:
    # Blocks and RGB stems: AssembleNet++ §3.6 searches the RGB stems' temporal resolutions too;
    # flow stems have no temporal conv (§3.1) and the object stem only pools.
    return [n.index for n in structure.nodes if not n.is_stem or n.modality == "rgb"]


def random_split(structure: Structure, space: SearchSpace, rng: np.random.Generator) -> tuple[Structure, str]:
    candidates = _splittable(structure, space)
    if not candidates:
        return structure, "split: no block can split"
    index = int(rng.choice(candidates))
    return split_node(structure, index), f"split {index}"


def mutate(structure: Structure, space: SearchSpace, rng: np.random.Generator,
           count: int) -> tuple[Structure, list[str]]:
    """Applies `count` random node mutations: split, merge or temporal resolution change."""
    done = []
    for _ in range(count):
        kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
        if kind == "split":
            structure, what = random_split(structure, space, rng)
        elif kind == "merge":
            pairs = _mergeable(structure)
            if not pairs:
                done.append("merge: no level has two blocks")
                continue
            a, b = pairs[int(rng.integers(len(pairs)))]
            structure, what = merge_nodes(structure, a, b, rng), f"merge {a}+{b}"
        else:
            index = int(rng.choice(_retimable(structure)))
            old = structure.node(index).dilation
            choices = [r for r in space.dilations if r != old] or [old]
            new = int(rng.choice(choices))
            structure, what = change_dilation(structure, index, new), f"dilation {index}: {old}->{new}"
        done.append(what)
    return structure, done


# -- edges: Eq. 2 and the random-mutation baseline ----------------------------------------

def inherit_edges(parent_edges: Iterable[Edge], weights: Mapping[Edge, float], possible: Iterable[Edge],
                  threshold: float, rng: np.random.Generator) -> tuple[set[Edge], set[Edge]]:
    """Eq. 2 of AssembleNet: E_c = E_c^1 ∪ E_c^2 with

        E_c^1 = {e ∈ E_p | W_e > B},
        E_c^2 = {e ∈ E_* − E_p | |E_p − E_c^1| / |E_* − E_p| > X_e},  X_e ~ unif(0, 1),

    so the expected number of added edges is the number dropped, |E_p − E_c^1|. An edge
    without a learned weight counts as W_e = 0.5 (sigmoid(0)). Returns (E_c^1, E_c^2)."""
    parent = set(parent_edges)
    kept = {e for e in parent if weights.get(e, 0.5) > threshold}
    candidates = sorted(set(possible) - parent)
    if not candidates:
        return kept, set()
    probability = len(parent - kept) / len(candidates)
    draws = rng.uniform(size=len(candidates))
    return kept, {e for e, x in zip(candidates, draws, strict=True) if probability > x}


def random_edge_mutation(parent_edges: Iterable[Edge], possible: Iterable[Edge], rng: np.random.Generator,
                         fraction: float = RANDOM_EDGE_FRACTION) -> set[Edge]:
    """The standard-evolution baseline of §4.2: drop round(fraction · |E_p|) random edges and add
    as many random new ones."""
    parent = sorted(set(parent_edges))
    candidates = sorted(set(possible) - set(parent))
    count = min(int(round(fraction * len(parent))), len(parent), len(candidates))
    dropped = {parent[k] for k in rng.choice(len(parent), size=count, replace=False)} if count else set()
    added = ({candidates[k] for k in rng.choice(len(candidates), size=count, replace=False)}
             if count else set())
    return (set(parent) - dropped) | added


def _repair(structure: Structure, edges: set[Edge], rng: np.random.Generator) -> set[Edge]:
    """Every block keeps >= 1 input and every node below the top level feeds >= 1 block, so no
    computed output is thrown away and every stem's modality is used; missing edges are drawn
    at random among the valid ones."""
    edges = set(edges)
    level = {n.index: n.level for n in structure.nodes}
    for n in sorted(structure.blocks, key=lambda n: n.index):
        if not any(i == n.index for _, i in edges):
            lower = sorted(m for m in level if level[m] < n.level)
            edges.add((int(rng.choice(lower)), n.index))
    top = structure.top_level
    for n in sorted(structure.nodes, key=lambda n: n.index):
        if n.level < top and not any(j == n.index for j, _ in edges):
            higher = sorted(m for m in level if level[m] > n.level)
            edges.add((n.index, int(rng.choice(higher))))
    return edges


def renumber(structure: Structure, name: str | None = None) -> Structure:
    """Indices 0..N-1 in (level, old index) order, as the papers' tables list nodes."""
    order = sorted(structure.nodes, key=lambda n: (n.level, n.index))
    new = {n.index: k for k, n in enumerate(order)}
    nodes = tuple(
        dataclasses.replace(n, index=new[n.index], peer=None,
                            inputs=n.inputs if n.is_stem else tuple(sorted(new[int(j)] for j in n.inputs)))
        for n in order)
    return Structure(name=name or structure.name, nodes=nodes, repeats=structure.repeats,
                     level_widths=structure.level_widths, sink=structure.sink)


# -- initial population (§3.2 "Evolution Implementation Details") ------------------------

def _skeleton(space: SearchSpace, rng: np.random.Generator, name: str) -> Structure:
    """2 or 4 stems (+ the optional object stem), two blocks at levels 1..3 and one at level 4,
    fully connected between consecutive levels (edges are redrawn by the caller)."""
    num_stems = int(rng.choice(space.stem_counts))
    modalities = ["rgb", "flow"] if num_stems == 2 else ["rgb", "rgb", "flow", "flow"]
    stem_c = space.stem_channels(num_stems)
    nodes: list[Node] = []
    for m in modalities:
        dilation = int(rng.choice(space.dilations)) if m == "rgb" else 1
        nodes.append(Node(len(nodes), 0, (m,), stem_c, dilation, STEM_STRIDE))
    if space.object_stem:
        # AssembleNet++ §3.2: the object stem is a one-hot of the 151 ADE20K classes, pooled.
        nodes.append(Node(len(nodes), 0, ("object",), NUM_OBJECT_CLASSES, 1, STEM_STRIDE))
    previous = [n.index for n in nodes]
    for level in range(1, NUM_LEVELS + 1):
        count = 1 if level == NUM_LEVELS else 2
        channels = space.level_totals[level - 1] // count
        ids = []
        for _ in range(count):
            ids.append(len(nodes))
            nodes.append(Node(len(nodes), level, tuple(previous), channels, 1, LEVEL_STRIDES[level - 1]))
        previous = ids
    return Structure(name=name, nodes=tuple(nodes), repeats=space.repeats, level_widths=space.level_widths)


def random_structure(space: SearchSpace, rng: np.random.Generator, name: str = "random",
                     max_tries: int = 1000) -> Structure:
    """One initial architecture: skeleton, 1..5 random splits, random temporal resolutions,
    each possible edge with p = 0.5; graphs of depth < 4 are discarded and redrawn (§3.2)."""
    for _ in range(max_tries):
        structure = _skeleton(space, rng, name)
        low, high = space.initial_splits
        for _ in range(int(rng.integers(low, high + 1))):
            structure, _ = random_split(structure, space, rng)
        structure = structure.replace(nodes=tuple(
            n if n.is_stem else dataclasses.replace(n, dilation=int(rng.choice(space.dilations)))
            for n in structure.nodes))
        possible = sorted(possible_edges(structure))
        keep = rng.uniform(size=len(possible)) < space.edge_probability
        edges = _repair(structure, {e for e, k in zip(possible, keep, strict=True) if k}, rng)
        structure = renumber(with_edges(structure, edges))
        if depth(structure) >= space.min_depth:
            return structure
    raise RuntimeError(f"no random architecture of depth >= {space.min_depth} in {max_tries} tries")


# -- children ------------------------------------------------------------------------------

def make_child(parent: Structure | None, weights: Mapping[Edge, float], space: SearchSpace,
               rng: np.random.Generator, *, strategy: str = "guided", keep_threshold: float | None = None,
               name: str = "child", max_tries: int = 100) -> tuple[Structure, dict[str, Any]]:
    """One child (§3.2): new edges (Eq. 2, or the random baselines), then 0..4 node mutations.

    `keep_threshold` is B: a constant, or None for B ~ unif(0, 1) drawn per child. The child is
    redrawn until its depth is >= `space.min_depth`. Returns the child and what was done."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES}")
    if strategy == "random-search" or parent is None:
        return random_structure(space, rng, name), {"strategy": "random-search"}
    parent_edges = edge_set(parent)
    possible = possible_edges(parent)
    for _ in range(max_tries):
        info: dict[str, Any] = {"strategy": strategy}
        if strategy == "guided":
            threshold = float(rng.uniform()) if keep_threshold is None else float(keep_threshold)
            kept, added = inherit_edges(parent_edges, weights, possible, threshold, rng)
            edges = kept | added
            info.update(threshold=threshold, kept=len(kept), dropped=len(parent_edges - kept),
                        added=len(added))
        else:
            edges = random_edge_mutation(parent_edges, possible, rng)
            info.update(kept=len(edges & parent_edges), dropped=len(parent_edges - edges),
                        added=len(edges - parent_edges))
        child = with_edges(parent, _repair(parent, edges, rng))
        child, done = mutate(child, space, rng, int(rng.integers(0, space.max_mutations + 1)))
        child = renumber(child, name)
        if depth(child) >= space.min_depth:
            info["mutations"] = done
            return child, info
    raise RuntimeError(f"no child of depth >= {space.min_depth} from parent {parent.name!r} "
                       f"in {max_tries} tries")


def tournament(fitness: Mapping[str, float], rng: np.random.Generator, size: int = 5) -> str:
    """Tournament selection (§3.2): the fittest of a random subset of `size` members."""
    if not fitness:
        raise ValueError("tournament: the population is empty")
    ids = sorted(fitness)
    subset = rng.choice(len(ids), size=min(size, len(ids)), replace=False)
    return max((ids[k] for k in subset), key=lambda m: (fitness[m], m))


def worst(fitness: Mapping[str, float]) -> str:
    """The member that leaves the population: the least fit (the oldest id on a tie)."""
    return min(fitness, key=lambda m: (fitness[m], m))


def fitness_from_metrics(metrics: Mapping[str, Any]) -> float:
    """§3.2: top-1 + top-5 accuracy for single-label data; mAP for multi-label data."""
    lowered = {str(k).lower(): v for k, v in metrics.items()}
    for key in ("map", "mean_ap", "mean_average_precision"):
        if key in lowered:
            return float(lowered[key])
    top1 = next((lowered[k] for k in ("top1", "top_1", "top1_accuracy", "top_1_accuracy", "accuracy")
                 if k in lowered), None)
    top5 = next((lowered[k] for k in ("top5", "top_5", "top5_accuracy", "top_5_accuracy") if k in lowered),
                None)
    if top1 is None or top5 is None:
        raise ValueError(f"metrics {sorted(metrics)}: need 'mAP' or both top-1 and top-5 accuracy "
                         "for fitness")
    return float(top1) + float(top5)


def top_mean(values: Sequence[float], k: int = 3) -> float:
    """Mean of the k best values (AssembleNet Figure 4 plots the mean of the top 3)."""
    best = sorted(values, reverse=True)[:k]
    return float(np.mean(best)) if best else float("nan")


# -- hand-designed baselines (AssembleNet Table 3, Appendix A.3) -------------------------------

# The (2+1)D multi-stream models of Table 3 that learn their connection weights but are not evolved:
#   late_fusion        two streams at every level 1..4; the sink combines the two level-4 blocks
#   fusion_at_4        two streams at levels 1..3; one level-4 block fuses them (weighted sum, §3.1)
#   flow_to_rgb        as fusion_at_4, and each RGB block also takes the flow block below it
#   fully              two blocks at levels 1..3, one at level 4, every block fed by every block of
#                      the level just below ("Two-stream (fully, fuse at 4)")
#   four_stream_fully  the same with two RGB and two flow stems and four blocks at levels 1..3
HAND_DESIGNED = ("late_fusion", "fusion_at_4", "flow_to_rgb", "fully", "four_stream_fully")


def hand_designed(kind: str, space: SearchSpace = SearchSpace()) -> Structure:
    """One baseline of Table 3 with the capacity of `space`'s architectures: the same per-level channel
    totals (§3.1: "all these models have a similar number of parameters"), 3x3 widths, repeats, stems
    (Appendix A.2 widths) and strides; every temporal resolution r = 1 (a plain (2+1)D ResNet).

    Stream s of a two-stream model starts at stem s (0: RGB, 1: flow); `space.object_stem` adds no
    object stem here (Table 3's models are RGB + flow)."""
    if kind not in HAND_DESIGNED:
        raise ValueError(f"hand_designed: unknown baseline {kind!r}; expected one of {HAND_DESIGNED}")
    modalities = ("rgb", "rgb", "flow", "flow") if kind == "four_stream_fully" else ("rgb", "flow")
    streams = len(modalities)
    stem_c = space.stem_channels(streams)
    nodes: list[Node] = [Node(k, 0, (m,), stem_c, 1, STEM_STRIDE) for k, m in enumerate(modalities)]
    below = [n.index for n in nodes]  # the previous level's blocks, one per stream
    for level in range(1, NUM_LEVELS + 1):
        count = streams if level < NUM_LEVELS or kind == "late_fusion" else 1
        channels = space.level_totals[level - 1] // count
        ids = list(range(len(nodes), len(nodes) + count))
        for s, index in enumerate(ids):
            if count == 1 or kind in ("fully", "four_stream_fully"):
                inputs = below
            elif kind == "flow_to_rgb" and modalities[s] == "rgb":
                inputs = below  # RGB combines both streams of the level below (A.3)
            else:
                inputs = [below[s]]
            nodes.append(Node(index, level, tuple(inputs), channels, 1, LEVEL_STRIDES[level - 1]))
        below = ids
    return Structure(name=f"two_stream_{kind}" if streams == 2 else kind, nodes=tuple(nodes),
                     repeats=space.repeats, level_widths=space.level_widths)
