"""`assemblenet_evolution`: connection-learning-guided evolution (AssembleNet §3.2), resumable.

    start_evolution ─► round_1 ─► ... ─► round_<ROUNDS_PER_RUN> ─► finish_evolution
    each round: next_children ─► evaluate_child (mapped: one task per child; with fast_path, one task
                that trains the round's children in one process on shared compiled models) ─► integrate

The search state lives in `state_dir` (pipelines/evolve.py), not in Airflow: every run of this DAG
resumes it, runs ROUNDS_PER_RUN more rounds of `children_per_round` children each (the parallel
workers of §3.2; the pool's slots decide how many train at once) and writes best_structure.json
so far. Trigger it again (or give it a schedule) until the budget (`population` + `rounds`
children) is spent; after that its rounds are empty and skipped. A failed child is retried by the
next run (a scored child is never trained twice).
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from dags._common import DEFAULT_ARGS, ROUTING_PARAMS, context_params, cpu_task, evolution_rounds, param_of
from model.evolution import SearchSpace
from pipelines.evolve import EvolutionConfig

ROUNDS_PER_RUN = 4

PARAMS = {
    "state_dir": Param("runs/embedded/evolution", type="string", description="search folder: state, "
                       "children, history, best_structure.json (relative paths: from the project root)"),
    "data": Param("runs/embedded/data/train", type="string", description="TFRecords of the proxy training"),
    "eval_data": Param("", type="string", description="TFRecords the fitness is measured on (a validation "
                       "subset of the training set, as §3.2); empty: `data`"),
    "population": param_of(EvolutionConfig, "population_size", 2),
    "rounds": param_of(EvolutionConfig, "rounds", 4),
    "children_per_round": Param(2, type="integer", description="children evaluated in parallel per round "
                                "(paper: 10 workers)"),
    "tournament": param_of(EvolutionConfig, "tournament_size"),
    "strategy": param_of(EvolutionConfig, "strategy"),
    # The search space: model.evolution.SearchSpace's fields (type, range) with this DAG's tiny defaults.
    "object_stem": param_of(SearchSpace, "object_stem", False, "add the object stem (AssembleNet++); the data "
                            "needs object masks"),
    "width_scale": param_of(SearchSpace, "width_scale", 16, "divide every channel count (paper: 1)"),
    "repeats": param_of(SearchSpace, "repeats", [0.5, 0.5, 0.5, 0.5], "module repeats per level (paper: "
                        "[1.5, 2, 3, 1.5])"),
    "seed": param_of(EvolutionConfig, "seed"),
    "fast_path": param_of(EvolutionConfig, "fast_path"),
    "proxy_train": Param({"steps": 4, "steps_per_epoch": 4, "frames": 8, "size": 32, "batch_size": 4,
                          "learning_rate": 0.1}, type="object",
                         description="TrainConfig fields of each child's proxy training (paper: 10k steps, "
                         "32 frames)"),
}


def _check_proxy_train(fields: dict) -> None:
    """`proxy_train` holds TrainConfig fields: a mistyped one, or a bad value, fails the run (no retry),
    naming it."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.configs import load
    from pipelines.train_config import TrainConfig

    try:
        load(TrainConfig, fields, source="assemblenet_evolution param proxy_train", noun="TrainConfig field(s)")
    except ValueError as error:
        raise AirflowFailException(str(error)) from None


@cpu_task
def start_evolution() -> str:
    from pipelines.orchestration.end_to_end import banner, resolve
    from pipelines.orchestration.end_to_end import start_evolution as start

    params = context_params()
    _check_proxy_train(params["proxy_train"])
    state_dir = resolve(params["state_dir"])
    banner(f"evolution in {state_dir}: {params['population']} + {params['rounds']} children")
    return start(state_dir, data=resolve(params["data"]),
                 eval_data=resolve(params["eval_data"]) if params["eval_data"] else None,
                 population=params["population"], rounds=params["rounds"], train=dict(params["proxy_train"]),
                 strategy=params["strategy"], object_stem=params["object_stem"],
                 width_scale=params["width_scale"], repeats=tuple(params["repeats"]),
                 tournament=params["tournament"], seed=params["seed"], fast_path=params["fast_path"])


@cpu_task
def finish_evolution(state_dir: str) -> str:
    from pipelines.orchestration.end_to_end import finish_evolution as finish

    return finish(state_dir)


@dag(dag_id="assemblenet_evolution", schedule=None, catchup=False, params={**PARAMS, **ROUTING_PARAMS},
     default_args=DEFAULT_ARGS, tags=["assemblenet"],
     doc_md=__doc__, max_active_runs=1)
def assemblenet_evolution():
    finish_evolution(evolution_rounds(start_evolution(), ROUNDS_PER_RUN))


assemblenet_evolution()
