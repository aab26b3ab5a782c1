"""Forward+backward time of the primitives an AssembleNet-50 step is made of, at level-1 shapes (JAX).

    KERAS_BACKEND=jax python benchmarks/primitives.py

Used to find where a training step's time goes on a GPU; prints one JSON line per primitive.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def timeit(fn, *args, steps=20):
    import jax

    f = jax.jit(fn)
    out = f(*args)
    jax.block_until_ready(out)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = f(*args)
    jax.block_until_ready(out)
    return 1000 * (time.perf_counter() - t0) / steps


def main():
    import jax
    import jax.numpy as jnp
    import keras

    from model.layers import PooledOneHot, VideoConv

    keras.config.set_dtype_policy("mixed_bfloat16")
    b, t, h, c = (8, 32, 56, 128) if len(sys.argv) < 2 else tuple(int(v) for v in sys.argv[1].split(","))
    x = jax.random.normal(jax.random.PRNGKey(0), (b, t, h, h, c), dtype=jnp.bfloat16)

    def grad_of(layer, x):
        layer.build(x.shape)
        params = [v.value for v in layer.trainable_variables]
        ntv = [v.value for v in layer.non_trainable_variables]

        def loss(params, x):
            kwargs = {"training": True} if isinstance(layer, keras.layers.BatchNormalization) else {}
            y, _ = layer.stateless_call(params, ntv, x, **kwargs)
            return jnp.sum(y.astype(jnp.float32))

        return lambda x: jax.grad(loss, argnums=(0, 1))(params, x)

    cases = {
        "conv3x3_128_to_128": VideoConv(128, (1, 3, 3)),
        "temporal_k3_r1": VideoConv(128, (3, 1, 1), dilation_rate=1),
        "temporal_k3_r4": VideoConv(128, (3, 1, 1), dilation_rate=4),
        "pointwise_128_to_512": VideoConv(512, (1, 1, 1)),
        "batchnorm": keras.layers.BatchNormalization(),
        "maxpool_1x2x2": keras.layers.MaxPooling3D((1, 2, 2), strides=(1, 2, 2), padding="same"),
        "conv3d_1x3x3": keras.layers.Conv3D(128, (1, 3, 3), padding="same", use_bias=False),
        "conv3d_3x1x1_r4": keras.layers.Conv3D(128, (3, 1, 1), dilation_rate=(4, 1, 1), padding="same",
                                               use_bias=False),
    }
    for name, layer in cases.items():
        ms = timeit(grad_of(layer, x), x)
        flops = 0
        if hasattr(layer, "kernel_size"):
            k = 1
            for d in layer.kernel_size:
                k *= d
            out_pos = b * t * h * h // (4 if getattr(layer, "strides", 1) == 2 else 1)
            flops = 3 * 2 * out_pos * k * c * layer.filters
        print(json.dumps({"primitive": name, "shape": list(x.shape), "fwd_bwd_ms": round(ms, 3),
                          "tflops": round(flops / ms / 1e9, 1) if flops else None}), flush=True)
    mask = jax.random.randint(jax.random.PRNGKey(1), (b, t, 4 * h, 4 * h), 0, 151)
    one_hot = PooledOneHot(151, 4)
    print(json.dumps({"primitive": "pooled_one_hot_fwd", "fwd_ms": round(timeit(lambda m: one_hot(m), mask), 3)}))


if __name__ == "__main__":
    main()
