"""A deterministic stand-in for ablation.harness.train_and_score, in microseconds.

Every edge gets a fixed quality q(e) from a hash of what it connects; the score is the sum of q over the
edges (+0.5 on the test split, so a test score is told from a validation one), the "learned" σ(w) of
an edge is sigmoid(3 q(e)), and a search model's softmax(h) favours a hash-chosen peer per block,
perturbed by the seed. A module of its own (numpy and model.evolution only) so that the spawned worker
processes of the evolution suite import it quickly.
"""

import json
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ablation.harness import Budget
from model import evolution
from model.structure import Structure

BUDGET = Budget(steps=2, warmup_steps=0, batch_size=4, frames=4, size=32)
LOG = "FAKE_HARNESS_LOG"


class Killed(Exception):
    pass


def _quality(structure: Structure, j: int, i: int) -> float:
    a, b = structure.node(j), structure.node(i)
    key = f"{a.level}-{a.inputs if a.is_stem else a.dilation}-{b.level}-{b.dilation}".encode()
    return zlib.crc32(key) / 2**32 * 2 - 1


def fake_train(structure, bench, *, attention="none", object_stem=True, seed=0, budget=None, eval_split="val",
               **options):
    """harness.train_and_score's signature and result keys, in microseconds. Appends one JSON line per
    call to $FAKE_HARNESS_LOG; raises Killed on the call numbered $FAKE_KILL_AT (1-based)."""
    assert budget == BUDGET and (bench.frames, bench.size) == (BUDGET.frames, BUDGET.size)
    log = Path(os.environ[LOG])
    calls = len(log.read_text().splitlines()) if log.exists() else 0
    if calls + 1 == int(os.environ.get("FAKE_KILL_AT", "0")):
        raise Killed(f"killed at call {calls + 1}")
    with open(log, "a") as f:
        f.write(json.dumps({"structure": structure.to_json(), "attention": attention, "seed": seed,
                            "split": eval_split}) + "\n")
    q = {(j, i): _quality(structure, j, i) for j, i in structure.edges()}
    result = {"score": sum(q.values()) + (0.5 if eval_split == "test" else 0.0), "params": 1000 + len(q),
              "seconds": 0.01, "eval_split": eval_split, "structure": structure.to_json(),
              "edge_weights": evolution.edge_weights_to_json({e: 1 / (1 + math.exp(-3 * v)) for e, v in q.items()}),
              "attention_weights": {}}
    if attention == "search":
        rng = np.random.default_rng(seed)
        for n in structure.blocks:
            peers = structure.peers(n.index)
            logits = 4 * np.array([zlib.crc32(f"{n.index}-{p}".encode()) / 2**32 for p in peers])
            logits += rng.normal(0, 0.3, len(peers))
            h = np.exp(logits) / np.exp(logits).sum()
            result["attention_weights"][str(n.index)] = {str(p): float(v) for p, v in zip(peers, h, strict=True)}
    return result
