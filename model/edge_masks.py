"""A child structure as runtime data over one maximal graph: edge masks instead of a rebuild.

An architecture search trains many children that differ mostly in their edges (AssembleNet §3.2:
Eq. 2 rewires a parent, and node mutations are rarer). Built with `edge_masks=True`
(model.assemblenet), every block's fusion computes Σ_j m_ji σ(w_ji)·x_j (AssembleNet++ Eq. 1/3) over
the inputs of a *maximal* structure, with m a non-trainable 0/1 vector. Setting m to a child's edges
makes that one compiled model compute the child: a masked input adds an exact zero to the sum, so the
forward pass, every batch-norm statistic of the child's layers and every gradient of the child's
weights are the child's own; the masked connection's w, projection and any block that only masked
connections read get exactly zero gradient (their batch-norm moving statistics still move, but nothing
the output reads depends on them).

Temporal resolutions are runtime data too: built with `max_dilation`, every temporal conv reads its
dilation r from a non-trainable variable (layers.VideoConv), which `set_masks` sets to the child's r
(AssembleNet §3.2 mutation (1) changes a node's r, never a weight's shape).

So can each block's fused width W be (`runtime_width=True`; project_first fusion, no attention): the
model carries every block's fused input in `max_width_of` channels, projects an input only where the
child's W differs from its width, and selects the channels from W on away (layers.RuntimeWidth).

What must be equal for two children to share a maximal model is their *shape*: the nodes (levels, C,
strides, peers, cells; not r) and, per block, the fused input's cumulative stride (and its width
without `runtime_width`), which depend on the edges (§3.1: inputs are max-pooled to the smallest size
and projected to the widest width). The stride stays compile-time: a block's spatial size sets every
later tensor's shape, and making it a function of the level alone would change what the plain model
computes (a level-3 block fed only from level 1 runs at twice the resolution of one fed from level 2).
`maximal(child)` is the child's layout with every edge L(j) < L(i) that keeps those shapes (the
over-connected graph of AssembleNet++ §3.3, model.oneshot, less the edges that would change a shape);
children with the same `signature` have the same maximal structure.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib

import keras
import numpy as np

from model.evolution import DILATIONS
from model.structure import Structure, get_structure

# Variables whose layer declares no `<name>_initializer` attribute: the builder's own layers'
# (ConnectionFusion/EdgeGates w: zeros, σ = 0.5; its edge mask: ones; ChannelAttention's v and h: zeros).
_DEFAULT_INITIALIZERS = {"w": "zeros", "mask": "ones", "v": "zeros", "h": "zeros"}
# The largest temporal resolution a compiled model runs without being rebuilt: the search space's (§3.2);
# a structure with a larger r gets a model of its own, padded for its r.
MAX_DILATION = max(DILATIONS)


def max_dilation(structure: Structure) -> int:
    """The `max_dilation` of the model that trains `structure`: MAX_DILATION, or its own largest r."""
    return max(MAX_DILATION, *(n.dilation for n in structure.nodes))


# The temporal convs of a node, as model.blocks names them: an RGB stem's k=5 conv, a block's k=3 ones.
_TEMPORAL_CONV = re.compile(r"^(?:stem|block)(\d+)_(?:temporal|m\d+_a)_conv$")


def fused_shapes(structure: Structure) -> dict[int, tuple[int, int]]:
    """{block: (cumulative stride of its fused input, its width)}: what a block's edges fix (§3.1)."""
    strides = structure.cumulative_stride()
    return {n.index: (max(strides[int(j)] for j in n.inputs), structure.fused_channels(n.index))
            for n in structure.blocks}


def _is_object(structure: Structure, index: int) -> bool:
    node = structure.node(index)
    return node.is_stem and node.modality == "object"


def _keeps_shape(structure: Structure, j: int, i: int, strides, shape, runtime_width: bool = False) -> bool:
    """Whether adding edge (j, i) leaves block i's fused stride (and, unless `runtime_width`, its width)
    as they are."""
    fused_stride, width = shape
    if strides[j] > fused_stride or fused_stride % strides[j]:
        return False  # it would shrink the fused input (max-pooling only goes down, §3.1)
    if runtime_width or _is_object(structure, j):
        return True  # object one-hots never set the width
    non_object = [k for k in structure.node(i).inputs if not _is_object(structure, int(k))]
    channels = structure.node(j).output_channels
    # A block fed only by object stems takes its own 4C; a non-object input must then bring exactly it.
    return channels <= width if non_object else channels == width


def maximal(structure, name: str | None = None, *, runtime_width: bool = False) -> Structure:
    """`structure`'s layout with every edge (j, i), L(j) < L(i), that keeps each block's fused stride
    and width (`fused_shapes`; with `runtime_width`, the stride only): the largest graph whose masked
    model runs `structure` exactly. Nodes, channels, dilations, strides, peers and cells are kept;
    inputs are sorted."""
    structure = get_structure(structure)
    strides = structure.cumulative_stride()
    shapes = fused_shapes(structure)
    nodes = []
    for n in structure.nodes:
        if not n.is_stem:
            inputs = {int(j) for j in n.inputs}
            inputs |= {m.index for m in structure.nodes
                       if m.level < n.level and _keeps_shape(structure, m.index, n.index, strides, shapes[n.index],
                                                       runtime_width)}
            n = dataclasses.replace(n, inputs=tuple(sorted(inputs)))
        nodes.append(n)
    return structure.replace(name=name or f"{structure.name}_maximal", nodes=tuple(nodes))


def signature(structure, *, runtime_width: bool = False) -> str:
    """The key of the compiled model (built with `max_dilation`, and `runtime_width` if given) that can
    train `structure`: its maximal structure as JSON, without the name and the dilations. Two structures
    with the same signature differ only in edges and temporal resolutions."""
    data = maximal(structure, runtime_width=runtime_width).to_json()
    data["runtime_width"] = bool(runtime_width)
    data.pop("name")
    for node in data["nodes"]:
        node.pop("dilation")
    return json.dumps(data, sort_keys=True)


def mask_values(maximal_structure: Structure, child: Structure, *,
                runtime_width: bool = False) -> dict[int, np.ndarray]:
    """{block: 0/1 float32 vector over the maximal structure's inputs of that block}: 1 where the child
    has the edge. Raises ValueError if `child` is not `maximal_structure` with a subset of its edges (of
    the same fused strides and, unless `runtime_width`, widths)."""
    if len(child.nodes) != len(maximal_structure.nodes):
        raise ValueError(f"child {child.name!r} has {len(child.nodes)} nodes, the maximal structure "
                         f"{maximal_structure.name!r} {len(maximal_structure.nodes)}: not a sub-structure")
    for field in ("repeats", "level_widths", "sink"):
        if getattr(child, field) != getattr(maximal_structure, field):
            raise ValueError(f"child {child.name!r}: {field}={getattr(child, field)!r}, the maximal structure "
                             f"has {getattr(maximal_structure, field)!r}")
    masks = {}
    for n in maximal_structure.nodes:
        try:
            c = child.node(n.index)
        except KeyError:
            raise ValueError(f"child {child.name!r} has no node {n.index}") from None
        same = dataclasses.replace(c, inputs=n.inputs, dilation=n.dilation) == n
        if not same:
            raise ValueError(f"child {child.name!r}: node {n.index} is {c.to_json()}, the maximal structure's "
                             f"is {n.to_json()} (only the inputs and dilation of a node may differ)")
        if n.is_stem:
            if c.inputs != n.inputs:
                raise ValueError(f"child {child.name!r}: stem {n.index} reads {c.inputs}, expected {n.inputs}")
            continue
        extra = set(c.inputs) - set(n.inputs)
        if extra:
            raise ValueError(f"child {child.name!r}: edges {sorted((j, n.index) for j in extra)} are not in the "
                             f"maximal structure {maximal_structure.name!r} (they would change block "
                             f"{n.index}'s fused shape: another signature)")
        masks[n.index] = np.array([1.0 if j in c.inputs else 0.0 for j in n.inputs], np.float32)
    mine, theirs = fused_shapes(child), fused_shapes(maximal_structure)
    if runtime_width:
        mine, theirs = ({i: (stride, None) for i, (stride, _) in shapes.items()} for shapes in (mine, theirs))
    if mine != theirs:
        raise ValueError(f"child {child.name!r}: fused strides/widths {fused_shapes(child)} differ from the "
                         f"maximal structure's {fused_shapes(maximal_structure)}")
    return masks


def uses_runtime_width(attention: str, fusion_order: str = "project_first") -> bool:
    """Whether the fast path's model carries fused widths as runtime data (build_assemblenet's
    `runtime_width`): with project_first fusion and no attention (the evolution searches' setting)."""
    return attention == "none" and fusion_order == "project_first"


def width_layers(model) -> dict[int, list]:
    """{block: its layers.RuntimeWidth layers} of a model built with `runtime_width=True`."""
    found: dict[int, list] = {}
    for layer in model.layers:
        if type(layer).__name__ == "RuntimeWidth":
            found.setdefault(int(layer.name[len("block"):].split("_")[0]), []).append(layer)
    return found


def temporal_convs(model) -> dict[int, list]:
    """{node: its temporal conv layers} of a model built by model.assemblenet."""
    convs: dict[int, list] = {}
    for layer in model.layers:
        found = _TEMPORAL_CONV.match(layer.name)
        if found and layer.kernel_size[0] > 1:
            convs.setdefault(int(found.group(1)), []).append(layer)
    return convs


def set_masks(model, maximal_structure: Structure, child: Structure) -> None:
    """Assigns the child's edges to the masks of a model built from `maximal_structure` with
    `edge_masks=True`, and the child's temporal resolutions to its runtime dilations (built with
    `max_dilation`): no rebuild, no recompilation (masks and dilations are variables). A child whose r
    differs from the model's at a node with a compile-time temporal conv is an error. In a model built
    with `runtime_width`, each block's RuntimeWidth layers are set to the child's fused width W."""
    widths = width_layers(model)
    masks = mask_values(maximal_structure, child, runtime_width=bool(widths))
    convs = temporal_convs(model)
    for node in child.nodes:
        for layer in convs.get(node.index, ()):
            if layer.max_dilation is None:
                if node.dilation != layer.dilation_rate:
                    raise ValueError(f"child {child.name!r}: node {node.index} has r={node.dilation}, layer "
                                     f"{layer.name} was built for r={layer.dilation_rate}: build the model with "
                                     "max_dilation to make dilations runtime data")
            elif node.dilation > layer.max_dilation:
                raise ValueError(f"child {child.name!r}: node {node.index} has r={node.dilation}, above the "
                                 f"model's max_dilation={layer.max_dilation}")
    for block, values in masks.items():
        layer = model.get_layer(f"block{block}_fusion")
        if not getattr(layer, "masked", False):
            raise ValueError(f"layer {layer.name} has no edge mask: build the model with edge_masks=True")
        layer.mask.assign(values)
    for node in child.nodes:
        for layer in convs.get(node.index, ()):
            if layer.max_dilation is not None:
                layer.dilation.assign(node.dilation)
    for block, layers in widths.items():
        for layer in layers:
            layer.runtime_width.assign(child.fused_channels(block))


def copy_weights(source, target, *, source_structure: Structure, target_structure: Structure) -> int:
    """Copies every variable of `target` from the variable of the same path in `source` (layer names are
    the builder's: `block{i}_from{j}_proj_conv`, ...); a fusion's w is copied input by input (the two
    structures may list different inputs of a block), edge masks, runtime dilations and widths are left
    as they are, and a wider source variable (a runtime-width model's) gives its leading corner
    (`child_value`).
    Returns the number of variables copied; a target variable without a source is an error."""
    by_path = {v.path: v for v in source.weights}
    copied = 0
    for v in target.weights:
        layer, _, name = v.path.rpartition("/")
        if (name == "mask" and layer.endswith("_fusion")) or name in ("dilation", "width"):
            continue
        if name == "w" and layer.endswith("_fusion"):
            block = int(layer[len("block"):-len("_fusion")])
            src_inputs = list(source_structure.node(block).inputs)
            src = np.asarray(by_path[v.path].numpy())
            values = np.asarray(v.numpy()).copy()
            for k, j in enumerate(target_structure.node(block).inputs):
                if j not in src_inputs:
                    raise ValueError(f"copy_weights: edge ({j}, {block}) has no weight in the source")
                values[k] = src[src_inputs.index(j)]
            v.assign(values)
        elif v.path not in by_path:
            raise ValueError(f"copy_weights: the source model has no variable {v.path!r}")
        else:
            v.assign(child_value(np.asarray(by_path[v.path].numpy()), tuple(v.shape)))
        copied += 1
    return copied


def child_value(value: np.ndarray, shape: tuple) -> np.ndarray:
    """The part of a runtime-width model's variable that a plain child's variable of `shape` is: its
    leading corner (a projection to max_width holds the child's W channels first, a conv reading a
    max_width input the child's W input channels first). Equal shapes: the value itself."""
    if value.shape == tuple(shape):
        return value
    if len(value.shape) != len(shape) or any(a < b for a, b in zip(value.shape, shape, strict=True)):
        raise ValueError(f"child_value: a {value.shape} variable holds no {tuple(shape)} child")
    return value[tuple(slice(0, n) for n in shape)]


# -- a child's start on a maximal model (the fast path's re-initialisation) ---------------------------------

def _own_variables(model):
    """(layer, variable) for every variable of `model`, with the (sub)layer that created it."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for v in layer._trainable_variables + layer._non_trainable_variables:
            yield layer, v


def _variable_seed(seed: int, path: str) -> int:
    return int(np.random.SeedSequence([int(seed), zlib.crc32(path.encode())]).generate_state(1)[0] & 0x7FFFFFFF)


def reinitialize(model, seed: int) -> int:
    """Gives every variable of `model` a fresh value from its layer's initializer, seeded by `seed` and
    the variable's path (so a layer's initial weights do not depend on which other layers the model
    has). Returns the number of variables set; a variable without a known initializer is an error."""
    count = 0
    for layer, v in _own_variables(model):
        initializer = getattr(layer, f"{v.name}_initializer", None) or _DEFAULT_INITIALIZERS.get(v.name)
        if initializer is None:
            raise ValueError(f"reinitialize: no initializer known for {v.path} (layer {type(layer).__name__})")
        initializer = keras.initializers.get(initializer)
        config = initializer.get_config()
        if "seed" in config:
            initializer = type(initializer).from_config({**config, "seed": _variable_seed(seed, v.path)})
        v.assign(initializer(tuple(v.shape), dtype=v.dtype))
        count += 1
    return count


def match_fan_in(model, child: Structure) -> int:
    """Rescales each kernel that reads a block's runtime-width fused input (`block{i}_m0_a_conv`,
    `block{i}_m0_shortcut_conv`: max_width input channels) by sqrt(max_width / W), W the child's fused
    width, so that its first W rows, the ones the child reads, are drawn as the plain child's He-normal
    kernel of fan-in W (a scaled truncated normal is the truncated normal of the scaled deviation).
    Returns the number of kernels rescaled."""
    count = 0
    for block in width_layers(model):
        width = child.fused_channels(block)
        for name in (f"block{block}_m0_a_conv", f"block{block}_m0_shortcut_conv"):
            kernel = model.get_layer(name).kernel
            carried = int(kernel.shape[-2])
            if carried != width:
                kernel.assign(np.asarray(kernel.numpy()) * np.float32(np.sqrt(carried / width)))
                count += 1
    return count
