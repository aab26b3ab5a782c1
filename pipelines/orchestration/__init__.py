"""Orchestration over the stages of pipelines/: the end-to-end facade the Airflow DAGs call
(`end_to_end`), Airflow embedded in one folder (`airflow_local`) and `make demo` (`demo`)."""
