# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Each sets up its own virtual environment on a fresh machine with every extra (`.[dev]`: the
# base install is the gRPC client alone; CPU torch pinned by constraints/cpu.txt; GPU users
# install their own torch build before `pip install -e`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: setup test test-fast demo bench bench-sd15 gpu-check clean

$(BIN)/.rfad-installed: pyproject.toml constraints/cpu.txt constraints/triton-2.51.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c constraints/cpu.txt -e ".[dev]"
	touch $@

setup: $(BIN)/.rfad-installed

# CI's command (.ci/run) in two tiers, each listing its 25 slowest tests: first what needs no model
# export or server (fails within minutes), then the slow tier (exports, servers, training; the
# `slow` marker, tests/conftest.py). `make test-fast` runs the first tier alone. Each tier runs on
# one pytest-xdist worker per core, at most $(TEST_WORKERS) (each may start a Triton server), with
# one thread per process: the workers already fill the cores, the tiny models' operators are too
# small to gain from threads, and threads of processes sharing cores spin against each other.
TEST_WORKERS ?= 4
PYTEST = OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=25 -n auto --maxprocesses $(TEST_WORKERS) \
	--dist worksteal
test: setup
	$(PYTEST) -m "not slow"
	$(PYTEST) -m slow

test-fast: setup
	$(PYTEST) -m "not slow"

demo: setup
	$(BIN)/rfad demo --out $(OUT)

# The benchmark suite: every script of benchmarks/suite/, then docs/performance.md and its plots
# (the dev extra includes the bench one). The studies of benchmarks/studies/ run on their own.
bench: setup
	$(BIN)/python -m benchmarks.suite.run_all $(BENCH_ARGS)

# SD-1.5 + ControlNet at their published sizes (not in `make bench`): builds the 8.5 GB random-weight
# twin, exports it (fp32 and fp16), times steps, measures memory and serves one 512 px request.
bench-sd15: setup
	$(BIN)/python -m benchmarks.studies.sd15.sd15_shape $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.suite.report
	$(BIN)/python docs/render.py

# The prepared GPU run (benchmarks/gpu_check.py through its wrapper, which installs the carried
# wheels in .whl/ and rfad into .site/): SD-1.5 twin, generation beside diffusers, the judge, one
# RFFT step, RFNet training. Runs with the machine's own Python and CUDA torch (GPU_PYTHON); on this
# CPU machine: make gpu-check GPU_PYTHON=.venv/bin/python GPU_ARGS=--tiny. Then docs/render.py
# renders docs/performance.md's GPU section from benchmarks/results/gpu_*.json.
GPU_PYTHON ?= python3
gpu-check:
	PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_check.sh $(GPU_ARGS)

clean:
	rm -rf $(VENV) $(OUT)
