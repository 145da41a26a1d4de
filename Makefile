# make test       set up .venv (pinned, requirements-dev.txt), install the package; run the tests whose results
#                 depend on oneDNN's kernels (mark `onednn`: layout, parity, opcheck; not the Triton rows, whose
#                 interpreted kernels are numpy and whose oneDNN part is the composition the other rows share)
#                 under ONEDNN_MAX_CPU_ISA=AVX2,
#                 then the whole test suite with oneDNN's default (AVX-512/AMX where the CPU has them), so that a
#                 test tied to one instruction set fails here, not on the next machine; the whole suite is
#                 tests/, and benchmarks/ at its smoke scale so that the benchmark suite cannot rot
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
# make device-stack-dry-run
#                 the lent GPU's software stack rehearsed on this CPU (not in CI: torch 2.11.0 is a 3 GB CUDA
#                 build): .venv-device with the H200's versions (.ci/device-stack.txt, Python 3.12), the package
#                 and its CUDA extension for sm_90 built there, then .ci/device_stack.sh (what it runs and what it
#                 cannot rule out are written there)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: venv test bench check lint gpu-check gpu-check-dry-run device-stack-dry-run clean

$(STAMP): requirements-dev.txt setup.py convgru_ext/_build.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/* csrc/cuda/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

venv: $(STAMP)

test: $(STAMP)
	ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -m onednn -k "not triton" -p no:cacheprovider $(PYTEST_ARGS)
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

# the H200's Python (3.12; through pyenv where it is not on PATH) and packages (.ci/device-stack.txt)
DEVICE_PYTHON ?= $(shell command -v python3.12 2>/dev/null || echo $(HOME)/.pyenv/versions/3.12.1/bin/python3)
DEVICE_VENV   := .venv-device
DEVICE_STAMP  := $(DEVICE_VENV)/.installed

$(DEVICE_STAMP): .ci/device-stack.txt setup.py convgru_ext/_build.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/* csrc/cuda/*)
	PYENV_VERSION=3.12.1 $(DEVICE_PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet -r .ci/device-stack.txt
	TORCH_CUDA_ARCH_LIST=9.0 CONVGRU_FORCE_CUDA=1 $(DEVICE_VENV)/bin/python -m pip install --quiet \
		--no-build-isolation --no-deps -e .
	touch $@

device-stack-dry-run: $(DEVICE_STAMP)
	PYTHON=$(DEVICE_VENV)/bin/python bash .ci/device_stack.sh

clean:
	rm -rf $(VENV) $(DEVICE_VENV) build *.egg-info convgru_ext/*.so
