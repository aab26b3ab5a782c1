"""The tensor flow backend's compilation: counted apart from the flow (FlowStats), done once per shape and
process, and kept on disk by the persistent compilation cache without changing any value (the flow stage inside
the preprocessing job)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from preprocessing import flow as flow_lib
from preprocessing.flow import FlowStats, flow_pairs

# Small and cheap to compile (2 pyramid levels); the odd sides give shapes no other test compiles.
PARAMS = {"scales": 2, "warps": 1, "iterations": 3}
ROOT = Path(__file__).resolve().parents[2]


def _pairs(count, height, width, seed=0):
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    return first, np.roll(first, 1, axis=2)


def test_stats_count_pairs_padding_calls_and_one_compilation_per_shape():
    first, second = _pairs(5, 13, 17)
    stats = FlowStats()
    # Batch 4: chunks of 4 and 1 pairs, the last padded to 4 -> one shape (4, 13, 17, 3), compiled once.
    flow = flow_pairs(first, second, "tensor", batch_size=4, stats=stats, **PARAMS)
    assert flow.shape == (5, 13, 17, 2)
    assert (stats.pairs, stats.computed, stats.calls, stats.compiled) == (5, 8, 2, 1)
    assert 0 < stats.compile_seconds <= stats.seconds
    # The program compiled ahead of time gives what the jit-compiled function gives when simply called.
    jitted = flow_lib._tvl1_function(tuple(sorted(PARAMS.items())), True)
    padded = [np.concatenate([x[4:], np.repeat(x[4:], 3, axis=0)]) for x in (first, second)]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(jitted(first[:4], second[:4])), flow[:4])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(jitted(*padded))[:1], flow[4:])
    again = FlowStats()
    flow_again = flow_pairs(first, second, "tensor", batch_size=4, stats=again, **PARAMS)
    # The same shape in the same process: no compilation, the same program, the same values.
    assert (again.pairs, again.computed, again.calls, again.compiled, again.compile_seconds) == (5, 8, 2, 0, 0.0)
    np.testing.assert_array_equal(flow_again, flow)
    # A short video pads to the next power of two: 3 pairs -> one call of 4, which is compiled already.
    short = FlowStats()
    np.testing.assert_array_equal(flow_pairs(first[:3], second[:3], "tensor", batch_size=32, stats=short,
                                             **PARAMS), flow[:3])
    assert (short.pairs, short.computed, short.calls, short.compiled) == (3, 4, 1, 0)
    total = FlowStats()
    total.add(stats)
    total.add(short)
    assert (total.pairs, total.computed, total.calls, total.compiled) == (8, 12, 3, 1)
    assert total.seconds == pytest.approx(stats.seconds + short.seconds)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's tf.function only")
def test_tensorflow_program_without_autograph_gives_the_autograph_flow():
    import tensorflow as tf

    first, second = _pairs(2, 12, 15, seed=3)
    params = tuple(sorted(PARAMS.items()))
    program = flow_lib._tvl1_function(params, True)
    with_autograph = tf.function(program.python_function, jit_compile=True, autograph=True)
    np.testing.assert_array_equal(program(first, second).numpy(), with_autograph(first, second).numpy())


def test_opencv_stats_count_pairs_without_compilation():
    first, second = _pairs(3, 16, 16)
    stats = FlowStats()
    flow_pairs(first, second, "opencv", stats=stats)
    assert (stats.pairs, stats.computed, stats.compiled, stats.compile_seconds) == (3, 3, 0, 0.0)
    assert stats.seconds > 0


def test_default_compile_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(flow_lib.COMPILE_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert flow_lib.default_compile_cache() == str(tmp_path / "assemblenet" / "xla")
    monkeypatch.setenv(flow_lib.COMPILE_CACHE_ENV, str(tmp_path / "mine"))
    assert flow_lib.default_compile_cache() == str(tmp_path / "mine")
    monkeypatch.setenv(flow_lib.COMPILE_CACHE_ENV, "none")
    assert flow_lib.default_compile_cache() == ""
    assert flow_lib.enable_compile_cache("") is None and flow_lib.enable_compile_cache("None") is None


_CHILD = """
import json, sys
import numpy as np
from preprocessing.flow import FlowStats, enable_compile_cache, flow_pairs
enable_compile_cache(sys.argv[1])
rng = np.random.default_rng(0)
first = rng.integers(0, 256, (4, 11, 19, 3), dtype=np.uint8)
stats = FlowStats()
flow = flow_pairs(first, np.roll(first, 1, axis=2), "tensor", batch_size=4, stats=stats,
                  scales=2, warps=1, iterations=3)
np.save(sys.argv[2], flow)
print(json.dumps({"compiled": stats.compiled, "compile_seconds": stats.compile_seconds}))
"""


def _child(cache, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND=keras.backend.backend())
    done = subprocess.run([sys.executable, "-c", _CHILD, str(cache), str(out)], env=env, check=True,
                          capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_program_and_gets_the_same_flow(tmp_path):
    cache = tmp_path / "cache"
    cold, flow_cold = _child(cache, tmp_path / "cold.npy")
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first process wrote nothing to the compilation cache"
    warm, flow_warm = _child(cache, tmp_path / "warm.npy")
    assert sorted(p.name for p in cache.iterdir()) == entries  # found, not compiled and added again
    np.testing.assert_array_equal(flow_warm, flow_cold)
    assert cold["compiled"] == warm["compiled"] == 1
    assert warm["compile_seconds"] < cold["compile_seconds"]
