"""Queue routing under a CeleryExecutor: a Redis broker on 127.0.0.1 and two Celery workers, one
consuming the `gpu` queue and one the `cpu` queue (a GPU host and a CPU host).

The DAG is tests/dags/routing_dag/routing_probe.py: the evolution DAG's routing shape (CPU tasks around
a mapped GPU task in the GPU pool) declared with the project's `cpu_task` / `gpu_task` and routing
params, with task bodies that do no work, so that the test spends its time on routing only. The
scheduler applies the project's cluster policy (dags/_routing.py, installed by
pipelines/orchestration/airflow_local.py).

Each worker reports its own name as the hostname of the task instances it runs
(tests/dags/worker_identity.py), so the metadata database says which worker ran each task: every
task must have run on the worker of the queue it declared, the GPU tasks in the GPU pool. A second
run overrides the queues from its params (gpu_queue / cpu_queue, applied by the cluster policy) and
sends every task to the other worker.
"""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.orchestration.airflow_local import LocalAirflow, airflow_executable, die_with_parent, free_port

DAG_ID = "routing_probe"
DAGS = Path(__file__).resolve().parent / "routing_dag"
GPU_TASKS = ("work",)


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


@pytest.mark.slow
def test_celery_workers_run_each_task_on_the_queue_it_declares(tmp_path):
    port = free_port()
    redis = _redis(port, tmp_path)
    env = {"AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{tmp_path / 'celery_results.db'}",
           "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1"}
    try:
        with LocalAirflow(tmp_path / "airflow", dags_folder=DAGS, executor="CeleryExecutor", parallelism=2,
                          pools={"gpu": 1}, env=env, echo=None) as airflow:
            for queue in ("gpu", "cpu"):
                airflow.spawn(f"worker-{queue}", airflow_executable(), "celery", "worker", "--queues", queue,
                              "--celery-hostname", f"{queue}@%h", "--concurrency", "1", "--skip-serve-logs",
                              "--without-gossip", "--without-mingle",
                              env={"AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.dags.worker_identity.hostname",
                                   "ASSEMBLENET_WORKER": f"{queue}-worker"})
                # One worker at a time: each creates the result backend's tables at start (check, then
                # CREATE, on one SQLite file); starting them in turn leaves no room for a race.
                airflow.wait_for_log(f"worker-{queue}", "ready.")
            airflow.trigger(DAG_ID, {"items": 2}, "declared")
            declared = airflow.wait_for_run(DAG_ID, "declared", timeout=600)
            declared_tis = airflow.task_instances(DAG_ID, "declared")
            # The same DAG with the queues swapped from the run's params.
            airflow.trigger(DAG_ID, {"items": 1, "gpu_queue": "cpu", "cpu_queue": "gpu"}, "swapped")
            swapped = airflow.wait_for_run(DAG_ID, "swapped", timeout=600)
            swapped_tis = airflow.task_instances(DAG_ID, "swapped")
    finally:
        redis.terminate()
        redis.wait(10)
    assert airflow.leftover_processes() == []  # the workers and their task processes too
    logs = tmp_path / "airflow" / "logs"
    assert declared == "success", (logs / "worker-gpu.log").read_text()[-4000:]
    assert swapped == "success", (logs / "worker-cpu.log").read_text()[-4000:]

    assert sorted(ti["task_id"] for ti in declared_tis) == ["collect", "prepare", "work", "work"]
    for ti in declared_tis:
        assert ti["state"] == "success", ti
        queue = "gpu" if ti["task_id"] in GPU_TASKS else "cpu"
        assert (ti["queue"], ti["hostname"]) == (queue, f"{queue}-worker"), ti
        assert ti["pool"] == ("gpu" if queue == "gpu" else "default_pool"), ti

    assert sorted(ti["task_id"] for ti in swapped_tis) == ["collect", "prepare", "work"]
    for ti in swapped_tis:
        assert ti["state"] == "success", ti
        queue = "cpu" if ti["task_id"] in GPU_TASKS else "gpu"
        assert (ti["queue"], ti["hostname"]) == (queue, f"{queue}-worker"), ti
