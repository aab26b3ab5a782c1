# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-tf test-jax lint clean

$(STAMP): setup.py
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[all,dev,jax]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipelines.demo

# The whole suite under TensorFlow, then the model tests again under JAX.
test: $(STAMP)
	$(BIN)/ruff check model preprocessing pipelines dags tests benchmarks
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q tests/model

lint: $(STAMP)
	$(BIN)/ruff check model preprocessing pipelines dags tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
