"""`routing_probe`: the shape of the evolution DAG's routing with task bodies that do no work.

    prepare (cpu) ─► work (gpu queue, gpu pool; mapped: one task per item) ─► collect (cpu)

The tasks are declared with the project's own `cpu_task` / `gpu_task` and `ROUTING_PARAMS`
(dags/_common.py), and the scheduler routes them with the project's cluster policy (dags/_routing.py),
exactly as the real DAGs; only the bodies are cheap, so the Celery routing test measures routing and
not training (tests/dags/test_celery_routing.py). The real DAGs' declarations are checked by the
DagBag test, and their real work by the end-to-end DAG test.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from dags._common import DEFAULT_ARGS, ROUTING_PARAMS, cpu_task, gpu_task


@cpu_task
def prepare() -> list[int]:
    from airflow.sdk import get_current_context

    return list(range(int(get_current_context()["params"]["items"])))


@gpu_task
def work(item: int) -> int:
    return item * item


@cpu_task
def collect(results: list[int]) -> int:
    return sum(results)


@dag(dag_id="routing_probe", schedule=None, catchup=False, default_args=DEFAULT_ARGS,
     params={"items": Param(2, type="integer"), **ROUTING_PARAMS})
def routing_probe():
    collect(work.expand(item=prepare()))


routing_probe()
