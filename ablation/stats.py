"""Statistics of the ablation tables: the permutation test that every comparison of two rows reports."""

from __future__ import annotations

import itertools
import math

import numpy as np


def permutation_test(a, b, *, rounds: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of mean(a) − mean(b) under random relabelling of the pooled scores: exact (every
    labelling) when there are at most `rounds` of them, else `rounds` random ones ((hits + 1) / (rounds + 1))."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if len(a) < 1 or len(b) < 1:
        raise ValueError(f"permutation_test needs scores in both groups, got {len(a)} and {len(b)}")
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    n = len(a)
    if math.comb(len(pooled), n) <= rounds:
        diffs = []
        for chosen in itertools.combinations(range(len(pooled)), n):
            mask = np.zeros(len(pooled), bool)
            mask[list(chosen)] = True
            diffs.append(abs(pooled[mask].mean() - pooled[~mask].mean()))
        return float(np.mean(np.asarray(diffs) >= observed - 1e-12))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(rounds):
        perm = rng.permutation(pooled)
        hits += abs(perm[:n].mean() - perm[n:].mean()) >= observed - 1e-12
    return float((hits + 1) / (rounds + 1))
