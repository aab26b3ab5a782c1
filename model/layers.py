"""The custom layers of AssembleNet(++): the ones with weights or ops stock Keras lacks.

- `PooledOneHot`: the object stem (AssembleNet++ §3.2): one-hot of an integer class map, max-pooled.
- `ConnectionFusion`: the weighted sum of a block's inputs, x_in = Σ_j σ(w_j)·x_j (AssembleNet §3.1,
  AssembleNet++ Eq. 1), optionally over a runtime 0/1 mask of the connections (`masked`).
- `VideoConv`: a factorised video convolution (per-frame 2D, temporal 1D or 1x1x1) lowered to the
  2D convolutions and matrix products accelerators run fastest.
- `ChannelAttention`: channel-wise attention σ(FC(GAP(x_k))) per frame (AssembleNet++ Eq. 2) in the
  modes static / self / peer / search (Eq. 3–4), and `conv`, Table 4's "1x1 conv. instead of attention".
- `SpatialMaxPool`: a (1, p, p) max pool with stride p, as a reshape and a max where the sides divide.
- `BatchNorm`: Keras's BatchNormalization with an optional ReLU and a training path that reads and
  writes fewer bytes (the same function and gradient).

Tensors are channels-last video: (batch, time, height, width, channels).
"""

import keras
from keras import ops

from model.structure import ATTENTION_MODES

# Spatial convolutions on fewer input channels are zero-padded to this many (see `VideoConv`).
MIN_CONV_CHANNELS = 8
# `# pragma: no mutate block` on each constructor: `make mutation` (docs/testing.md) leaves constructors
# unmutated, because Keras reads a layer's constructor arguments with inspect.getfullargspec, which does not
# see through the wrapper mutmut puts around a mutated method (every layer would fail to build).


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="assemblenet")(cls)


@_serializable
class PooledOneHot(keras.layers.Layer):
    """One-hot of a per-pixel class map (B, T, H, W) followed by a `pool_size` spatial max pool.

    Max-pooling a one-hot marks which classes occur in each window; it is computed on the window
    view of the mask, so under XLA the full-resolution one-hot need not be materialised.
    H and W must be multiples of `pool_size`.
    """

    def __init__(self, num_classes, pool_size=4, **kwargs):  # pragma: no mutate block
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

    `masked=True` adds a non-trainable 0/1 vector m (initialised to ones) and computes
    Σ_j m_j σ(w_j)·x_j: a graph built with every connection runs any subset of them, chosen by
    assigning m, without being rebuilt or recompiled (model.edge_masks). An input with m_j = 0 adds
    exactly zero, and its w_j and everything that feeds only that input get exactly zero gradient.
    """

    def __init__(self, num_inputs, masked=False, **kwargs):  # pragma: no mutate block
        super().__init__(**kwargs)
        if int(num_inputs) < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        self.num_inputs = int(num_inputs)
        self.masked = bool(masked)

    def build(self, input_shape):
        if len(input_shape) != self.num_inputs:
            raise ValueError(f"{self.name}: expected {self.num_inputs} inputs, got {len(input_shape)}")
        self.w = self.add_weight(name="w", shape=(self.num_inputs,), initializer="zeros")
        if self.masked:
            self.mask = self.add_weight(name="mask", shape=(self.num_inputs,), initializer="ones",
                                        trainable=False)

    def call(self, inputs):
        if self.masked:
            return _masked_weighted_sum(ops.cast(self.w, "float32"), ops.cast(self.mask, "float32"), *inputs)
        return _weighted_sum(ops.cast(self.w, "float32"), *inputs)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_inputs": self.num_inputs, "masked": self.masked}


@_serializable
class EdgeGates(ConnectionFusion):
    """[σ(w_j)·x_j for each input j], returned separately: the weighting of AssembleNet++ Eq. 1 applied
    to a block's inputs before their channels are matched, the order of the reference implementation
    (tensorflow/models official/projects/assemblenet: weighted inputs of equal width are summed, then one
    1x1 convolution without batch norm per width). The same weights as ConnectionFusion (one scalar w
    per connection, initialised at 0), read the same way (model.pruning.connection_weights); with
    `masked=True`, m_j σ(w_j)·x_j (see ConnectionFusion)."""

    def call(self, inputs):
        gates = ops.sigmoid(ops.cast(self.w, "float32"))
        gated = [x * ops.cast(gates[j], x.dtype) for j, x in enumerate(inputs)]
        if self.masked:
            # Eq. 1 over the child's connections only: m_j = 0 selects zero for x_j's term (a select, not a
            # product, so nothing x_j holds leaks through) and so zero gradient for w_j and x_j.
            keep = self.mask > 0
            gated = [ops.where(keep[j], x, ops.zeros_like(x)) for j, x in enumerate(gated)]
        return gated

    def compute_output_shape(self, input_shape):
        return list(input_shape)


WIDTH_MODES = ("pad_or_project", "mask", "identity_or_conv")


@_serializable
class RuntimeWidth(keras.layers.Layer):
    """A block's fused width W (AssembleNet §3.1: "1x1 conv to match the bigger channel size") as runtime
    data of a model that carries every W up to `max_width` in `max_width` channels, the channels from W
    on zero. A non-trainable int32 variable `width` holds W (starting at `width`); `mode`:

    - `pad_or_project`, inputs [x_j (`channels` wide), its 1x1 projection to max_width]: the projection
      where channels ≠ W, else x_j zero-padded (the plain model projects an input only when its width
      differs from W);
    - `mask`, inputs [x (max_width)]: x with every channel from W on selected to zero;
    - `identity_or_conv`, inputs [x (max_width), its shortcut conv (`channels` = 4C)]: x's first 4C
      channels where W = 4C, else the conv (a residual module's shortcut is the identity exactly when its
      input is 4C wide and it does not stride, Appendix A.4).

    Selections, not products: what is not selected adds nothing and gets exactly zero gradient.
    """

    def __init__(self, mode, max_width, width, channels=None, **kwargs):  # pragma: no mutate block
        super().__init__(**kwargs)
        if mode not in WIDTH_MODES:
            raise ValueError(f"mode must be one of {WIDTH_MODES}, got {mode!r}")
        if not 1 <= int(width) <= int(max_width):
            raise ValueError(f"width={width}: expected 1 <= width <= max_width={max_width}")
        bad_channels = channels is not None and not 1 <= int(channels) <= int(max_width)
        if (channels is None) != (mode == "mask") or bad_channels:
            raise ValueError(f"mode {mode!r}: channels={channels}; expected None for 'mask', else an int in "
                             f"1..max_width={max_width}")
        self.mode = mode
        self.max_width = int(max_width)
        self.width = int(width)
        self.channels = None if channels is None else int(channels)

    @property
    def width_initializer(self):
        """The runtime width's initial value: `width` (read by ablation.fastpath.reinitialize)."""
        return keras.initializers.Constant(self.width)

    def build(self, input_shape):
        self.runtime_width = self.add_weight(name="width", shape=(), dtype="int32", trainable=False,
                                             initializer=self.width_initializer)

    def call(self, inputs):
        width = ops.cast(self.runtime_width, "int32")
        if self.mode == "mask":
            x = inputs[0]
            keep = ops.arange(self.max_width, dtype="int32") < width
            return ops.where(keep, x, ops.zeros_like(x))
        x, other = inputs
        if self.mode == "pad_or_project":
            padded = ops.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, self.max_width - self.channels]])
            return ops.where(ops.equal(width, self.channels), padded, other)
        return ops.where(ops.equal(width, self.channels), x[..., :self.channels], other)

    def compute_output_shape(self, input_shape):
        return input_shape[-1]

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "max_width": self.max_width, "width": self.width,
                "channels": self.channels}


@_serializable
class SpatialMaxPool(keras.layers.Layer):
    """Max pool of a (B, T, H, W, C) video over p x p windows with stride p ('same' padding), i.e.
    `MaxPooling3D((1, p, p), strides=(1, p, p), padding="same")`.

    Where p divides H and W (every AssembleNet connection at 32-multiple sizes) the windows are a
    reshape and the pool a max over two axes: its gradient is an element-wise mask XLA fuses with its
    neighbours, where `reduce_window`'s is a scatter kernel of its own. At ties (all-zero windows after
    a ReLU) the gradient is split between the maxima instead of going to the first one; both are
    gradients of the max.
    """

    def __init__(self, pool_size, **kwargs):  # pragma: no mutate block
        super().__init__(**kwargs)
        if int(pool_size) < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.pool_size = int(pool_size)

    def call(self, inputs):
        p = self.pool_size
        h, w = inputs.shape[2], inputs.shape[3]
        if h is None or w is None or h % p or w % p:
            return ops.max_pool(inputs, (1, p, p), strides=(1, p, p), padding="same")
        shape = ops.shape(inputs)
        windows = ops.reshape(inputs, (shape[0], shape[1], h // p, p, w // p, p, shape[4]))
        return ops.max(windows, axis=(3, 5))

    def compute_output_shape(self, input_shape):
        b, t, h, w, c = input_shape
        p = self.pool_size
        return (b, t, None if h is None else -(-h // p), None if w is None else -(-w // p), c)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@ops.custom_gradient
def _weighted_sum(w, *xs):
    """Σ_j σ(w_j)·x_j with dL/dw_j = σ'(w_j) Σ dL/dout · x_j accumulated in float32: with bf16 activations
    the default gradient sums tens of millions of products per connection weight in bf16 partials."""
    gates = ops.sigmoid(w)
    cast_gates = ops.cast(gates, xs[0].dtype)
    out = xs[0] * cast_gates[0]
    for j in range(1, len(xs)):
        out = out + xs[j] * cast_gates[j]

    def grad(*args, upstream=None):
        g = args[0] if upstream is None else upstream
        g32 = ops.cast(g, "float32")
        sums = ops.stack([ops.sum(g32 * ops.cast(x, "float32")) for x in xs])
        return (sums * gates * (1.0 - gates), *[g * cast_gates[j] for j in range(len(xs))])

    return out, grad


@ops.custom_gradient
def _masked_weighted_sum(w, mask, *xs):
    """Σ_j m_j σ(w_j)·x_j (AssembleNet++ Eq. 1 over the connections with m_j = 1), with `_weighted_sum`'s
    float32 gradient of w. A masked input is selected away, not multiplied by 0, so it adds nothing and
    the gradients of w_j and x_j are exactly zero whatever x_j holds (even inf or NaN)."""
    sig = ops.sigmoid(w)
    keep = mask > 0
    cast_gates = ops.cast(sig, xs[0].dtype)
    terms = [ops.where(keep[j], x * cast_gates[j], ops.zeros_like(x)) for j, x in enumerate(xs)]
    out = terms[0]
    for term in terms[1:]:
        out = out + term

    def grad(*args, upstream=None):
        g = args[0] if upstream is None else upstream
        g32 = ops.cast(g, "float32")
        sums = ops.stack([ops.sum(g32 * ops.cast(x, "float32")) for x in xs])
        dw = ops.where(keep, sums * sig * (1.0 - sig), ops.zeros_like(sig))
        return (dw, ops.zeros_like(mask),
                *[ops.where(keep[j], g * cast_gates[j], ops.zeros_like(g)) for j in range(len(xs))])

    return out, grad


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
    - `conv`:   `[x, x_k]`, x_k already at x's spatial size; returns x + FC(x_k) applied per pixel: a 1x1
      convolution of the peer with exactly the `peer` mode's parameters (C_k·C + C), in place of the
      attention. AssembleNet++ Table 4 compares peer-attention with "a 1x1 convolutional layer instead
      of attention" of identical parameter count; which tensor that layer reads is not said, so it reads
      the same peer (the project's choice, docs/ablations.md).
    h is a trainable weight (zeros → uniform softmax); it receives gradients through the softmax.
    """

    def __init__(self, mode, channels, num_peers=1, **kwargs):  # pragma: no mutate block
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
        if mode in ("self", "peer", "conv"):
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
        expected = {"static": 1, "self": 1, "peer": 2, "conv": 2, "search": 1 + self.num_peers}[self.mode]
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
        if self.mode == "conv":
            if tuple(inputs[1].shape[2:4]) != tuple(x.shape[2:4]):
                raise ValueError(f"{self.name}: conv mode needs the source at x's spatial size, got "
                                 f"{inputs[1].shape} for x {x.shape}")
            return x + self.fcs[0](inputs[1])
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


def _pad_channels(frames, kernel, pad):
    """Zero input channels (and matching zero kernel rows): the convolution is unchanged."""
    frames = ops.pad(frames, [[0, 0], [0, 0], [0, 0], [0, pad]])
    return frames, ops.pad(kernel, [[0, 0], [0, 0], [0, pad], [0, 0]])


def _space_to_depth_applies(input_shape, kernel_shape):
    h, w = input_shape[2], input_shape[3]
    return (h is not None and w is not None and h % 2 == 0 and w % 2 == 0
            and all(k % 2 == 1 and k >= 3 for k in kernel_shape[:2]))


def _space_to_depth_plan(k):
    """(taps in front, taps behind, block-kernel size, block padding before, after) that turn a 'same'
    stride-2 convolution with an odd k ≥ 3 over an even side into a stride-1 convolution over 2x2 blocks.

    'Same' pads k - 2 in total, (k - 2) // 2 before, so output o reads input rows 2o - before + j
    (j < k). A zero tap in front (if `before` is odd) starts every window on a block boundary; one
    behind (if needed) makes the taps an even number, 2·kb, i.e. kb whole blocks from block
    o - (before + front) / 2.
    """
    before = (k - 2) // 2
    front = before % 2
    back = (k + front) % 2
    kb = (k + front + back) // 2
    block_before = (before + front) // 2
    return front, back, kb, block_before, kb - 1 - block_before


def _space_to_depth_conv(frames, kernel):
    """'Same' stride-2 conv of (N, H, W, C) frames with a (kh, kw, C, F) kernel, H and W even, computed as
    a stride-1 conv of the 2x2 space-to-depth frames (N, H/2, W/2, 4C) with a (kh', kw', 4C, F) kernel
    (the MLPerf ResNet stem trick): exact, and 4C channels let cuDNN use tensor cores. See
    `_space_to_depth_plan` for the index arithmetic."""
    if frames.shape[-1] % (MIN_CONV_CHANNELS // 4):
        # Pad before the transform so that 4C fills 16 bytes (padding after it trips TF's oneDNN pass).
        frames, kernel = _pad_channels(frames, kernel, -frames.shape[-1] % (MIN_CONV_CHANNELS // 4))
    n, h, w, c = ops.shape(frames)
    kh, kw, _, f = kernel.shape
    front_h, back_h, kbh, before_h, after_h = _space_to_depth_plan(kh)
    front_w, back_w, kbw, before_w, after_w = _space_to_depth_plan(kw)
    kernel = ops.pad(kernel, [[front_h, back_h], [front_w, back_w], [0, 0], [0, 0]])
    kernel = ops.reshape(kernel, (kbh, 2, kbw, 2, c, f))
    kernel = ops.reshape(ops.transpose(kernel, (0, 2, 1, 3, 4, 5)), (kbh, kbw, 4 * c, f))
    blocks = ops.reshape(frames, (n, h // 2, 2, w // 2, 2, c))
    blocks = ops.reshape(ops.transpose(blocks, (0, 1, 3, 2, 4, 5)), (n, h // 2, w // 2, 4 * c))
    blocks = ops.pad(blocks, [[0, 0], [before_h, after_h], [before_w, after_w], [0, 0]])
    return ops.conv(blocks, kernel, strides=1, padding="valid")


@_serializable
class VideoConv(keras.layers.Layer):
    """A (kt, kh, kw) convolution of a (B, T, H, W, C) video where the kernel is 1D in time or 2D in space.

    Same weights and result as `Conv3D(padding="same", use_bias=False)`, but (2+1)D networks only ever use
    (1, k, k), (k, 1, 1) and (1, 1, 1) kernels, and each maps onto a faster primitive:
    - (1, kh, kw): a 2D convolution over the B·T frames (stride and padding in space only); on fewer than
      8 input channels (the stems) a stride-2 conv runs on 2x2 space-to-depth blocks, others on
      zero-padded channels, so that cuDNN can use tensor cores;
    - (kt, 1, 1) with dilation r: a 2D convolution over (T, H·W) with a (kt, 1) kernel (AssembleNet Eq. 1);
    - (1, 1, 1): a matrix product over channels (after spatial striding by slicing).
    cuDNN and XLA's GPU/TPU emitters handle these far better than generic 3D convolutions.

    `max_dilation` (temporal kernels of odd kt only) makes the dilation runtime data: a non-trainable int32
    variable `dilation` (starting at `dilation_rate`, at most `max_dilation`), and the convolution
    Σ_j W_j · x(t + (j − ⌊kt/2⌋)·r), each shifted x a dynamic slice of x zero-padded by ⌊kt/2⌋·max_dilation
    frames: the same function as the dilated conv for every r ≤ max_dilation, so one compiled program runs
    any temporal resolution (AssembleNet §3.2, mutation (1): a node's r changes, its weights' shapes don't).
    """

    def __init__(self, filters, kernel_size, strides=1, dilation_rate=1, kernel_initializer="he_normal",
                 max_dilation=None, **kwargs):  # pragma: no mutate block
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
        if max_dilation is not None:
            if kernel_size[0] == 1 or kernel_size[0] % 2 == 0:
                raise ValueError(f"max_dilation needs a temporal kernel (k, 1, 1) with k odd, got {kernel_size}")
            if int(max_dilation) < int(dilation_rate):
                raise ValueError(f"max_dilation={max_dilation} must be >= dilation_rate={dilation_rate}")
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.max_dilation = None if max_dilation is None else int(max_dilation)

    @property
    def groups(self):
        return 1

    @property
    def dilation_initializer(self):
        """The runtime dilation's initial value: `dilation_rate` (read by ablation.fastpath.reinitialize)."""
        return keras.initializers.Constant(self.dilation_rate)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_size + (input_shape[-1], self.filters),
                                      initializer=self.kernel_initializer)
        if self.max_dilation is not None:
            self.dilation = self.add_weight(name="dilation", shape=(), dtype="int32", trainable=False,
                                            initializer=self.dilation_initializer)

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
            kernel = kernel[0]
            # RGB (3) / flow (2) stems: cuDNN has tensor-core kernels only for channel counts that fill
            # 16 bytes and falls back to a ~10x slower one otherwise.
            narrow = inputs.shape[-1] < MIN_CONV_CHANNELS
            if narrow and s == 2 and _space_to_depth_applies(inputs.shape, kernel.shape):
                y = _space_to_depth_conv(frames, kernel)
            else:
                if narrow:
                    frames, kernel = _pad_channels(frames, kernel, MIN_CONV_CHANNELS - inputs.shape[-1])
                y = ops.conv(frames, kernel, strides=s, padding="same")
            return ops.reshape(y, (b, t, ops.shape(y)[1], ops.shape(y)[2], self.filters))
        if self.max_dilation is not None:
            return self._runtime_dilated(inputs, kernel)
        # Dilation r (AssembleNet Eq. 1) without a dilated conv kernel (a slow path in cuDNN, ~40x here):
        # frame t = q·r + p only meets frames (q ± 1)·r + p, so fold the r phases p into the space axis
        # and run an undilated conv over q. Zero-padding T to a multiple of r keeps it exact. 'Same' pads
        # ⌊(kt - 1)·r / 2⌋ frames in front, the conv over q r·⌊(kt - 1) / 2⌋: for an even kt, ⌊r / 2⌋ fewer,
        # which `lead` zero frames in front make up.
        r = self.dilation_rate
        rows = ops.reshape(inputs, (b, t, h * w, c))
        lead = (kt - 1) * r // 2 - r * ((kt - 1) // 2)
        pad = (-(t + lead)) % r
        if r > 1:
            rows = ops.pad(rows, [[0, 0], [lead, pad], [0, 0], [0, 0]])
            rows = ops.reshape(rows, (b, (t + lead + pad) // r, r * h * w, c))
        y = ops.conv(rows, kernel[:, 0], strides=1, padding="same")
        if r > 1:
            y = ops.reshape(y, (b, t + lead + pad, h * w, self.filters))[:, :t]
        return ops.reshape(y, (b, t, h, w, self.filters))

    def _runtime_dilated(self, inputs, kernel):
        """The temporal conv with the dilation read from `self.dilation`: tap j of the kernel meets the frame
        shifted by (j − ⌊kt/2⌋)·r, taken as a slice of the input zero-padded by ⌊kt/2⌋·max_dilation frames on
        each side ("same" padding: a frame outside the clip is a zero, as in the dilated conv)."""
        kt = self.kernel_size[0]
        half = kt // 2
        pad = half * self.max_dilation
        shape = ops.shape(inputs)
        b, t, h, w, c = shape[0], shape[1], shape[2], shape[3], shape[4]
        rows = ops.reshape(inputs, (b, t, h * w, c))
        padded = ops.pad(rows, [[0, 0], [pad, pad], [0, 0], [0, 0]])
        r = ops.minimum(ops.cast(self.dilation, "int32"), self.max_dilation)
        y = None
        for j in range(kt):
            start = pad + (j - half) * r
            shifted = ops.slice(padded, [0, start, 0, 0], [b, t, h * w, c])
            tap = ops.matmul(shifted, kernel[j, 0, 0])
            y = tap if y is None else y + tap
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
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "max_dilation": self.max_dilation}


@_serializable
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (+ ReLU if `relu`), with a training path that moves fewer bytes.

    Same weights, moving statistics, config and inference path as the Keras layer. In training (channels
    last, no mask, no renorm), where a (2+1)D network with narrow channels spends more time moving
    activations than multiplying them:
    - mean and variance come from one pass, E[x - s] and E[(x - s)²] accumulated in float32 with the
      shift s = moving mean (no cancellation once it tracks), instead of Keras's two passes over a
      float32 copy;
    - the gradient is the closed form of batch norm (Ioffe & Szegedy 2015, §3):
      dx = γ/σ · (dy - mean(dy) - x̂ · mean(dy · x̂)), dγ = Σ dy · x̂, dβ = Σ dy, from the bf16 input and
      output alone (one reduction pass and one element-wise pass);
    - the ReLU's gradient mask is read off the output (z > 0), so no pre-activation tensor is kept.
    """

    def __init__(self, relu=False, **kwargs):  # pragma: no mutate block
        super().__init__(**kwargs)
        self.relu = bool(relu)

    def call(self, inputs, training=None, mask=None):
        last = len(inputs.shape) - 1
        if (not (training and self.trainable) or mask is not None or self.renorm or not self.scale
                or not self.center or self.axis not in (-1, last)):
            outputs = super().call(inputs, training=training, mask=mask)
            return ops.relu(outputs) if self.relu else outputs
        axes = tuple(range(last))
        shift = ops.stop_gradient(ops.cast(self.moving_mean, "float32"))
        centred = ops.cast(inputs, "float32") - shift
        shifted_mean = ops.mean(centred, axis=axes)
        variance = ops.maximum(ops.mean(ops.square(centred), axis=axes) - ops.square(shifted_mean), 0.0)
        mean = ops.stop_gradient(shifted_mean + shift)
        variance = ops.stop_gradient(variance)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        outputs = _batch_norm_train(inputs, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"),
                                    mean, variance, epsilon=self.epsilon, relu=self.relu)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "relu": self.relu}


def _batch_norm_train(x, gamma, beta, mean, variance, *, epsilon, relu):
    """z = [ReLU](γ (x - μ)/σ + β) over the last axis with given batch statistics and the closed-form
    gradient through them (see `BatchNorm`); γ, β, μ, σ² are float32 vectors."""
    axes = tuple(range(len(x.shape) - 1))

    @ops.custom_gradient
    def forward(x, gamma, beta, mean, variance):
        inv = ops.rsqrt(variance + epsilon)
        scale = gamma * inv
        z = ops.cast(ops.cast(x, "float32") * scale + (beta - mean * scale), x.dtype)
        if relu:
            z = ops.relu(z)

        def grad(*args, upstream=None):
            dz = args[0] if upstream is None else upstream
            dy = ops.cast(dz, "float32")
            if relu:
                dy = ops.where(z > 0, dy, 0.0)
            x_hat = (ops.cast(x, "float32") - mean) * inv
            sum_dy = ops.sum(dy, axis=axes)
            sum_dy_x_hat = ops.sum(dy * x_hat, axis=axes)
            count = ops.cast(ops.size(x), "float32") / ops.cast(ops.shape(x)[-1], "float32")
            dx = scale * (dy - sum_dy / count - x_hat * (sum_dy_x_hat / count))
            return (ops.cast(dx, x.dtype), sum_dy_x_hat, sum_dy, ops.zeros_like(mean), ops.zeros_like(variance))

        return z, grad

    return forward(x, gamma, beta, mean, variance)
