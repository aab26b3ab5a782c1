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
