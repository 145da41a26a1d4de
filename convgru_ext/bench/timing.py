"""Timing: warm-up, repeated samples, median and spread; CUDA graphs; saved bytes; the measured ceilings.

A *call* is one run of a workload (its forward, or forward and backward) on one of several input sets, rotated so
that consecutive calls never read the same data.  A *sample* times ``n`` back-to-back calls, ``n`` chosen after
warm-up so that a sample lasts at least ``min_sample_s``, and divides by ``n``: on a GPU between two CUDA events
(the GPU timeline, idle gaps from launch overhead included), on a CPU with ``perf_counter``.  The figure reported
is the median over samples; the spread is the interquartile range; every sample is kept in the results.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Optional

import torch

from .. import backends, convgru_sequence
from .._tf32 import conv_allows_tf32, tf32


@dataclasses.dataclass
class Timing:
    """Seconds per call: one figure per sample of ``calls_per_sample`` calls."""

    samples: list[float]
    calls_per_sample: int
    warmup_calls: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_dict(self) -> dict:
        s = self.samples
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive") if len(s) > 1 else s * 3
        spread = (q3 - q1) / self.median if self.median > 0 else math.nan  # the IQR relative to the median
        return {"median": self.median, "q1": q1, "q3": q3, "min": min(s), "max": max(s), "spread": spread,
                "samples": s, "calls_per_sample": self.calls_per_sample, "warmup_calls": self.warmup_calls}


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for the backward while ``fn()`` runs (its forward), on any
    device (``torch.autograd.graph.saved_tensors_hooks``).  Inputs and parameters count when they are saved."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample(fn: Callable[[int], object], start: int, n: int, device: torch.device) -> float:
    """Seconds for ``n`` calls ``fn(start), fn(start + 1), ...``, the device synchronized around them."""
    gpu = device.type == "cuda"
    if gpu:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        begin.record()
    t0 = time.perf_counter()
    for i in range(start, start + n):
        fn(i)
    if not gpu:
        return time.perf_counter() - t0
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def time_calls(fn: Callable[[int], object], device: torch.device, *, repeats: int, warmup: int,
               min_warmup_s: float, min_sample_s: float, max_calls_per_sample: int = 1000) -> Timing:
    """Time ``fn(i)`` (one call on input set ``i``; the caller rotates sets by ``i``): at least ``warmup`` calls
    and ``min_warmup_s`` seconds of warm-up (at most 1000 calls), then ``repeats`` samples of ``n`` calls each."""
    i, t0 = 0, time.perf_counter()
    while (i < max(1, warmup) or time.perf_counter() - t0 < min_warmup_s) and i < 1000:
        fn(i)
        i += 1
        if i % 8 == 0:
            synchronize(device)  # keep the clock check honest on a GPU
    synchronize(device)
    warmup_calls, one = i, _sample(fn, i, 1, device)
    n = max(1, min(max_calls_per_sample, math.ceil(min_sample_s / max(one, 1e-9))))
    starts = range(i + 1, i + 1 + repeats * n, n)
    return Timing([_sample(fn, j, n, device) / n for j in starts], calls_per_sample=n, warmup_calls=warmup_calls)


def time_graph(fn: Callable[[int], object], n_sets: int, device: torch.device, *, repeats: int,
               min_sample_s: float) -> Timing:
    """One call on each of the ``n_sets`` input sets captured in a CUDA graph (PyTorch's recipe: warm-up on a
    side stream, then capture), its replays timed; seconds per call (a replay runs ``n_sets`` calls)."""
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for i in range(n_sets):
            fn(i)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n_sets):
            fn(i)
    t = time_calls(lambda _i: graph.replay(), device, repeats=repeats, warmup=3, min_warmup_s=0.05,
                   min_sample_s=min_sample_s)
    return Timing([s / n_sets for s in t.samples], t.calls_per_sample * n_sets, t.warmup_calls * n_sets)


def _best_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    return min(_sample(lambda _i: fn(), 0, 1, device) for _ in range(repeats))


def measure_ceilings(device: torch.device, dtypes: list[torch.dtype], *, quick: bool = False) -> dict:
    """The device's compute and bandwidth ceilings, measured now, each the best of several runs after warm-up:

    * compute, per dtype: a square matmul ``a @ b`` (2 n^3 FLOPs), n doubled from 256 until one takes long enough
      to time well (or reaches the size cap); float32 on a GPU allows TF32 exactly when cuDNN's convolutions do
      (``_tf32.conv_allows_tf32``), so that fp32 figures are held to the ceiling their convolutions have;
    * bandwidth: ``dst.copy_(src)`` over a large buffer, counting the bytes read plus the bytes written.

    Returns ``{"flops": {dtype: {...}}, "bandwidth": {...}}``."""
    gpu = device.type == "cuda"
    result: dict = {"flops": {}, "bandwidth": {}}
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in dtypes:
        tf32_used = conv_allows_tf32() if gpu and dtype == torch.float32 else None
        with tf32(tf32_used) if tf32_used is not None else nullcontext():  # matmul TF32 as the convolutions'
            n = 256
            while True:
                a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen) for _ in range(2))
                for _ in range(2 if quick else 3):
                    a @ b
                t = _best_seconds(lambda a=a, b=b: a @ b, device, 3)
                if t >= (2e-3 if gpu else 2e-2) or n >= (8192 if gpu else 2048):
                    break
                n *= 2
            for _ in range((20 if quick else 50) if gpu else 0):  # let the clocks settle at this size
                a @ b
            t = _best_seconds(lambda a=a, b=b: a @ b, device, 5 if quick else 10)
        entry = {"flops_per_s": 2 * n**3 / t, "matmul_n": n, "seconds": t}
        result["flops"][str(dtype).removeprefix("torch.")] = entry if tf32_used is None else dict(entry, tf32=tf32_used)
        del a, b
    nbytes = ((1 << 30) if gpu else (256 << 20)) // (4 if quick else 1)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(generator=gen)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    t = _best_seconds(lambda s=src, d=dst: d.copy_(s), device, 5 if quick else 10)
    result["bandwidth"] = {"bytes_per_s": 2 * nbytes / t, "buffer_bytes": nbytes, "seconds": t,
                           "how": "dst.copy_(src), bytes read + written"}
    return result


def replay_host_us_per_step(dtype: torch.dtype, T: int = 16, calls: int = 20) -> Optional[float]:
    """On a GPU: host microseconds per step of a Triton forward whose loop replays its CUDA graph
    (``backends/triton/graphs.py``): the wall time of ``calls`` calls without synchronizing, over ``calls * T``
    steps, after the calls that compile, time and capture (``graphs.EAGER_CALLS + 1``; whether this small shape
    replays is ``graphs.py``'s rule to decide).  None without a usable Triton backend on CUDA."""
    if not torch.cuda.is_available() or backends.get("triton").unavailable_reason() is not None:
        return None
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
