"""Where tasks run: a `queue` and a pool per task, and the run-time override from DAG params.

Every task declares a queue: GPU_QUEUE for what trains or runs a model (evolution children, the
one-shot search, the full training, evaluation), CPU_QUEUE for the rest (data generation,
preprocessing, evolution bookkeeping, the report). GPU tasks also take a slot of the GPU_POOL
pool, whose size is the number of GPUs (or GPU hosts) that may train at once. With the
CeleryExecutor (or EdgeExecutor) a worker consumes the queues named in `airflow celery worker
--queues`, so GPU hosts run `--queues gpu` and CPU hosts `--queues cpu` (docs/orchestration.md).

A DAG run routes its tasks elsewhere through the params `gpu_queue`, `cpu_queue` and `gpu_pool`:
a task's queue and pool are fixed when the DAG file is parsed, so the scheduler applies them
through Airflow's cluster policy `task_instance_mutation_hook` (called with the run when task
instances are created), installed by an `airflow_local_settings.py` holding

    from dags._routing import task_instance_mutation_hook

(pipelines/orchestration/airflow_local.py writes it into AIRFLOW_HOME/config/). Nothing here imports Airflow:
the scheduler imports this module.
"""

from __future__ import annotations

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
GPU_POOL = "gpu"
# DAG param -> (the declared queue it replaces, the task-instance attribute it sets)
OVERRIDES = {"gpu_queue": (GPU_QUEUE, "queue"), "cpu_queue": (CPU_QUEUE, "queue"),
             "gpu_pool": (GPU_QUEUE, "pool")}


def routing(declared_queue: str, conf: dict | None) -> dict[str, str]:
    """The queue/pool a task declared with `declared_queue` gets in a run with `conf` (only the
    overrides the conf gives)."""
    changes = {}
    for param, (queue, attribute) in OVERRIDES.items():
        value = (conf or {}).get(param)
        if value and declared_queue == queue:
            changes[attribute] = str(value)
    return changes


def task_instance_mutation_hook(task_instance, dag_run=None) -> None:
    """Airflow cluster policy: applies the run's gpu_queue / cpu_queue / gpu_pool to the task instance."""
    task = getattr(task_instance, "task", None)
    declared = getattr(task, "queue", None) or task_instance.queue
    for attribute, value in routing(declared, getattr(dag_run, "conf", None)).items():
        setattr(task_instance, attribute, value)
