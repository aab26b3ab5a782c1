"""AttentionNAS cell descriptions: the JSON fields, their defaults and validation (`normalize_cell`).

A cell maps x (B, T, H, W, C) to a tensor of the same shape, so it fits after any block (AttentionNAS §3).
Its JSON description (a dict, like the structure spec):

    {"kind": "cell", "kv_pool": 2, "max_attention_size": 16777216,
     "operations": [
        {"inputs": [0], "dimension": "spatiotemporal", "type": "dot", "g1": "conv1x1x1",
         "g2": "conv1x1x1", "g3": "conv1x1x1", "activation": "softmax", "reduction": 0.5},
        {"inputs": [0, 1], ...}, ...]}

Input index 0 is the cell input, index i ≥ 1 the output of operation i (1-based), which must come
earlier. `"normalize"` and `"width"` are described with the builder (model.attention_nas.cell).
Two more kinds: `{"kind": "nonlocal", "reduction": 0.5, ...}` (the baseline, Wang et al. 2018) and
`{"kind": "supernet", "num_operations": 3, "candidates": {...}, "excluded": [...]}` (the search's
supernet cell, model.attention_nas.supernet).

This module builds nothing, so the builder (cell.py) and the supernet (supernet.py) both read
descriptions through it without importing each other's module for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.attention_nas.operations import (
    ACTIVATIONS,
    DEFAULT_MAX_ATTENTION_SIZE,
    DIMENSIONS,
    G3_CHOICES,
    G_CHOICES,
    TYPES,
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


def dumps(cell_config: Mapping[str, Any]) -> str:
    return json.dumps(normalize_cell(cell_config), indent=2) + "\n"


def load_cell(path: str | Path) -> dict:
    return normalize_cell(Path(path))
