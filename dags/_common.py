"""Pieces the DAG files share: Params from a config dataclass, the run folder, evolution rounds.

Only wiring: every task body calls a function of `pipelines.orchestration.end_to_end` (imported inside the task,
so parsing a DAG file imports no TensorFlow or Beam).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from airflow.sdk import Param, get_current_context, task, task_group

from dags._routing import CPU_QUEUE, GPU_POOL, GPU_QUEUE

# Every task is safe to run again (pipelines/orchestration/end_to_end.py), so a task whose process or worker died
# is retried; a bad param (AirflowFailException) is not.
DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=10)}

# Routing params of every DAG (dags/_routing.py applies them when the run's task instances are made).
ROUTING_PARAMS = {
    "gpu_queue": Param(GPU_QUEUE, type="string", description="queue of the tasks that train or run a model "
                       "(evolution children, search, training, evaluation): the queue GPU workers consume"),
    "cpu_queue": Param(CPU_QUEUE, type="string", description="queue of the other tasks (data, "
                       "preprocessing, evolution bookkeeping, report)"),
    "gpu_pool": Param(GPU_POOL, type="string", description="pool whose slots limit the GPU tasks running at "
                      "once (create it: airflow pools set gpu <GPUs> ...)"),
}


def cpu_task(python_callable=None, **kwargs):
    """@task on the CPU queue."""
    return task(python_callable, queue=CPU_QUEUE, **kwargs)


def gpu_task(python_callable=None, **kwargs):
    """@task on the GPU queue, holding a slot of the GPU pool."""
    return task(python_callable, queue=GPU_QUEUE, pool=GPU_POOL, **kwargs)

_FIELD_DEFAULT = object()


def param_of(config_class, name: str, default=_FIELD_DEFAULT, description: str | None = None) -> Param:
    """The Param of field `name` of a config dataclass: its default (or `default`, the DAG's own), its help
    text (or `description`), and its type, choices and range (pipelines.configs.json_schema)."""
    from pipelines.configs import json_schema

    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    return Param(field.default if default is _FIELD_DEFAULT else default,
                 description=description or field.metadata.get("help") or "", **json_schema(config_class, name))


def params_of(config_class) -> dict[str, Param]:
    """One Param per field of a frozen config dataclass (`param_of`)."""
    return {field.name: param_of(config_class, field.name) for field in dataclasses.fields(config_class)}


def context_params() -> dict:
    """The run's params without the routing ones; a key of the run's conf that is not a param of the
    DAG (a typo such as "step" for "steps") fails the task, and so the run, without a retry."""
    from airflow.sdk.exceptions import AirflowFailException

    context = get_current_context()
    params = dict(context["params"])
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    declared = set(context["dag"].params)
    unknown = sorted(set(conf) - declared)
    if unknown:
        raise AirflowFailException(
            f"DAG {context['dag'].dag_id}: unknown param(s) {unknown} in the run's conf; expected some of "
            f"{sorted(declared)}")
    for name in ROUTING_PARAMS:
        params.pop(name, None)
    return params


def run_folder(workdir: str) -> str:
    """`workdir`, or runs/<dag id>/<run id> when it is empty: each run writes to its own folder."""
    from pipelines.orchestration.end_to_end import run_folder as folder

    context = get_current_context()
    return folder(workdir, context["dag"].dag_id, context["run_id"])


@cpu_task
def next_children(state_dir: str) -> list[list[str]]:
    """The round's children as evaluation tasks: one child each, or the whole round in one task when the
    search trains on the fast path (end_to_end.round_tasks)."""
    from pipelines.orchestration.end_to_end import next_children as children
    from pipelines.orchestration.end_to_end import round_tasks

    return round_tasks(state_dir, children(state_dir, int(context_params()["children_per_round"])))


@gpu_task
def evaluate_child(state_dir: str, children: list[str]) -> list[float]:
    from pipelines.orchestration.end_to_end import evaluate_children

    return evaluate_children(state_dir, children)


# An empty round (the budget is spent) skips its mapped evaluation; the round still closes.
@cpu_task(trigger_rule="none_failed")
def integrate(state_dir: str, fitness=None) -> str:
    from pipelines.orchestration.end_to_end import integrate as integrate_results

    integrate_results(state_dir)
    return state_dir


def evolution_rounds(state_dir, rounds: int):
    """`rounds` task groups round_1 .. round_<rounds>, each: propose (or pick up) the round's
    `children_per_round` (a DAG param) children -> evaluate them as mapped tasks (dynamic task
    mapping: one per child, or one for the round on the fast path) -> integrate them into the
    population. Returns the last group's output (the state folder), to chain what follows."""
    for number in range(1, rounds + 1):
        @task_group(group_id=f"round_{number}")
        def evolution_round(state):
            children = next_children(state)
            fitness = evaluate_child.partial(state_dir=state).expand(children=children)
            return integrate(state, fitness)

        state_dir = evolution_round(state_dir)
    return state_dir
