"""The Triton backend's time loops: configurations → weight packing → the launch of one step kernel → the
forward and backward loops → the op pair (``_op.define_op_pair`` composes the projection and the weight
gradients around the loops).  The kernels, and the table of what each computes, are in ``kernels.py``;
the CUDA-graph replay of a whole loop is in ``graphs.py``.

Forward, per step: reset "before" launches FWD_RZ then FWD_N, reset "after" launches FWD_AFTER; in a
sequence their epilogues read the hoisted projection; in a cell call (T == 1, RAFT-style: ``x``
changes every call, so nothing is hoisted) the same kernels convolve ``x_t`` and ``h`` together (K
spans both), so a cell step is 2 launches ("before") or 1 ("after") and nothing else.

Backward: BWD_INIT, then per step in reverse BWD_N + BWD_RZ ("before") or BWD_AFTER ("after"); the
running state gradient lives in two float32 (float64) (M, C) buffers that the kernels read from one
and write to the other, so that no launch reads what it writes (autotuning can replay any launch).

Saved for the backward (the op contract): ``gates`` in the input dtype.  Storing r, z, n (and
U_n*h+b_hn) rather than float32 copies costs bfloat16's 8 bits of mantissa on values in [-1, 1] that
enter the gradient linearly; the forward rounds them before using them, so the backward is the exact
derivative of what was computed, and the low-precision GPU tests hold the result to PyTorch's own
bfloat16 error (tests/test_gpu_kernels.py).

Precision: float16/bfloat16 multiply on tensor cores and accumulate in float32; float32 uses TF32
tensor cores exactly when a float32 convolution may (``_tf32.conv_allows_tf32``, read at each call),
exact IEEE float32 otherwise; float64 accumulates in float64.

Configurations: no autotuning by default.  :func:`tile_for` picks each launch's tile from its math
mode, its number of gates and its shape bucket, deterministically; every tile it can return is in
:func:`kept_tiles`, which ``compile_report`` compiles for sm_90 (the committed report under
``benchmarks/results/compile/`` holds them to 0 spills on Triton 3.6 and 3.8).
``CONVGRU_TRITON_AUTOTUNE=1`` times at most 3 candidates per launch key (M bucketed to a power of 2).
Every switch is a field of ``config.CONFIG``, set through ``config.configured``.

Registration: with a GPU, ``torch.library.triton_op`` (torch.compile sees the kernels through
``wrap_triton``); under ``TRITON_INTERPRET=1`` an opaque ``custom_op``, because Inductor cannot compile
interpreted kernels.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Optional

import torch
import triton
from torch import Tensor

from .._layout import empty_channels_last
from .._math import Math, math_mode
from .._op import define_op_pair, gates_per_channel
from . import graphs
from . import kernels as K
from .config import CONFIG, configured

#: kernels run on the CPU through Triton's interpreter (fixed when this module is imported)
INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"
_INTERPRETER_PROBE: list[Optional[str]] = []


def interpreter_problem() -> Optional[str]:
    """Why Triton's interpreter cannot run these kernels in this process, or None (always None when the
    kernels are compiled).  Probed once, with a loop whose bound is a runtime argument, as every step
    kernel's K loop: Triton 3.6's interpreter (the lent GPU's Triton) fails on any such loop under NumPy 2
    ("only 0-dimensional arrays can be converted to Python scalars"); 3.8's runs it."""
    if not INTERPRET:
        return None
    if not _INTERPRETER_PROBE:
        x = torch.full((3,), -1.0)
        try:
            K.interpreter_probe_kernel[(1,)](x, 3)
            problem = None if x.tolist() == [0.0, 1.0, 2.0] else f"it computed {x.tolist()} for [0, 1, 2]"
        except Exception as error:  # the interpreter's own failure, whatever its type
            problem = f"{type(error).__name__}: {error}"
        _INTERPRETER_PROBE.append(None if problem is None else (
            f"Triton {triton.__version__}'s interpreter cannot run a loop with a runtime bound here "
            f"(NumPy {np_version()}): {problem}"))
    return _INTERPRETER_PROBE[0]


def np_version() -> str:
    try:
        import numpy
    except ImportError:
        return "not installed"
    return numpy.__version__

# ------------------------------------------------------------------------------ configurations

#: ``num_warps`` of the default tiles (one warpgroup: wgmma's M = 64 per program row block)
NUM_WARPS = 4
#: ``num_warps`` of the wide tiles: two warpgroups, BLOCK_M = 128, so that every pixel block re-reads
#: the weights half as often.  pytorch/pytorch#173068 saw Triton miscompile a flattened tap loop at
#: 8 warps; these tiles compile cleanly (the compile report) but stay off until a GPU has run each
#: against the reference: CONVGRU_TRITON_8_WARPS=1 (``CONFIG.wide``) turns them on, ``make gpu-check``'s
#: tests force each of them (tests/test_triton.py::test_gpu_every_tile_we_keep).
WIDE_WARPS = 8
#: FWD_RZ's BLOCK_M at 4 warps where the mode has the tile (``MathTiles.rz_tile``, :func:`tile_for`): one
#: warpgroup of 128 pixels, the weights read half as often per pixel, A's taps served by L1 (:func:`l1_taps`)
RZ_M = 128


class MathTiles:
    """The tiles of one math mode: BLOCK_M, BLOCK_K, stages, the widest BLOCK_N (channels of each gate
    per program) for 1, 2 and 3 gates in a program, whether autotuning may add a stage, the BLOCK_M of
    the 8-warp tiles (0: none) with their widest BLOCK_N for 1, 2 and 3 gates, the BLOCK_K of
    channel counts that are not multiples of BLOCK_K (``narrow_k``; 0: BLOCK_K), and whether FWD_RZ has
    a :data:`RZ_M`-pixel 4-warp tile (``rz_tile``; :func:`tile_for` says where it is used)."""

    def __init__(self, block_m: int, block_k: int, stages: int, widest: tuple[int, int, int], tuned: bool,
                 wide_m: int = 0, wide_widest: tuple[int, int, int] = (0, 0, 0), narrow_k: int = 0,
                 rz_tile: bool = False):
        self.block_m, self.block_k, self.stages, self.widest = block_m, block_k, stages, widest
        self.tuned, self.wide_m, self.wide_widest = tuned, wide_m, wide_widest
        self.narrow_k = narrow_k or block_k
        self.rz_tile = rz_tile

    def k_for(self, C: int, aligned: bool) -> int:
        """BLOCK_K for ``C`` channels: the wide one where it divides C (no padded chunk), else the narrow one."""
        return self.block_k if aligned and C % self.block_k == 0 else self.narrow_k

    def ks(self, aligned: bool) -> tuple[int, ...]:
        return tuple(sorted({self.block_k, self.narrow_k})) if aligned else (self.narrow_k,)


#: per math mode (``_math.Math``).  f16, bf16 and tf32 run tl.dot on wgmma; f32 and f64 on the CUDA
#: cores, where tiles stay small.  The bounds come from the compile report (sm_90):
#: the epilogue holds the accumulators and 2-3 loaded (pixel, channel) tensors in the MMA layout at
#: once, so a program of 4 warps spills beyond 64 x 64 outputs per gate (64 x 128 and 128 x 64 spill
#: 32 B in FWD_N; TF32 spills at 3 gates x 64 channels); 8 warps hold 128 x 64 (TF32 with 3 gates:
#: 128 x 32, since Triton 3.6 spills 24 B at 128 x 64 where 3.8 does not).  float16/bfloat16 reduce 64
#: channels per iteration where C is a multiple of 64 (fewer main-loop instructions per HGMMA than
#: with 32: the compile report), 32 otherwise (a chunk of 64 would be partly padding).  FWD_RZ's
#: 128 x 64 tile at 4 warps (``rz_tile``) holds 0 spills in bfloat16 alone, at 3 stages alone (float16
#: spills 8 B on Triton 3.6, 4 stages 8 B in a cell call on 3.8), with C a constant (``l1_taps``).
_HALF = dict(block_m=64, block_k=64, stages=3, widest=(64, 64, 64), tuned=True, wide_m=128, wide_widest=(64, 64, 64),
             narrow_k=32)
MATHS = {
    Math.F16: MathTiles(**_HALF),
    Math.BF16: MathTiles(**_HALF, rz_tile=True),
    Math.TF32: MathTiles(64, 32, 3, (64, 64, 32), tuned=True, wide_m=128, wide_widest=(64, 64, 32)),
    Math.F32: MathTiles(32, 16, 2, (32, 32, 32), tuned=False),
    Math.F64: MathTiles(16, 8, 2, (32, 16, 16), tuned=False),
}


def dot_precision(math: str) -> str:
    """tl.dot's ``input_precision`` in math mode ``math`` (float16/bfloat16 operands ignore it)."""
    return "tf32" if Math(math).tensor_cores else "ieee"


#: the widest BLOCK_N for channel counts that are not multiples of 16
UNALIGNED_WIDEST = 32
#: the BLOCK_M under the interpreter (no GPU: fewer, larger programs run faster there)
INTERPRET_BLOCK_M = 256
#: the SMs counted where no CUDA device is visible (the cost model on a CPU): the H200's, this project's GPU;
#: on a GPU, :func:`sm_count` asks the device
DEFAULT_SMS = 132


Tile = tuple[int, int, int, int, int]  # (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps)


def _cdiv(a: int, b: int) -> int:  # host arithmetic (triton.cdiv is a jit function: slow on the host)
    return -(-a // b)


def _pow2(n: int) -> int:
    """The least power of 2 >= n (n >= 1)."""
    return 1 << (n - 1).bit_length()


@functools.cache
def _device_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: Optional[torch.device] = None) -> int:
    """The SMs of CUDA ``device`` (None: the current one), or :data:`DEFAULT_SMS` where no CUDA device is
    visible (a CPU tensor, or a fake CUDA tensor traced without a GPU)."""
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return DEFAULT_SMS
    return _device_sms(torch.cuda.current_device() if device is None or device.index is None else device.index)


def tile_for(math: str, ng: int, M: int, C: int, aligned: bool = True, sms: int = DEFAULT_SMS,
             gpu: bool = False) -> Tile:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps) of a launch with ``ng`` gates per program over
    (M pixels) x (C channels): BLOCK_N spans every channel of a gate (the next power of 2, from 16 up to
    the mode's widest), so that a program reads each tap's A tile once for all its gates.
    Deterministic: the shape bucket is the channel count's power of 2, whether the channel counts are
    ``aligned`` (multiples of 16, which Triton specializes on: otherwise no A load is vectorized, A
    stays out of the async copies, and wider tiles spill, so BLOCK_N stops at
    :data:`UNALIGNED_WIDEST`), whether C is a multiple of the mode's BLOCK_K (``MathTiles.k_for``), and
    with ``CONFIG.wide``, whether an 8-warp tile's grid fills a wave of the GPU's ``sms`` SMs.

    FWD_RZ (2 gates) takes the :data:`RZ_M`-pixel 4-warp tile where the mode has it (``MathTiles.rz_tile``),
    C is a multiple of its BLOCK_N and BLOCK_K, and its grid fills a wave: one warpgroup (not the 8 warps
    of pytorch/pytorch#173068), the weights read half as often per pixel, and A's taps served by L1
    (:func:`l1_taps`).  FWD_RZ only: the same tile spills in the other kinds and in TF32.  ``gpu``: the GPU's
    tile even where the interpreter's are in force (``CONFIG.interpreter_tiles``; the cost model's)."""
    spec = MATHS[Math(math)]
    widest = spec.widest[ng - 1] if aligned else min(spec.widest[ng - 1], UNALIGNED_WIDEST)
    block_n = min(max(_pow2(C), 16), widest)
    block_k = spec.k_for(C, aligned)
    if CONFIG.interpreter_tiles and not gpu:
        return INTERPRET_BLOCK_M, block_n, block_k, spec.stages, NUM_WARPS
    if CONFIG.wide and spec.wide_m and aligned:
        wide_n = min(max(_pow2(C), 16), spec.wide_widest[ng - 1])
        if _cdiv(M, spec.wide_m) * _cdiv(C, wide_n) >= sms:
            return spec.wide_m, wide_n, block_k, spec.stages, WIDE_WARPS
    if (ng == 2 and spec.rz_tile and aligned and C % widest == 0 and C % spec.block_k == 0
            and _cdiv(M, RZ_M) * (C // widest) >= sms):
        return RZ_M, widest, spec.block_k, spec.stages, NUM_WARPS
    return spec.block_m, block_n, block_k, spec.stages, NUM_WARPS


def l1_taps(kind: int, tile: Tile) -> bool:
    """Whether ``kind``'s launches at ``tile`` copy A in 4-element pieces, which for 16-bit elements are
    8-byte ``cp.async.ca`` (``LDGSTS.E.64``) that allocate in L1, rather than 16-byte copies that bypass
    it, so that a pixel block's next taps hit there: FWD_RZ at :data:`RZ_M` pixels and 4 warps (a tile
    only bfloat16 gets, ``MathTiles.rz_tile``; a forced one runs in any mode, where 4 float32 elements
    are 16 bytes again).  Such a launch takes C as a constant (the kernels' ``A_L1``: C, else 0), one
    compiled kernel per C; ``kernels.py`` says why no other kernel does; the cost model (``model.py``)
    credits the L1 hits."""
    return kind == K.FWD_RZ.value and tile[0] == RZ_M and tile[4] == NUM_WARPS


def kept_tiles(math: str, ng: int, tuned: bool = True, aligned: bool = True) -> list[Tile]:
    """Every tile a launch can use on a GPU for ``math`` and ``ng``: :func:`tile_for`'s (the 8-warp ones
    included) and, with ``tuned``, the ones autotuning may time.  What is compiled ahead of time and
    held to 0 spills."""
    spec = MATHS[Math(math)]
    stages = (spec.stages, spec.stages + 1) if tuned and spec.tuned else (spec.stages,)
    widest = spec.widest[ng - 1] if aligned else min(spec.widest[ng - 1], UNALIGNED_WIDEST)
    found = [(spec.block_m, n, k, s, NUM_WARPS) for k in spec.ks(aligned) for n in _widths(widest) for s in stages]
    if spec.wide_m and aligned:
        found += [(spec.wide_m, n, k, s, WIDE_WARPS) for k in spec.ks(aligned)
                  for n in _widths(spec.wide_widest[ng - 1]) for s in stages]
    if ng == 2 and spec.rz_tile and aligned:
        found.append((RZ_M, widest, spec.block_k, spec.stages, NUM_WARPS))  # 3 stages only (MATHS)
    return found


def _widths(widest: int) -> list[int]:
    return sorted({min(2 ** i, widest) for i in range(4, 8)})


def candidates(math: str, ng: int, M: int, C: int, aligned: bool = True, sms: int = DEFAULT_SMS) -> list[Tile]:
    """The (at most 3) tiles autotuning times: the kept tiles with :func:`tile_for`'s BLOCK_M, BLOCK_N,
    BLOCK_K and warps (BLOCK_K is the weight packing's), which differ in their pipeline depth."""
    m, n, k, _, w = tile_for(math, ng, M, C, aligned, sms)
    return [t for t in kept_tiles(math, ng, aligned=aligned) if (t[0], t[1], t[2], t[4]) == (m, n, k, w)][:3]


def forced_tile(tile: Tile):
    """Run every kernel with ``tile`` (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps) inside the block."""
    return configured(tile=tile)


def _tile(math: str, ng: int, M: int, C: int, aligned: bool, device: torch.device) -> Tile:
    """The tile of a launch on ``device`` without autotuning (autotuning keeps BLOCK_N and BLOCK_K: the
    packing's)."""
    return CONFIG.tile or tile_for(math, ng, M, C, aligned, sm_count(device))


# ------------------------------------------------------------------------------------- packing


def pack_forward(weight: Tensor, block_n: int, block_k: int) -> Tensor:
    """(3C, K, kh, kw) -> (taps, K chunks, channel blocks, 3, block_n, block_k), zero-padded:
    ``w[tap, kc, nb, g, c, k] = weight[g*C + nb*block_n + c, kc*block_k + k, tap]``.

    K-contiguous (each gate's B tile is read along its reduction dimension, as TF32 wgmma needs), padded
    so that no B load needs a mask, and in the order of the K loop's iterations (tap, then chunk), so that
    one iteration's B tiles are contiguous at a fixed distance from the previous iteration's: a kernel
    addresses them with constant offsets from one moving scalar."""
    n_out, n_in, kh, kw = weight.shape
    C = n_out // 3
    n_pad, k_pad = _round_up(C, block_n), _round_up(n_in, block_k)
    packed = weight.new_zeros(kh * kw, 3, n_pad, k_pad)
    packed[:, :, :C, :n_in] = weight.reshape(3, C, n_in, kh * kw).permute(3, 0, 1, 2)
    return (packed.view(kh * kw, 3, n_pad // block_n, block_n, k_pad // block_k, block_k)
            .permute(0, 4, 2, 1, 3, 5).contiguous())


def pack_backward(weight_hh: Tensor, n_pad: int, k_pad: int) -> Tensor:
    """(3C, C, kh, kw) -> (taps, n_pad, k_pad), zero-padded: ``w[tap, c, o] = weight_hh[o, c, taps-1-tap]`` (conv^T)."""
    n_out, C, kh, kw = weight_hh.shape
    packed = weight_hh.new_zeros(kh * kw, n_pad, k_pad)
    packed[:, :C, :n_out] = weight_hh.flip(2, 3).reshape(n_out, C, kh * kw).permute(2, 1, 0)
    return packed


def _round_up(n: int, to: int) -> int:
    return _cdiv(n, to) * to


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


# -------------------------------------------------------------------------------------- launch

#: autotuning's choices: launch key -> tile
_TUNED: dict = {}


def default_launcher(kernel):
    """``kernel`` made launchable: ``wrap_triton``'s, so that torch.compile sees the launches.  Under the
    interpreter the op is an opaque custom_op (``define_op_pair`` below) and the kernel is launched as it
    is: torch 2.11's ``wrap_triton`` refuses the interpreter's ``InterpretedFunction`` (2.14's accepts it)."""
    return kernel if INTERPRET else torch.library.wrap_triton(kernel)


def _launcher(kernel):
    return (CONFIG.launcher or default_launcher)(kernel)


def _launch(kernel, tile: Tile, reductions: tuple[int, ...], **args) -> None:
    """Launch step ``kernel`` with ``tile`` over (M pixels) x (C channels); EVEN_K says whether each of
    its reduction sizes is a whole number of K blocks (then A needs no channel mask)."""
    block_m, block_n, block_k, stages, warps = tile
    grid = (_cdiv(args["M"], block_m), _cdiv(args["C"], block_n))
    if kernel is K.forward_step_kernel:
        args["A_L1"] = args["C"] if l1_taps(args["KIND"], tile) else 0
    _launcher(kernel)[grid](**args, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                            EVEN_K=all(k % block_k == 0 for k in reductions), num_warps=warps, num_stages=stages)


def _run(kernel, math: str, ng: int, aligned: bool, tile: Tile, reductions: tuple[int, ...], **args) -> None:
    """Launch ``kernel`` with ``tile`` (the loop's :func:`_tile`), or under CONVGRU_TRITON_AUTOTUNE=1 the
    fastest of :func:`candidates` for this launch key, timed once (a step kernel may be re-run: none
    reads what it writes).  ``aligned``: the loop's channel counts are multiples of 16;
    ``reductions``: the channel counts this kernel reduces over."""
    if CONFIG.autotune and CONFIG.tile is None and not INTERPRET and not torch.cuda.is_current_stream_capturing():
        key = (kernel.__name__, math, ng, _pow2(args["M"]), args["C"], args.get("Cin"),
               args["KH"], args["KW"], args["KIND"], args.get("HAS_X"), args.get("HAS_PREV"))
        if key not in _TUNED:
            found = candidates(math, ng, args["M"], args["C"], aligned, sm_count())
            times = [triton.testing.do_bench(lambda t=t: _launch(kernel, t, reductions, **args), warmup=3, rep=10)
                     for t in found]
            _TUNED[key] = found[times.index(min(times))]
        tile = _TUNED[key]
    _launch(kernel, tile, reductions, **args)


def _step_args(weight_hh: Tensor, dilation: list[int], M: int, H: int, W: int, math: str) -> dict:
    """The arguments every step kernel takes: sizes, kernel shape, dilation, precision flags."""
    return dict(M=M, H=H, W=W, C=weight_hh.shape[1], KH=weight_hh.shape[2], KW=weight_hh.shape[3],
                DIL_H=dilation[0], DIL_W=dilation[1],
                IS_F64=Math(math) is Math.F64, PRECISION=dot_precision(math))


# ---------------------------------------------------------------------------------------- loops

#: gates per program of each kernel kind
GATES = {K.FWD_RZ.value: 2, K.FWD_N.value: 1, K.FWD_AFTER.value: 3,
         K.BWD_N.value: 1, K.BWD_RZ.value: 1, K.BWD_AFTER.value: 1}


def forward_kinds(reset_after: bool) -> tuple[int, ...]:
    """The kernels one forward step launches, in order."""
    return (K.FWD_AFTER.value,) if reset_after else (K.FWD_RZ.value, K.FWD_N.value)


def backward_kinds(reset_after: bool) -> tuple[int, ...]:
    """The kernels one backward step launches, in order."""
    return (K.BWD_AFTER.value,) if reset_after else (K.BWD_N.value, K.BWD_RZ.value)


def forward_loop(x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
    """The forward time loop (``_op.StepLoops.forward``): per step, :func:`forward_kinds`' kernels."""
    T, B, Cin, H, W = x.shape
    C = weight_hh.shape[1]
    M = B * H * W
    cell = gx is None
    out = empty_channels_last(x, T, B, C, H, W)
    gates = empty_channels_last(x, T, B, gates_per_channel(reset_after) * C, H, W)
    rh = None if reset_after else x.new_empty(M, C)
    math = math_mode(x.dtype)
    kinds = forward_kinds(reset_after)
    reductions = (C, Cin) if cell else (C,)
    aligned = all(k % 16 == 0 for k in reductions)
    tiles = [_tile(math, GATES[kind], M, C, aligned, x.device) for kind in kinds]
    unused = weight_hh  # for pointers a launch never touches (its flags say so): read-only, aliases nothing
    # the weights packed for each kind's (BLOCK_N, BLOCK_K) (one packing where the kinds' tiles agree)
    packed = {}
    for t in tiles:
        if t[1:3] not in packed:
            packed[t[1:3]] = dict(w_h_ptr=pack_forward(weight_hh, t[1], t[2]), NP=_round_up(C, t[1]),
                                  w_x_ptr=pack_forward(weight_ih, t[1], t[2]) if cell else unused)
    has_bias_x = cell and bias_x is not None  # a sequence's bias_x is in gx
    common = dict(
        bias_x_ptr=bias_x if has_bias_x else unused,
        bias_hn_ptr=bias_hn if bias_hn is not None else unused,
        Cin=Cin, HAS_X=cell, HAS_BIAS_X=has_bias_x, HAS_BIAS_HN=bias_hn is not None,
        **_step_args(weight_hh, dilation, M, H, W, math),
    )
    with _device_guard(x):
        for t in range(T):
            step = dict(common, h_ptr=h0 if t == 0 else out[t - 1], x_ptr=x[t] if cell else unused,
                        gx_ptr=unused if cell else gx[t], gates_ptr=gates[t], out_ptr=out[t],
                        rh_ptr=unused if rh is None else rh)
            for kind, tile in zip(kinds, tiles):
                _run(K.forward_step_kernel, math, GATES[kind], aligned, tile, reductions, KIND=kind, **step,
                     **packed[tile[1:3]])
    return out, gates


def backward_loop(grad_out, h0, out, gates, weight_hh, dilation, reset_after):
    """The backward time loop (``_op.StepLoops.backward``): the init kernel, then per step (in reverse)
    :func:`backward_kinds`' kernels."""
    T, B, C, H, W = out.shape
    M = B * H * W
    math = math_mode(out.dtype)
    acc_dtype = torch.float64 if math is Math.F64 else torch.float32
    dgh = empty_channels_last(out, T, B, 3 * C, H, W)
    dxn = empty_channels_last(out, T, B, C, H, W) if reset_after else None
    dh, dh_other = out.new_empty(M, C, dtype=acc_dtype), out.new_empty(M, C, dtype=acc_dtype)
    unused = weight_hh  # for pointers a launch never touches (its flags say so): read-only, aliases nothing
    kinds = backward_kinds(reset_after)
    aligned = C % 16 == 0
    tiles = [_tile(math, 1, M, C, aligned, out.device) for _ in kinds]
    n_pad = max(_round_up(C, t[1]) for t in tiles)
    block_k = max(t[2] for t in tiles)
    # The reduction of BWD_N starts at channel 2C of w_t; every kind reads whole K blocks from its start.
    k_pad = _round_up(3 * C + block_k, 16)
    reductions = {K.BWD_N.value: (C,), K.BWD_RZ.value: (2 * C,), K.BWD_AFTER.value: (3 * C,)}

    def state(t: int) -> Tensor:  # h_t; h_{-1} is h0
        return h0 if t < 0 else out[t]

    def prev(t: int) -> dict:  # the step t-1 tensors an epilogue at step t writes or reads
        if t == 0:  # HAS_PREV is false
            return dict(grad_prev_ptr=unused, gates_prev_ptr=unused, h_prev_ptr=unused,
                        dgh_prev_ptr=unused, dxn_prev_ptr=unused)
        return dict(grad_prev_ptr=grad_out[t - 1], gates_prev_ptr=gates[t - 1], h_prev_ptr=state(t - 2),
                    dgh_prev_ptr=dgh[t - 1], dxn_prev_ptr=unused if dxn is None else dxn[t - 1])

    last = prev(T)
    common = dict(w_t_ptr=pack_backward(weight_hh, n_pad, k_pad), NP=n_pad, KP=k_pad,
                  **_step_args(weight_hh, dilation, M, H, W, math))
    with _device_guard(out):
        init_m, init_n = 64, 32
        _launcher(K.backward_init_kernel)[(_cdiv(M, init_m), _cdiv(C, init_n))](
            grad_out[T - 1], dh, last["gates_prev_ptr"], last["h_prev_ptr"], last["dgh_prev_ptr"],
            last["dxn_prev_ptr"], M, C, RESET_AFTER=reset_after, BLOCK_M=init_m, BLOCK_N=init_n)
        for t in reversed(range(T)):
            step = dict(common, **prev(t), dgh_ptr=dgh[t], gates_ptr=gates[t], h_ptr=state(t - 1), HAS_PREV=t > 0)
            for kind, tile in zip(kinds, tiles):  # each reads dh, writes dh_other; BWD_RZ reads BWD_N's partial
                _run(K.backward_step_kernel, math, 1, aligned, tile, reductions[kind], KIND=kind, dh_in_ptr=dh,
                     dh_out_ptr=dh_other, **step)
                dh, dh_other = dh_other, dh
    return dgh, dxn, dh.view(B, H, W, C).permute(0, 3, 1, 2)


class TritonLoops:
    """The time loops of ``backend="triton"`` (``_op.StepLoops``); replayed as CUDA graphs where ``graphs.py``
    says they can be and the cost model (``model.py``) says they pay."""

    def hoists(self, T: int) -> bool:
        return T > 1  # a cell call convolves x inside the step kernels

    def forward(self, x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
        # a sequence's loop reads gx, not x, weight_ih or bias_x (in the projection already)
        return graphs.run(forward_loop, (x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn),
                          (list(dilation), reset_after), (math_mode(x.dtype), CONFIG.tile),
                          unread=() if gx is None else (0, 3, 5),
                          gpu_us=lambda: _gpu_us(x, weight_hh, dilation, gx is None, reset_after, backward=False))

    def backward(self, grad_out, h0, out, gates, weight_hh, dilation, reset_after):
        return graphs.run(backward_loop, (grad_out, h0, out, gates, weight_hh),
                          (list(dilation), reset_after), (math_mode(out.dtype), CONFIG.tile),
                          gpu_us=lambda: _gpu_us(out, weight_hh, dilation, False, reset_after, backward=True))


def _gpu_us(like: Tensor, weight_hh: Tensor, dilation, cell: bool, reset_after: bool, backward: bool) -> float:
    """The cost model's GPU microseconds of a loop over ``like``'s (T, B, X, H, W) steps."""
    from . import model

    T, B, Cin, H, W = like.shape
    _, C, kh, kw = weight_hh.shape
    rows = model.launches(math_mode(like.dtype), like.element_size(), B * H * W, C, Cin, kh * kw, cell, reset_after,
                          backward, sm_count(like.device), kernel=(kh, kw), width=W, dilation=tuple(dilation))
    return T * model.gpu_us_per_step(rows)


# ---------------------------------------------------------------------------------- registration

triton_forward_op, triton_backward_op = define_op_pair("triton", TritonLoops(), triton=not INTERPRET)
