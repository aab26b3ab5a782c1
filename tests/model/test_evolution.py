"""Evolution's search logic: initial population, mutations, Eq. 2, tournament selection."""

import math

import numpy as np
import pytest

from model import evolution
from model.evolution import SearchSpace
from model.structure import NUM_OBJECT_CLASSES, Structure, tiny


def _consumers(structure: Structure) -> dict[int, set[int]]:
    out = {n.index: set() for n in structure.nodes}
    for j, i in structure.edges():
        out[j].add(i)
    return out


def _check_valid(structure: Structure, space: SearchSpace) -> None:
    """Everything a child must satisfy besides `Structure`'s own validation (which runs on creation)."""
    Structure.from_json(structure.to_json())  # re-validates: level order, no cycle, inputs present
    assert evolution.level_channel_sums(structure) == dict(enumerate(space.level_totals, start=1))
    for j, i in structure.edges():
        assert structure.level(j) < structure.level(i)
    for level in range(1, 5):
        assert structure.nodes_at(level), f"level {level} is empty"
    consumers = _consumers(structure)
    for n in structure.nodes:
        if n.level < structure.top_level:
            assert consumers[n.index], f"node {n.index} feeds no block"
    assert evolution.depth(structure) >= 4
    assert [n.index for n in structure.nodes] == list(range(len(structure.nodes)))


@pytest.mark.parametrize("object_stem", [False, True])
def test_random_structure_follows_section_3_2(object_stem):
    space = SearchSpace(object_stem=object_stem)
    rng = np.random.default_rng(0)
    stem_counts, block_counts, densities = set(), [], []
    for k in range(60):
        s = evolution.random_structure(space, rng, name=f"r{k}")
        _check_valid(s, space)
        plain = [n for n in s.stems if n.modality != "object"]
        stem_counts.add(len(plain))
        assert {n.channels for n in plain} == {64 if len(plain) == 2 else 32}  # Appendix A.2
        assert sorted(n.modality for n in plain) == sorted(["rgb", "flow"] * (len(plain) // 2))
        objects = [n for n in s.stems if n.modality == "object"]
        assert len(objects) == int(object_stem)
        assert all(n.channels == NUM_OBJECT_CLASSES for n in objects)
        # 7 blocks (2 per level 1..3, 1 at level 4) plus 1..5 splits.
        block_counts.append(len(s.blocks))
        assert all(n.dilation in (1, 2, 4, 8) for n in s.blocks)
        densities.append(len(s.edges()) / len(evolution.possible_edges(s)))
    assert stem_counts == {2, 4}
    assert min(block_counts) >= 8 and max(block_counts) <= 12 and len(set(block_counts)) >= 4
    # p = 0.5 per edge; the depth >= 4 filter and the every-output-used repair add a little.
    assert 0.45 < np.mean(densities) < 0.65


def test_width_scale_divides_every_channel_count():
    space = SearchSpace(width_scale=16, repeats=(0.5,) * 4)
    s = evolution.random_structure(space, np.random.default_rng(1))
    assert space.level_totals == (8, 16, 32, 32)
    assert s.level_widths == (4, 8, 16, 32)
    assert s.repeats == (0.5,) * 4
    assert {n.channels for n in s.stems} <= {4, 2}
    _check_valid(s, space)
    assert SearchSpace.from_json(space.to_json()) == space
    with pytest.raises(ValueError, match="width_scale"):
        SearchSpace(width_scale=3)
    with pytest.raises(ValueError, match="stem_counts"):
        SearchSpace(stem_counts=(3,))


def test_depth_counts_edges_on_the_longest_stem_to_top_path():
    assert evolution.depth(tiny()) == 4
    shallow = Structure.create("shallow", [(0, 0, "rgb", 8, 1, 4), (1, 1, [0], 4, 1, 1),
                                           (2, 4, [0, 1], 8, 1, 2)])
    assert evolution.depth(shallow) == 2


def test_split_halves_channels_and_duplicates_edges():
    s = tiny()
    child = evolution.split_node(s, 5)
    new = max(n.index for n in child.nodes)
    assert child.node(5).channels == child.node(new).channels == s.node(5).channels // 2
    assert child.node(new).inputs == s.node(5).inputs and child.node(new).level == 2
    assert child.node(new).dilation == s.node(5).dilation
    assert {i for j, i in child.edges() if j == new} == {i for j, i in s.edges() if j == 5} == {7}
    assert evolution.level_channel_sums(child) == evolution.level_channel_sums(s)
    with pytest.raises(ValueError, match="stem"):
        evolution.split_node(s, 0)
    odd = evolution.change_dilation(s, 3, 2).replace(nodes=tuple(
        n if n.index != 3 else type(n)(3, 1, n.inputs, 3, 1, 1) for n in s.nodes))
    with pytest.raises(ValueError, match="even"):
        evolution.split_node(odd, 3)


def test_merge_sums_channels_unions_edges_and_picks_one_dilation():
    s = tiny()  # blocks 5 (inputs 0,2,3,4; r=2) and 6 (inputs 1,2,3,4; r=1) at level 2
    dilations = set()
    for seed in range(20):
        merged = evolution.merge_nodes(s, 5, 6, np.random.default_rng(seed))
        assert 6 not in {n.index for n in merged.nodes}
        assert merged.node(5).channels == 16
        assert merged.node(5).inputs == (0, 1, 2, 3, 4)
        assert merged.node(7).inputs == (2, 5)  # 7 took 5 and 6: one edge from the merged block
        assert evolution.level_channel_sums(merged) == evolution.level_channel_sums(s)
        dilations.add(merged.node(5).dilation)
    assert dilations == {1, 2}
    with pytest.raises(ValueError, match="one level"):
        evolution.merge_nodes(s, 5, 7, np.random.default_rng(0))


def test_split_then_merge_restores_the_structure():
    s = tiny()
    split = evolution.split_node(s, 7)
    merged = evolution.merge_nodes(split, 7, max(n.index for n in split.nodes), np.random.default_rng(0))
    assert merged.to_json() == s.to_json()


def _level_conv_params(structure: Structure) -> dict[int, int]:
    """Convolution kernel parameters of each level's blocks (not the input projections, which
    depend on the connections, nor batch norm)."""
    from model.assemblenet import build_assemblenet

    model = build_assemblenet(structure, 3, frames=4, size=32)
    out = {level: 0 for level in range(1, 5)}
    for node in structure.blocks:
        for layer in model.layers:
            if layer.name.startswith(f"block{node.index}_m") and layer.name.endswith("_conv"):
                out[node.level] += sum(int(np.prod(w.shape)) for w in layer.weights)
    assert all(out.values()), f"no convolution found in some level: {out}"
    return out


def test_split_keeps_each_levels_parameter_count():
    # Appendix A.2: the first 1x1 conv's output, the 3x3 conv's input and the last 1x1 conv's output
    # halve, so two half blocks hold the parameters of the one they replace (exact for a block of one
    # 2D module, as in the tiny structure, m = 0.5). Splitting block 5 (level 2) and block 8 (level 4)
    # leaves every consumer's fused width (its widest input, §3.1) unchanged, so all four levels
    # must match. Level-1 blocks of tiny are not split: halving C there makes 4C equal the input
    # width, and the shortcut's 1x1 conv becomes an identity.
    s = tiny()
    split = evolution.split_node(evolution.split_node(s, 5), 8)
    assert len(split.nodes_at(2)) == 3 and len(split.nodes_at(4)) == 2
    assert _level_conv_params(split) == _level_conv_params(s)


def test_change_dilation_sets_one_node():
    s = evolution.change_dilation(tiny(), 4, 8)
    assert s.node(4).dilation == 8 and s.node(3).dilation == tiny().node(3).dilation


def test_random_mutations_keep_children_valid():
    space = SearchSpace()
    rng = np.random.default_rng(3)
    kinds = set()
    for _ in range(40):
        s = evolution.random_structure(space, rng)
        mutated, done = evolution.mutate(s, space, rng, 4)
        kinds |= {d.split()[0] for d in done}
        mutated = evolution.renumber(mutated)
        Structure.from_json(mutated.to_json())
        assert evolution.level_channel_sums(mutated) == evolution.level_channel_sums(s)
        assert all(mutated.level(j) < mutated.level(i) for j, i in mutated.edges())
    assert {"split", "merge", "dilation"} <= kinds


def test_inherit_edges_keeps_high_weights_and_adds_as_many_as_dropped():
    # Eq. 2: E_c^1 = {e in E_p | W_e > B}; each absent edge joins with p = |E_p - E_c^1| / |E_* - E_p|,
    # so the expected number of new edges is the number dropped.
    s = evolution.random_structure(SearchSpace(), np.random.default_rng(5))
    parent = evolution.edge_set(s)
    possible = evolution.possible_edges(s)
    rng = np.random.default_rng(0)
    weights = {e: float(rng.uniform()) for e in parent}
    threshold = 0.6
    high = {e for e, w in weights.items() if w > threshold}
    dropped = len(parent) - len(high)
    assert 0 < dropped < len(possible - parent)
    added_counts = []
    for _ in range(3000):
        kept, added = evolution.inherit_edges(parent, weights, possible, threshold, rng)
        assert kept == high
        assert added <= possible - parent
        added_counts.append(len(added))
    n, p = len(possible - parent), dropped / len(possible - parent)
    stderr = math.sqrt(n * p * (1 - p) / len(added_counts))
    assert abs(np.mean(added_counts) - dropped) < 4 * stderr
    assert abs(np.var(added_counts) - n * p * (1 - p)) < 0.15 * n * p * (1 - p)  # binomial(n, p)


def test_inherit_edges_with_nothing_dropped_adds_nothing():
    s = tiny()
    weights = {e: 0.9 for e in s.edges()}
    kept, added = evolution.inherit_edges(s.edges(), weights, evolution.possible_edges(s), 0.5,
                                          np.random.default_rng(0))
    assert kept == set(s.edges()) and added == set()


def test_random_edge_mutation_changes_a_third_of_the_edges():
    s = evolution.random_structure(SearchSpace(), np.random.default_rng(6))
    parent = evolution.edge_set(s)
    child = evolution.random_edge_mutation(parent, evolution.possible_edges(s), np.random.default_rng(0))
    changed = round(len(parent) / 3)
    assert len(child) == len(parent)
    assert len(parent - child) == changed and len(child - parent) == changed


def test_guided_child_keeps_the_parents_strong_edges():
    space = SearchSpace(max_mutations=0)
    parent = evolution.random_structure(space, np.random.default_rng(7))
    edges = sorted(parent.edges())
    weights = {e: (0.95 if k % 2 else 0.05) for k, e in enumerate(edges)}
    strong = {e for e, w in weights.items() if w > 0.5}
    for seed in range(10):
        child, info = evolution.make_child(parent, weights, space, np.random.default_rng(seed),
                                           keep_threshold=0.5)
        _check_valid(child, space)
        assert strong <= set(child.edges())  # no split/merge: indices are unchanged
        assert info["kept"] == len(strong) and info["dropped"] == len(edges) - len(strong)
        assert info["mutations"] == []


@pytest.mark.parametrize("strategy", evolution.STRATEGIES)
def test_children_of_every_strategy_are_valid(strategy):
    space = SearchSpace(object_stem=True)
    rng = np.random.default_rng(8)
    parent = evolution.random_structure(space, rng)
    weights = {e: float(rng.uniform()) for e in parent.edges()}
    for _ in range(15):
        child, info = evolution.make_child(parent, weights, space, rng, strategy=strategy)
        _check_valid(child, space)
        parent, weights = child, {e: float(rng.uniform()) for e in child.edges()}
    if strategy == "guided":
        assert 0.0 <= info["threshold"] <= 1.0  # B ~ unif(0, 1) when no constant is given
    with pytest.raises(ValueError, match="strategy"):
        evolution.make_child(parent, weights, space, rng, strategy="bogus")


def test_tournament_picks_the_best_of_a_random_subset_of_five():
    fitness = {f"m{k:02d}": float(k) for k in range(20)}
    rng = np.random.default_rng(0)
    draws = 20000
    wins = {}
    for _ in range(draws):
        winner = evolution.tournament(fitness, rng, 5)
        wins[winner] = wins.get(winner, 0) + 1
    # Member of rank k (0 = worst) wins iff it is the best of its subset: C(k, 4) / C(20, 5).
    for k in (19, 18, 15, 10):
        expected = math.comb(k, 4) / math.comb(20, 5)
        assert abs(wins.get(f"m{k:02d}", 0) / draws - expected) < 0.02
    assert not any(wins.get(f"m{k:02d}") for k in range(4))  # never the best of a subset of 5
    assert evolution.tournament({"a": 1.0, "b": 3.0, "c": 2.0}, rng, 5) == "b"
    assert evolution.worst({"a": 1.0, "b": 3.0, "c": 0.5}) == "c"
    with pytest.raises(ValueError, match="empty"):
        evolution.tournament({}, rng)


def test_fitness_is_top1_plus_top5_or_map():
    assert evolution.fitness_from_metrics({"top1": 0.25, "top5": 0.5}) == 0.75
    assert evolution.fitness_from_metrics({"mAP": 0.3, "wAP": 0.4}) == 0.3
    with pytest.raises(ValueError, match="top-5"):
        evolution.fitness_from_metrics({"accuracy": 0.3})
    assert evolution.top_mean([1.0, 5.0, 3.0, 4.0]) == 4.0


def test_edge_weights_json_round_trip():
    weights = {(0, 3): 0.25, (2, 3): 0.75, (3, 5): 0.5}
    raw = evolution.edge_weights_to_json(weights)
    assert raw == {"3": {"0": 0.25, "2": 0.75}, "5": {"3": 0.5}}
    assert evolution.parse_edge_weights(raw) == weights
    assert evolution.parse_edge_weights({"block_3": {"stem_0": 0.25}}) == {(0, 3): 0.25}
    with pytest.raises(ValueError, match="index"):
        evolution.parse_edge_weights({"x": {"y": 1.0}})


# -- the hand-designed baselines of AssembleNet Table 3 ------------------------------------------

def _streams(structure: Structure) -> dict[int, list[set]]:
    """{level: [inputs of each block, as sets]} in index order."""
    return {level: [set(n.inputs) for n in structure.nodes_at(level)] for level in range(1, 5)}


def test_two_stream_late_fusion_keeps_the_streams_apart_up_to_the_sink():
    s = evolution.hand_designed("late_fusion", SearchSpace(width_scale=16))
    assert [n.modality for n in s.stems] == ["rgb", "flow"]
    assert _streams(s) == {1: [{0}, {1}], 2: [{2}, {3}], 3: [{4}, {5}], 4: [{6}, {7}]}
    assert [n.index for n in s.nodes_at(4)] == [8, 9]  # the sink combines two level-4 blocks


def test_two_stream_fusion_at_level_4_joins_the_streams_in_one_block():
    s = evolution.hand_designed("fusion_at_4", SearchSpace(width_scale=16))
    assert _streams(s) == {1: [{0}, {1}], 2: [{2}, {3}], 3: [{4}, {5}], 4: [{6, 7}]}


def test_flow_to_rgb_feeds_flow_into_the_rgb_stream_only():
    s = evolution.hand_designed("flow_to_rgb", SearchSpace(width_scale=16))
    assert _streams(s) == {1: [{0, 1}, {1}], 2: [{2, 3}, {3}], 3: [{4, 5}, {5}], 4: [{6, 7}]}


def test_fully_connects_every_block_to_every_block_of_the_level_below():
    s = evolution.hand_designed("fully", SearchSpace(width_scale=16))
    assert _streams(s) == {1: [{0, 1}] * 2, 2: [{2, 3}] * 2, 3: [{4, 5}] * 2, 4: [{6, 7}]}
    four = evolution.hand_designed("four_stream_fully", SearchSpace(width_scale=16))
    assert [n.modality for n in four.stems] == ["rgb", "rgb", "flow", "flow"]
    assert _streams(four) == {1: [{0, 1, 2, 3}] * 4, 2: [{4, 5, 6, 7}] * 4, 3: [{8, 9, 10, 11}] * 4,
                              4: [{12, 13, 14, 15}]}


@pytest.mark.parametrize("kind", evolution.HAND_DESIGNED)
def test_hand_designed_models_have_the_search_spaces_capacity(kind):
    space = SearchSpace(width_scale=16, repeats=(0.5,) * 4)
    s = evolution.hand_designed(kind, space)
    Structure.from_json(s.to_json())
    assert evolution.level_channel_sums(s) == dict(enumerate(space.level_totals, start=1))
    assert s.repeats == space.repeats and s.level_widths == space.level_widths
    assert {n.dilation for n in s.nodes} == {1}
    assert {n.channels for n in s.stems} == {space.stem_channels(len(s.stems))}
    assert evolution.depth(s) == 4 and not s.dead()


def test_hand_designed_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="unknown baseline 'early'"):
        evolution.hand_designed("early")


# -- value tests of the small pieces -----------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"stem_counts": (2, 3)}, r"^SearchSpace.stem_counts: 3 stems; expected 2 or 4 \(§3.2\)$"),
    ({"width_scale": 0}, r"^SearchSpace.width_scale=0 must be a positive divisor of the channel totals "
                         r"\(128, 256, 512, 512\), widths \(64, 128, 256, 512\) and 64$"),
    ({"width_scale": 128}, "width_scale=128 must be"),  # divides the totals but not 64
    ({"repeats": (1.5, 2.0, 3.0)}, r"^SearchSpace.repeats=\(1.5, 2.0, 3.0\): expected 4 values$"),
    ({"initial_splits": (3, 2)}, r"^SearchSpace.initial_splits=\(3, 2\): expected 0 <= low <= high$"),
    ({"initial_splits": (-1, 2)}, "initial_splits"),
    ({"edge_probability": 0.0}, r"^SearchSpace.edge_probability=0.0 must be in \(0, 1\]$"),
    ({"edge_probability": 1.01}, "edge_probability"),
    ({"dilations": ()}, r"^SearchSpace.dilations=\(\) must be positive$"),
    ({"dilations": (1, 0)}, "dilations"),
    ({"min_depth": 0}, r"^SearchSpace.min_depth=0 must be in 1..4$"),
    ({"min_depth": 5}, "min_depth"),
])
def test_search_space_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**kwargs)


def test_search_space_edges_of_its_ranges_and_json():
    SearchSpace(initial_splits=(0, 0), edge_probability=1.0, min_depth=1, width_scale=64)
    SearchSpace(initial_splits=(2, 2), min_depth=4)
    space = SearchSpace(width_scale=8, stem_counts=(4,), dilations=(1, 2))
    assert space.level_totals == (16, 32, 64, 64) and space.level_widths == (8, 16, 32, 64)
    assert space.stem_channels(2) == 8 and space.stem_channels(4) == 4  # A.2: 64 or 32, divided by 8
    data = space.to_json()
    assert data["stem_counts"] == [4] and data["dilations"] == [1, 2] and data["width_scale"] == 8
    assert SearchSpace.from_json(data) == space
    with pytest.raises(ValueError, match=r"^SearchSpace: unknown fields \['stems', 'width'\]; expected some of "
                                         r"\['dilations', 'edge_probability'"):
        SearchSpace.from_json({"width": 1, "stems": [2], "width_scale": 2})


def _small():
    return Structure.create("small", [(0, 0, "rgb", 8, 1, 4), (1, 0, "flow", 8, 1, 4), (2, 1, [0], 4, 1, 1),
                                      (3, 2, [1, 2], 8, 2, 2), (4, 3, [3], 8, 1, 2), (5, 4, [4], 6, 1, 2)])


def test_edges_levels_and_depth_by_hand():
    s = _small()
    assert evolution.possible_edges(s) == {(0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4),
                                           (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)}
    assert evolution.level_channel_sums(s) == {1: 4, 2: 8, 3: 8, 4: 6}
    assert evolution.depth(s) == 4  # 0 -> 2 -> 3 -> 4 -> 5
    rewired = evolution.with_edges(s, [(1, 5), (3, 4), (0, 3), (2, 3), (0, 2), (2, 5)])
    assert rewired.node(5).inputs == (1, 2) and rewired.node(3).inputs == (0, 2)
    assert evolution.depth(rewired) == 2  # 0 -> 2 -> 3 -> 4 no longer reaches 5; 0 -> 2 -> 5 does
    with pytest.raises(ValueError, match=r"^edge \(0, 1\): block 1 is not a block of 'small'$"):
        evolution.with_edges(s, [(0, 1)])


def test_edge_weights_json_is_sorted_by_block_then_input():
    raw = evolution.edge_weights_to_json({(4, 5): 0.5, (2, 3): 0.25, (0, 3): 1})
    assert list(raw) == ["3", "5"] and list(raw["3"]) == ["0", "2"]
    assert raw["3"]["0"] == 1.0 and type(raw["3"]["0"]) is float
    assert evolution.parse_edge_weights({5: {4: 1}, "b12": {"x7": "0.5"}}) == {(4, 5): 1.0, (7, 12): 0.5}


def test_split_appends_a_node_fed_and_consumed_like_the_old_one():
    s = _small()
    child = evolution.split_node(s, 3)
    assert [n.index for n in child.nodes] == [0, 1, 2, 3, 4, 5, 6]
    assert child.node(6) == type(s.node(3))(6, 2, (1, 2), 4, 2, 2)
    assert child.node(3).channels == 4 and child.node(4).inputs == (3, 6)
    with pytest.raises(ValueError, match=r"^split: node 0 is a stem; only blocks at levels 1..4 split$"):
        evolution.split_node(s, 0)
    with pytest.raises(ValueError, match=r"^split: block 5 has C=3; a split needs an even C >= 2$"):
        evolution.split_node(evolution.split_node(s, 5), 5)  # 6 -> 3: odd
    one = s.replace(nodes=tuple(n if n.index != 2 else type(n)(2, 1, (0,), 1, 1, 1) for n in s.nodes))
    with pytest.raises(ValueError, match="C=1"):
        evolution.split_node(one, 2)


def test_merge_and_dilation_errors():
    s = tiny()
    for a, b in ((5, 5), (0, 1), (5, 7)):
        with pytest.raises(ValueError, match=rf"^merge: blocks {a} \(level \d\) and {b} \(level \d\) must be two "
                                             "different blocks of one level$"):
            evolution.merge_nodes(s, a, b, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^change_dilation: dilation must be positive, got 0$"):
        evolution.change_dilation(s, 3, 0)
    assert evolution.change_dilation(s, 0, 1).node(0).dilation == 1


def test_which_nodes_each_mutation_may_touch():
    s = tiny()  # blocks 3, 4 (C = 4), 5, 6 (8), 7, 8 (16); stems 0 rgb, 1 flow, 2 object
    assert evolution._splittable(s, SearchSpace()) == [3, 4, 5, 6, 7, 8]
    assert evolution._splittable(s, SearchSpace(max_blocks_per_level=2)) == [7, 8]  # levels 1, 2 are full
    assert evolution._mergeable(s) == [(3, 4), (5, 6)]
    assert evolution._retimable(s) == [0, 3, 4, 5, 6, 7, 8]  # the RGB stem and the blocks
    full = SearchSpace(max_blocks_per_level=1)
    assert evolution.random_split(s, full, np.random.default_rng(0)) == (s, "split: no block can split")
    chain = _small()
    merged, done = evolution.mutate(chain, SearchSpace(max_blocks_per_level=1), np.random.default_rng(0), 30)
    assert set(done) <= {"split: no block can split", "merge: no level has two blocks"} | {
        f"dilation {i}: {old}->{new}" for i in (0, 2, 3, 4, 5) for old in (1, 2, 4, 8) for new in (1, 2, 4, 8)}
    assert {"merge: no level has two blocks", "split: no block can split"} <= set(done) and len(done) == 30


def test_dilation_mutation_always_changes_r():
    space = SearchSpace(dilations=(1, 2))
    for seed in range(10):
        _, done = evolution.mutate(_small(), space, np.random.default_rng(seed), 1)
        if done[0].startswith("dilation"):
            old, new = done[0].split(": ")[1].split("->")
            assert old != new
    _, done = evolution.mutate(_small(), SearchSpace(dilations=(1,)), np.random.default_rng(1), 3)
    assert all(d.endswith("1->1") for d in done if d.startswith("dilation 0") or d.startswith("dilation 2"))


def test_renumber_orders_by_level_then_index_and_drops_peers():
    s = tiny()
    split = evolution.split_node(s, 3)  # block 9 at level 1
    peered = split.replace(nodes=tuple(n if n.index != 8 else type(n)(8, 4, n.inputs, 16, 2, 2, peer=5)
                                       for n in split.nodes))
    out = evolution.renumber(peered, "renamed")
    assert out.name == "renamed" and evolution.renumber(peered).name == "tiny"
    assert [n.level for n in out.nodes] == [0, 0, 0, 1, 1, 1, 2, 2, 3, 4]
    assert out.node(5).inputs == (0, 1, 2) and out.node(5).channels == 2  # old block 9
    assert out.node(6).inputs == (0, 2, 3, 4, 5)  # old block 5 took 3 and now 9 too
    assert all(n.peer is None for n in out.nodes)
    assert (out.repeats, out.level_widths, out.sink) == (s.repeats, s.level_widths, s.sink)


def test_repair_gives_every_block_an_input_and_every_node_a_consumer():
    s = _small()
    edges = evolution._repair(s, {(4, 5)}, np.random.default_rng(0))
    assert {i for _, i in edges} >= {2, 3, 4, 5}
    assert {j for j, _ in edges} >= {0, 1, 2, 3, 4}
    assert all(s.level(j) < s.level(i) for j, i in edges)


def test_random_structure_gives_up_after_its_tries():
    with pytest.raises(RuntimeError, match=r"^no random architecture of depth >= 3 in 0 tries$"):
        evolution.random_structure(SearchSpace(min_depth=3), np.random.default_rng(0), max_tries=0)


def test_tournament_and_worst_break_ties_by_id():
    rng = np.random.default_rng(0)
    assert evolution.tournament({"a": 1.0, "b": 1.0, "c": 0.0}, rng, 3) == "b"
    assert evolution.worst({"a": 1.0, "b": 1.0, "c": 2.0}) == "a"


@pytest.mark.parametrize("metrics, fitness", [
    ({"MAP": 0.5, "top1": 0.1, "top5": 0.2}, 0.5),
    ({"mean_ap": 0.25}, 0.25), ({"mean_average_precision": 0.125}, 0.125),
    ({"top_1": 0.25, "top_5": 0.5}, 0.75), ({"Top1_Accuracy": 0.25, "top5_accuracy": 0.5}, 0.75),
    ({"top_1_accuracy": 0.25, "top_5_accuracy": 0.25}, 0.5), ({"accuracy": 0.5, "top5": 0.25}, 0.75),
])
def test_fitness_reads_every_spelling(metrics, fitness):
    assert evolution.fitness_from_metrics(metrics) == fitness


def test_top_mean_of_the_best_k():
    assert evolution.top_mean([1.0, 5.0, 3.0, 4.0], k=2) == 4.5
    assert evolution.top_mean([2.0]) == 2.0
    assert math.isnan(evolution.top_mean([]))


def test_hand_designed_names_and_strides():
    assert evolution.hand_designed("fully", SearchSpace(width_scale=16)).name == "two_stream_fully"
    four = evolution.hand_designed("four_stream_fully", SearchSpace(width_scale=16))
    assert four.name == "four_stream_fully"
    assert [n.stride for n in four.nodes] == [4] * 4 + [1] * 4 + [2] * 4 + [2] * 4 + [2]
    assert [n.channels for n in four.nodes] == [2] * 4 + [2] * 4 + [4] * 4 + [8] * 4 + [32]


def test_skeleton_with_every_edge_and_no_split():
    space = SearchSpace(stem_counts=(2,), initial_splits=(0, 0), edge_probability=1.0, dilations=(2,),
                        width_scale=2, repeats=(0.5, 1.0, 1.5, 2.0))
    s = evolution.random_structure(space, np.random.default_rng(0), name="full")
    # Two stems (A.2: 64 channels each, /2), two blocks at levels 1..3 and one at level 4 (§3.2), the level
    # totals split between them, strides 4 / 1 / 2 (A.4), every temporal resolution drawn from (2,).
    assert [(n.level, n.channels, n.stride, n.dilation) for n in s.nodes] == [
        (0, 32, 4, 2), (0, 32, 4, 1), (1, 32, 1, 2), (1, 32, 1, 2), (2, 64, 2, 2), (2, 64, 2, 2),
        (3, 128, 2, 2), (3, 128, 2, 2), (4, 256, 2, 2)]
    assert [n.modality for n in s.stems] == ["rgb", "flow"]  # only RGB stems draw a resolution
    assert set(s.edges()) == evolution.possible_edges(s)  # p = 1: every edge
    assert s.name == "full" and s.repeats == space.repeats and s.level_widths == (32, 64, 128, 256)
    objects = evolution.random_structure(SearchSpace(stem_counts=(4,), object_stem=True, initial_splits=(0, 0)),
                                         np.random.default_rng(0))
    assert [n.modality for n in objects.stems] == ["rgb", "rgb", "flow", "flow", "object"]
    assert [n.channels for n in objects.stems] == [32] * 4 + [NUM_OBJECT_CLASSES]
    assert [n.stride for n in objects.stems] == [4] * 5 and objects.node(4).dilation == 1


def test_random_search_and_parentless_children_are_drawn_afresh():
    space = SearchSpace(initial_splits=(0, 0))
    for strategy, parent in (("random-search", tiny()), ("guided", None)):
        child, info = evolution.make_child(parent, {}, space, np.random.default_rng(0), strategy=strategy, name="c")
        assert info == {"strategy": "random-search"}
        assert child == evolution.random_structure(space, np.random.default_rng(0), "c")


def test_guided_child_reports_its_edges():
    space = SearchSpace(max_mutations=0)
    parent = _small()
    weights = {(0, 2): 0.9, (1, 3): 0.9, (2, 3): 0.1, (3, 4): 0.9, (4, 5): 0.9}
    child, info = evolution.make_child(parent, weights, space, np.random.default_rng(0), keep_threshold=0.5,
                                       name="kid")
    assert child.name == "kid"
    assert info["strategy"] == "guided" and info["threshold"] == 0.5
    assert (info["kept"], info["dropped"]) == (4, 1) and info["mutations"] == []
    child, info = evolution.make_child(parent, weights, space, np.random.default_rng(0), strategy="random-edges")
    assert set(info) == {"strategy", "kept", "dropped", "added", "mutations"}
    assert info["dropped"] == info["added"] == round(5 / 3) and info["kept"] == 5 - round(5 / 3)


def test_random_edge_mutation_with_few_candidates():
    parent = {(0, 1), (0, 2), (1, 2)}
    out = evolution.random_edge_mutation(parent, parent | {(3, 2)}, np.random.default_rng(0), fraction=1.0)
    assert len(out) == 3 and (3, 2) in out  # one candidate: one edge swapped, not three
    assert evolution.random_edge_mutation(parent, parent, np.random.default_rng(0)) == parent


def test_counts_stay_integers():
    space = SearchSpace(width_scale=8)
    assert type(space.stem_channels(2)) is int
    s = _small()
    assert type(evolution.split_node(s, 3).node(6).channels) is int
    full = evolution.random_structure(SearchSpace(initial_splits=(0, 0)), np.random.default_rng(0))
    assert all(type(n.channels) is int for n in full.nodes)
    assert all(type(n.channels) is int for n in evolution.hand_designed("fully", space).nodes)


def test_edge_weights_json_groups_by_consuming_block():
    assert list(evolution.edge_weights_to_json({(0, 5): 0.5, (2, 3): 0.25})) == ["3", "5"]


def test_split_and_merge_reach_every_level():
    two = _small().replace(nodes=tuple(n if n.index != 2 else type(n)(2, 1, (0,), 2, 1, 1) for n in _small().nodes))
    assert 2 in evolution._splittable(two, SearchSpace())  # C = 2 splits into two blocks of C = 1
    deep = evolution.split_node(evolution.split_node(tiny(), 7), 8)
    assert evolution._mergeable(deep) == [(3, 4), (5, 6), (7, 9), (8, 10)]


def test_each_mutation_kind_does_what_it_says():
    space = SearchSpace(dilations=(1, 2, 4, 8))
    for seed in range(12):
        before = _small()
        after, done = evolution.mutate(before, space, np.random.default_rng(seed), 1)
        kind = done[0].split()[0].rstrip(":")
        assert kind == evolution.MUTATIONS[np.random.default_rng(seed).integers(3)]  # the kind drawn first
        if kind == "split":
            assert len(after.blocks) == len(before.blocks) + 1
        elif kind == "dilation":
            index = int(done[0].split()[1].rstrip(":"))
            new = int(done[0].split("->")[1])
            assert after.node(index).dilation == new != before.node(index).dilation
        else:
            assert done[0] == "merge: no level has two blocks" and after == before


def test_random_edge_mutation_never_drops_more_than_the_parent_has():
    parent = {(0, 2), (1, 2), (0, 3)}
    possible = parent | {(1, 3), (2, 3), (0, 4), (1, 4), (2, 4)}
    out = evolution.random_edge_mutation(parent, possible, np.random.default_rng(0), fraction=2.0)
    assert len(out) == 3 and not out & parent  # all three swapped


def test_defaults_of_names_and_tournament_size():
    space = SearchSpace(initial_splits=(0, 0))
    assert evolution.random_structure(space, np.random.default_rng(0)).name == "random"
    parent = _small()
    child, info = evolution.make_child(parent, {e: 0.9 for e in parent.edges()}, SearchSpace(max_mutations=0),
                                       np.random.default_rng(0), keep_threshold=0.5)
    assert child.name == "child"
    assert (info["kept"], info["dropped"], info["added"]) == (5, 0, 0)  # nothing dropped, nothing added (Eq. 2)
    with pytest.raises(RuntimeError, match=r"^no child of depth >= 4 from parent 'small' in 0 tries$"):
        evolution.make_child(parent, {}, space, np.random.default_rng(0), max_tries=0)
    fitness = {f"m{k}": float(k) for k in range(6)}
    picks = [evolution.tournament(fitness, np.random.default_rng(seed)) for seed in range(30)]
    assert picks == [evolution.tournament(fitness, np.random.default_rng(seed), 5) for seed in range(30)]
    assert set(picks) == {"m4", "m5"}  # §3.2: five of six members, so the best is sometimes left out
    with pytest.raises(ValueError, match="^tournament: the population is empty$"):
        evolution.tournament({}, np.random.default_rng(0))


def test_fitness_needs_both_accuracies():
    for metrics in ({"top5": 0.5}, {"top1": 0.5}):
        with pytest.raises(ValueError, match=r"^metrics \['top\d'\]: need 'mAP' or both top-1 and top-5 accuracy "
                                             "for fitness$"):
            evolution.fitness_from_metrics(metrics)
