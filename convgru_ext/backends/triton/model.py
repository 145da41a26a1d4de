"""The static cost model of the Triton loops: what one time step asks of the GPU, from the shapes and the
tiles ``ops.tile_for`` picks on a GPU, no GPU needed.  ``convgru_ext/bench/plan.py`` sums it per step
of the benchmark's workloads (:func:`workload_launches`: a workload's steps, frame included), which the
benchmark prints next to its timings and ``compile_report.py`` under the compiled kernels; ``graphs.py``
asks it whether a loop's CUDA graph pays.

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
    """A launch's estimated microseconds by the rule of the module docstring (any launch: ``bench/plan.py``'s
    estimates of the eager peer's use it too)."""
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
