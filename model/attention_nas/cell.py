"""AttentionNAS cells (cell level of the search space): JSON description, validation, builder, cost.

A cell maps x (B, T, H, W, C) to a tensor of the same shape, so it fits after any block (AttentionNAS §3).
Its JSON description (a dict, like the structure spec):

    {"kind": "cell", "kv_pool": 2, "max_attention_size": 16777216,
     "operations": [
        {"inputs": [0], "dimension": "spatiotemporal", "type": "dot", "g1": "conv1x1x1",
         "g2": "conv1x1x1", "g3": "conv1x1x1", "activation": "softmax", "reduction": 0.5},
        {"inputs": [0, 1], ...}, ...]}

Input index 0 is the cell input, index i ≥ 1 the output of operation i (1-based), which must come
earlier. The project's own choices (the paper leaves them open, docs/attention_nas.md):
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
Two more kinds share the same entry point `apply_cell`: `{"kind": "nonlocal", "reduction": 0.5, ...}`
(the baseline, Wang et al. 2018) and `{"kind": "supernet", ...}` (the search's supernet cell).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import keras

from model.attention_nas.nonlocal_block import NonLocalBlock, nonlocal_cost
from model.attention_nas.operations import (
    ACTIVATIONS,
    DEFAULT_MAX_ATTENTION_SIZE,
    DIMENSIONS,
    G3_CHOICES,
    G_CHOICES,
    TYPES,
    AttentionOperation,
    conv_cost,
    operation_cost,
    reduced_width,
)

KINDS = ("cell", "nonlocal", "supernet")
OPERATION_FIELDS = {
    "dimension": DIMENSIONS,
    "type": TYPES,
    "g1": G_CHOICES,
    "g2": G_CHOICES,
    "g3": G3_CHOICES,
    "activation": ACTIVATIONS,
}
OPERATION_DEFAULTS = {
    "dimension": "spatiotemporal",
    "type": "dot",
    "g1": "conv1x1x1",
    "g2": "conv1x1x1",
    "g3": "conv1x1x1",
    "activation": "softmax",
    "reduction": 0.5,
}
SUPERNET_CANDIDATES = {**OPERATION_FIELDS, "reduction": (0.25, 0.5)}

# The non-local block written as a one-operation cell: the same weight count; the value path is one
# C×C map G₃ (+ the BN) where non-local factorises it as g (C→C/2) then W_z (C/2→C).
NONLOCAL_AS_CELL = {"kind": "cell", "operations": [dict(OPERATION_DEFAULTS, inputs=[0])]}
NONLOCAL = {"kind": "nonlocal", "reduction": 0.5, "kv_pool": 2}


def normalize_cell(config: Mapping[str, Any] | str | Path, *, where: str = "cell") -> dict:
    """Validates a cell description and returns it with every default filled in (plain JSON types).

    `config` is a dict, a JSON string or a path to a JSON file. Raises ValueError naming the field.
    """
    if isinstance(config, Path) or (isinstance(config, str) and not config.lstrip().startswith("{")):
        where = str(config)
        config = json.loads(Path(config).read_text())
    elif isinstance(config, str):
        config = json.loads(config)
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: a cell description is a JSON object, got {type(config).__name__}")
    kind = config.get("kind", "cell")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    common = {
        "kv_pool": _positive_int(config.get("kv_pool", 2), f"{where}.kv_pool"),
        "max_attention_size": _positive_int(
            config.get("max_attention_size", DEFAULT_MAX_ATTENTION_SIZE), f"{where}.max_attention_size"
        ),
    }
    if kind == "nonlocal":
        _check_keys(config, {"kind", "reduction", "kv_pool", "max_attention_size"}, where)
        return {
            "kind": kind,
            "reduction": _reduction(config.get("reduction", 0.5), f"{where}.reduction"),
            **common,
        }
    if kind == "supernet":
        _check_keys(
            config, {"kind", "num_operations", "candidates", "excluded", "kv_pool", "max_attention_size"}, where
        )
        candidates = dict(config.get("candidates") or {})
        _check_keys(candidates, set(SUPERNET_CANDIDATES), f"{where}.candidates")
        out = {}
        for field, default in SUPERNET_CANDIDATES.items():
            values = list(candidates.get(field, default))
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{where}.candidates.{field}: needs distinct values, got {values}")
            for value in values:
                if field == "reduction":
                    _reduction(value, f"{where}.candidates.reduction")
                elif value not in OPERATION_FIELDS[field]:
                    raise ValueError(
                        f"{where}.candidates.{field}: unknown choice {value!r}; "
                        f"expected some of {OPERATION_FIELDS[field]}"
                    )
            out[field] = [float(v) for v in values] if field == "reduction" else values
        return {
            "kind": kind,
            "num_operations": _positive_int(config.get("num_operations", 3), f"{where}.num_operations"),
            "candidates": out,
            "excluded": _excluded(config.get("excluded") or [], out, f"{where}.excluded"),
            **common,
        }
    _check_keys(config, {"kind", "operations", "normalize", "width", "kv_pool", "max_attention_size"}, where)
    operations = config.get("operations")
    if not isinstance(operations, list) or not operations:
        raise ValueError(f"{where}.operations: needs a non-empty list of operations, got {operations!r}")
    normalize = config.get("normalize", False)
    if not isinstance(normalize, bool):
        raise ValueError(f"{where}.normalize: needs true or false, got {normalize!r}")
    return {
        "kind": kind,
        "operations": [
            _normalize_operation(op, i, f"{where}.operations[{i - 1}]")
            for i, op in enumerate(operations, start=1)
        ],
        "normalize": normalize,
        "width": _fraction(config.get("width", 1.0), f"{where}.width",
                           "the operations' width as a fraction of the input channels,"),
        **common,
    }


def _excluded(pairs, candidates: dict, where: str) -> list:
    """Validated [type, dimension] pairs the supernet leaves out; every dimension keeps a type."""
    if not isinstance(pairs, list):
        raise ValueError(f"{where}: needs a list of [type, dimension] pairs, got {pairs!r}")
    out = []
    for pair in pairs:
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or pair[0] not in candidates["type"]
            or pair[1] not in candidates["dimension"]
        ):
            raise ValueError(
                f"{where}: {pair!r} is not a [type, dimension] pair of the candidates "
                f"{candidates['type']} × {candidates['dimension']}"
            )
        if [pair[0], pair[1]] not in out:
            out.append([pair[0], pair[1]])
    for d in candidates["dimension"]:
        if all([t, d] in out for t in candidates["type"]):
            raise ValueError(
                f"{where}: every type of dimension {d!r} is excluded; drop {d!r} from candidates.dimension"
            )
    return sorted(out)


def _normalize_operation(op, index: int, where: str) -> dict:
    if not isinstance(op, Mapping):
        raise ValueError(f"{where}: an operation is a JSON object, got {op!r}")
    _check_keys(op, {"inputs", *OPERATION_DEFAULTS}, where)
    inputs = op.get("inputs")
    if isinstance(inputs, int):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise ValueError(f"{where}.inputs: needs a non-empty list of input indices, got {inputs!r}")
    for j in inputs:
        if isinstance(j, bool) or not isinstance(j, int) or j < 0:
            raise ValueError(f"{where}.inputs: {j!r} is not an index (0 = cell input, i = operation i)")
        if j >= index:
            raise ValueError(
                f"{where}.inputs: operation {index} cannot take input {j}: only the cell input (0) "
                f"and earlier operations (1..{index - 1}) can feed it"
            )
    if len(set(inputs)) != len(inputs):
        raise ValueError(f"{where}.inputs: repeated input in {inputs}")
    out = {"inputs": sorted(int(j) for j in inputs)}
    for field, default in OPERATION_DEFAULTS.items():
        value = op.get(field, default)
        if field == "reduction":
            out[field] = _reduction(value, f"{where}.reduction")
        elif value not in OPERATION_FIELDS[field]:
            raise ValueError(
                f"{where}.{field}: unknown choice {value!r}; expected one of {OPERATION_FIELDS[field]}"
            )
        else:
            out[field] = value
    return out


def _check_keys(config: Mapping, allowed: set, where: str) -> None:
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(allowed)}")


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: needs a positive integer, got {value!r}")
    return int(value)


def _reduction(value, where: str) -> float:
    return _fraction(value, where, "a width ratio C'/C")


def _fraction(value, where: str, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise ValueError(f"{where}: needs {meaning} in (0, 1], got {value!r}")
    return float(value)


def _warn_degenerate(cell: Mapping[str, Any], shape, name: str) -> None:
    """A derived cell inserted where some operation cannot attend (one key per query, one token: the
    candidates the search excludes, supernet.degenerate_pairs) is built, with a warning naming them:
    the operation then copies its (pooled) values instead of choosing where to look."""
    from model.attention_nas.supernet import degenerate_pairs

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
        from model.attention_nas.supernet import SupernetCell

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


def dumps(cell_config: Mapping[str, Any]) -> str:
    return json.dumps(normalize_cell(cell_config), indent=2) + "\n"


def load_cell(path: str | Path) -> dict:
    return normalize_cell(Path(path))
