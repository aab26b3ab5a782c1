"""`make demo`'s driver: it starts from an empty folder and never deletes one it did not make."""

import pytest

from pipelines import demo


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


def test_airflow_env_points_at_the_demo_home_and_the_project_dags(tmp_path):
    env = demo.airflow_env(tmp_path / "airflow")
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(demo.PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
