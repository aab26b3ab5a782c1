"""The AssembleNet / AssembleNet++ model builder: a Structure → a Keras functional model.

Data flow per block i (AssembleNet++ §3.3–3.5):
  each input x_j is matched to block i's fused shape (max-pool to the smallest spatial size, 1x1 conv
  to the widest non-object width: AssembleNet §3.1), optionally gated by attention, summed with σ(w_ji)
  (Eq. 1/3/4), then the block's residual modules run; an AttentionNAS cell may follow (Node.cell).
The sink: per-frame spatial average → average of the top-level blocks, then in the order the
structure names (`Structure.sink`): temporal max (Charades) or average pooling → FC (AssembleNet A.5,
`pool_then_fc`), or FC per frame → temporal pooling of the logits (AssembleNet++ supplementary A.3,
`fc_then_pool`).
"""

from collections.abc import Mapping

import keras

from model.blocks import apply_block, apply_stem, conv_bn
from model.layers import ChannelAttention, ConnectionFusion, EdgeGates, RuntimeWidth, SpatialMaxPool, VideoConv
from model.optimizer import MomentumL2  # noqa: F401  (registered, so a model.keras loads with its optimizer)
from model.structure import ATTENTION_MODES, TEMPORAL_POOLS, Structure, get_structure, stream_modality

INPUT_CHANNELS = {"rgb": 3, "flow": 2}
# Where a block's connection weights σ(w) sit (AssembleNet++ Eq. 1 fixes the sum, not the order):
# "project_first": each input is max-pooled and 1x1-conv + batch-normed to the block's width, then
#   weighted and summed (the project's default);
# "weight_first": each input is max-pooled and weighted, inputs of equal width are summed, then one 1x1
#   conv without batch norm per other width (the reference implementation's order, layers.EdgeGates).
FUSION_ORDERS = ("project_first", "weight_first")


def default_peer(structure: Structure, index: int) -> int:
    """The peer used in `peer` mode with `default_peers=True` when the structure names none: the first
    live node (one that feeds the output) at the closest lower level, so the default never adds
    computation for an unused block.

    The papers' tables list no peers (they come from the one-shot search, AssembleNet++ §3.5); this is
    the project's choice, used only when asked for.
    """
    live = structure.live()
    candidates = [n for n in structure.nodes if n.level < structure.level(index) and n.index in live]
    return max(candidates, key=lambda n: (n.level, -n.index)).index


def build_inputs(structure: Structure, frames=None, size=None) -> dict:
    inputs = {}
    for stream in structure.modalities:
        modality = stream_modality(stream)
        if modality == "object":
            inputs[stream] = keras.Input((frames, size, size), dtype="int32", name=stream)
        else:
            inputs[stream] = keras.Input((frames, size, size, INPUT_CHANNELS[modality]), name=stream)
    return inputs


def _match_input(x, *, target_stride, source_stride, width, name):
    """AssembleNet §3.1: max-pool/stride to the block's spatial size, 1x1 conv to its channel width."""
    factor = target_stride // source_stride
    if factor > 1:
        x = SpatialMaxPool(factor, name=f"{name}_pool")(x)
    if width is not None and x.shape[-1] != width:
        x = conv_bn(x, width, (1, 1, 1), relu=False, name=f"{name}_proj")
    return x


def _weight_first(pooled, width, *, name, masked=False):
    """Σ_j σ(w_j)·x_j in the reference implementation's order: weight each input, sum the inputs of one
    width, then a 1x1 conv (no batch norm) from each other width to the block's `width`. With `masked`,
    Σ_j m_j σ(w_j)·x_j: a width whose inputs are all masked sums to zero, and its bias-free conv of zero
    adds zero."""
    gated = EdgeGates(len(pooled), masked=masked, name=f"{name}_fusion")(pooled)
    groups: dict[int, list] = {}
    for x in gated:
        groups.setdefault(int(x.shape[-1]), []).append(x)
    parts = []
    for channels, xs in sorted(groups.items()):
        x = xs[0] if len(xs) == 1 else keras.layers.Add(name=f"{name}_sum{channels}")(xs)
        if channels != width:
            x = VideoConv(width, (1, 1, 1), name=f"{name}_proj{channels}")(x)
        parts.append(x)
    return parts[0] if len(parts) == 1 else keras.layers.Add(name=f"{name}_fused")(parts)


def max_width_of(structure: Structure, index: int) -> int:
    """The channels a runtime-width model carries for block `index`'s fused input: the widest of its
    (maximal) non-object inputs, or its own 4C, which a child's block fed only by object stems takes
    (Structure.fused_channels). Every child's W of that block is at most this."""
    return max(structure.fused_channels(index), structure.node(index).output_channels)


def _runtime_width_fusion(structure: Structure, node, outputs, strides, fused_stride):
    """Eq. 1 of AssembleNet++ over the masked inputs, in `max_width_of` channels with the fused width W as
    runtime data (layers.RuntimeWidth): an input as wide as W passes unprojected (zero-padded), any other
    is 1x1-conv + batch-normed (§3.1) to max_width, whose channels from W on are selected away after the
    sum. The first W channels are the plain model's fused input of a child whose block i has width W."""
    i = node.index
    top = max_width_of(structure, i)
    width = structure.fused_channels(i)
    matched = []
    for j in node.inputs:
        x = _match_input(outputs[j], target_stride=fused_stride, source_stride=strides[j], width=None,
                         name=f"block{i}_from{j}")
        channels = int(x.shape[-1])
        if channels == top:  # j active means W >= its width = top, so W = top: never projected
            matched.append(x)
            continue
        projected = conv_bn(x, top, (1, 1, 1), relu=False, name=f"block{i}_from{j}_proj")
        source = structure.node(int(j))
        if source.is_stem and source.modality == "object":  # one-hots never set W: always projected
            matched.append(projected)
        else:
            matched.append(RuntimeWidth("pad_or_project", top, width, channels=channels,
                                        name=f"block{i}_from{j}_width")([x, projected]))
    fused = ConnectionFusion(len(matched), masked=True, name=f"block{i}_fusion")(matched)
    return RuntimeWidth("mask", top, width, name=f"block{i}_width")([fused])


def check_peers(structure: Structure, attention: str, default_peers: bool = False) -> None:
    """`peer` attention needs each block's peer; the papers take them from the one-shot search
    (argmax h, AssembleNet++ §3.5), so a structure without them is refused unless `default_peers`."""
    if attention not in ("peer", "conv") or default_peers:
        return
    missing = [n.index for n in structure.blocks if n.peer is None]
    if missing:
        raise ValueError(
            f"structure {structure.name!r}: attention {attention!r} needs a peer for every block, and blocks "
            f"{missing} have none. Peers come from the one-shot attention search (AssembleNet++ §3.5): run "
            f"`assemblenet search --structure {structure.name} ...` and train its final_structure.json "
            "with --attention peer, or pass --default-peers to use the project's default peers "
            "(not the paper's)")


def build_assemblenet(structure, num_classes: int, *, attention: str = "none", default_peers: bool = False,
                      temporal_pool: str = "max", frames=None, size=None, name=None,
                      fusion_order: str = "project_first", edge_masks: bool = False,
                      max_dilation: int | None = None, runtime_width: bool = False) -> keras.Model:
    """Builds the model of `structure` (a Structure, a named structure or a JSON path).

    Inputs: a dict keyed by `structure.modalities` (see docs/CONTRACTS.md); output: logits.
    `frames` and `size` may stay None (any clip length and resolution whose sides are multiples of 32).
    `attention="peer"` uses the peers the structure names; blocks without one are an error unless
    `default_peers` (then `default_peer` picks them).
    `edge_masks=True` gives every block's fusion a non-trainable 0/1 mask over its inputs (AssembleNet++
    Eq. 1/3 summed over the connections whose mask is 1): a model of a maximal structure then trains any
    child whose edges are a subset, without being rebuilt (model.edge_masks). All masks start at 1.
    `max_dilation` makes every node's temporal resolution r runtime data (AssembleNet §3.2, mutation (1)):
    each temporal conv reads r from a non-trainable variable (layers.VideoConv; at most `max_dilation`,
    starting at the structure's r), so the same compiled model also runs any child that differs in
    dilations (model.edge_masks.set_masks sets them). Without it, the model is the plain one.
    `runtime_width=True` (with `edge_masks`, `project_first`, attention `none`) makes each block's fused
    width W runtime data too (`max_width_of`; layers.RuntimeWidth): the same model then runs any child
    whose edges give a block another W.
    """
    structure = get_structure(structure)
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    check_peers(structure, attention, default_peers)
    if fusion_order not in FUSION_ORDERS:
        raise ValueError(f"fusion_order must be one of {FUSION_ORDERS}, got {fusion_order!r}")
    if fusion_order == "weight_first" and attention == "self":
        raise ValueError("attention 'self' gates each input at the block's width, before the sum: it needs "
                         "fusion_order='project_first'")
    if runtime_width and not (edge_masks and fusion_order == "project_first" and attention == "none"):
        raise ValueError("runtime_width needs edge_masks=True, fusion_order='project_first' and attention 'none', "
                         f"got edge_masks={edge_masks}, fusion_order={fusion_order!r}, attention={attention!r}")
    if temporal_pool not in TEMPORAL_POOLS:
        raise ValueError(f"temporal_pool must be one of {TEMPORAL_POOLS}, got {temporal_pool!r}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if max_dilation is not None and int(max_dilation) < max(n.dilation for n in structure.nodes):
        raise ValueError(f"max_dilation={max_dilation} is below structure {structure.name!r}'s largest "
                         f"dilation {max(n.dilation for n in structure.nodes)}")

    inputs = build_inputs(structure, frames, size)
    strides = structure.cumulative_stride()
    outputs: dict[int, object] = {}
    for node in sorted(structure.nodes, key=lambda n: (n.level, n.index)):
        if node.is_stem:
            outputs[node.index] = apply_stem(inputs[node.stream], node, name=f"stem{node.index}",
                                            max_dilation=max_dilation)
            continue
        i = node.index
        fused_stride = max(strides[j] for j in node.inputs)
        width = structure.fused_channels(i)
        if runtime_width:
            x = _runtime_width_fusion(structure, node, outputs, strides, fused_stride)
            x = apply_block(x, node, repeats=structure.repeats[node.level - 1],
                            width=structure.level_widths[node.level - 1], name=f"block{i}",
                            max_dilation=max_dilation, runtime_width=width)
            outputs[i] = x
            continue
        if fusion_order == "weight_first":
            pooled = [_match_input(outputs[j], target_stride=fused_stride, source_stride=strides[j], width=None,
                                   name=f"block{i}_from{j}") for j in node.inputs]
            fused = _weight_first(pooled, width, name=f"block{i}", masked=edge_masks)
            matched = None
        else:
            matched = [_match_input(outputs[j], target_stride=fused_stride, source_stride=strides[j],
                                    width=width, name=f"block{i}_from{j}") for j in node.inputs]
            fused = None
        x = _fuse(structure, node, matched, outputs, attention=attention, width=width,
                  strides=(strides, fused_stride), fused=fused, masked=edge_masks)
        x = apply_block(x, node, repeats=structure.repeats[node.level - 1],
                        width=structure.level_widths[node.level - 1], name=f"block{i}",
                        max_dilation=max_dilation)
        if node.cell is not None:
            from model.attention_nas import apply_cell

            x = apply_cell(x, dict(node.cell), name=f"block{i}_cell")
        outputs[i] = x

    logits = _sink(structure, outputs, num_classes, temporal_pool)
    return keras.Model(inputs, logits, name=name or structure.name)


def _fuse(structure: Structure, node, matched, outputs: Mapping[int, object], *, attention, width, strides,
          fused=None, masked=False):
    """Eq. 1 (none), Eq. 3 (static/self/peer) or Eq. 4 (search) of AssembleNet++; `conv`: Table 4's
    1x1 convolution of the peer added to the fused input. `strides`: (every node's cumulative stride,
    the fused input's)."""
    i = node.index
    if fused is None:  # project_first: weight the matched inputs and sum them here
        if attention == "self":
            # The source of each connection's attention is the connection itself (x_k = x_j).
            gate = ChannelAttention("self", width, name=f"block{i}_attention")
            matched = [gate([x]) for x in matched]
        # Eq. 1 (Eq. 3 with `self`): Σ_j σ(w_ji)·x_j; with `masked`, Σ_j m_ji σ(w_ji)·x_j, so a connection
        # with m_ji = 0 (absent from the child a maximal model trains) adds nothing and learns nothing.
        fused = ConnectionFusion(len(matched), masked=masked, name=f"block{i}_fusion")(matched)
    if attention in ("none", "self"):
        return fused
    # With one attention source per block, A_i(x_k) is the same for every connection (j, i), so
    # Σ_j σ(w_ji)(A·x_j) = A · Σ_j σ(w_ji) x_j: one gate after the sum (supplementary A.2: one FC per block).
    if attention == "static":
        return ChannelAttention("static", width, name=f"block{i}_attention")([fused])
    if attention == "peer":
        peer = node.peer if node.peer is not None else default_peer(structure, i)
        return ChannelAttention("peer", width, name=f"block{i}_attention")([fused, outputs[peer]])
    if attention == "conv":
        peer = node.peer if node.peer is not None else default_peer(structure, i)
        source = outputs[peer]
        node_strides, fused_stride = strides
        if node_strides[peer] < fused_stride:  # parameter-free resampling to the fused input's size
            source = SpatialMaxPool(fused_stride // node_strides[peer], name=f"block{i}_conv_pool")(source)
        elif node_strides[peer] > fused_stride:
            factor = node_strides[peer] // fused_stride
            source = keras.layers.UpSampling3D((1, factor, factor), name=f"block{i}_conv_up")(source)
        return ChannelAttention("conv", width, name=f"block{i}_attention")([fused, source])
    peers = structure.peers(i)
    return ChannelAttention("search", width, num_peers=len(peers), name=f"block{i}_attention")(
        [fused] + [outputs[p] for p in peers])


def _sink(structure: Structure, outputs, num_classes, temporal_pool):
    tops = [n.index for n in structure.nodes_at(structure.top_level)]
    pooled = [keras.layers.TimeDistributed(keras.layers.GlobalAveragePooling2D(), name=f"sink_gap{i}")(outputs[i])
              for i in tops]
    if len(pooled) > 1:
        widths = {p.shape[-1] for p in pooled}
        # Appendix A.5: averaging or concatenating top blocks makes no difference; average needs equal widths.
        merge = keras.layers.Average if len(widths) == 1 else keras.layers.Concatenate
        x = merge(name="sink_merge")(pooled)
    else:
        x = pooled[0]
    pool = (keras.layers.GlobalMaxPooling1D(name="sink_temporal_max", dtype="float32") if temporal_pool == "max"
            else keras.layers.GlobalAveragePooling1D(name="sink_temporal_avg", dtype="float32"))
    fc = keras.layers.Dense(num_classes, name="sink_logits", dtype="float32")
    if structure.sink == "pool_then_fc":
        return fc(pool(x))  # AssembleNet A.5
    return pool(fc(x))  # AssembleNet++ supplementary A.3
