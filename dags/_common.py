"""Pieces the DAG files share: Params from a config dataclass, the run folder, evolution rounds.

Only wiring: every task body calls a function of `pipelines.end_to_end` (imported inside the task,
so parsing a DAG file imports no TensorFlow or Beam).
"""

from __future__ import annotations

import dataclasses

from airflow.sdk import Param, get_current_context, task, task_group

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def params_of(config_class) -> dict[str, Param]:
    """One Param per field of a frozen config dataclass: its default and its help text."""
    params = {}
    for field in dataclasses.fields(config_class):
        kind = _JSON_TYPES[type(field.default)] if field.default is not None else "null"
        if kind == "number":
            kind = ["number", "integer"]
        params[field.name] = Param(field.default, type=kind, description=field.metadata.get("help", ""))
    return params


def context_params() -> dict:
    return dict(get_current_context()["params"])


def run_folder(workdir: str) -> str:
    """`workdir`, or runs/<dag id>/<run id> when it is empty: each run writes to its own folder."""
    from pipelines.end_to_end import run_folder as folder

    context = get_current_context()
    return folder(workdir, context["dag"].dag_id, context["run_id"])


@task
def next_children(state_dir: str) -> list[str]:
    from pipelines.end_to_end import next_children as children

    return children(state_dir, int(context_params()["children_per_round"]))


@task
def evaluate_child(state_dir: str, child: str) -> float:
    from pipelines.end_to_end import evaluate_child as evaluate

    return evaluate(state_dir, child)


# An empty round (the budget is spent) skips its mapped evaluation; the round still closes.
@task(trigger_rule="none_failed")
def integrate(state_dir: str, fitness=None) -> str:
    from pipelines.end_to_end import integrate as integrate_results

    integrate_results(state_dir)
    return state_dir


def evolution_rounds(state_dir, rounds: int):
    """`rounds` task groups round_1 .. round_<rounds>, each: propose (or pick up) the round's
    `children_per_round` (a DAG param) children -> evaluate them as mapped tasks (dynamic task
    mapping) -> integrate them into the population. Returns the last group's output (the state
    folder), to chain what follows."""
    for number in range(1, rounds + 1):
        @task_group(group_id=f"round_{number}")
        def evolution_round(state):
            children = next_children(state)
            fitness = evaluate_child.partial(state_dir=state).expand(child=children)
            return integrate(state, fitness)

        state_dir = evolution_round(state_dir)
    return state_dir
