"""XLA's persistent compilation cache for training under JAX: a program compiled once is reused by
every later model with the same program, in this process and in others on the machine.

Models that differ only in their weights' values (the training seeds of one ablation row, a resumed
run, the same child trained twice, the processes of `benchmarks/h200_ablation.sh` that train the same
variant) lower to the same XLA program, so all but the first load it from the cache instead of
compiling it. Measured on a 2-core CPU (`tiny`, 4 × 32², batch 4, self-attention, JAX): the first
step of the second and third seed's model took 1.5–1.8 s with the cache against 8.6–9.1 s without.
The cache is keyed by the program, the compiler options, the device and the JAX version, so it never
serves a program compiled for something else.

The folder: $ASSEMBLENET_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR when set, else
~/.cache/assemblenet/xla. ASSEMBLENET_COMPILE_CACHE=off leaves JAX as it is. Other backends: nothing
to do (TensorFlow keeps no such cache).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "ASSEMBLENET_COMPILE_CACHE"


def folder() -> Path | None:
    """Where the cache lives, or None when it is switched off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value).expanduser()
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    return Path.home() / ".cache" / "assemblenet" / "xla"


def enable() -> Path | None:
    """Turns the cache on for JAX (idempotent); returns its folder, or None (another backend, or off).
    Call it before the first compilation: JAX decides whether to use the cache then."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    path = folder()
    if path is None:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir != str(path):
        path.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(path))
        # Every program, however quick to compile: a suite compiles hundreds of small ones.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
