"""`[core] hostname_callable` of the Celery routing test's workers: both run on one host, so each
reports the name in its ASSEMBLENET_WORKER variable as the hostname of the task instances it ran."""

import os


def hostname() -> str:
    return os.environ["ASSEMBLENET_WORKER"]
