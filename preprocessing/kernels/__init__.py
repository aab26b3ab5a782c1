"""Hand-written kernels for preprocessing/tvl1.py (JAX Pallas), and the one place that chooses them.

The keras.ops code of preprocessing/tvl1.py stays the reference, the CPU/TPU path and the tests' oracle; a
kernel only replaces it where it was written for: JAX on an NVIDIA GPU (Pallas' Triton lowering). This
package imports JAX only when a kernel is asked for.
"""

TVL1_IMPLEMENTATIONS = ("auto", "reference", "kernel", "interpret")


def tvl1_inner_iterations(implementation="auto"):
    """The function running TV-L1's inner iterations, or None for the keras.ops reference loop.

    `auto`: the Pallas kernel when Keras runs on JAX and JAX's default backend is a GPU, else the reference;
    `reference`: always the reference; `kernel`: the Pallas kernel (JAX on a GPU, else an error);
    `interpret`: the kernel in Pallas' interpreter (any JAX device; for tests, slow).
    """
    if implementation not in TVL1_IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}: expected one of {TVL1_IMPLEMENTATIONS}")
    if implementation == "reference":
        return None
    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        if implementation == "auto":
            return None
        raise ValueError(f"implementation={implementation!r} needs KERAS_BACKEND=jax (backend is {backend})")
    import jax

    on_gpu = jax.default_backend() == "gpu"
    if implementation == "auto" and not on_gpu:
        return None
    if implementation == "kernel" and not on_gpu:
        raise ValueError(f"implementation='kernel' needs a GPU (JAX backend is {jax.default_backend()}); "
                         "use 'interpret' on the CPU")
    import functools

    from preprocessing.kernels.tvl1_pallas import tvl1_iterations

    return functools.partial(tvl1_iterations, interpret=implementation == "interpret")
