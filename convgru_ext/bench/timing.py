"""Timing: warm-up, repeated samples, median and spread; CUDA graphs; the device's measured ceilings.

A *call* is one run of a workload (its forward, or forward and backward) on
one of several input sets, rotated so that consecutive calls never read the
same data.  A *sample* times ``n`` back-to-back calls, with ``n`` chosen after
warm-up so that a sample lasts at least ``min_sample_s``, and divides by
``n``: on a GPU between two CUDA events (so the figure is the GPU timeline,
idle gaps from launch overhead included), on a CPU with ``perf_counter``.
The figure reported is the median over samples; the spread is the
interquartile range; every sample is kept in the results.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

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

    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median."""
        q1, q3 = self.quartiles()
        return (q3 - q1) / self.median if self.median > 0 else math.nan

    def to_dict(self) -> dict:
        q1, q3 = self.quartiles()
        return {"median": self.median, "q1": q1, "q3": q3, "min": min(self.samples), "max": max(self.samples),
                "spread": self.spread, "samples": self.samples, "calls_per_sample": self.calls_per_sample,
                "warmup_calls": self.warmup_calls}


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
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        synchronize(device)
        begin.record()
        for i in range(start, start + n):
            fn(i)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for i in range(start, start + n):
        fn(i)
    synchronize(device)
    return time.perf_counter() - t0


def time_calls(fn: Callable[[int], object], device: torch.device, *, repeats: int, warmup: int,
               min_warmup_s: float, min_sample_s: float, max_calls_per_sample: int = 1000) -> Timing:
    """Time ``fn(i)`` (one call on input set ``i``; the caller rotates sets by ``i``).

    Runs at least ``warmup`` calls and ``min_warmup_s`` seconds of warm-up, then
    ``repeats`` samples of ``n`` calls each, ``n`` chosen so that a sample lasts
    at least ``min_sample_s`` (at most ``max_calls_per_sample``).
    """
    i = 0
    t0 = time.perf_counter()
    while i < max(1, warmup) or time.perf_counter() - t0 < min_warmup_s:
        fn(i)
        i += 1
        if i % 8 == 0:
            synchronize(device)  # keep the clock check honest on a GPU
        if i >= 1000:
            break
    synchronize(device)
    warmup_calls = i
    one = _sample(fn, i, 1, device)
    i += 1
    n = max(1, min(max_calls_per_sample, math.ceil(min_sample_s / max(one, 1e-9))))
    samples = []
    for _ in range(repeats):
        samples.append(_sample(fn, i, n, device) / n)
        i += n
    return Timing(samples=samples, calls_per_sample=n, warmup_calls=warmup_calls)


def time_graph(fn: Callable[[int], object], n_sets: int, device: torch.device, *, repeats: int,
               min_sample_s: float) -> Timing:
    """Capture one call on each of the ``n_sets`` input sets in a CUDA graph and time its replays.

    Follows PyTorch's recipe: warm-up on a side stream, then capture.  Returns
    seconds per call (a replay runs ``n_sets`` calls).
    """
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
    timing = time_calls(lambda _i: graph.replay(), device, repeats=repeats, warmup=3, min_warmup_s=0.05,
                        min_sample_s=min_sample_s)
    return Timing(samples=[s / n_sets for s in timing.samples], calls_per_sample=timing.calls_per_sample * n_sets,
                  warmup_calls=timing.warmup_calls * n_sets)


def _best_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        best = min(best, _sample(lambda _i: fn(), 0, 1, device))
    return best


def measure_ceilings(device: torch.device, dtypes: list[torch.dtype], *, quick: bool = False) -> dict:
    """The device's compute and bandwidth ceilings, measured now.

    * compute, per dtype: a square matmul ``a @ b`` (2 n^3 FLOPs), n doubled from
      256 until one takes long enough to time well (or reaches the size cap);
      float32 on a GPU runs with TF32 allowed exactly when cuDNN's convolutions
      allow it (``_tf32.conv_allows_tf32``), so that fp32 figures are
      held to the ceiling their convolutions actually have;
    * bandwidth: ``dst.copy_(src)`` over a large buffer, counting the bytes read
      plus the bytes written.

    Each ceiling is the best of several runs (a ceiling is what the device can
    do), after warm-up.  Returns ``{"flops": {dtype: {...}}, "bandwidth": {...}}``.
    """
    gpu = device.type == "cuda"
    result: dict = {"flops": {}, "bandwidth": {}}
    min_call_s = 2e-3 if gpu else 2e-2
    n_max = 8192 if gpu else 2048
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in dtypes:
        tf32_used = conv_allows_tf32() if gpu and dtype == torch.float32 else None
        with tf32(tf32_used) if tf32_used is not None else nullcontext():  # matmul TF32 as the convolutions'
            n = 256
            while True:
                a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
                b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
                for _ in range(2 if quick else 3):
                    a @ b
                t = _best_seconds(lambda a=a, b=b: a @ b, device, 3)
                if t >= min_call_s or n >= n_max:
                    break
                n *= 2
            if gpu:  # let the clocks settle at this size before the figure that counts
                for _ in range(20 if quick else 50):
                    a @ b
            t = _best_seconds(lambda a=a, b=b: a @ b, device, 5 if quick else 10)
        entry = {"flops_per_s": 2 * n**3 / t, "matmul_n": n, "seconds": t}
        if tf32_used is not None:
            entry["tf32"] = tf32_used
        result["flops"][str(dtype).removeprefix("torch.")] = entry
        del a, b
    nbytes = (1 << 30) if gpu else (256 << 20)
    if quick:
        nbytes //= 4
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(generator=gen)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    t = _best_seconds(lambda s=src, d=dst: d.copy_(s), device, 5 if quick else 10)
    result["bandwidth"] = {"bytes_per_s": 2 * nbytes / t, "buffer_bytes": nbytes, "seconds": t,
                           "how": "dst.copy_(src), bytes read + written"}
    del src, dst
    return result
