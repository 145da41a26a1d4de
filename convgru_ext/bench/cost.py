"""The FLOP and byte counts of a workload, and the roofline: the only place they are defined.

FLOPs (multiply and add counted separately; elementwise gate math ignored), the same for both reset modes::

    forward, per cell step  = 2 * B * H * W * kh * kw * 3C * (Cin + C)
    forward + backward      = 3 * forward   (the backward counted as twice the forward: data and weight gradients)

A call runs ``steps`` cell steps of each of its cells: T for ``sequence`` and ``stream``, 1 for ``cell``, and one
step of each of the 1x5 and 5x1 cells for ``sep``.

Minimal bytes: the compulsory memory traffic of one call of the API in isolation, in the benchmarked dtype, with
every intermediate (gates, the input projection, the states between steps) assumed to stay on chip; a lower bound
no real implementation reaches.  Per API call of one cell over T steps (``stream`` is T calls with T = 1, ``sep``
two calls)::

    forward:  read x (T*B*Cin*H*W), h0 (B*C*H*W), weights (3C*(Cin+C)*kh*kw) and biases (6C),
              write the states it returns (T*B*C*H*W)
    backward: read the output gradient, x, h0, the states and the weights again,
              write dx, dh0 and the weight and bias gradients

The roofline: ``t_roof = max(FLOPs / peak FLOP/s, bytes / peak bytes/s)``, ``% of roofline = 100 * t_roof /
measured time``, with the ceilings measured in the same run (``timing.measure_ceilings``).
"""

from __future__ import annotations

from .catalog import Workload

PASSES = ("fwd", "fwd+bwd")


def _check_pass(pass_: str) -> None:
    if pass_ not in PASSES:
        raise ValueError(f"`pass` must be one of {PASSES}; got {pass_!r}")


def forward_flops_per_step(B: int, H: int, W: int, kh: int, kw: int, Cin: int, C: int) -> int:
    """2 * B * H * W * kh * kw * 3C * (Cin + C): the convolutions of one forward cell step."""
    return 2 * B * H * W * kh * kw * 3 * C * (Cin + C)


def flops(wl: Workload, pass_: str) -> int:
    """FLOPs of one call of ``wl`` in ``pass_`` ("fwd" or "fwd+bwd")."""
    _check_pass(pass_)
    fwd = sum(wl.steps * forward_flops_per_step(wl.B, wl.H, wl.W, kh, kw, wl.Cin, wl.C) for kh, kw in wl.cells)
    return fwd if pass_ == "fwd" else 3 * fwd


def min_bytes(wl: Workload, pass_: str, element_size: int) -> int:
    """Minimal bytes of one call of ``wl`` in ``pass_`` with ``element_size``-byte elements."""
    _check_pass(pass_)
    calls, T = (wl.T, 1) if wl.api == "stream" else (1, wl.T)  # a stream: T calls of one step each
    x, h, out = T * wl.B * wl.Cin * wl.H * wl.W, wl.B * wl.C * wl.H * wl.W, T * wl.B * wl.C * wl.H * wl.W
    total = 0
    for kh, kw in wl.cells:
        weights = 3 * wl.C * (wl.Cin + wl.C) * kh * kw + 6 * wl.C
        fwd = x + h + weights + out
        bwd = out + x + h + out + weights + x + h + weights  # read grad_out, x, h0, states, weights; write grads
        total += calls * (fwd if pass_ == "fwd" else fwd + bwd)
    return total * element_size


def roofline(flop_count: float, byte_count: float, peak_flops: float, peak_bytes_per_s: float) -> tuple[float, str]:
    """``(t_roof, bound)``: the least time both ceilings allow, and which one binds ("compute" or "memory")."""
    t_compute, t_memory = flop_count / peak_flops, byte_count / peak_bytes_per_s
    return (t_compute, "compute") if t_compute >= t_memory else (t_memory, "memory")
