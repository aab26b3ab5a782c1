# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test lint mutation clean

$(STAMP): setup.py
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[all,dev,jax]'
	touch $(STAMP)

install: $(STAMP)

# Programs the tests run besides Python: Chromium and its driver (the report renders in a browser),
# redis-server (the Celery broker of the queue-routing test). Missing ones are installed with apt-get
# (Debian/Ubuntu; as root, or through password-less sudo), as CI's fresh machine needs; elsewhere
# the message says what to install.
SYSTEM_PACKAGES := chromium:chromium chromedriver:chromium-driver redis-server:redis-server
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi; \
	if ! command -v apt-get >/dev/null 2>&1 || [ "$$sudo" = none ]; then \
	  echo "make test needs the system packages$$missing (Debian names): install them (apt-get install$$missing)" \
	       "or put chromium, chromedriver and redis-server on PATH, then run make test again" >&2; exit 1; fi; \
	echo "installing system packages:$$missing"; \
	($$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing) >/dev/null \
	  || { echo "apt-get install$$missing failed; install them yourself and run make test again" >&2; exit 1; }

demo: $(STAMP)
	$(BIN)/python -m pipelines.orchestration.demo

# The whole suite under TensorFlow, then the model tests and the TV-L1 tests (keras.ops and its Pallas
# kernel; one kernel test is JAX-only) again under JAX.
test: $(STAMP) system-deps
	$(BIN)/ruff check model preprocessing pipelines ablation dags tests benchmarks
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q tests/model \
	  tests/preprocessing/test_tvl1.py tests/preprocessing/test_kernels.py

# Mutation testing of the core (docs/testing.md): mutmut mutates the modules of [tool.mutmut] in
# pyproject.toml in a copy under mutants/ and runs the tests that cover each mutant. Slow; not in `make test`.
# Then: `$(BIN)/mutmut results` lists the surviving mutants, `$(BIN)/mutmut show NAME` shows one.
mutation: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/mutmut run
	$(BIN)/python -m tests.mutation_scores

lint: $(STAMP)
	$(BIN)/ruff check model preprocessing pipelines ablation dags tests benchmarks

clean:
	rm -rf $(VENV) runs build mutants *.egg-info
