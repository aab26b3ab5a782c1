"""The subcommands of `assemblenet` (one module each), and the one way their numbers are parsed.

Every numeric flag is declared with a `Range` (pipelines.configs, where the config fields declare
theirs): its value must be a finite number (nan and inf are refused) within the bounds the flag
allows, and a value outside them is a one-line error naming the flag, the value and the range
(`argument --fps: expected a number in (0, 240], got '1e9'`).
pipelines/cli's parser gives the flags still declared with a bare `int` or `float` the same
finite-number check, so no number reaches a command unchecked.
"""

from __future__ import annotations

from pipelines.configs import (  # noqa: F401  (the commands take them from here)
    FPS,
    MAX_COUNT,
    MAX_SEED,
    MAX_SIDE,
    SEED,
    SIDE,
    Range,
    fraction,
    non_negative,
    positive,
)

# Bounds shared by several commands; `Range` and the bounds a config field declares (FPS, SIDE, SEED)
# live in pipelines.configs, with the fields.
WORKERS = Range(int, 1, 1024)
