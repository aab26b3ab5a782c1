"""`assemblenet_search_and_train`: AssembleNet++'s one-shot attention search, then the real training.

    one_shot_search ─► train_final ─► evaluate ─► report

one_shot_search trains the over-connected attention-search model of `structure`'s block layout
and prunes it (σ(w) > threshold kept, the argmax-h peer per block; AssembleNet++ §3.5, §3.6),
writing WORKDIR/search/final_structure.json; train_final trains that structure with peer
attention (on a TPU with strategy=tpu and tpu=<name or grpc://host:8470>, data on gs://);
evaluate scores it on `test_data` (multi-clip, A.7); report writes WORKDIR/report/index.html.
Outputs go to `workdir`, or runs/assemblenet_search_and_train/<run id>; training and the search
resume from their checkpoints when a task is retried.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from dags._common import DEFAULT_ARGS, ROUTING_PARAMS, context_params, cpu_task, gpu_task, param_of, run_folder
from model.pruning import PRUNE_THRESHOLD
from pipelines.evaluate import CLIPS, EvaluateConfig
from pipelines.search import OneShotConfig
from pipelines.train_config import TrainConfig

# The settings of the trainings (TrainConfig's fields: help, type, choices and range from
# pipelines/train_config.py) with this DAG's small defaults; the rest are the DAG's own.
PARAMS = {
    "structure": Param("runs/embedded/evolution/best_structure.json", type="string",
                       description="block layout to search: a named structure (tiny, assemblenet50, "
                       "assemblenet_plus50, ...) or a structure JSON, e.g. evolution's best_structure.json"),
    "data": Param("runs/embedded/data/train", type="string", description="training TFRecords: folder or "
                  "glob (gs://BUCKET/charades/train/*.tfrecord on TPU)"),
    "eval_data": Param("", type="string", description="validation TFRecords evaluated every epoch (or '')"),
    "test_data": Param("runs/embedded/data/test", type="string", description="TFRecords of the evaluation"),
    "workdir": Param("", type="string", description="run folder; empty: runs/<dag id>/<run id>"),
    "dataset": param_of(TrainConfig, "dataset"),
    "search_steps": param_of(TrainConfig, "steps", 8, "training steps of the one-shot model"),
    "threshold": param_of(OneShotConfig, "threshold", description=f"pruning threshold on σ(w) (§4.1: "
                          f"{PRUNE_THRESHOLD})"),
    "steps": param_of(TrainConfig, "steps", 16, "full training steps (paper: 50000)"),
    "steps_per_epoch": param_of(TrainConfig, "steps_per_epoch", 4,
                                "steps between checkpoints; divides both step counts"),
    "frames": param_of(TrainConfig, "frames", 8),
    "size": param_of(TrainConfig, "size", 32),
    "batch_size": param_of(TrainConfig, "batch_size", 4),
    "learning_rate": param_of(TrainConfig, "learning_rate", 0.1),
    "warmup_steps": param_of(TrainConfig, "warmup_steps", 0),
    "precision": param_of(TrainConfig, "precision"),
    "strategy": param_of(TrainConfig, "strategy"),
    "tpu": param_of(TrainConfig, "tpu", ""),
    "clips": param_of(EvaluateConfig, "clips", CLIPS, f"clips per test video, max-pooled (A.7: {CLIPS})"),
}


def _train_fields(params: dict, steps: int) -> dict:
    return {"dataset": params["dataset"], "frames": params["frames"], "size": params["size"],
            "batch_size": params["batch_size"], "steps": steps, "steps_per_epoch": params["steps_per_epoch"],
            "learning_rate": params["learning_rate"], "warmup_steps": params["warmup_steps"],
            "precision": params["precision"], "strategy": params["strategy"], "tpu": params["tpu"] or None}


def _optional(path: str) -> str | None:
    from pipelines.orchestration.end_to_end import resolve

    return resolve(path) if path else None


@gpu_task
def one_shot_search() -> str:
    from pipelines.orchestration.end_to_end import one_shot_search as search

    params = context_params()
    # `warmup_steps` is meant for the full training (the search budget may be shorter than it).
    fields = {**_train_fields(params, params["search_steps"]), "warmup_steps": 0}
    return search(structure=params["structure"], data=_optional(params["data"]),
                  eval_data=_optional(params["eval_data"]), out=f"{run_folder(params['workdir'])}/search",
                  train=fields, threshold=params["threshold"])


@gpu_task
def train_final(structure: str) -> str:
    from pipelines.orchestration.end_to_end import train_final as train_model

    params = context_params()
    return train_model(structure=structure, data=_optional(params["data"]),
                       eval_data=_optional(params["eval_data"]),
                       workdir=run_folder(params["workdir"]), train=_train_fields(params, params["steps"]))


@gpu_task
def evaluate(workdir: str) -> str:
    from pipelines.orchestration.end_to_end import evaluate as evaluate_run

    params = context_params()
    return evaluate_run(workdir=workdir, data=_optional(params["test_data"]), clips=params["clips"])


@cpu_task
def report(workdir: str, metrics: str) -> str:
    from pipelines.orchestration.end_to_end import report as build

    return build(workdir)


@dag(dag_id="assemblenet_search_and_train", schedule=None, catchup=False, params={**PARAMS, **ROUTING_PARAMS},
     default_args=DEFAULT_ARGS, tags=["assemblenet"],
     doc_md=__doc__)
def assemblenet_search_and_train():
    workdir = train_final(one_shot_search())
    report(workdir, evaluate(workdir))


assemblenet_search_and_train()
