"""Parameters and FLOPs of a model, per clip.

FLOPs are multiply-adds × 2 of the convolutions and fully connected layers (the convention of the
papers' tables); batch norm, pooling and element-wise ops are not counted. An AttentionNAS cell
reports its own cost (`model.attention_nas.cell_cost`), included in the total and listed per block.
"""

import math

import keras

from model.assemblenet import build_assemblenet
from model.blocks import module_kinds
from model.layers import ChannelAttention, VideoConv
from model.structure import get_structure


def _call_shapes(layer):
    """(input shapes, output shape) of every call of `layer` in its functional graph."""
    for node in layer._inbound_nodes:
        ins = [tuple(t.shape) for t in node.input_tensors]
        outs = [tuple(t.shape) for t in node.outputs]
        yield ins, outs[0]


def _positions(shape):
    return math.prod(int(d) for d in shape[1:-1])


def layer_flops(layer) -> int:
    flops = 0
    if isinstance(layer, (VideoConv, keras.layers.Conv3D, keras.layers.Conv2D)):
        kernel = math.prod(layer.kernel_size)
        for ins, out in _call_shapes(layer):
            flops += 2 * _positions(out) * out[-1] * kernel * ins[0][-1] // layer.groups
    elif isinstance(layer, keras.layers.Dense):
        for ins, out in _call_shapes(layer):
            flops += 2 * _positions(out) * out[-1] * ins[0][-1]
    elif isinstance(layer, ChannelAttention):
        for ins, _ in _call_shapes(layer):
            sources = ins[:1] if layer.mode == "self" else ins[1:]
            for shape in sources if layer.mode != "static" else []:
                # One FC per frame on the GAP vector (Eq. 2).
                flops += 2 * int(shape[1]) * int(shape[-1]) * layer.channels
    return flops


def count_flops(model: keras.Model) -> int:
    """FLOPs for a batch of one clip; the model must have been built with static frames and size."""
    return sum(layer_flops(layer) for layer in model.layers)


def model_summary(structure, *, attention="none", default_peers=False, frames=32, size=224, num_classes=157,
                  temporal_pool="max") -> dict:
    """{"params", "flops", ...} of `structure` built at `frames` x `size`², batch 1.

    `dead_blocks` lists the blocks whose output nothing uses, e.g. block 9 of AssembleNet++'s
    supplementary Table 1 (under `peer` attention a block that is a live block's peer is used). Keras
    keeps only the layers on a path to the output, so a dead block's params and FLOPs are not counted.
    `peers` is the peer each block names."""
    structure = get_structure(structure)
    model = build_assemblenet(structure, num_classes, attention=attention, default_peers=default_peers,
                              temporal_pool=temporal_pool, frames=frames, size=size)
    flops = count_flops(model)
    cells = {}
    for node in structure.blocks:
        if node.cell is None:
            continue
        from model.attention_nas import cell_cost

        block_out = model.get_layer(f"block{node.index}_m{_last_module(structure, node)}_out").output
        cost = cell_cost(dict(node.cell), (1,) + tuple(block_out.shape[1:]))
        cells[str(node.index)] = cost
        # The walker above sees a cell's operations as opaque layers; the cell reports its own FLOPs.
        flops += cost["flops"]
    return {
        "structure": structure.name,
        "attention": attention,
        "frames": frames,
        "size": size,
        "num_classes": num_classes,
        "params": int(model.count_params()),
        "flops": int(flops),
        "gflops": round(flops / 1e9, 3),
        "blocks": len(structure.blocks),
        "edges": len(structure.edges()),
        "dead_blocks": structure.dead(via_peers=attention in ("peer", "conv")),
        "sink": structure.sink,
        "peers": {str(n.index): n.peer for n in structure.blocks if n.peer is not None},
        "cells": cells,
    }


def _last_module(structure, node) -> int:
    return len(module_kinds(structure.repeats[node.level - 1])) - 1
