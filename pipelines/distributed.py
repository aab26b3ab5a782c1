"""Multi-process data parallelism: one training run over several processes and hosts (JAX backend).

Every process runs the same `assemblenet train` command with its own process id. `initialize` joins
them through `keras.distribution.initialize` (JAX's coordination service: process 0 listens on the
coordinator address, the others connect to it). Afterwards `jax.devices()` lists the devices of all
processes, `pipelines.train` puts a `keras.distribution.DataParallel` over them, and every process
reads its own disjoint shard of the records (`input_shard`) with `batch_size / process_count` clips
per step (`local_batch_size`): the global batch of a step is the concatenation of the processes'
batches, the gradient is averaged over it (and batch norm statistics are taken over it) by XLA's
collectives, so every process holds the same weights after every step.

Only process 0 (`is_chief`) writes the run directory; every process restores the same checkpoint
(`check_same_across_processes`). docs/training.md, "Several processes and hosts", says how to launch.
"""

from __future__ import annotations

import os
import re
from typing import Any

import keras

AUTO = "auto"
# What `keras.distribution.initialize` reads when an argument is None, and JAX's own coordinator variable.
ENV_COORDINATOR = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
ENV_JAX_COORDINATOR = "JAX_COORDINATOR_ADDRESS"


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Joins this process to a multi-process run; returns whether there is more than one process.

    `coordinator` is process 0's HOST:PORT (every process passes the same one), or `auto` to let JAX
    detect the cluster (SLURM, a Cloud TPU pod slice, Open MPI's mpirun, Kubernetes). Arguments left
    None come from the environment: KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator, or every
    process's address comma-separated, process 0 first), KERAS_DISTRIBUTION_NUM_PROCESSES,
    KERAS_DISTRIBUTION_PROCESS_ID (read by Keras), or JAX_COORDINATOR_ADDRESS (read by JAX). With
    none of these set this is a single-process run and nothing happens. Calling it again (e.g. the
    CLI, then `train()`) is a no-op. Must run before the first JAX computation of the process.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or os.environ.get(ENV_JAX_COORDINATOR)
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = _env_int(ENV_PROCESS_ID)
    if coordinator is None and num_processes is None and process_id is None:
        return _joined()  # (without starting JAX's backend: a later call may still join a run)
    if coordinator is None:
        raise ValueError(f"--num-processes/--process-id given without --coordinator HOST:PORT (or {ENV_COORDINATOR}; "
                         "'--coordinator auto' detects SLURM, Cloud TPU, Open MPI or Kubernetes)")
    if coordinator != AUTO:
        for address in coordinator.split(","):
            if not re.fullmatch(r"\[?[\w.:-]+?\]?:\d+", address.strip()):
                raise ValueError(f"--coordinator {coordinator!r}: expected HOST:PORT (process 0's address) or 'auto'")
        if num_processes is None or process_id is None:
            raise ValueError(f"--coordinator {coordinator}: also give --num-processes and --process-id "
                             f"(or {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID})")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes {num_processes}: must be >= 1")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id}: expected 0 <= process id < --num-processes {num_processes}")
    if keras.backend.backend() != "jax":
        raise ValueError(f"--coordinator/--num-processes/--process-id (or {ENV_COORDINATOR}...): multi-process "
                         f"training needs KERAS_BACKEND=jax, not {keras.backend.backend()!r}; under TensorFlow "
                         "a TPU pod slice is driven by one process with --strategy tpu (docs/training.md)")
    import jax

    if jax.distributed.is_initialized():
        return _joined()
    # Collectives between CPU processes (the tests; CPU-only hosts) go through gloo; JAX >= 0.5 has
    # the flag, newer versions default to it. GPUs and TPUs use NCCL / ICI regardless.
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(job_addresses=None if coordinator == AUTO else coordinator,
                                  num_processes=num_processes, process_id=process_id)
    return process_count() > 1


def _joined() -> bool:
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.distributed.is_initialized() and jax.process_count() > 1


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected an integer") from None


def process_count() -> int:
    """Processes in this run (1 unless `initialize` joined several; always 1 under TensorFlow)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def process_index() -> int:
    """This process's id, 0 .. process_count() - 1."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def is_chief() -> bool:
    """Process 0: the one that writes the run directory."""
    return process_index() == 0


def local_batch_size(global_batch: int) -> int:
    """Clips this process reads per step: `global_batch` is split evenly over the processes."""
    count = process_count()
    if global_batch % count:
        raise ValueError(f"--batch-size {global_batch} (the global batch) must be divisible by the "
                         f"{count} processes")
    return global_batch // count


def input_shard() -> dict[str, int]:
    """make_dataset's `shard_index`/`num_shards`: process i reads the i-th of process_count() disjoint parts."""
    return {"shard_index": process_index(), "num_shards": process_count()}


def check_same_across_processes(values: Any, what: str) -> None:
    """Raises on every process unless all processes hold the same `values` (a list of ints)."""
    if process_count() == 1:
        return
    import numpy as np
    from jax.experimental import multihost_utils

    mine = np.asarray(values, dtype=np.int64)
    every = np.asarray(multihost_utils.process_allgather(mine))  # (processes, len(values))
    if not (every == every[0]).all():
        rows = ", ".join(f"process {i}: {row.tolist()}" for i, row in enumerate(every))
        raise ValueError(f"processes disagree on {what} ({rows})")
