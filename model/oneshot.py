"""The over-connected one-shot model of AssembleNet++ (§3.3, §3.5).

Given a block layout (a named structure or an evolution result: its nodes with C, r and strides),
the one-shot search model connects every valid pair: (j, i) for every node j with L(j) < L(i).
Built with `attention="search"` (model.assemblenet), every block then also weighs all its peers
with softmax(h) (Eq. 4); training learns σ(w_ji) and h together, and `model.pruning.prune`
keeps the strong connections and the argmax peer per block.
"""

import dataclasses

from model.structure import Structure, get_structure


def over_connected(layout, name: str | None = None) -> Structure:
    """`layout` with every connection L(j) < L(i) (AssembleNet++ §3.3) and no fixed peer (the search
    learns one per block, §3.5). Nodes, channels, dilations, strides and cells are kept."""
    layout = get_structure(layout)
    nodes = tuple(
        n if n.is_stem else dataclasses.replace(
            n, peer=None, inputs=tuple(sorted(m.index for m in layout.nodes if m.level < n.level)))
        for n in layout.nodes)
    return layout.replace(name=name or f"{layout.name}_oneshot", nodes=nodes)
