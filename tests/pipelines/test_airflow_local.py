"""LocalAirflow's report of a component that died: the cause of a chained traceback must reach the
message (CI's Celery worker died of an ImportError that the provider's wrapper re-raised as another
exception, and the message showed only the wrapper's)."""

import subprocess
import sys

import pytest

from pipelines.orchestration.airflow_local import AirflowError, LocalAirflow

CHAINED = """\
[worker] starting
Traceback (most recent call last):
  File "celery_command.py", line 72, in wrapper
    from celery.backends.database import retry
ImportError: cannot import name 'retry' from 'celery.backends.database'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
""" + "".join(f'  File "frame{i}.py", line {i}, in f{i}\n    call{i}()\n' for i in range(10)) + """\
airflow.sdk.exceptions.AirflowOptionalProviderFeatureException: Failed to import providers_configuration_loaded.
"""


def test_a_dead_component_error_names_the_root_cause_above_the_tail(tmp_path):
    airflow = LocalAirflow(tmp_path / "home", echo=None)
    (airflow.home / "logs").mkdir(parents=True)
    (airflow.home / "logs" / "worker.log").write_text(CHAINED)
    airflow.processes["worker"] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    airflow.processes["worker"].wait()
    with pytest.raises(AirflowError) as error:
        airflow.check_alive()
    message = str(error.value)
    assert "worker exited with status 1" in message
    assert "(earlier) ImportError: cannot import name 'retry'" in message
    # The tail itself is the last 15 lines, ending with the wrapper's exception.
    assert message.rstrip().endswith("Failed to import providers_configuration_loaded.")
    assert "[worker] starting" not in message


def test_log_tail_of_a_clean_log_adds_nothing(tmp_path):
    airflow = LocalAirflow(tmp_path / "home", echo=None)
    (airflow.home / "logs").mkdir(parents=True)
    (airflow.home / "logs" / "api.log").write_text("".join(f"line {i}\n" for i in range(30)))
    assert airflow.log_tail("api", lines=3) == "line 27\nline 28\nline 29"
    assert airflow.log_tail("missing") == ""
