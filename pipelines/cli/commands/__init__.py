"""The subcommands of `assemblenet` (one module each), and the one way their numbers are parsed.

Every numeric flag is declared with a `Range`: its value must be a finite number (nan and inf are
refused) within the bounds the flag allows, and a value outside them is a one-line error naming the
flag, the value and the range (`argument --fps: expected a number in (0, 240], got '1e9'`).
pipelines/cli's parser gives the flags still declared with a bare `int` or `float` the same
finite-number check, so no number reaches a command unchecked.
"""

from __future__ import annotations

import argparse
import math

from preprocessing.video import MAX_FPS

# Bounds shared by several commands (MAX_FPS: the decoder's).
MAX_SIDE = 4096  # frame side in pixels
MAX_COUNT = 10**9  # steps, videos, shards: large enough for any run, small enough to catch a typo
MAX_SEED = 2**32 - 1  # numpy's seeds


class Range:
    """An argparse `type`: a finite `kind` (int or float) in [low, high] (an end is excluded when
    `low_open` / `high_open`; None: unbounded on that side)."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False):
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = kind.__name__  # argparse names the type in its own messages

    def contains(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return (f"{noun} in {'(' if self.low_open else '['}{_show(self.low)}, "
                    f"{_show(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_show(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {_show(self.high)}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def __call__(self, text: str):
        value = self.kind(text)  # not a number at all: argparse's own "invalid int value: 'abc'"
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    def __repr__(self) -> str:
        return f"Range({self.describe()})"


def _show(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def positive(kind: type = int, high: float | None = MAX_COUNT) -> Range:
    """> 0 (ints: >= 1)."""
    return Range(kind, 1, high) if kind is int else Range(kind, 0.0, high, low_open=True)


def non_negative(kind: type = int, high: float | None = MAX_COUNT) -> Range:
    return Range(kind, 0 if kind is int else 0.0, high)


def fraction(*, low_open: bool = False, high_open: bool = False) -> Range:
    """A number in [0, 1] (ends excluded as asked)."""
    return Range(float, 0.0, 1.0, low_open=low_open, high_open=high_open)


FPS = Range(float, 0.0, MAX_FPS, low_open=True)
SIDE = Range(int, 8, MAX_SIDE)
SEED = Range(int, 0, MAX_SEED)
WORKERS = Range(int, 1, 1024)
