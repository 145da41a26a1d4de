"""The Triton backend's time loops: configurations → weight packing → the launch of one step kernel → the
forward and backward loops → the op pair (``_op.define_op_pair`` composes the projection and the weight
gradients around the loops).  The kernels, and the table of what each computes, are in ``kernels.py``.

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

from ..._tf32 import conv_allows_tf32
from .._layout import empty_channels_last
from .._op import define_op_pair, gates_per_channel
from . import kernels as K

#: kernels run on the CPU through Triton's interpreter (fixed when this module is imported)
INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"

# ------------------------------------------------------------------------------ configurations

#: (BLOCK_M, BLOCK_N, BLOCK_K, num_stages) autotuning chooses from, per math mode (``math_mode``).
#: Every tile was compiled for sm_90 with Triton 3.8 by ``compile_report`` for every kernel kind
#: (channel counts multiples of 16): 5 of the 78 kernels spill, 8 bytes each at most.  Larger
#: tiles (128x64; BLOCK_K 64 in float32) spilled up to 6 KB (18 KB in exact float32).
#: ``num_warps`` is 4 throughout: 8 warps miscompile tap-looping conv kernels (pytorch#173068).
TILES = {
    "mma": ((128, 32, 32, 4), (64, 64, 32, 4), (64, 64, 64, 3), (64, 32, 64, 4)),  # fp16/bf16, tensor cores
    "tf32": ((64, 64, 32, 3), (64, 32, 32, 4), (128, 32, 16, 4), (64, 64, 16, 4)),  # float32 on TF32 tensor cores
    "ieee": ((64, 32, 16, 2), (32, 64, 16, 2), (32, 32, 32, 2)),  # exact float32: FMA on the CUDA cores
    "f64": ((16, 32, 8, 2), (32, 32, 4, 2)),  # float64: multiply-and-sum on the CUDA cores
}
#: the one configuration under the interpreter (no autotuning; a large M block is fast there)
INTERPRET_TILE = (256, 16, 16, 1)
NUM_WARPS = 4

#: CONVGRU_TRITON_AUTOTUNE=0 (the test suite and ``make gpu-check`` set it): no timing of
#: configurations; every launch uses the one :func:`default_tile` picks for its math mode and shape,
#: so that a process compiles one configuration per kernel and the compiles can be done ahead of time
AUTOTUNE = os.environ.get("CONVGRU_TRITON_AUTOTUNE", "1").strip() != "0"
#: multiprocessors the default tile aims to fill when the device cannot be asked (the H200's)
DEFAULT_SMS = 132


def math_mode(dtype: torch.dtype) -> str:
    """How a step's GEMM is computed for ``dtype``: "mma", "tf32", "ieee" or "f64".

    float32 uses TF32 tensor cores exactly when a float32 convolution may
    (``_tf32.conv_allows_tf32``, PyTorch's default), read at each call.
    """
    if dtype == torch.float64:
        return "f64"
    if dtype == torch.float32:
        return "tf32" if conv_allows_tf32() else "ieee"
    return "mma"


def tiles(math: str) -> tuple[tuple[int, int, int, int], ...]:
    """The tiles autotuning chooses from in math mode ``math``, in order of preference."""
    return (INTERPRET_TILE,) if INTERPRET else TILES[math]


def configs(math: str) -> list[triton.Config]:
    """``tiles`` as autotuning configurations."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=NUM_WARPS, num_stages=s)
            for m, n, k, s in tiles(math)]


def default_tile(math: str, M: int, C: int) -> tuple[int, int, int, int]:
    """The tile used without autotuning for an (M pixels) x (C channels) step: ``pick_tile`` over ``tiles(math)``."""
    return pick_tile(tiles(math), M, C)


def pick_tile(kept, M: int, C: int, sms: int = DEFAULT_SMS) -> tuple[int, int, int, int]:
    """From ``kept`` tiles (in order of preference), chosen from the shape alone (deterministic):
    the least padding of the C channels to whole channel blocks first, then the first tile whose grid
    fills two waves of ``sms`` programs, else the one with the most programs."""

    def waste(tile):
        return triton.cdiv(C, tile[1]) * tile[1] - C

    least = min(waste(t) for t in kept)
    candidates = [t for t in kept if waste(t) == least]
    programs = {t: triton.cdiv(M, t[0]) * triton.cdiv(C, t[1]) for t in candidates}
    full = [t for t in candidates if programs[t] >= 2 * sms]
    return full[0] if full else max(candidates, key=lambda t: programs[t])


def _tile_config(tile: tuple[int, int, int, int]) -> triton.Config:
    m, n, k, stages = tile
    return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=NUM_WARPS, num_stages=stages)


_KEY = ["M", "C", "KH", "KW", "KIND"]


@functools.cache
def _forward_kernel(math: str):
    return triton.autotune(configs(math), key=_KEY + ["Cin", "HAS_X"])(K.forward_step_kernel)


@functools.cache
def _backward_kernel(math: str):
    return triton.autotune(configs(math), key=_KEY + ["HAS_PREV"])(K.backward_step_kernel)


def _step_args(weight_hh: Tensor, dilation: list[int], M: int, H: int, W: int, math: str) -> dict:
    """The arguments every step kernel takes: sizes, kernel shape, dilation, precision flags."""
    return dict(M=M, H=H, W=W, C=weight_hh.shape[1], KH=weight_hh.shape[2], KW=weight_hh.shape[3],
                DIL_H=dilation[0], DIL_W=dilation[1],
                IS_F64=math == "f64", PRECISION="tf32" if math in ("mma", "tf32") else "ieee")


#: when set (tests), every launch uses this configuration instead of autotuning
_FORCED: Optional[triton.Config] = None


@contextlib.contextmanager
def forced_config(config: triton.Config):
    """Run every kernel with ``config`` inside the block (to test each configuration we keep)."""
    global _FORCED
    saved, _FORCED = _FORCED, config
    try:
        yield
    finally:
        _FORCED = saved


# ------------------------------------------------------------------------------------- packing


def pack_forward(weight: Tensor) -> Tensor:
    """(3C, K, kh, kw) -> (taps, K, 3C): ``w[tap, k, o] = weight[o, k, tap]`` (a GEMM's B per tap)."""
    n_out, n_in, kh, kw = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kh * kw, n_in, n_out).contiguous()


def pack_backward(weight_hh: Tensor) -> Tensor:
    """(3C, C, kh, kw) -> (taps, 3C, C): ``w[tap, o, c] = weight_hh[o, c, taps-1-tap]`` (conv^T)."""
    n_out, C, kh, kw = weight_hh.shape
    return weight_hh.flip(2, 3).permute(2, 3, 0, 1).reshape(kh * kw, n_out, C).contiguous()


def _device_guard(t: Tensor):
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _launch(kernel, math: str, **args) -> None:
    """Launch step ``kernel`` (autotuned over ``configs(math)``) over (M pixels) x (C channels).

    A forced configuration (tests) wins; without autotuning, :func:`default_tile`'s.
    """
    M, C = args["M"], args["C"]
    if AUTOTUNE and _FORCED is None:
        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(C, meta["BLOCK_N"]))

        torch.library.wrap_triton(kernel)[grid](**args)
        return
    config = _FORCED or _tile_config(default_tile(math, M, C))
    grid = (triton.cdiv(M, config.kwargs["BLOCK_M"]), triton.cdiv(C, config.kwargs["BLOCK_N"]))
    torch.library.wrap_triton(kernel.fn)[grid](**args, **config.kwargs, num_warps=config.num_warps,
                                               num_stages=config.num_stages)


# ---------------------------------------------------------------------------------------- loops


class TritonLoops:
    """The time loops of ``backend="triton"`` (``_op.StepLoops``)."""

    def hoists(self, T: int) -> bool:
        return T > 1  # a cell call convolves x inside the step kernels

    def forward(self, x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
        T, B, Cin, H, W = x.shape
        C = weight_hh.shape[1]
        M = B * H * W
        cell = gx is None
        out = empty_channels_last(x, T, B, C, H, W)
        gates = empty_channels_last(x, T, B, gates_per_channel(reset_after) * C, H, W)
        rh = None if reset_after else x.new_empty(M, C)
        math = math_mode(x.dtype)
        unused = weight_hh  # for pointers a launch never touches (its flags say so): read-only, aliases nothing
        has_bias_x = cell and bias_x is not None  # a sequence's bias_x is in gx
        common = dict(
            w_h_ptr=pack_forward(weight_hh),
            w_x_ptr=pack_forward(weight_ih) if cell else unused,
            bias_x_ptr=bias_x if has_bias_x else unused,
            bias_hn_ptr=bias_hn if bias_hn is not None else unused,
            Cin=Cin, HAS_X=cell, HAS_BIAS_X=has_bias_x, HAS_BIAS_HN=bias_hn is not None,
            **_step_args(weight_hh, dilation, M, H, W, math),
        )
        kernel = _forward_kernel(math)
        with _device_guard(x):
            for t in range(T):
                step = dict(common, h_ptr=h0 if t == 0 else out[t - 1], x_ptr=x[t] if cell else unused,
                            gx_ptr=unused if cell else gx[t], gates_ptr=gates[t], out_ptr=out[t],
                            rh_ptr=unused if rh is None else rh)
                if reset_after:
                    _launch(kernel, math, KIND=K.FWD_AFTER.value, **step)
                else:
                    _launch(kernel, math, KIND=K.FWD_RZ.value, **step)
                    _launch(kernel, math, KIND=K.FWD_N.value, **step)
        return out, gates

    def backward(self, grad_out, h0, out, gates, weight_hh, dilation, reset_after):
        T, B, C, H, W = out.shape
        M = B * H * W
        math = math_mode(out.dtype)
        acc_dtype = torch.float64 if math == "f64" else torch.float32
        dgh = empty_channels_last(out, T, B, 3 * C, H, W)
        dxn = empty_channels_last(out, T, B, C, H, W) if reset_after else None
        dh, dh_other = out.new_empty(M, C, dtype=acc_dtype), out.new_empty(M, C, dtype=acc_dtype)
        unused = weight_hh  # for pointers a launch never touches (its flags say so): read-only, aliases nothing

        def state(t: int) -> Tensor:  # h_t; h_{-1} is h0
            return h0 if t < 0 else out[t]

        def prev(t: int) -> dict:  # the step t-1 tensors an epilogue at step t writes or reads
            if t == 0:  # HAS_PREV is false
                return dict(grad_prev_ptr=unused, gates_prev_ptr=unused, h_prev_ptr=unused,
                            dgh_prev_ptr=unused, dxn_prev_ptr=unused)
            return dict(grad_prev_ptr=grad_out[t - 1], gates_prev_ptr=gates[t - 1], h_prev_ptr=state(t - 2),
                        dgh_prev_ptr=dgh[t - 1], dxn_prev_ptr=unused if dxn is None else dxn[t - 1])

        last = prev(T)
        common = dict(w_t_ptr=pack_backward(weight_hh), **_step_args(weight_hh, dilation, M, H, W, math))
        kernel = _backward_kernel(math)
        with _device_guard(out):
            init_m, init_n = 64, 32
            torch.library.wrap_triton(K.backward_init_kernel)[(triton.cdiv(M, init_m), triton.cdiv(C, init_n))](
                grad_out[T - 1], dh, last["gates_prev_ptr"], last["h_prev_ptr"], last["dgh_prev_ptr"],
                last["dxn_prev_ptr"], M, C, RESET_AFTER=reset_after, BLOCK_M=init_m, BLOCK_N=init_n)
            for t in reversed(range(T)):
                step = dict(common, **prev(t), dgh_ptr=dgh[t], gates_ptr=gates[t], h_ptr=state(t - 1),
                            HAS_PREV=t > 0)
                if reset_after:
                    _launch(kernel, math, KIND=K.BWD_AFTER.value, dh_in_ptr=dh, dh_out_ptr=dh_other, **step)
                    dh, dh_other = dh_other, dh
                else:
                    _launch(kernel, math, KIND=K.BWD_N.value, dh_in_ptr=dh, dh_out_ptr=dh_other, **step)
                    _launch(kernel, math, KIND=K.BWD_RZ.value, dh_in_ptr=dh_other, dh_out_ptr=dh, **step)
        return dgh, dxn, dh.view(B, H, W, C).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------- registration

triton_forward_op, triton_backward_op = define_op_pair("triton", TritonLoops(), triton=not INTERPRET)
