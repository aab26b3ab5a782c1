"""Stems and convolutional blocks, as plain functions of stock Keras layers.

AssembleNet Appendix A.2/A.4 and AssembleNet++ supplementary A.1:
- a '2D module' is 1x1 → 3x3 → 1x1; a '(2+1)D module' is temporal k=3 (dilation r) → 3x3 → 1x1;
- the 1x1 / temporal convs have C channels, the 3x3 conv has D_v (fixed per level), the last 1x1 has 4C;
- a block alternates 2D and (2+1)D modules, m repeats (m = 1.5: 2D, (2+1)D, 2D);
- BN + ReLU after every conv; a block's spatial stride happens at its first 2D (3x3) conv;
- RGB stem: 7x7/2 conv, temporal k=5 conv with the stem's dilation, 2x2 max pool;
  Flow stem: 7x7/2 conv, 2x2 max pool; Object stem: max pool of the one-hot class map.
Convs are `VideoConv` layers: (1, k, k) per-frame 2D, (k, 1, 1) temporal or (1, 1, 1) pointwise kernels.
"""

import keras

from model.layers import BatchNorm, PooledOneHot, RuntimeWidth, SpatialMaxPool, VideoConv
from model.structure import Node

# Batch normalisation of every conv: the papers give no values; these are the reference
# implementation's (TensorFlow Model Garden, official/projects/assemblenet: norm_momentum=0.99,
# norm_epsilon=1e-5 for AssembleNet and AssembleNet++), not Keras' default epsilon of 1e-3.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-5


def conv_bn(x, filters, kernel, *, stride=1, dilation=1, relu=True, zero_gamma=False, name, strides=None,
            max_dilation=None):
    """Conv (no bias) → BN (+ ReLU, in one `BatchNorm` layer). `strides=(1, s, s)` is accepted for
    Conv3D-style callers. `max_dilation` (temporal kernels): the dilation is a runtime variable of the
    conv, up to that value (`VideoConv`); ignored by the other kernels.

    Factorised kernels ((1,k,k), (k,1,1), (1,1,1)) run as `VideoConv`; a full (kt, kh, kw) kernel (the
    I3D stem of model/resnet.py) as Conv3D.
    """
    if strides is not None:
        if strides[0] != 1 or strides[1] != strides[2]:
            raise ValueError(f"{name}: only equal spatial strides are supported, got {strides}")
        stride = strides[1]
    if kernel[0] > 1 and tuple(kernel[1:]) != (1, 1):
        x = keras.layers.Conv3D(filters, kernel, strides=(1, stride, stride), dilation_rate=(dilation, 1, 1),
                                padding="same", use_bias=False, kernel_initializer="he_normal",
                                name=f"{name}_conv")(x)
    else:
        runtime = {"max_dilation": max_dilation} if max_dilation is not None and kernel[0] > 1 else {}
        x = VideoConv(filters, kernel, strides=stride, dilation_rate=dilation, name=f"{name}_conv", **runtime)(x)
    return BatchNorm(relu=relu, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                     gamma_initializer="zeros" if zero_gamma else "ones", name=f"{name}_bn")(x)


def apply_residual_module(x, *, channels, width, temporal, dilation=1, stride=1, name, max_dilation=None,
                          runtime_width=None):
    """One bottleneck module: (1x1 | temporal k=3) → 3x3 (stride) → 1x1 (4C), plus the shortcut.
    `max_dilation`: the temporal conv's dilation is runtime data (conv_bn). `runtime_width` (the initial
    W of a runtime-width input, model.assemblenet): x carries W in more channels, so whether the
    shortcut is the identity (W = 4C, no stride) is decided at run time (layers.RuntimeWidth)."""
    shortcut = x
    if runtime_width is not None and stride == 1 and 4 * channels <= x.shape[-1]:
        conv = conv_bn(x, 4 * channels, (1, 1, 1), relu=False, name=f"{name}_shortcut")
        shortcut = RuntimeWidth("identity_or_conv", int(x.shape[-1]), runtime_width, channels=4 * channels,
                                name=f"{name}_shortcut_width")([x, conv])
    elif x.shape[-1] != 4 * channels or stride != 1:
        shortcut = conv_bn(x, 4 * channels, (1, 1, 1), stride=stride, relu=False, name=f"{name}_shortcut")
    first_kernel = (3, 1, 1) if temporal else (1, 1, 1)
    y = conv_bn(x, channels, first_kernel, dilation=dilation, name=f"{name}_a", max_dilation=max_dilation)
    y = conv_bn(y, width, (1, 3, 3), stride=stride, name=f"{name}_b")
    # Zero-initialised last BN: every residual module starts as the identity (Goyal et al. 2017).
    y = conv_bn(y, 4 * channels, (1, 1, 1), relu=False, zero_gamma=True, name=f"{name}_c")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def module_kinds(repeats):
    """m repeats of (2D, (2+1)D): m = 1.5 → [2D, (2+1)D, 2D]. True marks a (2+1)D module."""
    return [k % 2 == 1 for k in range(int(round(2 * repeats)))]


def apply_block(x, node: Node, *, repeats, width, name, max_dilation=None, runtime_width=None):
    """A convolutional block of AssembleNet Appendix A.4; the stride is at the first (2D) module.
    `max_dilation`: the node's r is runtime data of its temporal convs (`block{i}_m{k}_a_conv`);
    `runtime_width`: x is a runtime-width fused input (apply_residual_module)."""
    for k, temporal in enumerate(module_kinds(repeats)):
        x = apply_residual_module(x, channels=node.channels, width=width, temporal=temporal,
                                  dilation=node.dilation if temporal else 1,
                                  stride=node.stride if k == 0 else 1, name=f"{name}_m{k}",
                                  max_dilation=max_dilation, runtime_width=runtime_width if k == 0 else None)
    return x


def apply_stem(x, node: Node, *, name, max_dilation=None):
    """Stems of AssembleNet §3.1 / AssembleNet++ supplementary A.1; stride 4 = conv/2 then pool/2.
    `max_dilation`: an RGB stem's r is runtime data of its temporal conv (`stem{i}_temporal_conv`)."""
    if node.modality == "object":
        return PooledOneHot(node.channels, pool_size=node.stride, name=f"{name}_onehot")(x)
    conv_stride = 2 if node.stride >= 2 else 1
    pool = max(node.stride // conv_stride, 1)
    x = conv_bn(x, node.channels, (1, 7, 7), stride=conv_stride, name=f"{name}_spatial")
    if node.modality == "rgb":
        x = conv_bn(x, node.channels, (5, 1, 1), dilation=node.dilation, name=f"{name}_temporal",
                    max_dilation=max_dilation)
    if pool > 1:
        x = SpatialMaxPool(pool, name=f"{name}_pool")(x)
    return x
