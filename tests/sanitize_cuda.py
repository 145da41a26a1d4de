"""compute-sanitizer memcheck and racecheck over a small forward+backward of backend="cuda".

A plain script (not collected by pytest); ``make gpu-check``'s sanitize step runs::

    python3 tests/sanitize_cuda.py

It runs itself under ``compute-sanitizer --tool memcheck`` and then ``--tool racecheck``
(only the convgru kernels are instrumented), with PyTorch's caching allocator off so that
every tensor is its own allocation and an access past its end is caught.  The child runs
every dtype and math mode (bf16, fp16, TF32, exact fp32, fp64) and both reset modes on two
shapes (odd channels: per-element loads, partial tiles; 16-byte-aligned channels: several
channel tiles and K-chunks), and checks its results against the ``torch`` backend so that a
kernel that silently did nothing would not pass.  It prints a summary and exits non-zero
unless both tools report 0 errors and the child succeeded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

CHILD_FLAG = "--child"
TOOLS = ("memcheck", "racecheck")


def _sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for home in filter(None, homes):
        for sub in ("bin", "compute-sanitizer"):
            path = os.path.join(home, sub, "compute-sanitizer")
            if os.access(path, os.X_OK):
                return path
    return None


def child() -> int:
    """The workload: forward+backward for every math mode, reset mode and shape; results checked."""
    import torch

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))
    from convgru_ext.backends._op import channels_last
    from convgru_ext.backends.cuda import load_extension
    from convgru_ext.testing import rel_err

    reason = load_extension()
    if reason:
        print(f"child: the CUDA extension is unavailable: {reason}")
        return 1
    ops = torch.ops.convgru_ext
    shapes = [dict(T=2, B=2, Cin=3, C=7, H=9, W=11, k=(3, 3), dilation=[1, 1]),
              dict(T=2, B=1, Cin=8, C=72, H=12, W=13, k=(3, 3), dilation=[1, 2])]
    modes = [(torch.bfloat16, False, 5e-2), (torch.float16, False, 1e-2), (torch.float32, True, 5e-3),
             (torch.float32, False, 1e-5), (torch.float64, False, 1e-10)]
    gen = torch.Generator().manual_seed(0)
    failures = 0
    for dtype, tf32, tol in modes:
        torch.backends.cudnn.allow_tf32 = tf32
        for s in shapes:
            for reset_after in (False, True):
                T, B, Cin, C, H, W, (kh, kw) = s["T"], s["B"], s["Cin"], s["C"], s["H"], s["W"], s["k"]

                def rand(*shape, scale=1.0, dtype=dtype):
                    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to("cuda", dtype)

                x, h0 = channels_last(rand(T, B, Cin, H, W)), channels_last(rand(B, C, H, W))
                w_ih = rand(3 * C, Cin, kh, kw, scale=(Cin * kh * kw) ** -0.5)
                w_hh = rand(3 * C, C, kh, kw, scale=(C * kh * kw) ** -0.5)
                b_ih, b_hh = rand(3 * C, scale=0.5), rand(3 * C, scale=0.5)
                grad_out = channels_last(rand(T, B, C, H, W))
                args = (x, h0, w_ih, w_hh, b_ih, b_hh, s["dilation"], reset_after)
                out, gates = ops.cuda_forward(*args)
                grads = ops.cuda_backward(grad_out, x, h0, out, gates, w_ih, w_hh, s["dilation"], reset_after, True)
                torch.cuda.synchronize()
                # against the torch backend, both run in float64 from this run's inputs (not sanitized code)
                args64 = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
                out64, gates64 = ops.torch_forward(*args64)
                grads64 = ops.torch_backward(grad_out.double(), *args64[:2], out64, gates64, *args64[2:4],
                                             s["dilation"], reset_after, True)
                errors = [rel_err(a, b) for a, b in zip((out, gates, *grads), (out64, gates64, *grads64))]
                status = "ok" if max(errors) <= tol else "MISMATCH"
                failures += status != "ok"
                print(f"child: {str(dtype):14} tf32={tf32!s:5} C={C:3} reset_after={reset_after!s:5} "
                      f"max rel err {max(errors):.1e} (tol {tol:.0e}) {status}", flush=True)
    return 1 if failures else 0


def run_tool(sanitizer: str, tool: str) -> dict:
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    cmd = [sanitizer, "--tool", tool, "--kernel-name", "kns=convgru", "--error-exitcode", "97",
           sys.executable, os.path.abspath(__file__), CHILD_FLAG]
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
    child_ok = proc.returncode == 0
    return {"tool": tool, "errors": errors, "detail": detail, "exit": proc.returncode, "seconds": seconds,
            "ok": errors == 0 and child_ok}


def main() -> int:
    if CHILD_FLAG in sys.argv[1:]:
        return child()
    sanitizer = _sanitizer()
    if sanitizer is None:
        print("sanitize_cuda: compute-sanitizer not found (looked on PATH, $CUDA_HOME, /usr/local/cuda)")
        return 1
    import torch

    if not torch.cuda.is_available():
        print("sanitize_cuda: needs a CUDA GPU (none visible to torch)")
        return 1
    results = [run_tool(sanitizer, tool) for tool in TOOLS]
    print("\n| tool | errors | exit status | seconds | verdict |\n| --- | --- | --- | --- | --- |")
    for r in results:
        verdict = "clean" if r["ok"] else "FAILED"
        print(f"| {r['tool']} | {r['detail']} | {r['exit']} | {r['seconds']:.0f} | {verdict} |")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
