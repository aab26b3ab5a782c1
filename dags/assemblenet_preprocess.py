"""`assemblenet_preprocess`: the Beam preprocessing job for one dataset split.

    locate_inputs ─► preprocess

Videos (+ annotations) -> TFRecord shards, summary.json and dead_letter.jsonl in `out`
(pipelines/preprocess/). Locally Beam's FnApiRunner runs it inside the task; with
runner=DataflowRunner the task submits the job to Dataflow and waits for it (project, region,
temp_location gs://..., the package's setup.py for the workers; videos and out on gs://).
A retried run skips the videos already written. With `videos` empty (the default) a synthetic
Charades-format set is generated first into `synthetic_dir`, and the CSV of `split` is used.
See docs/orchestration.md for Charades and Toyota Smarthome on a bucket.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from dags._common import DEFAULT_ARGS, ROUTING_PARAMS, context_params, cpu_task, param_of
from pipelines.preprocess.config import PreprocessConfig

PARAMS = {
    "dataset": param_of(PreprocessConfig, "dataset", "charades", "annotation format"),
    "videos": Param("", type="string", description="folder of the videos (Charades: <id>.mp4; Toyota: "
                    "the mp4/ folder), local or gs://; empty: generate synthetic Charades-format data"),
    "annotations": Param("", type="string", description="Charades: the split's CSV (Charades_v1_train.csv "
                         "or Charades_v1_test.csv); Toyota: unused"),
    "split": Param("train", type="string", description="Toyota: a preprocessing.toyota split (empty: all "
                   "clips); synthetic data: train | val | test; Charades: unused"),
    "out": Param("runs/embedded/data/train", type="string", description="output folder of the shards "
                 "(relative paths are taken from the project root), local or gs://"),
    # The job's settings: PreprocessConfig's defaults, types, choices and ranges.
    "fps": param_of(PreprocessConfig, "fps", description="decoding frame rate (AssembleNet A.6: 6)"),
    "size": param_of(PreprocessConfig, "size", description="shorter side of the stored frames (paper: 256)"),
    "flow": param_of(PreprocessConfig, "flow"),
    "segmenter": param_of(PreprocessConfig, "segmenter", description="object masks: none | oracle (synthetic "
                          "data) | a keras-hub preset name or downloaded preset folder, e.g. "
                          "segformer_b0_ade20k_512"),
    "flow_batch": param_of(PreprocessConfig, "flow_batch"),
    "segment_batch": param_of(PreprocessConfig, "segment_batch"),
    "decode_threads": param_of(PreprocessConfig, "decode_threads"),
    "runner": Param("FnApiRunner", type="string", description="FnApiRunner (local) | DataflowRunner | any "
                    "Beam runner"),
    "project": Param("", type="string", description="Dataflow: GCP project"),
    "region": Param("", type="string", description="Dataflow: region, e.g. us-central1"),
    "temp_location": Param("", type="string", description="Dataflow: gs://BUCKET/tmp"),
    "setup_file": Param("", type="string", description="Dataflow: the package's setup.py (default: "
                        "this project's)"),
    "pipeline_args": Param([], type="array", description="more Beam options, e.g. "
                           "[\"--machine_type=n2-highmem-8\", \"--max_num_workers=50\"]"),
    "max_dead_letter_fraction": Param(0.0, type=["number", "integer"], description="fail the task when "
                                      "more videos than this share fail (real data: a few are broken)"),
    "synthetic_dir": Param("runs/embedded/data/synthetic", type="string",
                           description="where synthetic data is generated when `videos` is empty"),
    "synthetic_videos": Param(20, type="integer", description="synthetic videos to generate"),
}


@cpu_task
def locate_inputs() -> dict:
    """The videos folder and annotation file: the given ones, or the synthetic set's."""
    from pipelines.orchestration.end_to_end import make_synthetic_data, resolve

    params = context_params()
    if params["videos"]:
        annotations = resolve(params["annotations"]) if params["annotations"] else ""
        return {"videos": resolve(params["videos"]), "annotations": annotations,
                "split": params["split"] if params["dataset"] == "toyota" else ""}
    if params["dataset"] != "charades":
        raise ValueError("synthetic data (empty `videos`) is Charades-format: set dataset=charades")
    paths = make_synthetic_data(resolve(params["synthetic_dir"]), videos=params["synthetic_videos"],
                                num_classes=6, seed=0)
    if params["split"] not in ("train", "val", "test"):
        raise ValueError(f"split={params['split']!r}: the synthetic data has splits train, val, test")
    return {"videos": paths["videos"], "annotations": paths[params["split"]], "split": ""}


@cpu_task
def preprocess(inputs: dict) -> dict:
    from pipelines.orchestration.end_to_end import banner, beam_pipeline_args, preprocess, resolve

    params = context_params()
    args = beam_pipeline_args(params["runner"], project=params["project"], region=params["region"],
                              temp_location=params["temp_location"], setup_file=params["setup_file"],
                              extra=params["pipeline_args"])
    out = resolve(params["out"])
    banner(f"preprocess {inputs['videos']} -> {out} (Beam {params['runner']})")
    summary = preprocess(dataset=params["dataset"], videos=inputs["videos"],
                         annotations=inputs["annotations"], split=inputs["split"], out=out,
                         fps=params["fps"], size=params["size"],
                         flow=params["flow"], segmenter=params["segmenter"], runner=params["runner"],
                         flow_batch=params["flow_batch"], segment_batch=params["segment_batch"],
                         decode_threads=params["decode_threads"],
                         pipeline_args=args, max_dead_letter_fraction=params["max_dead_letter_fraction"])
    return {"out": out, "written": summary["written"], "dead_lettered": summary["dead_lettered"]}


@dag(dag_id="assemblenet_preprocess", schedule=None, catchup=False, params={**PARAMS, **ROUTING_PARAMS},
     default_args=DEFAULT_ARGS, tags=["assemblenet"],
     doc_md=__doc__)
def assemblenet_preprocess():
    preprocess(locate_inputs())


assemblenet_preprocess()
