"""An I3D-style 3D ResNet (I3D-R50 of the non-local paper, Wang et al. 2018, Table 1) with AttentionNAS cells.

Stem: 5x7x7 conv, stride (1, 2, 2), then a 1x3x3 max pool, stride (1, 2, 2). Stages res2..res5 of
bottleneck blocks [kt x1x1, 1x3x3, 1x1x1 (×4 width)]; the first convolution is inflated in time
(kt = 3) in every other block, starting with the first one of each stage (the non-local paper's
"3x1x1 in every other block"); res3..res5 halve H and W in their first block. Head: global average
pool → dense logits. No temporal down-sampling, so the clip length is free.

Cells (AttentionNAS §4, non-local §4.1): `cells` maps a position "res{stage}_{block}" (block counted from
0 in its stage) to a cell description (model.attention_nas.apply_cell); the cell follows that block.
`nonlocal_positions(blocks)` gives the non-local paper's 5-block setting: every other block of res3
(2 cells) and res4 (3 cells) — the places where AttentionNAS inserts its cells too.
"""

from collections.abc import Mapping, Sequence

import keras

from model.attention_nas import apply_cell
from model.blocks import conv_bn

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STAGES = ("res2", "res3", "res4", "res5")


def stage_blocks(depth: int = 50, blocks: Sequence[int] | None = None) -> tuple[int, ...]:
    if blocks is not None:
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts (res2..res5), got {list(blocks)}")
        return blocks
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)} (or pass blocks=...), got {depth}")
    return DEPTHS[depth]


def positions(blocks: Sequence[int]) -> list[str]:
    return [f"{stage}_{b}" for stage, count in zip(STAGES, blocks, strict=True) for b in range(count)]


def nonlocal_positions(
    blocks: Sequence[int] = DEPTHS[50], stages=("res3", "res4"), counts=(2, 3)
) -> tuple[str, ...]:
    """Every other block of res3 and res4, at most 2 and 3 cells (non-local paper §4.1, 5 blocks)."""
    by_stage = dict(zip(STAGES, blocks, strict=True))
    out = []
    for stage, count in zip(stages, counts, strict=True):
        out += [f"{stage}_{b}" for b in range(0, by_stage[stage], 2)][:count]
    return tuple(out)


def apply_bottleneck(x, *, width, stride, temporal, name):
    """Bottleneck [kt x1x1, 1x3x3, 1x1x1] with a projection shortcut when the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * width:
        shortcut = conv_bn(
            x, 4 * width, (1, 1, 1), strides=(1, stride, stride), relu=False, name=f"{name}_shortcut"
        )
    y = conv_bn(x, width, (3 if temporal else 1, 1, 1), name=f"{name}_a")
    y = conv_bn(y, width, (1, 3, 3), strides=(1, stride, stride), name=f"{name}_b")
    y = conv_bn(y, 4 * width, (1, 1, 1), relu=False, zero_gamma=True, name=f"{name}_c")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet3d(
    num_classes: int,
    *,
    depth: int = 50,
    blocks: Sequence[int] | None = None,
    width: int = 64,
    cells: Mapping[str, Mapping] | None = None,
    frames=None,
    size=None,
    dropout: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """I3D-ResNet (module docstring); input (B, T, H, W, 3) in [-1, 1], output logits (B, num_classes).

    `blocks`/`width` give small variants for tests and proxy searches (e.g. blocks=(1, 1, 1, 1), width=8).
    """
    counts = stage_blocks(depth, blocks)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    cells = dict(cells or {})
    valid = positions(counts)
    unknown = sorted(set(cells) - set(valid))
    if unknown:
        raise ValueError(f"cells: unknown position(s) {unknown}; valid positions are {valid}")

    inputs = keras.Input((frames, size, size, 3), name="rgb")
    x = conv_bn(inputs, width, (5, 7, 7), strides=(1, 2, 2), name="conv1")
    x = keras.layers.MaxPooling3D((1, 3, 3), strides=(1, 2, 2), padding="same", name="pool1")(x)
    for s, (stage, count) in enumerate(zip(STAGES, counts, strict=True)):
        for b in range(count):
            position = f"{stage}_{b}"
            x = apply_bottleneck(
                x,
                width=width * 2**s,
                stride=2 if (s > 0 and b == 0) else 1,
                temporal=b % 2 == 0,
                name=position,
            )
            if position in cells:
                x = apply_cell(x, cells[position], name=f"{position}_cell")
    x = keras.layers.GlobalAveragePooling3D(name="pool5")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(int(num_classes), name="logits")(x)
    default = f"i3d_r{depth}" if blocks is None else "i3d_resnet"
    return keras.Model(inputs, outputs, name=name or default)
