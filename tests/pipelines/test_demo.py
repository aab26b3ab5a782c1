"""`make demo`'s driver: it starts from an empty folder and never deletes one it did not make, and an
interrupted demo leaves none of Airflow's processes behind."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.orchestration import demo
from pipelines.orchestration.airflow_local import LocalAirflow, processes_in_sessions


def test_fresh_folder_empties_its_own_folder_and_refuses_others(tmp_path):
    workdir = tmp_path / "demo"
    demo.fresh_folder(workdir)
    (workdir / "metrics.json").write_text("{}")
    (workdir / "airflow").mkdir()
    demo.fresh_folder(workdir)  # a second demo run starts fresh
    assert sorted(p.name for p in workdir.iterdir()) == [demo.MARKER]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not made by the demo"):
        demo.fresh_folder(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_airflow_configuration_points_at_the_demo_home_and_the_project_dags(tmp_path):
    airflow = LocalAirflow(tmp_path / "airflow", env=demo.airflow_env(tmp_path / "airflow"), echo=None)
    env = airflow.env
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(demo.PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://127.0.0.1:{airflow.port}/execution/"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.slow
def test_interrupted_demo_stops_every_airflow_process(tmp_path):
    """SIGTERM while a task runs: the demo exits 130 and no process of its Airflow is left."""
    workdir = tmp_path / "demo"
    conf = {"videos": 8, "min_seconds": 2.5, "max_seconds": 3.5, "frame_size": 32}
    env = {**os.environ, "PYTHONPATH": str(demo.PROJECT_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "pipelines.orchestration.demo", "--workdir", str(workdir),
                                "--conf", json.dumps(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, cwd=demo.PROJECT_ROOT, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 600
        for line in process.stdout:
            seen.append(line)
            if line.rstrip().endswith(" running") or time.monotonic() > deadline:
                break
        assert seen[-1].rstrip().endswith(" running"), "".join(seen)
        # Each component started a session; the task processes are in the scheduler's.
        sessions = json.loads((workdir / "airflow" / "processes.json").read_text()).values()
        assert len(processes_in_sessions(sessions)) >= 5  # 3 components, an executor worker, the task
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(seen) + rest
    assert "Interrupted" in rest
    assert processes_in_sessions(sessions) == []
