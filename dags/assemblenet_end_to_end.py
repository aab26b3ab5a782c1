"""`assemblenet_end_to_end`: the whole system on embedded synthetic data (what `make demo` runs).

    make_synthetic_data ─► preprocess_train ─┬─► start_evolution ─► round_1 ─► round_2 ─► finish_evolution
                        ├► preprocess_val ───┘   (each round: next_children ─► evaluate_child[mapped]
                        └► preprocess_test ─┐                  ─► integrate)
      finish_evolution ─► one_shot_search ─► train_final ─► evaluate ─► report
                                                             ▲
                                          preprocess_test ───┘

Params are the fields of `pipelines.orchestration.end_to_end.EndToEndConfig` (defaults: the demo's minute-scale
budgets). Outputs go to `workdir`, or runs/assemblenet_end_to_end/<run id>; every task can be
retried (see pipelines/orchestration/end_to_end.py). The number of evolution rounds per run is fixed when the
file is parsed (EVOLUTION_ROUNDS); the search budget is exactly those rounds' children.
"""

from __future__ import annotations

from airflow.sdk import dag

from dags._common import (
    DEFAULT_ARGS,
    ROUTING_PARAMS,
    context_params,
    cpu_task,
    evolution_rounds,
    gpu_task,
    params_of,
    run_folder,
)
from pipelines.orchestration.end_to_end import EndToEndConfig

EVOLUTION_ROUNDS = 2


def _config():
    """The run's EndToEndConfig; a bad value fails the run at once (retrying cannot fix it)."""
    from airflow.sdk.exceptions import AirflowFailException

    params = context_params()
    try:
        return EndToEndConfig.from_params(params)
    except (TypeError, ValueError) as error:
        raise AirflowFailException(str(error)) from None


@cpu_task
def make_synthetic_data() -> dict:
    from pipelines.orchestration.end_to_end import banner
    from pipelines.orchestration.end_to_end import make_synthetic_data as generate

    config = _config()
    workdir = run_folder(config.workdir)
    banner(f"synthetic Charades-format data: {config.videos} videos -> {workdir}/data/synthetic")
    paths = generate(f"{workdir}/data/synthetic", videos=config.videos, num_classes=config.num_classes,
                     seed=config.seed, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                     min_seconds=config.min_seconds, max_seconds=config.max_seconds)
    return {"workdir": workdir, **paths}


def _preprocess(inputs: dict, split: str) -> str:
    from pipelines.orchestration.end_to_end import banner, preprocess

    config = _config()
    out = f"{inputs['workdir']}/data/{split}"
    banner(f"preprocess {split} (Beam {config.runner}): flow={config.flow}, objects={config.segmenter}")
    preprocess(dataset="charades", videos=inputs["videos"], annotations=inputs[split], out=out,
               fps=config.fps, size=config.frame_size, flow=config.flow, segmenter=config.segmenter,
               runner=config.runner)
    return out


@cpu_task
def preprocess_train(inputs: dict) -> str:
    return _preprocess(inputs, "train")


@cpu_task
def preprocess_val(inputs: dict) -> str:
    return _preprocess(inputs, "val")


@cpu_task
def preprocess_test(inputs: dict) -> str:
    return _preprocess(inputs, "test")


@cpu_task
def start_evolution(train: str, val: str) -> str:
    from pipelines.orchestration.end_to_end import banner
    from pipelines.orchestration.end_to_end import start_evolution as start

    config = _config()
    state_dir = f"{run_folder(config.workdir)}/evolution"
    population = min(config.population, EVOLUTION_ROUNDS * config.children_per_round)
    banner(f"evolution: population {population}, {EVOLUTION_ROUNDS} rounds of {config.children_per_round}")
    return start(state_dir, data=train, eval_data=val, population=population,
                 rounds=EVOLUTION_ROUNDS * config.children_per_round - population,
                 train={**config.train_fields(), "steps": config.proxy_steps},
                 strategy=config.evolution_strategy, object_stem=config.object_stem, seed=config.seed)


@cpu_task
def finish_evolution(state_dir: str) -> str:
    from pipelines.orchestration.end_to_end import finish_evolution as finish

    return finish(state_dir)


@gpu_task
def one_shot_search(structure: str, train: str, val: str) -> str:
    from pipelines.orchestration.end_to_end import one_shot_search as search

    config = _config()
    return search(structure=structure, data=train, eval_data=val, out=f"{run_folder(config.workdir)}/search",
                  train={**config.train_fields(), "steps": config.search_steps}, threshold=config.threshold)


@gpu_task
def train_final(structure: str, train: str, val: str) -> str:
    from pipelines.orchestration.end_to_end import train_final as train_model

    config = _config()
    return train_model(structure=structure, data=train, eval_data=val, workdir=run_folder(config.workdir),
                       train={**config.train_fields(), "steps": config.train_steps})


@gpu_task
def evaluate(workdir: str, test: str) -> str:
    from pipelines.orchestration.end_to_end import evaluate as evaluate_run

    return evaluate_run(workdir=workdir, data=test, clips=_config().clips)


@cpu_task
def report(workdir: str, metrics: str) -> str:
    from pipelines.orchestration.end_to_end import report as build

    return build(workdir)


@dag(dag_id="assemblenet_end_to_end", schedule=None, catchup=False,
     params={**params_of(EndToEndConfig), **ROUTING_PARAMS},
     default_args=DEFAULT_ARGS,
     tags=["assemblenet"], doc_md=__doc__, max_active_runs=1)
def assemblenet_end_to_end():
    inputs = make_synthetic_data()
    train, val, test = preprocess_train(inputs), preprocess_val(inputs), preprocess_test(inputs)
    state_dir = evolution_rounds(start_evolution(train, val), EVOLUTION_ROUNDS)
    searched = one_shot_search(finish_evolution(state_dir), train, val)
    workdir = train_final(searched, train, val)
    report(workdir, evaluate(workdir, test))


assemblenet_end_to_end()
