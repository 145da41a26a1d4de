#!/usr/bin/env bash
# `make device-stack-dry-run`: `make gpu-check` rehearsed on this CPU under the lent H200's software stack
# (Python 3.12, torch 2.11.0, Triton 3.6.0, NumPy 2.5: .ci/device-stack.txt, installed into .venv-device by the
# Makefile, with the CUDA extension built there for sm_90 exactly as gpu-check's build step builds it).
#
# What it runs, each step's verdict in the summary at the end (exit 1 if any failed):
#   info        versions, `python -m convgru_ext info` (the package and its sm_90 extension import)
#   dry-run     .ci/gpu_check.py with GPU_CHECK_DRY_RUN=1: every step gpu-check runs without a GPU
#   trace       tests/trace_triton.py: the Triton ops as a GPU runs them (triton_op, wrap_triton launches),
#               traced over fake CUDA tensors for every dtype, reset mode and call kind
#   compile     every Triton kernel and code path compiled for sm_90 by Triton 3.6 (compile_report --quick),
#               no spill, no pipeline drain inside a main loop
#   tests       the whole CPU test suite (torch backend parity/gradcheck/opcheck/compile, export, the CUDA
#               kernels' CPU emulation against the extension built for torch 2.11, ...)
#
# What it cannot rule out on the GPU: anything the kernels compute there (their results, races, speed), the
# Triton launches themselves (Triton 3.6's interpreter cannot run our kernels under NumPy 2: the backend says
# so and every interpreted Triton test and row is skipped with that reason), CUDA graph capture and replay,
# the driver and the sanitizers.  Those are what `make gpu-check` is for.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv-device/bin/python}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
declare -a SUMMARY
FAILED=0

step() {  # step NAME COMMAND...: run it, its output in $OUT/NAME.log, and record the verdict
  local name="$1"; shift
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$OUT/$name.log"
  local verdict="ok"
  if [ "$rc" -ne 0 ]; then verdict="FAILED (exit $rc)"; FAILED=1; fi
  SUMMARY+=("| $name | $verdict | $((SECONDS - start)) | $(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | tr '|' '/' | cut -c1-160) |")
}

step info bash -c "'$PY' -m convgru_ext info && '$PY' -c \"import platform, numpy, torch, triton, convgru_ext._cuda; \
print(f'python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, numpy \
{numpy.__version__}; the CUDA extension imports')\""
step dry-run env GPU_CHECK_DRY_RUN=1 PYTHON="$PY" OUT="$OUT/gpu-check" bash .ci/gpu-check
step trace env -u TRITON_INTERPRET "$PY" tests/trace_triton.py
step compile env -u TRITON_INTERPRET "$PY" -m convgru_ext.backends.triton.compile_report --arch 90 --quick \
  --max-spill 0
step tests "$PY" -m pytest -n 2 -q -p no:cacheprovider -rs

echo
echo "# device-stack-dry-run ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null))"
echo "| step | verdict | seconds | last line |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${SUMMARY[@]}"
echo "logs in $OUT"
exit $FAILED
