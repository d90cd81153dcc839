# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Each sets up its own virtual environment on a fresh machine with every extra (`.[dev]`: the
# base install is the gRPC client alone; CPU torch pinned by constraints/cpu.txt; GPU users
# install their own torch build before `pip install -e`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: setup test demo bench clean

$(BIN)/.rfad-installed: pyproject.toml constraints/cpu.txt constraints/triton-2.51.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e ".[dev]"
	touch $@

setup: $(BIN)/.rfad-installed

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/rfad demo --out $(OUT)

# The benchmark suite: every benchmarks/*.py, then docs/performance.md and its plots
# (the dev extra includes the bench one).
bench: setup
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(OUT)
