"""Reading learned connectivity out of a model, and pruning a searched model into a structure.

AssembleNet++ §3.5 and §4.1: after the one-shot search, connections whose σ(w) ≤ 0.2 are dropped and
only the argmax peer of softmax(h) is kept per block; the result rebuilds as a `peer` model.

`PRUNE_THRESHOLD` and `keeps` are the one statement of that rule: the search, its CLI and DAG defaults
and the report's figures import them. The module imports no Keras (it reads the layers' variables
through their `numpy()`), so a DAG file or a CLI parser can import the constant cheaply.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from model.structure import Structure

if TYPE_CHECKING:
    import keras

# AssembleNet++ §4.1: a connection is kept when its learned σ(w) is above 0.2 (strictly).
PRUNE_THRESHOLD = 0.2


def keeps(gate: float, threshold: float = PRUNE_THRESHOLD) -> bool:
    """Whether pruning keeps a connection of learned weight σ(w) = `gate`: σ(w) > threshold (§4.1)."""
    return gate > threshold


def _layer(model: keras.Model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def connection_weights(model: keras.Model, structure: Structure) -> dict[str, dict[str, float]]:
    """{block: {input: σ(w)}} for every block of `structure` found in `model`."""
    out = {}
    for node in structure.blocks:
        layer = _layer(model, f"block{node.index}_fusion")
        if layer is None:
            continue
        w = _sigmoid(np.asarray(layer.w.numpy(), dtype="float64"))
        out[str(node.index)] = {str(j): float(v) for j, v in zip(node.inputs, w, strict=True)}
    return out


def attention_weights(model: keras.Model, structure: Structure) -> dict[str, dict[str, float]]:
    """{block: {peer: softmax(h)}} for the `search` attention layers of `model` (empty otherwise)."""
    out = {}
    for node in structure.blocks:
        layer = _layer(model, f"block{node.index}_attention")
        if layer is None or getattr(layer, "mode", None) != "search":
            continue
        h = _softmax(np.asarray(layer.h.numpy(), dtype="float64"))
        out[str(node.index)] = {str(p): float(v) for p, v in zip(structure.peers(node.index), h, strict=True)}
    return out


def prune_weights(structure: Structure, weights: dict, attention: dict | None = None,
                  threshold: float = PRUNE_THRESHOLD, name: str | None = None) -> Structure:
    """Keeps edges with σ(w) > threshold (at least the strongest one per block) and sets each block's
    peer to its argmax softmax(h) peer. `weights`/`attention` are the dicts of the functions above."""
    nodes = []
    for node in structure.nodes:
        if node.is_stem:
            nodes.append(node)
            continue
        gates = weights.get(str(node.index))
        if gates is None:
            raise ValueError(f"block {node.index}: no learned connection weights to prune with")
        kept = tuple(j for j in node.inputs if keeps(gates[str(j)], threshold))
        if not kept:
            # A block must keep an input; the strongest one survives (the project's choice).
            kept = (max(node.inputs, key=lambda j: gates[str(j)]),)
        peer = node.peer
        if attention and str(node.index) in attention:
            mix = attention[str(node.index)]
            peer = int(max(mix, key=lambda p: mix[p]))
        nodes.append(dataclasses.replace(node, inputs=kept, peer=peer))
    return dataclasses.replace(structure, name=name or f"{structure.name}_pruned", nodes=tuple(nodes))


def prune(structure: Structure, model: keras.Model, threshold: float = PRUNE_THRESHOLD,
          name: str | None = None) -> Structure:
    """The pruned structure of a trained (search) model: rebuild it with attention='peer'."""
    return prune_weights(structure, connection_weights(model, structure), attention_weights(model, structure),
                         threshold=threshold, name=name)
