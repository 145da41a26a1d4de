"""The static cost model of the Triton backend's launches for the benchmark's workloads: the model itself
(CTAs, waves, FLOPs, L2 bytes and estimated GPU µs per launch) is ``backends/triton/model.py``; this adds,
per workload and pass, the **HBM bytes** (minimal: the step's share of ``Workload.min_bytes``, inputs read and
outputs written once) and the host figures below.

Per step it also gives the model's **bound** (each launch charged its minimal bytes instead of its L2 traffic),
and for the forward, by the model's rule per launch (``model.launch_us``), a sequence's input **projection** (one
convolution of every frame before the loop: its share of one step) and the **eager** peer's step
(:func:`eager_launches`: ``impls.PublicConvGRUCell`` op by op, each op charged only its compulsory bytes, its
inputs read and its output written once through HBM; nothing stays on chip between eager launches).  The eager
figure is a bound, so compare it with ours' bound; our estimate charges the L2 traffic of our tiles.

``launches/step`` counts the step kernels; ``host µs/launch`` is measured here, on this machine: the
Python of our loop per launch with Triton's launcher stubbed out (Triton's own launch path, about as
much again or more, cannot run without a GPU and is not in the figure).  On a GPU, ``replay host
µs/step`` is measured too: the host time per step of a forward whose loop replays its CUDA graph
(the target is 5 µs).  ``bench`` prints the model next to the measured times on a GPU and alone on
the CPU.
"""

from __future__ import annotations

import functools
import time
from typing import Optional

import torch

from .catalog import Workload


def _ops():
    try:
        from ..backends.triton import ops
    except Exception:  # noqa: BLE001 -- no Triton: no model
        return None
    return ops


@functools.cache
def host_us_per_launch(reset: str = "before", repeats: int = 200) -> Optional[float]:
    """Microseconds of our forward loop's Python per step-kernel launch, on meta tensors with Triton's
    launcher stubbed out (measured on this machine, once per process: it depends on no dtype)."""
    ops = _ops()
    if ops is None:
        return None
    T, B, C, H, W = 8, 1, 32, 16, 16
    meta = torch.device("meta")
    x = torch.empty(T, B, C, H, W, device=meta).to(memory_format=torch.channels_last_3d)
    gx = torch.empty(T, B, 3 * C, H, W, device=meta)
    h0 = torch.empty(B, C, H, W, device=meta)
    w = torch.empty(3 * C, C, 3, 3, device=meta)
    launches = [0]

    class Stub:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                launches[0] += 1
            return run

    with ops.configured(launcher=lambda kernel: Stub()):  # counts the launches, runs none
        ops.forward_loop(x, gx, h0, w, w, None, None, [1, 1], reset == "after")  # warm-up
        launches[0] = 0
        start = time.perf_counter()
        for _ in range(repeats // T):
            ops.forward_loop(x, gx, h0, w, w, None, None, [1, 1], reset == "after")
        elapsed = time.perf_counter() - start
    return 1e6 * elapsed / max(launches[0], 1)


def replay_host_us_per_step(dtype: torch.dtype, T: int = 16, calls: int = 20) -> Optional[float]:
    """On a GPU: host microseconds per step of a Triton forward whose loop replays its CUDA graph
    (``triton/graphs.py``): the wall time of ``calls`` calls without synchronizing, over ``calls * T``
    steps, after the calls that compile, time and capture (``graphs.EAGER_CALLS + 1``; whether this small shape
    replays is the rule of ``graphs.py``'s to decide).  None without a usable Triton backend on CUDA."""
    from ..backends import get

    if not torch.cuda.is_available() or get("triton").unavailable_reason() is not None:
        return None
    from .. import convgru_sequence
    from ..backends.triton import graphs

    g = torch.Generator(device="cuda").manual_seed(0)
    C = 32
    x = torch.randn(T, 1, C, 16, 16, device="cuda", generator=g).to(dtype)
    w_ih, w_hh = [(0.1 * torch.randn(3 * C, C, 3, 3, device="cuda", generator=g)).to(dtype) for _ in range(2)]
    with torch.no_grad():
        for _ in range(graphs.EAGER_CALLS + 1):
            convgru_sequence(x, None, w_ih, w_hh, backend="triton")
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            convgru_sequence(x, None, w_ih, w_hh, backend="triton")
        elapsed = time.perf_counter() - start
        torch.cuda.synchronize()
    return 1e6 * elapsed / (calls * T)


def eager_launches(wl: Workload, kernel: tuple[int, int]) -> list[tuple[str, int, int]]:
    """``(op, FLOPs, elements read + written)`` of each launch of the eager peer's forward step of one cell with
    ``kernel`` (``impls.PublicConvGRUCell``; a ``sequence`` also copies each state into the stacked output)."""
    M, C, X, k = wl.B * wl.H * wl.W, wl.C, wl.Cin + wl.C, kernel[0] * kernel[1]
    ops = [("cat([x, h])", 0, 2 * X * M), ("conv_gates", 2 * M * k * 2 * C * X, X * M + 2 * C * (X * k + 1 + M)),
           ("sigmoid", 0, 4 * C * M), ("r * h", 0, 3 * C * M), ("cat([x, r * h])", 0, 2 * X * M),
           ("conv_can", 2 * M * k * C * X, X * M + C * (X * k + 1 + M)), ("tanh", 0, 2 * C * M),
           ("1 - z", 0, 2 * C * M), ("(1 - z) * h", 0, 3 * C * M), ("z * n", 0, 3 * C * M), ("+", 0, 3 * C * M)]
    return ops + ([("stack", 0, 2 * C * M)] if wl.api == "sequence" else [])


def model(workloads: list[Workload], dtype: torch.dtype) -> list[dict]:
    """The static cost model of one step of each workload (both passes where it has a backward)."""
    ops = _ops()
    if ops is None:
        return []
    from ..backends.triton import model as cost

    e = torch.empty(0, dtype=dtype).element_size()
    with torch.device("cpu"):
        math = ops.math_mode(dtype)
    host = {r: host_us_per_launch(r) for r in ("before", "after")}
    replay = replay_host_us_per_step(dtype)
    out = []
    for wl, pass_ in ((w, p) for w in workloads for p in w.passes):
        rows = [r for backward in (False, True)[:1 + (pass_ == "fwd+bwd")]
                for r in cost.workload_launches(wl, math, e, backward)]
        per_step, fwd, M = len(wl.cells), pass_ == "fwd", wl.B * wl.H * wl.W
        projection = sum(cost.launch_us(2 * M * kh * kw * 3 * wl.C * wl.Cin, M * (wl.Cin + 3 * wl.C) * e, math)
                         for kh, kw in wl.cells) if fwd and not cost.cell_call(wl) else 0.0
        eager = sum(cost.launch_us(f, n * e, math) for kernel in wl.cells for _, f, n in eager_launches(wl, kernel)) \
            if fwd and wl.reset == "before" else None  # the eager peer computes reset "before" only
        out.append({"workload": wl.name, "pass": pass_, "dtype": str(dtype).replace("torch.", ""),
                    "launches_per_step": len(rows) // per_step, "host_us_per_launch": host[wl.reset],
                    "replay_host_us_per_step": replay,
                    "flops_per_step": sum(r["flops"] for r in rows) / per_step,
                    "min_hbm_bytes_per_step": wl.min_bytes(pass_, e) / (wl.T * per_step),
                    "l2_bytes_per_step": sum(r["l2_bytes"] for r in rows) / per_step,
                    "gpu_us_per_step": sum(r["gpu_us"] for r in rows) / per_step,
                    "bound_us_per_step": sum(r["gpu_us_bound"] for r in rows) / per_step,
                    "projection_us_per_step": projection / per_step if fwd else None,
                    "eager_us_per_step": None if eager is None else eager / per_step,
                    "ctas": max(r["ctas"] for r in rows), "waves": max(r["waves"] for r in rows), "kernels": rows})
    return out
