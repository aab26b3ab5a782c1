"""Queue routing under a CeleryExecutor: the evolution DAG with a Redis broker on 127.0.0.1 and two
Celery workers, one consuming the `gpu` queue and one the `cpu` queue (a GPU host and a CPU host).

Each worker reports its own name as the hostname of the task instances it runs
(tests/dags/worker_identity.py), so the metadata database says which worker ran each task: every
task must have run on the worker of the queue it declared (dags/_routing.py), the evolution
children on the GPU worker in the GPU pool. A second run overrides the queues from its params
(gpu_queue / cpu_queue, applied by the cluster policy) and sends the children to the other worker.
"""

import json
import shutil
import socket
import subprocess
import time

import pytest

from pipelines.airflow_local import LocalAirflow, airflow_executable, die_with_parent, free_port
from pipelines.end_to_end import make_synthetic_data, preprocess

DAG_ID = "assemblenet_evolution"
GPU_TASKS = ("round_1.evaluate_child", "round_2.evaluate_child", "round_3.evaluate_child",
             "round_4.evaluate_child")


def _redis(port: int, folder) -> subprocess.Popen:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run `make system-deps` (as root on Debian/Ubuntu it "
                    "apt-get installs redis-server), or install Redis yourself and put redis-server on PATH")
    process = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"redis-server did not answer on 127.0.0.1:{port}")


def _records(folder) -> tuple[str, str]:
    """(training records, validation records): fitness is measured on videos the children do not
    train on (AssembleNet §3.2), here the generator's validation split."""
    paths = make_synthetic_data(str(folder / "synthetic"), videos=6, num_classes=4, seed=0, min_seconds=2.5,
                                max_seconds=3.0)
    out = []
    for split in ("train", "val"):
        out.append(str(folder / split))
        preprocess(dataset="charades", videos=paths["videos"], annotations=paths[split], out=out[-1], fps=4.0,
                   size=32, flow="opencv", segmenter="none")
    return out[0], out[1]


def _conf(tmp_path, data: tuple[str, str], state: str, rounds: int = 1, **routing) -> dict:
    return {"state_dir": str(tmp_path / state), "data": data[0], "eval_data": data[1], "population": 1,
            "rounds": rounds,
            "children_per_round": 1, "object_stem": False, "width_scale": 16,
            "proxy_train": {"steps": 2, "steps_per_epoch": 2, "frames": 8, "size": 32, "batch_size": 2,
                            "learning_rate": 0.1}, **routing}


@pytest.mark.slow
def test_celery_workers_run_each_task_on_the_queue_it_declares(tmp_path):
    data = _records(tmp_path / "data")
    port = free_port()
    redis = _redis(port, tmp_path)
    env = {"AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{tmp_path / 'celery_results.db'}",
           "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
           "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        with LocalAirflow(tmp_path / "airflow", executor="CeleryExecutor", parallelism=2, pools={"gpu": 1},
                          env=env, echo=None) as airflow:
            for queue in ("gpu", "cpu"):
                airflow.spawn(f"worker-{queue}", airflow_executable(), "celery", "worker", "--queues", queue,
                              "--celery-hostname", f"{queue}@%h", "--concurrency", "1", "--skip-serve-logs",
                              "--without-gossip", "--without-mingle",
                              env={"AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.dags.worker_identity.hostname",
                                   "ASSEMBLENET_WORKER": f"{queue}-worker"})
                # One worker at a time: each creates the result backend's tables at start (check, then
                # CREATE, on one SQLite file); starting them in turn leaves no room for a race.
                airflow.wait_for_log(f"worker-{queue}", "ready.")
            airflow.trigger(DAG_ID, _conf(tmp_path, data, "evolution"), "declared")
            declared = airflow.wait_for_run(DAG_ID, "declared", timeout=3600)
            declared_tis = airflow.task_instances(DAG_ID, "declared")
            # The same DAG with the queues swapped from the run's params.
            airflow.trigger(DAG_ID, _conf(tmp_path, data, "swapped", rounds=0, gpu_queue="cpu",
                                                   cpu_queue="gpu"),
                            "swapped")
            swapped = airflow.wait_for_run(DAG_ID, "swapped", timeout=3600)
            swapped_tis = airflow.task_instances(DAG_ID, "swapped")
    finally:
        redis.terminate()
        redis.wait(10)
    assert airflow.leftover_processes() == []  # the workers and their task processes too
    logs = tmp_path / "airflow" / "logs"
    assert declared == "success", (logs / "worker-gpu.log").read_text()[-4000:]
    assert swapped == "success", (logs / "worker-cpu.log").read_text()[-4000:]

    ran = [ti for ti in declared_tis if ti["state"] == "success"]
    children = [ti for ti in ran if ti["task_id"] in GPU_TASKS]
    assert len(children) == 2  # the initial population's child and one evolved child
    for ti in ran:
        queue = "gpu" if ti["task_id"] in GPU_TASKS else "cpu"
        assert (ti["queue"], ti["hostname"]) == (queue, f"{queue}-worker"), ti
        assert ti["pool"] == ("gpu" if queue == "gpu" else "default_pool"), ti
    assert {ti["hostname"] for ti in ran} == {"gpu-worker", "cpu-worker"}

    ran = [ti for ti in swapped_tis if ti["state"] == "success"]
    for ti in ran:
        queue = "cpu" if ti["task_id"] in GPU_TASKS else "gpu"
        assert (ti["queue"], ti["hostname"]) == (queue, f"{queue}-worker"), ti
    history = json.loads((tmp_path / "swapped" / "history.json").read_text())
    assert [h["child"] for h in history] == ["c0000"]
