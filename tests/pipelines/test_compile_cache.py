"""The persistent XLA compilation cache: where it lives, that it can be switched off, and that under
JAX a compiled program lands in it (a subprocess, so that this file tests the JAX path whatever
backend the suite runs under)."""

import os
import subprocess
import sys
from pathlib import Path

from pipelines import compile_cache

ROOT = Path(__file__).resolve().parents[2]


def test_the_folder_comes_from_the_environment_in_order(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compile_cache.folder() == tmp_path / ".cache" / "assemblenet" / "xla"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compile_cache.folder() == tmp_path / "jax"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "ours"))
    assert compile_cache.folder() == tmp_path / "ours"
    for off in ("off", "OFF", "0", "false", "no"):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.folder() is None


SCRIPT = """
import jax, jax.numpy as jnp
from pipelines import compile_cache
path = compile_cache.enable()
print(path)
print(jax.config.jax_compilation_cache_dir)
jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.0)(jnp.ones((8, 8))).block_until_ready()
"""


def _run(tmp_path, cache):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), compile_cache.ENV: cache,
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_under_jax_a_compiled_program_is_stored_in_the_cache(tmp_path):
    cache = tmp_path / "xla"
    lines = _run(tmp_path, str(cache))
    assert lines[0] == str(cache) and lines[1] == str(cache)
    assert any(cache.iterdir())  # the jitted function's executable was written


def test_switched_off_jax_is_left_as_it_was(tmp_path):
    lines = _run(tmp_path, "off")
    assert lines[0] == "None" and lines[1] in ("None", "")
