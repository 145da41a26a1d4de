"""The static cost model of the Triton loops: what one time step asks of the GPU, from the shapes and the
tiles ``ops.tile_for`` picks on a GPU, no GPU needed.  :func:`workload_steps` sums it per step of the
benchmark's workloads (``convgru_ext/bench/catalog.py``), which the benchmark prints next to its timings
and ``compile_report.py`` under the compiled kernels; ``graphs.py`` asks it whether a loop's CUDA graph
pays.

Per step-kernel launch (the kinds and their gates are ``ops.forward_kinds``/``backward_kinds`` and
``ops.GATES``; :data:`EPILOGUE` counts the (pixel, channel) tensors each kind's epilogue reads and writes,
from the table in ``kernels.py``):

* **CTAs** = pixel blocks x channel blocks of the tile, **waves** = CTAs / SMs (:func:`ops.sm_count`);
* **FLOPs** = 2 * M * taps * K * (gates x C), K the reduced channels (:func:`reduced`);
* **L2 bytes**: every CTA reads the B tile of its gates once per tap (K x gates x BN), and its A tile
  once per tap (BM x K, the shifted pixels), except where its A copies allocate in L1
  (:func:`ops.l1_taps`, given the frame: ``kernel``, ``width``, ``dilation``): then the L2 serves each
  pixel of the span the taps' shifted rows cover once per CTA (:func:`l1_span`), and the epilogue's
  re-read of the kernel's own A at the centre tap (:data:`REREAD`) hits L1 too; the epilogue reads and
  writes its other (pixel, channel) tensors once.  The L1 credit assumes that L1 holds a CTA's span
  (K channels of it) from its first tap to its epilogue, and gives nothing for CTAs that share a span;
* **GPU µs** (an estimate, never measured): max(FLOPs at :data:`PEAK_FLOPS`, L2 bytes at
  :data:`BYTES_PER_S`) per launch, summed over a step's launches;
* **bound**: the same with the launch's **minimal bytes** instead of its L2 bytes (A, the weights and the
  epilogue's tensors read or written once each, as if every reuse hit on chip): the least these kernels
  could cost under any tiling.

The ceilings are the H200's data-sheet figures (dense tensor-core FLOP/s, HBM bytes/s), not measurements.
The L2 bytes are charged at HBM's rate: an over-estimate of the GPU time (the L2 is faster), so a rule
"graphs where the host time exceeds this" errs towards no graph.
"""

from __future__ import annotations

import functools
import time

import torch

from .._math import Math
from . import kernels as K

#: dense FLOP/s per math mode: the H200 data sheet (float32 and float64 on the CUDA cores / FP64 tensor cores)
PEAK_FLOPS = {Math.BF16: 989e12, Math.F16: 989e12, Math.TF32: 494e12, Math.F32: 67e12, Math.F64: 67e12}
#: bytes/s: the H200's HBM3e (data sheet), charged for the L2 traffic too (see the module docstring)
BYTES_PER_S = 4.8e12

#: (pixel, channel) tensors of C channels each kind's epilogue reads and writes (the table in ``kernels.py``);
#: keyed by (KIND, cell call: x convolved in the kernel, no gx), each: h, gx gates, gates read/written, outputs
EPILOGUE = {
    (K.FWD_RZ.value, False): 1 + 2 + 2 + 1, (K.FWD_RZ.value, True): 1 + 2 + 1,
    (K.FWD_N.value, False): 1 + 1 + 1 + 2, (K.FWD_N.value, True): 1 + 1 + 2,
    (K.FWD_AFTER.value, False): 1 + 3 + 4 + 1, (K.FWD_AFTER.value, True): 1 + 4 + 1,
    (K.BWD_N.value, False): 3 + 3 + 2, (K.BWD_RZ.value, False): 1 + 1 + 3 + 1 + 2 + 2,
    (K.BWD_AFTER.value, False): 2 + 2 + 1 + 4 + 1 + 4,
}
#: of those, the reads that are the kernel's own A operand at the centre tap's pixels and channels (FWD_RZ's h,
#: an ordinary cached load in its epilogue): L1 hits where A's copies allocate in L1
REREAD = {K.FWD_RZ.value: 1}
NAMES = {K.FWD_RZ.value: "FWD_RZ", K.FWD_N.value: "FWD_N", K.FWD_AFTER.value: "FWD_AFTER",
         K.BWD_N.value: "BWD_N", K.BWD_RZ.value: "BWD_RZ", K.BWD_AFTER.value: "BWD_AFTER"}


def reduced(kind: int, C: int, Cin: int, cell: bool) -> int:
    """The channels one tap of ``kind`` reduces over."""
    if kind in (K.FWD_RZ.value, K.FWD_N.value, K.FWD_AFTER.value):
        return C + (Cin if cell else 0)
    return {K.BWD_N.value: C, K.BWD_RZ.value: 2 * C, K.BWD_AFTER.value: 3 * C}[kind]


def l1_span(block_m: int, kernel: tuple[int, int], width: int, dilation: tuple[int, int]) -> int:
    """The pixels a block of ``block_m`` consecutive pixels' shifted rows cover, over every tap of ``kernel``
    in a frame ``width`` pixels wide: each kernel row's taps cover ``block_m + (kw - 1) * dil_w`` pixels,
    and the next kernel row's start ``dil_h * width`` pixels further on (overlapping where that is less)."""
    (kh, kw), (dil_h, dil_w) = kernel, dilation
    row = block_m + (kw - 1) * dil_w
    return row + (kh - 1) * min(dil_h * width, row)


def launch_us(flops: float, byte_count: float, math: str) -> float:
    """A launch's estimated microseconds by the rule of the module docstring (any launch: the estimates of
    the eager peer's and of a sequence's input projection use it too)."""
    return 1e6 * max(flops / PEAK_FLOPS[Math(math)], byte_count / BYTES_PER_S)


def launches(math: str, element_size: int, M: int, C: int, Cin: int, taps: int, cell: bool, reset_after: bool,
             backward: bool = False, sms: int = 0, *, kernel: tuple[int, int] = (), width: int = 0,
             dilation: tuple[int, int] = (1, 1)) -> list[dict]:
    """The model of one step's launches: the forward loop's, or with ``backward`` the backward loop's.
    ``sms``: the GPU's SMs (0: :func:`ops.sm_count`'s).  ``kernel`` (kh, kw), ``width`` (W) and ``dilation``:
    the frame, which the L1 credit needs (without it, none is given)."""
    from . import ops

    sms = sms or ops.sm_count()
    kinds = ops.backward_kinds(reset_after) if backward else ops.forward_kinds(reset_after)
    aligned = C % 16 == 0 and (backward or not cell or Cin % 16 == 0)
    rows = []
    for kind in kinds:
        ng, k_red = ops.GATES[kind], reduced(kind, C, Cin, cell)
        tile = ops.tile_for(math, ng, M, C, aligned, sms, gpu=True)
        bm, bn, bk, stages, warps = tile
        ctas = -(-M // bm) * -(-C // bn)
        reads = EPILOGUE[kind, cell and not backward]
        a_pixels = taps * bm  # per CTA and reduced channel
        if kernel and width and ops.l1_taps(kind, tile):
            a_pixels = min(a_pixels, l1_span(bm, kernel, width, dilation))
            reads -= REREAD.get(kind, 0)
        epilogue = M * reads * C
        l2 = (ctas * (a_pixels * k_red + taps * k_red * ng * bn) + epilogue) * element_size
        once = (M * k_red + taps * k_red * ng * C + M * (EPILOGUE[kind, cell and not backward] - REREAD.get(kind, 0))
                * C) * element_size  # A, the weights and the epilogue's other tensors once each
        flops = 2 * M * taps * k_red * ng * C
        rows.append({"kernel": NAMES[kind], "tile": f"{bm}x{bn}x{bk}/s{stages}/w{warps}", "ctas": ctas,
                     "waves": ctas / sms, "flops": flops, "l2_bytes": l2, "min_bytes": once,
                     "gpu_us": launch_us(flops, l2, math), "gpu_us_bound": launch_us(flops, once, math)})
    return rows


def cell_call(workload) -> bool:
    """Whether a benchmark workload's calls are cell calls (T = 1 per call: x convolved in the step kernels), not
    a sequence's loop over its projected inputs (one convolution of every frame before the loop)."""
    return workload.api in ("cell", "sep", "stream")


def workload_launches(workload, math: str, element_size: int, backward: bool = False, sms: int = 0) -> list[dict]:
    """:func:`launches` of one call's steps of a benchmark workload (``convgru_ext/bench/catalog.py``), frame
    included: the rows of each of its cells (two for ``sep``), in order."""
    wl = workload
    return [r for kh, kw in wl.cells
            for r in launches(math, element_size, wl.B * wl.H * wl.W, wl.C, wl.Cin, kh * kw, cell_call(wl),
                              wl.reset == "after", backward, sms, kernel=(kh, kw), width=wl.W, dilation=wl.dilation)]


def gpu_us_per_step(rows: list[dict]) -> float:
    """The model's GPU microseconds of one step whose launches are ``rows`` (:func:`launches`)."""
    return sum(r["gpu_us"] for r in rows)


# -- one step of the benchmark's workloads: what ``bench`` and ``compile_report.py`` print ----------------------


def eager_launches(workload, kernel: tuple[int, int]) -> list[tuple[str, int, int]]:
    """``(op, FLOPs, elements read + written)`` of each launch of the eager peer's forward step of one cell with
    ``kernel`` (``bench/impls.py``'s ``PublicConvGRUCell``, op by op; a ``sequence`` also copies each state into
    the stacked output)."""
    wl = workload
    M, C, X, k = wl.B * wl.H * wl.W, wl.C, wl.Cin + wl.C, kernel[0] * kernel[1]
    ops = [("cat([x, h])", 0, 2 * X * M), ("conv_gates", 2 * M * k * 2 * C * X, X * M + 2 * C * (X * k + 1 + M)),
           ("sigmoid", 0, 4 * C * M), ("r * h", 0, 3 * C * M), ("cat([x, r * h])", 0, 2 * X * M),
           ("conv_can", 2 * M * k * C * X, X * M + C * (X * k + 1 + M)), ("tanh", 0, 2 * C * M),
           ("1 - z", 0, 2 * C * M), ("(1 - z) * h", 0, 3 * C * M), ("z * n", 0, 3 * C * M), ("+", 0, 3 * C * M)]
    return ops + ([("stack", 0, 2 * C * M)] if wl.api == "sequence" else [])


@functools.cache
def host_us_per_launch(reset: str = "before", repeats: int = 200) -> float:
    """Microseconds of our forward loop's Python per step-kernel launch, on meta tensors with Triton's
    launcher stubbed out (measured on this machine, once per process: it depends on no dtype)."""
    from . import ops

    T, B, C, H, W = 8, 1, 32, 16, 16
    meta = torch.device("meta")
    x = torch.empty(T, B, C, H, W, device=meta).to(memory_format=torch.channels_last_3d)
    gx = torch.empty(T, B, 3 * C, H, W, device=meta)
    h0 = torch.empty(B, C, H, W, device=meta)
    w = torch.empty(3 * C, C, 3, 3, device=meta)
    launched = [0]

    class Stub:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                launched[0] += 1
            return run

    with ops.configured(launcher=lambda kernel: Stub()):  # counts the launches, runs none
        ops.forward_loop(x, gx, h0, w, w, None, None, [1, 1], reset == "after")  # warm-up
        launched[0] = 0
        start = time.perf_counter()
        for _ in range(repeats // T):
            ops.forward_loop(x, gx, h0, w, w, None, None, [1, 1], reset == "after")
        elapsed = time.perf_counter() - start
    return 1e6 * elapsed / max(launched[0], 1)


def workload_steps(workloads, dtype: torch.dtype) -> list[dict]:
    """One step of each benchmark workload, per pass it has: the launches (:func:`workload_launches`) and their
    sums per step, with the **HBM bytes** (minimal: the step's share of ``Workload.min_bytes``), the model's
    **bound**, and for the forward a sequence's input **projection** (one convolution of every frame before the
    loop: its share of one step) and the **eager** peer's step (:func:`eager_launches`, each op charged only
    its compulsory bytes: nothing stays on chip between eager launches), both by :func:`launch_us`.  The eager
    figure is a bound: compare it with ours' bound.  ``host_us_per_launch`` is measured here
    (:func:`host_us_per_launch`: our loop's Python only; Triton's own launch path, about as much again or
    more, cannot run without a GPU)."""
    from . import ops

    e = torch.empty(0, dtype=dtype).element_size()
    with torch.device("cpu"):
        math = ops.math_mode(dtype)
    host = {r: host_us_per_launch(r) for r in ("before", "after")}
    out = []
    for wl, pass_ in ((w, p) for w in workloads for p in w.passes):
        rows = [r for backward in (False, True)[:1 + (pass_ == "fwd+bwd")]
                for r in workload_launches(wl, math, e, backward)]
        per_step, fwd, M = len(wl.cells), pass_ == "fwd", wl.B * wl.H * wl.W
        projection = sum(launch_us(2 * M * kh * kw * 3 * wl.C * wl.Cin, M * (wl.Cin + 3 * wl.C) * e, math)
                         for kh, kw in wl.cells) if fwd and not cell_call(wl) else 0.0
        eager = sum(launch_us(f, n * e, math) for kernel in wl.cells for _, f, n in eager_launches(wl, kernel)) \
            if fwd and wl.reset == "before" else None  # the eager peer computes reset "before" only
        out.append({"workload": wl.name, "pass": pass_, "dtype": str(dtype).replace("torch.", ""),
                    "launches_per_step": len(rows) // per_step, "host_us_per_launch": host[wl.reset],
                    "flops_per_step": sum(r["flops"] for r in rows) / per_step,
                    "min_hbm_bytes_per_step": wl.min_bytes(pass_, e) / (wl.T * per_step),
                    "l2_bytes_per_step": sum(r["l2_bytes"] for r in rows) / per_step,
                    "gpu_us_per_step": gpu_us_per_step(rows) / per_step,
                    "bound_us_per_step": sum(r["gpu_us_bound"] for r in rows) / per_step,
                    "projection_us_per_step": projection / per_step if fwd else None,
                    "eager_us_per_step": None if eager is None else eager / per_step,
                    "ctas": max(r["ctas"] for r in rows), "waves": max(r["waves"] for r in rows), "kernels": rows})
    return out
