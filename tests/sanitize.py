"""compute-sanitizer over small forward+backward calls of the GPU kernel backends.

A plain script (not collected by pytest); ``make gpu-check``'s sanitize step runs::

    python3 tests/sanitize.py

It reruns itself as a child under ``compute-sanitizer``:

* ``backend="cuda"``: ``--tool memcheck`` and ``--tool racecheck``, only the convgru kernels
  instrumented, on one small shape with partial tiles and dilation (``testing.CHECK_SHAPES``'s
  "partial"), as a sequence and as a cell, both reset modes, in every math mode (bf16, fp16, TF32,
  exact fp32, fp64), and the same shape with WIDE_C channels as a sequence in bf16 and TF32 (the
  tensor-core kernels' wide tile, csrc/cuda/gemm.cuh's Tile; fp16 shares bf16's code): every kernel of
  ``csrc/`` in every instantiation;
* ``backend="triton"``: ``--tool memcheck`` on one bfloat16 forward+backward per reset mode.

PyTorch's caching allocator is off in the child, so that every tensor is its own allocation and an
access past its end is caught.  The child checks each result against the reference (the rows of
``python -m convgru_ext check``), so that a kernel that silently did nothing would not pass.  The
script prints a table and exits non-zero unless every run reports 0 errors and its child succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time

CHILD_FLAG = "--child"
#: channels that put every tensor-core kernel on its wide tile (convgru.h's wide_tile), unaligned
WIDE_C = 67
#: (backend, compute-sanitizer tool, kernel-name filter or None)
RUNS = (("cuda", "memcheck", "kns=convgru"), ("cuda", "racecheck", "kns=convgru"), ("triton", "memcheck", None))


def _sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    from convgru_ext._build import DEFAULT_CUDA_HOME

    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), DEFAULT_CUDA_HOME]
    for home in filter(None, homes):
        for sub in ("bin", "compute-sanitizer"):
            path = os.path.join(home, sub, "compute-sanitizer")
            if os.access(path, os.X_OK):
                return path
    return None


def child_checks(backend: str) -> list:
    """The rows of ``check`` that the child runs for ``backend`` (also precompiled by ``make gpu-check``)."""
    import torch

    from convgru_ext.testing import check_plan

    rows = [c for c in check_plan([backend], ["cuda"]) if c.shape == "partial"]
    if backend == "triton":
        rows = [c for c in rows if c.dtype == torch.bfloat16 and c.case.T > 1]
    else:
        rows += [dataclasses.replace(c, shape=f"partial C={WIDE_C}", case=dataclasses.replace(c.case, C=WIDE_C))
                 for c in rows if c.case.T > 1 and (c.dtype == torch.bfloat16 or c.tf32)]
    return rows


def child(backend: str) -> int:
    import torch

    from convgru_ext.testing import exact_float32, run_check, unusable_reason

    reason = unusable_reason(backend, "cuda", torch.float32)
    if reason:
        print(f"child: backend {backend!r} is unusable: {reason}")
        return 1
    gen = torch.Generator().manual_seed(0)
    failures = 0
    with exact_float32():
        for check in child_checks(backend):
            errs = run_check(check, gen)
            torch.cuda.synchronize()
            ok = all(e <= t for e, t in errs.values())
            failures += not ok
            worst = max(errs, key=lambda k: errs[k][0] / errs[k][1])
            print(f"child: {check.label}: {worst} {errs[worst][0]:.1e} (tol {errs[worst][1]:.0e}) "
                  f"{'ok' if ok else 'MISMATCH'}", flush=True)
    return 1 if failures else 0


def run_tool(sanitizer: str, backend: str, tool: str, kernel_filter: str | None) -> dict:
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    cmd = [sanitizer, "--tool", tool, "--error-exitcode", "97"]
    cmd += ["--kernel-name", kernel_filter] if kernel_filter else []
    cmd += [sys.executable, os.path.abspath(__file__), CHILD_FLAG, backend]
    start = time.time()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.time() - start
    output = proc.stdout
    print(output[-6000:] if len(output) > 6000 else output, flush=True)
    if tool == "racecheck":
        m = re.search(r"RACECHECK SUMMARY: (\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)", output)
        errors = int(m.group(2)) if m else None
        detail = f"{m.group(1)} hazards ({m.group(2)} errors, {m.group(3)} warnings)" if m else "no summary line"
    else:
        m = re.search(r"ERROR SUMMARY: (\d+) errors?", output)
        errors = int(m.group(1)) if m else None
        detail = f"{m.group(1)} errors" if m else "no summary line"
    return {"backend": backend, "tool": tool, "errors": errors, "detail": detail, "exit": proc.returncode,
            "seconds": seconds, "ok": errors == 0 and proc.returncode == 0}


def main() -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1:2] == [CHILD_FLAG]:
        return child(sys.argv[2])
    sanitizer = _sanitizer()
    if sanitizer is None:
        print("sanitize: compute-sanitizer not found (looked on PATH, $CUDA_HOME, /usr/local/cuda)")
        return 1
    import torch

    if not torch.cuda.is_available():
        print("sanitize: needs a CUDA GPU (none visible to torch)")
        return 1
    results = [run_tool(sanitizer, *run) for run in RUNS]
    print("\n| backend | tool | errors | exit status | seconds | verdict |\n| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['backend']} | {r['tool']} | {r['detail']} | {r['exit']} | {r['seconds']:.0f} | "
              f"{'clean' if r['ok'] else 'FAILED'} |")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
