"""The AttentionNAS attention operation (operation level of the search space) and its cost.

One operation maps a video feature map f (B, T, H, W, C) to A · G₃(f) of the same shape. Its choices
(AttentionNAS §3, the formulas of the authors' figure, see docs/attention_nas.md):
- dimension: which positions are the attention's tokens —
  `temporal` (the T frames), `spatial` (the H·W positions of each frame, frames independent),
  `spatiotemporal` (all T·H·W positions);
- type:
  `map` (map-based): A = diag(φ(G₂(AvgPool(G₁(f))))) — one weight per token;
  `dot` (dot-product): A = φ(G₁(f) · G₂(f)ᵀ) — a tokens × tokens matrix;
- G₁, G₂ ∈ {conv1x1x1, conv3x3x3} (to the reduced width C′ = reduction · C); for `map`, G₂ acts on the
  one-channel token map and its 3x3x3 kernel is restricted to the token axes (3x1x1 temporal, 1x3x3
  spatial); G₃ ∈ {conv1x1x1, identity} (C → C);
- φ ∈ {none, relu, sigmoid, softmax} (softmax over the tokens / the keys; none/relu/sigmoid on a
  dot-product are divided by the number of keys, like the "dot product" non-local variant);
- reduction: C′/C.

The project's own choices (the paper leaves them open) are listed in docs/attention_nas.md: how a
temporal token is described (spatial mean of G₁(f)), pooled keys/values for spatial and spatiotemporal
dot-products (max-pool `kv_pool` × `kv_pool` over H, W as in non-local networks), and the size cap.
"""

import math

import keras
from keras import ops

DIMENSIONS = ("spatial", "temporal", "spatiotemporal")
TYPES = ("map", "dot")
G_CHOICES = ("conv1x1x1", "conv3x3x3")  # G₁, G₂
G3_CHOICES = ("conv1x1x1", "identity")  # G₃ keeps the width C, so identity fits
ACTIVATIONS = ("none", "relu", "sigmoid", "softmax")
# Query × key pairs per example above which a dot-product refuses to build (64 MiB of float32 scores).
DEFAULT_MAX_ATTENTION_SIZE = 2**24


def serializable(cls):
    return keras.saving.register_keras_serializable(package="attention_nas")(cls)


def reduced_width(channels: int, reduction: float) -> int:
    return max(1, int(round(float(reduction) * int(channels))))


def map_kernel(dimension: str, choice: str) -> tuple[int, int, int]:
    """Kernel of the map-based G₂, restricted to the token axes of `dimension`."""
    if choice == "conv1x1x1":
        return (1, 1, 1)
    return {"temporal": (3, 1, 1), "spatial": (1, 3, 3), "spatiotemporal": (3, 3, 3)}[dimension]


def g_kernel(choice: str) -> tuple[int, int, int]:
    return (3, 3, 3) if choice == "conv3x3x3" else (1, 1, 1)


def pooled_size(size, pool: int):
    """Size after a `same`-padded max pool of stride `pool` (None stays None)."""
    return None if size is None else -(-int(size) // int(pool))


def attention_size(dimension: str, t, h, w, kv_pool: int):
    """(queries, keys) of one attention matrix per example, or None where a size is unknown."""
    if dimension == "temporal":
        return (t, t) if t is not None else None
    hp, wp = pooled_size(h, kv_pool), pooled_size(w, kv_pool)
    if h is None or w is None:
        return None
    if dimension == "spatial":
        return (h * w, hp * wp)
    if t is None:
        return None
    return (t * h * w, t * hp * wp)


def check_attention_size(dimension, t, h, w, *, kv_pool, max_attention_size, where):
    """Raises a ValueError when a dot-product would hold more than `max_attention_size` scores."""
    sizes = attention_size(dimension, t, h, w, kv_pool)
    if sizes is None:
        return
    queries, keys = sizes
    # Spatial attention holds one matrix per frame.
    total = queries * keys * (t if dimension == "spatial" and t is not None else 1)
    if total > max_attention_size:
        raise ValueError(
            f"{where}: {dimension} dot-product attention on a (T, H, W) = ({t}, {h}, {w}) map needs "
            f"{total:,} query×key scores per example (> max_attention_size={max_attention_size:,}); "
            f"raise kv_pool (now {kv_pool}), choose another dimension or raise max_attention_size"
        )


def softmax_over(x, axes):
    """Softmax over several axes at once (the tokens of a map)."""
    x = x - ops.stop_gradient(ops.max(x, axis=axes, keepdims=True))
    e = ops.exp(x)
    return e / ops.sum(e, axis=axes, keepdims=True)


def map_axes(dimension: str):
    """The token axes of a (B, T, H, W, 1) map (temporal maps are (B, T, 1, 1, 1))."""
    return {"temporal": (1,), "spatial": (2, 3), "spatiotemporal": (1, 2, 3)}[dimension]


def activate_map(m, activation: str, dimension: str):
    if activation == "none":
        return m
    if activation == "relu":
        return ops.relu(m)
    if activation == "sigmoid":
        return ops.sigmoid(m)
    return softmax_over(m, map_axes(dimension))


def activate_scores(s, activation: str):
    """φ on dot-product scores (..., queries, keys); non-softmax forms are divided by the key count."""
    if activation == "softmax":
        return ops.softmax(s, axis=-1)
    keys = ops.cast(ops.shape(s)[-1], s.dtype)
    if activation == "relu":
        s = ops.relu(s)
    elif activation == "sigmoid":
        s = ops.sigmoid(s)
    return s / keys


def token_map(features, dimension: str):
    """AvgPool over channels (and over H, W for temporal tokens) → (B, T, H, W, 1) or (B, T, 1, 1, 1)."""
    m = ops.mean(features, axis=-1, keepdims=True)
    if dimension == "temporal":
        m = ops.mean(m, axis=(2, 3), keepdims=True)
    return m


def dot_attention(q, k, v, dimension: str, scores_fn, kv_pool: int):
    """A · V for a dot-product operation; q, k: (B, T, H, W, C′), v: (B, T, H, W, Cv).

    scores_fn maps the raw scores (..., queries, keys) to A (φ, or a mixture of φs in the supernet).
    """
    shape = ops.shape(v)
    b, t, h, w, cv = shape[0], shape[1], shape[2], shape[3], shape[4]
    cq = ops.shape(q)[-1]
    if dimension == "temporal":
        # A temporal token is a frame: described by the spatial mean of G₁/G₂ (the project's reading of
        # "G₁(f′) is T×C′"); the values keep every position: T × (H·W·Cv).
        qt, kt = ops.mean(q, axis=(2, 3)), ops.mean(k, axis=(2, 3))
        a = scores_fn(ops.matmul(qt, ops.transpose(kt, (0, 2, 1))))
        out = ops.matmul(a, ops.reshape(v, (b, t, h * w * cv)))
        return ops.reshape(out, (b, t, h, w, cv))
    if kv_pool > 1:
        window = (1, kv_pool, kv_pool)
        k = ops.max_pool(k, window, strides=window, padding="same")
        v = ops.max_pool(v, window, strides=window, padding="same")
    kshape = ops.shape(k)
    hp, wp = kshape[2], kshape[3]
    if dimension == "spatial":
        qs = ops.reshape(q, (b * t, h * w, cq))
        ks = ops.reshape(k, (b * t, hp * wp, cq))
        vs = ops.reshape(v, (b * t, hp * wp, cv))
    else:
        qs = ops.reshape(q, (b, t * h * w, cq))
        ks = ops.reshape(k, (b, t * hp * wp, cq))
        vs = ops.reshape(v, (b, t * hp * wp, cv))
    a = scores_fn(ops.matmul(qs, ops.transpose(ks, (0, 2, 1))))
    return ops.reshape(ops.matmul(a, vs), (b, t, h, w, cv))


@serializable
class AttentionOperation(keras.layers.Layer):
    """One attention operation A · G₃(f) with fixed choices (see the module docstring).

    Input and output: (B, T, H, W, channels).
    """

    def __init__(
        self,
        channels,
        dimension="spatiotemporal",
        attention_type="dot",
        g1="conv1x1x1",
        g2="conv1x1x1",
        g3="conv1x1x1",
        activation="softmax",
        reduction=0.5,
        kv_pool=2,
        max_attention_size=DEFAULT_MAX_ATTENTION_SIZE,
        **kwargs,
    ):  # pragma: no mutate block
        super().__init__(**kwargs)
        _check_choice("dimension", dimension, DIMENSIONS)
        _check_choice("attention_type", attention_type, TYPES)
        _check_choice("g1", g1, G_CHOICES)
        _check_choice("g2", g2, G_CHOICES)
        _check_choice("g3", g3, G3_CHOICES)
        _check_choice("activation", activation, ACTIVATIONS)
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not 0 < float(reduction) <= 1:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        if int(kv_pool) < 1:
            raise ValueError(f"kv_pool must be >= 1, got {kv_pool}")
        if int(max_attention_size) < 1:
            raise ValueError(f"max_attention_size must be >= 1, got {max_attention_size}")
        self.channels = int(channels)
        self.dimension = dimension
        self.attention_type = attention_type
        self.g1 = g1
        self.g2 = g2
        self.g3 = g3
        self.activation = activation
        self.reduction = float(reduction)
        self.kv_pool = int(kv_pool)
        self.max_attention_size = int(max_attention_size)

        width = reduced_width(self.channels, self.reduction)
        conv = lambda filters, kernel, name: keras.layers.Conv3D(
            filters, kernel, padding="same", name=name, dtype=self.dtype_policy
        )
        self.g1_conv = conv(width, g_kernel(g1), "g1")
        if attention_type == "dot":
            self.g2_conv = conv(width, g_kernel(g2), "g2")
        else:
            self.g2_conv = conv(1, map_kernel(dimension, g2), "g2")
        self.g3_conv = conv(self.channels, (1, 1, 1), "g3") if g3 == "conv1x1x1" else None

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(f"{self.name}: input has {input_shape[-1]} channels, expected {self.channels}")
        _, t, h, w, _ = input_shape
        if self.attention_type == "dot":
            check_attention_size(
                self.dimension,
                t,
                h,
                w,
                kv_pool=self.kv_pool,
                max_attention_size=self.max_attention_size,
                where=self.name,
            )
        self.g1_conv.build(input_shape)
        if self.attention_type == "dot":
            self.g2_conv.build(input_shape)
        else:
            map_shape = (None, t, 1, 1, 1) if self.dimension == "temporal" else (None, t, h, w, 1)
            self.g2_conv.build(map_shape)
        if self.g3_conv is not None:
            self.g3_conv.build(input_shape)

    def call(self, x):
        v = x if self.g3_conv is None else self.g3_conv(x)
        if self.attention_type == "map":
            m = self.g2_conv(token_map(self.g1_conv(x), self.dimension))
            return activate_map(m, self.activation, self.dimension) * v
        scores_fn = lambda s: activate_scores(s, self.activation)
        return dot_attention(self.g1_conv(x), self.g2_conv(x), v, self.dimension, scores_fn, self.kv_pool)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "dimension": self.dimension,
            "attention_type": self.attention_type,
            "g1": self.g1,
            "g2": self.g2,
            "g3": self.g3,
            "activation": self.activation,
            "reduction": self.reduction,
            "kv_pool": self.kv_pool,
            "max_attention_size": self.max_attention_size,
        }


def _check_choice(field, value, allowed):
    if value not in allowed:
        raise ValueError(f"{field} must be one of {allowed}, got {value!r}")


def conv_cost(t, h, w, kernel, c_in, c_out, *, bias=True):
    """(params, flops) of a stride-1 `same` Conv3D; flops = 2 × multiply-adds."""
    volume = math.prod(kernel)
    params = volume * c_in * c_out + (c_out if bias else 0)
    return params, 2 * t * h * w * volume * c_in * c_out


def operation_cost(op: dict, input_shape, *, kv_pool: int = 2) -> dict:
    """Params and FLOPs (2 × multiply-adds) of one operation on a (T, H, W, C) input.

    Counted: the convolutions G₁, G₂, G₃ and the two matrix products of a dot-product; not counted:
    element-wise work (φ, the diagonal product A ⊙ V, means, max-pools), as usual for FLOP counts.
    """
    t, h, w, c = (int(s) for s in input_shape)
    width = reduced_width(c, op["reduction"])
    cost = [conv_cost(t, h, w, g_kernel(op["g1"]), c, width)]
    if op["type"] == "dot":
        cost.append(conv_cost(t, h, w, g_kernel(op["g2"]), c, width))
    else:
        mt, mh, mw = (t, 1, 1) if op["dimension"] == "temporal" else (t, h, w)
        cost.append(conv_cost(mt, mh, mw, map_kernel(op["dimension"], op["g2"]), 1, 1))
    if op["g3"] == "conv1x1x1":
        cost.append(conv_cost(t, h, w, (1, 1, 1), c, c))
    params = sum(p for p, _ in cost)
    flops = sum(f for _, f in cost)
    if op["type"] == "dot":
        queries, keys = attention_size(op["dimension"], t, h, w, kv_pool)
        if op["dimension"] == "temporal":
            flops += 2 * t * t * width + 2 * t * t * h * w * c
        else:
            per = t if op["dimension"] == "spatial" else 1
            flops += per * (2 * queries * keys * width + 2 * queries * keys * c)
    return {"params": int(params), "flops": int(flops)}


def degenerate_pairs(types, dimensions, t, h, w, *, kv_pool: int) -> dict:
    """{(type, dimension): reason} for the candidates that cannot attend on a (T, H, W) feature map.

    A dot-product whose queries each see one key (after the `kv_pool` max-pool) has softmax ≡ 1 and
    copies the pooled value; a map over one token has softmax ≡ 1. Neither chooses where to look, so
    the search must not score it as attention (e.g. res4 of a 32² proxy clip is 2×2, pooled to 1×1).
    """
    out = {}
    for d in dimensions:
        if "dot" in types:
            keys = attention_size(d, t, h, w, kv_pool)[1]
            if keys == 1:
                out[("dot", d)] = (
                    f"{d} dot-product on a (T, H, W) = ({t}, {h}, {w}) map has one key per query "
                    f"after kv_pool={kv_pool} (softmax ≡ 1)"
                )
        if "map" in types:
            tokens = {"temporal": t, "spatial": h * w, "spatiotemporal": t * h * w}[d]
            if tokens == 1:
                out[("map", d)] = f"{d} map on a (T, H, W) = ({t}, {h}, {w}) map has one token (softmax ≡ 1)"
    return out
