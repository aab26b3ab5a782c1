"""Every DAG file imports cleanly and wires exactly the tasks and dependencies it documents."""

import pytest
from airflow.dag_processing.dagbag import DagBag

from tests.dags.conftest import DAGS_FOLDER


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(DAGS_FOLDER))


def _edges(dag) -> dict[str, set[str]]:
    return {task_id: set(task.downstream_task_ids) for task_id, task in dag.task_dict.items()}


def _rounds(count: int, first: str, last: str) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    previous = first
    for number in range(1, count + 1):
        group = f"round_{number}"
        edges.setdefault(previous, set()).update(
            {f"{group}.next_children", f"{group}.evaluate_child", f"{group}.integrate"})
        edges[f"{group}.next_children"] = {f"{group}.evaluate_child"}
        edges[f"{group}.evaluate_child"] = {f"{group}.integrate"}
        previous = f"{group}.integrate"
    edges[previous] = {last}
    return edges


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"assemblenet_preprocess", "assemblenet_evolution",
                                   "assemblenet_search_and_train", "assemblenet_end_to_end"}


def test_preprocess_dag(dagbag):
    dag = dagbag.dags["assemblenet_preprocess"]
    assert _edges(dag) == {"locate_inputs": {"preprocess"}, "preprocess": set()}
    assert dag.params["runner"] == "FnApiRunner"
    assert {"project", "region", "temp_location", "setup_file"} <= set(dag.params)


def test_evolution_dag_maps_each_rounds_children(dagbag):
    dag = dagbag.dags["assemblenet_evolution"]
    expected = {**_rounds(4, "start_evolution", "finish_evolution"), "finish_evolution": set()}
    assert _edges(dag) == expected
    for number in range(1, 5):
        assert dag.get_task(f"round_{number}.evaluate_child").is_mapped
        assert dag.get_task(f"round_{number}.integrate").trigger_rule == "none_failed"


def test_search_and_train_dag(dagbag):
    dag = dagbag.dags["assemblenet_search_and_train"]
    assert _edges(dag) == {"one_shot_search": {"train_final"}, "train_final": {"evaluate", "report"},
                           "evaluate": {"report"}, "report": set()}
    assert {"structure", "tpu", "strategy", "steps"} <= set(dag.params)


def test_end_to_end_dag(dagbag):
    dag = dagbag.dags["assemblenet_end_to_end"]
    expected = {
        "make_synthetic_data": {"preprocess_train", "preprocess_val", "preprocess_test"},
        "preprocess_train": {"start_evolution", "one_shot_search", "train_final"},
        "preprocess_val": {"start_evolution", "one_shot_search", "train_final"},
        "preprocess_test": {"evaluate"},
        **_rounds(2, "start_evolution", "finish_evolution"),
        "finish_evolution": {"one_shot_search"},
        "one_shot_search": {"train_final"},
        "train_final": {"evaluate", "report"},
        "evaluate": {"report"},
        "report": set(),
    }
    assert _edges(dag) == expected
    assert dag.get_task("round_2.evaluate_child").is_mapped


GPU_TASKS = {"evaluate_child", "one_shot_search", "train_final", "evaluate"}


def test_every_task_declares_its_queue_and_the_gpu_tasks_a_gpu_pool_slot(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert {"gpu_queue", "cpu_queue", "gpu_pool"} <= set(dag.params), dag_id
        for task_id, task in dag.task_dict.items():
            gpu = task_id.rsplit(".", 1)[-1] in GPU_TASKS
            assert (task.queue, task.pool) == (("gpu", "gpu") if gpu else ("cpu", "default_pool")), task_id
            assert task.retries == 2, task_id


def test_routing_policy_applies_the_runs_queue_and_pool_params():
    from types import SimpleNamespace

    from dags._routing import task_instance_mutation_hook

    def routed(queue: str, pool: str, conf: dict) -> tuple[str, str]:
        ti = SimpleNamespace(task=SimpleNamespace(queue=queue), queue=queue, pool=pool)
        task_instance_mutation_hook(ti, SimpleNamespace(conf=conf))
        return ti.queue, ti.pool

    conf = {"gpu_queue": "a100", "cpu_queue": "highmem", "gpu_pool": "a100_slots"}
    assert routed("gpu", "gpu", conf) == ("a100", "a100_slots")
    assert routed("cpu", "default_pool", conf) == ("highmem", "default_pool")
    assert routed("gpu", "gpu", {}) == ("gpu", "gpu")
    assert routed("cpu", "default_pool", {"gpu_queue": "a100"}) == ("cpu", "default_pool")


def test_params_are_made_from_the_config_fields(dagbag):
    """A DAG param that is a config field carries the field's help text, choices and range."""
    import dataclasses

    from pipelines.orchestration.end_to_end import EndToEndConfig
    from pipelines.train_config import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    params = dagbag.dags["assemblenet_search_and_train"].params
    frames = params.get_param("frames")
    assert (frames.value, frames.description) == (8, fields["frames"].metadata["help"])
    assert (frames.schema["minimum"], frames.schema["maximum"]) == (1, 4096)
    assert params.get_param("precision").schema["enum"] == list(fields["precision"].metadata["choices"])
    assert params.get_param("tpu").value == ""
    end_to_end = dagbag.dags["assemblenet_end_to_end"].params
    for field in dataclasses.fields(EndToEndConfig):
        param = end_to_end.get_param(field.name)
        assert (param.value, param.description) == (field.default, field.metadata["help"]), field.name
    assert end_to_end.get_param("flow").schema["enum"] == ["opencv", "tensor", "none"]
    from pipelines.evolve import EvolutionConfig

    evolution = {f.name: f for f in dataclasses.fields(EvolutionConfig)}
    population = dagbag.dags["assemblenet_evolution"].params.get_param("population")
    assert (population.value, population.description) == (2, evolution["population_size"].metadata["help"])
    assert population.schema["minimum"] == 1  # as `assemblenet evolve --population`
    width_scale = dagbag.dags["assemblenet_evolution"].params.get_param("width_scale")
    assert (width_scale.value, width_scale.schema["minimum"], width_scale.schema["maximum"]) == (16, 1, 1024)
    from pipelines.preprocess.config import PreprocessConfig

    preprocess = dagbag.dags["assemblenet_preprocess"].params
    fps, size = preprocess.get_param("fps"), preprocess.get_param("size")
    assert (fps.value, fps.schema["exclusiveMinimum"], fps.schema["maximum"]) == (PreprocessConfig.fps, 0.0, 240.0)
    assert (size.value, size.schema["minimum"], size.schema["maximum"]) == (PreprocessConfig.size, 8, 4096)
    assert preprocess.get_param("flow").schema["enum"] == ["opencv", "tensor", "none"]
    assert preprocess.get_param("flow").value == PreprocessConfig.flow == "opencv"
    assert preprocess.get_param("dataset").schema["enum"] == ["charades", "toyota"]
    assert preprocess.get_param("segmenter").value == PreprocessConfig.segmenter == "none"
    from model.pruning import PRUNE_THRESHOLD
    from pipelines.evaluate import CLIPS

    threshold, clips = params.get_param("threshold"), params.get_param("clips")  # assemblenet_search_and_train
    assert (threshold.value, threshold.schema["minimum"], threshold.schema["exclusiveMaximum"]) == (
        PRUNE_THRESHOLD, 0.0, 1.0)
    assert (clips.value, clips.schema["minimum"], clips.schema["maximum"]) == (CLIPS, 1, 1000)
    fast_path = dagbag.dags["assemblenet_evolution"].params.get_param("fast_path")
    assert (fast_path.value, fast_path.description) == (False, evolution["fast_path"].metadata["help"])
    assert fast_path.schema["type"] == "boolean"
