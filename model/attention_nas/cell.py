"""AttentionNAS cells (cell level of the search space): the builder `apply_cell`, `cell_cost`, `insert_cells`.

A cell maps x (B, T, H, W, C) to a tensor of the same shape, so it fits after any block (AttentionNAS §3).
Its JSON description, defaults and validation live in model.attention_nas.cell_spec (`normalize_cell`).
The project's own choices in building it (the paper leaves them open, docs/attention_nas.md):
- an operation with several inputs takes their sum;
- combine: the sum of all operations' outputs → BatchNorm with γ initialised to 0 → added to x
  (the non-local residual), so an inserted cell starts as the identity and a pretrained backbone is
  undisturbed. With G₃ of width C a one-operation cell costs exactly as many weights as a non-local block;
- `"normalize": true` (what `derive_cell` writes): every operation's output passes a BatchNorm without
  affine parameters before it feeds later operations and the combine — the normalisation the supernet
  applies to every candidate, so a derived cell computes the function the search scored (a cell from
  the search without it would sum raw outputs whose scales differ by orders of magnitude).
- `"width"` w ∈ (0, 1] (default 1: no bottleneck): the operations work on round(w·C) channels — a 1x1x1
  projection C → w·C (`{name}_in`) feeds them, and the combined output is projected back w·C → C
  (`{name}_out`) before the BatchNorm, as the non-local block's g (C → C/2) and W_z (C/2 → C) do. The
  paper names an operation output width C_out (G₃: C → C_out) without a value; w scales a cell's added
  params and FLOPs (≈ w² for the operations, 2·w·C² for the projections), so a searched cell can be
  compared with a non-local block at matched added cost. Width 1 is the cell without projections.
Two more kinds share the same entry point `apply_cell`: `{"kind": "nonlocal", ...}` (the baseline,
Wang et al. 2018) and `{"kind": "supernet", ...}` (the search's supernet cell).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import keras

from model.attention_nas.cell_spec import normalize_cell
from model.attention_nas.nonlocal_block import NonLocalBlock, nonlocal_cost
from model.attention_nas.operations import (
    AttentionOperation,
    conv_cost,
    degenerate_pairs,
    operation_cost,
    reduced_width,
)
from model.attention_nas.supernet import SupernetCell


def _warn_degenerate(cell: Mapping[str, Any], shape, name: str) -> None:
    """A derived cell inserted where some operation cannot attend (one key per query, one token: the
    candidates the search excludes, operations.degenerate_pairs) is built, with a warning naming them:
    the operation then copies its (pooled) values instead of choosing where to look."""
    _, t, h, w, _ = shape
    if None in (t, h, w):
        return
    found = []
    for i, op in enumerate(cell["operations"], start=1):
        reason = degenerate_pairs((op["type"],), (op["dimension"],), t, h, w, kv_pool=cell["kv_pool"]).get(
            (op["type"], op["dimension"]))
        if reason:
            found.append(f"op{i}: {reason}")
    if found:
        warnings.warn(f"cell {name!r}: operation(s) that cannot attend at this feature size: "
                      + "; ".join(found) + " (use larger clips, a smaller kv_pool, or insert it earlier)",
                      stacklevel=3)


def apply_cell(x, cell_config: Mapping[str, Any], name: str):
    """Applies the cell described by `cell_config` to x (B, T, H, W, C); returns the same shape."""
    cell = normalize_cell(cell_config, where=f"cell {name!r}")
    channels = x.shape[-1]
    if cell["kind"] == "nonlocal":
        return NonLocalBlock(
            channels,
            reduction=cell["reduction"],
            kv_pool=cell["kv_pool"],
            max_attention_size=cell["max_attention_size"],
            name=name,
        )(x)
    if cell["kind"] == "supernet":
        return SupernetCell(
            channels,
            num_operations=cell["num_operations"],
            candidates=cell["candidates"],
            excluded=cell["excluded"],
            kv_pool=cell["kv_pool"],
            max_attention_size=cell["max_attention_size"],
            name=name,
        )(x)
    _warn_degenerate(cell, x.shape, name)
    # width < 1: a bottleneck, as the non-local block's g (C→C/2) and W_z (C/2→C) (module docstring).
    width = reduced_width(channels, cell["width"])  # = channels at width 1
    inner = x
    if cell["width"] < 1:
        inner = keras.layers.Conv3D(width, 1, name=f"{name}_in")(x)
    outputs = [inner]
    for i, op in enumerate(cell["operations"], start=1):
        sources = [outputs[j] for j in op["inputs"]]
        h = sources[0] if len(sources) == 1 else keras.layers.Add(name=f"{name}_op{i}_sum")(sources)
        out = (
            AttentionOperation(
                width,
                dimension=op["dimension"],
                attention_type=op["type"],
                g1=op["g1"],
                g2=op["g2"],
                g3=op["g3"],
                activation=op["activation"],
                reduction=op["reduction"],
                kv_pool=cell["kv_pool"],
                max_attention_size=cell["max_attention_size"],
                name=f"{name}_op{i}",
            )(h)
        )
        if cell["normalize"]:  # the supernet's per-candidate normalisation (DARTS §2.1), see docstring
            out = keras.layers.BatchNormalization(center=False, scale=False, name=f"{name}_op{i}_norm")(out)
        outputs.append(out)
    y = outputs[1] if len(outputs) == 2 else keras.layers.Add(name=f"{name}_combine")(outputs[1:])
    if cell["width"] < 1:
        y = keras.layers.Conv3D(channels, 1, name=f"{name}_out")(y)
    y = keras.layers.BatchNormalization(gamma_initializer="zeros", name=f"{name}_bn")(y)
    return keras.layers.Add(name=f"{name}_residual")([x, y])


def cell_cost(cell_config: Mapping[str, Any], input_shape) -> dict:
    """{"params", "flops"} a cell adds on a (T, H, W, C) or (1, T, H, W, C) input.

    flops = 2 × multiply-adds of the convolutions and attention products (element-wise work excluded);
    params include BatchNorm's moving statistics, like `keras.Model.count_params`.
    """
    cell = normalize_cell(cell_config)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 5:
        if shape[0] != 1:
            raise ValueError(f"cell_cost: a 5-D input_shape must have batch 1, got {shape}")
        shape = shape[1:]
    if len(shape) != 4:
        raise ValueError(f"cell_cost: input_shape must be (T, H, W, C) or (1, T, H, W, C), got {input_shape}")
    if cell["kind"] == "nonlocal":
        return nonlocal_cost(shape, reduction=cell["reduction"], kv_pool=cell["kv_pool"])
    if cell["kind"] == "supernet":
        raise ValueError("cell_cost: a supernet has no fixed cost; derive a cell from it first")
    t, h, w, c = shape
    width = reduced_width(c, cell["width"])
    costs = [operation_cost(op, (t, h, w, width), kv_pool=cell["kv_pool"]) for op in cell["operations"]]
    if cell["width"] < 1:  # the bottleneck's two 1x1x1 projections C → width → C
        costs += [
            dict(zip(("params", "flops"), conv_cost(t, h, w, (1, 1, 1), a, b), strict=True))
            for a, b in ((c, width), (width, c))
        ]
    norms = 2 * width * len(cell["operations"]) if cell["normalize"] else 0  # moving mean and variance
    return {
        "params": sum(k["params"] for k in costs) + 4 * c + norms,
        "flops": sum(k["flops"] for k in costs),
    }


def insert_cells(structure, cell_config: Mapping[str, Any], after_levels: Iterable[int] = (2, 3)):
    """An AssembleNet Structure with `cell_config` set on every block at `after_levels`."""
    cell = normalize_cell(cell_config)
    levels = set(int(level) for level in after_levels)
    present = {n.level for n in structure.blocks}
    missing = sorted(levels - present)
    if missing:
        raise ValueError(
            f"insert_cells: structure {structure.name!r} has no blocks at level(s) {missing}; "
            f"block levels are {sorted(present)}"
        )
    nodes = tuple(
        dataclasses.replace(n, cell=cell) if not n.is_stem and n.level in levels else n
        for n in structure.nodes
    )
    return structure.replace(nodes=nodes)
