# make test       set up .venv (pinned, requirements-dev.txt), install the package, run the whole test suite
#                 (tests/, and benchmarks/ at its smoke scale so that the benchmark suite cannot rot)
# make bench      set up .venv, run the benchmark (python -m convgru_ext bench $(BENCH_ARGS)); without a GPU:
#                 the CPU backends in float32 at a reduced scale; results in benchmarks/results/<device>-<date>/
# make check      set up .venv, run `python -m convgru_ext check` (every backend against the reference)
# make lint       ruff over the code
# make gpu-check  on a GPU machine with torch/triton/ninja/pytest already installed and no network: every
#                 verdict in one call of at most 8 minutes, with the system python3 (see .ci/gpu_check.py);
#                 files go to $OUT if set, else benchmarks/results/gpu-check-<stamp>/
# make gpu-check-dry-run
#                 set up .venv, run the same script without a GPU (Triton interpreted, tiny shapes, the
#                 GPU-only steps skipped): what CI runs so that the script cannot rot between GPU sessions

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: venv test bench check lint gpu-check gpu-check-dry-run clean

$(STAMP): requirements-dev.txt setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m convgru_ext bench $(BENCH_ARGS)

check: $(STAMP)
	$(PY) -m convgru_ext check

lint: $(STAMP)
	$(VENV)/bin/ruff check convgru_ext tests benchmarks setup.py .ci

gpu-check:
	bash .ci/gpu-check

gpu-check-dry-run: $(STAMP)
	GPU_CHECK_DRY_RUN=1 PYTHON=$(PY) bash .ci/gpu-check

clean:
	rm -rf $(VENV) build *.egg-info convgru_ext/*.so
