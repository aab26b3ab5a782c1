"""The custom layers of AssembleNet(++): the ones with weights or ops stock Keras lacks.

- `PooledOneHot`: the object stem (AssembleNet++ §3.2): one-hot of an integer class map, max-pooled.
- `ConnectionFusion`: the weighted sum of a block's inputs, x_in = Σ_j σ(w_j)·x_j (AssembleNet §3.1,
  AssembleNet++ Eq. 1).
- `VideoConv`: a factorised video convolution (per-frame 2D, temporal 1D or 1x1x1) lowered to the
  2D convolutions and matrix products accelerators run fastest.
- `ChannelAttention`: channel-wise attention σ(FC(GAP(x_k))) per frame (AssembleNet++ Eq. 2) in the
  modes static / self / peer / search (Eq. 3–4).

Tensors are channels-last video: (batch, time, height, width, channels).
"""

import keras
from keras import ops

ATTENTION_MODES = ("none", "static", "self", "peer", "search")


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="assemblenet")(cls)


@_serializable
class PooledOneHot(keras.layers.Layer):
    """One-hot of a per-pixel class map (B, T, H, W) followed by a `pool_size` spatial max pool.

    Max-pooling a one-hot marks which classes occur in each window; it is computed on the window
    view of the mask, so under XLA the full-resolution one-hot need not be materialised.
    H and W must be multiples of `pool_size`.
    """

    def __init__(self, num_classes, pool_size=4, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if int(pool_size) < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.num_classes = int(num_classes)
        self.pool_size = int(pool_size)

    def call(self, inputs):
        p = self.pool_size
        shape = ops.shape(inputs)
        b, t, h, w = shape[0], shape[1], shape[2], shape[3]
        windows = ops.reshape(ops.cast(inputs, "int32"), (b, t, h // p, p, w // p, p))
        one_hot = ops.one_hot(windows, self.num_classes, dtype=self.compute_dtype)
        return ops.max(one_hot, axis=(3, 5))

    def compute_output_shape(self, input_shape):
        b, t, h, w = input_shape
        p = self.pool_size
        return (b, t, None if h is None else h // p, None if w is None else w // p, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "pool_size": self.pool_size}


@_serializable
class ConnectionFusion(keras.layers.Layer):
    """x_in = Σ_j σ(w_j)·x_j over a block's (shape-matched) inputs: AssembleNet++ Eq. 1.

    One scalar w per connection, learned by back-propagation; σ(w) is what evolution (AssembleNet
    Eq. 2) and pruning read. Initialised at 0 (σ = 0.5) so that no connection starts preferred.
    """

    def __init__(self, num_inputs, **kwargs):
        super().__init__(**kwargs)
        if int(num_inputs) < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        self.num_inputs = int(num_inputs)

    def build(self, input_shape):
        if len(input_shape) != self.num_inputs:
            raise ValueError(f"{self.name}: expected {self.num_inputs} inputs, got {len(input_shape)}")
        self.w = self.add_weight(name="w", shape=(self.num_inputs,), initializer="zeros")

    def call(self, inputs):
        gates = ops.cast(ops.sigmoid(self.w), self.compute_dtype)
        out = inputs[0] * gates[0]
        for j in range(1, self.num_inputs):
            out = out + inputs[j] * gates[j]
        return out

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_inputs": self.num_inputs}


@_serializable
class ChannelAttention(keras.layers.Layer):
    """Gates the channels of `x` per frame: returns x · A, A = σ(f(GAP(source))) (AssembleNet++ Eq. 2–4).

    Called on a list `[x, *sources]`:
    - `static`: `[x]`; A = σ(v) with a learned vector v (no source);
    - `self`:   `[x]`; the source is x itself (Squeeze-and-Excitation-like, §3.4);
    - `peer`:   `[x, x_k]`; the source is a fixed peer block's output (§3.4, Eq. 3);
    - `search`: `[x, x_1, ..., x_m]`; every peer p with L(p) < L(i). Eq. 4 fuses the peers by softmax(h);
      since f is linear before σ and GAP is linear, f(GAP(Σ_p softmax(h)_p x_p)) is computed as
      Σ_p softmax(h)_p f_p(GAP(x_p)), one FC per peer so peers of any width and size can be mixed.
      After the search the argmax peer's FC is exactly the `peer` model's FC.
    h is a trainable weight (zeros → uniform softmax); it receives gradients through the softmax.
    """

    def __init__(self, mode, channels, num_peers=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in ATTENTION_MODES[1:]:
            raise ValueError(f"attention mode must be one of {ATTENTION_MODES[1:]}, got {mode!r}")
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if int(num_peers) < 1 or (mode != "search" and int(num_peers) != 1):
            raise ValueError(f"num_peers must be 1 for mode {mode!r} and >= 1 for 'search', got {num_peers}")
        self.mode = mode
        self.channels = int(channels)
        self.num_peers = int(num_peers)
        self.fcs = []
        if mode in ("self", "peer"):
            self.fcs = [keras.layers.Dense(self.channels, name="fc", dtype=self.dtype_policy)]
        elif mode == "search":
            self.fcs = [keras.layers.Dense(self.channels, name=f"fc_{p}", dtype=self.dtype_policy)
                        for p in range(self.num_peers)]

    def _sources(self, inputs):
        if self.mode == "self":
            return [inputs[0]]
        return list(inputs[1:])

    def build(self, input_shape):
        if input_shape[0][-1] != self.channels:
            raise ValueError(f"{self.name}: x has {input_shape[0][-1]} channels, expected {self.channels}")
        expected = {"static": 1, "self": 1, "peer": 2, "search": 1 + self.num_peers}[self.mode]
        if len(input_shape) != expected:
            raise ValueError(f"{self.name}: mode {self.mode!r} takes {expected} inputs, got {len(input_shape)}")
        if self.mode == "static":
            self.v = self.add_weight(name="v", shape=(self.channels,), initializer="zeros")
        if self.mode == "search":
            self.h = self.add_weight(name="h", shape=(self.num_peers,), initializer="zeros")
        sources = self._sources(input_shape)
        for fc, shape in zip(self.fcs, sources, strict=True):
            fc.build((shape[0], shape[1], shape[-1]))

    def call(self, inputs):
        x = inputs[0]
        if self.mode == "static":
            gate = ops.reshape(ops.sigmoid(ops.cast(self.v, self.compute_dtype)), (1, 1, 1, 1, self.channels))
            return x * gate
        # GAP over space, per frame: (B, T, C_k).
        pooled = [ops.mean(s, axis=(2, 3)) for s in self._sources(inputs)]
        if self.mode == "search":
            mix = ops.cast(ops.softmax(self.h), self.compute_dtype)
            logits = self.fcs[0](pooled[0]) * mix[0]
            for p in range(1, self.num_peers):
                logits = logits + self.fcs[p](pooled[p]) * mix[p]
        else:
            logits = self.fcs[0](pooled[0])
        gate = ops.sigmoid(logits)[:, :, None, None, :]
        return x * gate

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "channels": self.channels,
                "num_peers": self.num_peers}


@_serializable
class VideoConv(keras.layers.Layer):
    """A (kt, kh, kw) convolution of a (B, T, H, W, C) video where the kernel is 1D in time or 2D in space.

    Same weights and result as `Conv3D(padding="same", use_bias=False)`, but (2+1)D networks only ever use
    (1, k, k), (k, 1, 1) and (1, 1, 1) kernels, and each maps onto a faster primitive:
    - (1, kh, kw): a 2D convolution over the B·T frames (stride and padding in space only);
    - (kt, 1, 1) with dilation r: a 2D convolution over (T, H·W) with a (kt, 1) kernel (AssembleNet Eq. 1);
    - (1, 1, 1): a matrix product over channels (after spatial striding by slicing).
    cuDNN and XLA's GPU/TPU emitters handle these far better than generic 3D convolutions.
    """

    def __init__(self, filters, kernel_size, strides=1, dilation_rate=1, kernel_initializer="he_normal",
                 **kwargs):
        super().__init__(**kwargs)
        kernel_size = tuple(int(k) for k in kernel_size)
        if len(kernel_size) != 3 or min(kernel_size) < 1:
            raise ValueError(f"kernel_size must be 3 positive ints (kt, kh, kw), got {kernel_size}")
        if kernel_size[0] > 1 and kernel_size[1:] != (1, 1):
            raise ValueError(f"kernel_size must be temporal (k, 1, 1) or spatial (1, kh, kw), got {kernel_size}")
        if int(filters) < 1 or int(strides) < 1 or int(dilation_rate) < 1:
            raise ValueError(f"filters, strides and dilation_rate must be >= 1, got {filters}, {strides}, "
                             f"{dilation_rate}")
        if kernel_size[0] > 1 and int(strides) != 1:
            raise ValueError("a temporal convolution takes no spatial stride (AssembleNet §3.1: no temporal "
                             f"striding), got strides={strides}")
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def groups(self):
        return 1

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_size + (input_shape[-1], self.filters),
                                      initializer=self.kernel_initializer)

    def call(self, inputs):
        kt, kh, kw = self.kernel_size
        kernel = ops.cast(self.kernel, self.compute_dtype)
        s = self.strides
        if (kt, kh, kw) == (1, 1, 1):
            x = inputs[:, :, ::s, ::s, :] if s > 1 else inputs
            return ops.matmul(x, kernel[0, 0, 0])
        shape = ops.shape(inputs)
        b, t, h, w, c = shape[0], shape[1], shape[2], shape[3], shape[4]
        if kt == 1:
            frames = ops.reshape(inputs, (-1, h, w, c))
            y = ops.conv(frames, kernel[0], strides=s, padding="same")
            return ops.reshape(y, (b, t, ops.shape(y)[1], ops.shape(y)[2], self.filters))
        # Dilation r (AssembleNet Eq. 1) without a dilated conv kernel (a slow path in cuDNN, ~40x here):
        # frame t = q·r + p only meets frames (q ± 1)·r + p, so fold the r phases p into the space axis
        # and run an undilated conv over q. Zero-padding T to a multiple of r keeps it exact.
        r = self.dilation_rate
        rows = ops.reshape(inputs, (b, t, h * w, c))
        pad = (-t) % r
        if r > 1:
            rows = ops.pad(rows, [[0, 0], [0, pad], [0, 0], [0, 0]])
            rows = ops.reshape(rows, (b, (t + pad) // r, r * h * w, c))
        y = ops.conv(rows, kernel[:, 0], strides=1, padding="same")
        if r > 1:
            y = ops.reshape(y, (b, t + pad, h * w, self.filters))[:, :t]
        return ops.reshape(y, (b, t, h, w, self.filters))

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = input_shape
        s = self.strides

        def down(n):
            return None if n is None else -(-n // s)

        return (b, t, down(h), down(w), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": self.strides, "dilation_rate": self.dilation_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
