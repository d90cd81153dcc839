# The README's two commands: `make demo` (the main job) and `make test` (the test suite).
# Each sets up its own virtual environment on a fresh machine with every extra (`.[dev]`: the
# base install is the gRPC client alone; CPU torch pinned by constraints/cpu.txt; GPU users
# install their own torch build before `pip install -e`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out

.PHONY: setup test demo bench bench-sd15 clean

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

clean:
	rm -rf $(VENV) $(OUT)
