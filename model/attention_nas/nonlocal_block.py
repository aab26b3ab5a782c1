"""The non-local block (Wang et al., "Non-local neural networks", CVPR 2018): AttentionNAS's baseline.

Embedded-Gaussian form (§3.2–3.3 of the non-local paper):
  y = softmax(θ(x) · φ(x)ᵀ) · g(x),   z = BN(W_z(y)) + x,
θ, φ, g: 1x1x1 convolutions to C/2; φ and g max-pooled 2x2 in space (the "subsampling" trick of §3.3);
W_z: 1x1x1 convolution back to C followed by BN whose γ starts at 0, so the block starts as identity.
"""

import keras
from keras import ops

from model.attention_nas.operations import (
    DEFAULT_MAX_ATTENTION_SIZE,
    check_attention_size,
    dot_attention,
    reduced_width,
    serializable,
)


@serializable
class NonLocalBlock(keras.layers.Layer):
    """(B, T, H, W, channels) → same shape; see the module docstring."""

    def __init__(
        self, channels, reduction=0.5, kv_pool=2, max_attention_size=DEFAULT_MAX_ATTENTION_SIZE, **kwargs
    ):
        super().__init__(**kwargs)
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not 0 < float(reduction) <= 1:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        if int(kv_pool) < 1:
            raise ValueError(f"kv_pool must be >= 1, got {kv_pool}")
        self.channels = int(channels)
        self.reduction = float(reduction)
        self.kv_pool = int(kv_pool)
        self.max_attention_size = int(max_attention_size)
        width = reduced_width(self.channels, self.reduction)
        conv = lambda filters, name, bias=True: keras.layers.Conv3D(
            filters, 1, use_bias=bias, name=name, dtype=self.dtype_policy
        )
        self.theta = conv(width, "theta")
        self.phi = conv(width, "phi")
        self.g = conv(width, "g")
        self.w_z = conv(self.channels, "w_z", bias=False)
        self.bn = keras.layers.BatchNormalization(
            gamma_initializer="zeros", name="bn", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels, expected {self.channels}")
        _, t, h, w, _ = input_shape
        check_attention_size(
            "spatiotemporal",
            t,
            h,
            w,
            kv_pool=self.kv_pool,
            max_attention_size=self.max_attention_size,
            where=self.name,
        )
        for layer in (self.theta, self.phi, self.g):
            layer.build(input_shape)
        reduced = (*input_shape[:-1], reduced_width(self.channels, self.reduction))
        self.w_z.build(reduced)
        self.bn.build(input_shape)

    def call(self, x, training=None):
        y = dot_attention(
            self.theta(x),
            self.phi(x),
            self.g(x),
            "spatiotemporal",
            lambda s: ops.softmax(s, axis=-1),
            self.kv_pool,
        )
        return x + self.bn(self.w_z(y), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "reduction": self.reduction,
            "kv_pool": self.kv_pool,
            "max_attention_size": self.max_attention_size,
        }


def nonlocal_cost(input_shape, *, reduction=0.5, kv_pool=2) -> dict:
    """Params (BN statistics included) and FLOPs (2 × multiply-adds) on a (T, H, W, C) input."""
    t, h, w, c = (int(s) for s in input_shape)
    width = reduced_width(c, reduction)
    hp, wp = -(-h // kv_pool), -(-w // kv_pool)
    queries, keys = t * h * w, t * hp * wp
    params = 3 * (c * width + width) + width * c + 4 * c
    flops = 3 * 2 * queries * c * width + 2 * queries * width * c + 2 * 2 * queries * keys * width
    return {"params": int(params), "flops": int(flops)}
