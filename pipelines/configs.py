"""What the run configurations (dataclasses read from JSON or Airflow params) share."""

import dataclasses
from collections.abc import Mapping
from typing import Any


def check_fields(cls, data: Mapping[str, Any], *, source: str, noun: str) -> None:
    """Raises one ValueError naming `source` and every key of `data` that is not a field of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown {noun} {unknown}; expected some of {sorted(names)}")
