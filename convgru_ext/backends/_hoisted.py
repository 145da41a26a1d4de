"""The convolutions of a layer call outside its time loops (cuDNN / oneDNN), which ``_op.py`` composes
around every fused backend's loops: the input projection before them (:func:`input_projection`), the
weight, bias and input gradients once after them (:func:`weight_and_input_grads`).  Tensors follow the
op layout of ``_op.py``."""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._contract import same_padding
from ._layout import channels_last, empty_channels_last, frames, like, logical, physical


def padding(weight: Tensor, dilation: list[int]) -> tuple[int, int]:
    """'Same' padding of ``weight`` (O, I, kh, kw) at ``dilation`` (cached in eager: a process sees a few kernels;
    traced, once per trace)."""
    if torch.compiler.is_compiling():
        return same_padding(weight.shape[2:], dilation)  # type: ignore[return-value]
    return _padding(weight.shape[2], weight.shape[3], *dilation)


@functools.cache
def _padding(kh: int, kw: int, dh: int, dw: int) -> tuple[int, int]:
    return same_padding((kh, kw), (dh, dw))  # type: ignore[return-value]


def conv_backward(grad: Tensor, inp: Tensor, weight: Tensor, dilation: list[int],
                  need_input: bool, need_weight: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(d inp, d weight) of the 'same' ``conv2d(inp, weight)`` for the output gradient ``grad``."""
    d_inp, d_weight, _ = torch.ops.aten.convolution_backward(
        grad, inp, weight, None, [1, 1], padding(weight, dilation), dilation, False, [0, 0], 1,
        [need_input, need_weight, False],
    )
    return d_inp, d_weight


def input_bias(bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], reset_after: bool) -> Optional[Tensor]:
    """The bias that goes with ``W*x``: ``b_ih`` plus every part of ``b_hh`` that simply adds to it.

    That is all of ``b_hh`` for ``reset="before"``; for ``"after"``, ``b_hn`` is multiplied by
    ``r`` and stays out (the kernels add it to ``U_n*h``).
    """
    if bias_hh is not None and reset_after:
        C = bias_hh.shape[0] // 3
        bias_hh = torch.cat([bias_hh[: 2 * C], bias_hh.new_zeros(C)])
    if bias_ih is None or bias_hh is None:
        return bias_ih if bias_hh is None else bias_hh
    return bias_ih + bias_hh


def input_projection(x: Tensor, weight_ih: Tensor, bias_x: Optional[Tensor], dilation: list[int]) -> Tensor:
    """``W*x_t + bias_x`` for every step (``bias_x`` from :func:`input_bias`): (T, B, 3C, H, W), channels-last,
    one convolution (on the CPU, a 1x1 kernel's as the GEMM it is: oneDNN's convolution of frames of a few pixels
    costs many times the GEMM, benchmarks/results/cpu/decisions.md)."""
    T, B, Cin, H, W = x.shape
    if weight_ih.shape[2:] == (1, 1) and x.device.type == "cpu":
        rows, w = physical(x).reshape(-1, Cin), weight_ih.reshape(weight_ih.shape[0], Cin).t()
        gx = rows @ w if bias_x is None else torch.addmm(bias_x, rows, w)
        return logical(gx.view(T, B, H, W, -1))
    frame = frames(x)
    pad = padding(weight_ih, dilation)
    if _through_nchw(frame, weight_ih):
        gx = conv_nchw(frame, weight_ih, bias_x, pad, dilation)
    else:
        gx = F.conv2d(frame, weight_ih, bias_x, 1, pad, dilation)
    return channels_last(gx).view(T, B, weight_ih.shape[0], H, W)


def conv_nchw(frame: Tensor, weight: Tensor, bias: Optional[Tensor], pad, dilation) -> Tensor:
    """The stride-1 convolution of ``frame`` made NCHW (``F.conv2d``), in eager or traced: while tracing through the
    opaque :func:`_conv_nchw`, since Inductor lays every convolution of its graph out channels-last."""
    if torch.compiler.is_compiling():
        return _conv_nchw(frame, weight, bias, list(pad), list(dilation))
    return F.conv2d(frame.contiguous(), weight, bias, 1, pad, dilation)


@torch.library.custom_op("convgru_ext::_conv_nchw", mutates_args=())
def _conv_nchw(frame: Tensor, weight: Tensor, bias: Optional[Tensor], padding: list[int],
               dilation: list[int]) -> Tensor:
    """A convolution on NCHW frames, :func:`conv_nchw`'s opaque op under tracing (for :func:`input_projection`
    through :func:`_through_nchw`, and the torch backend's small single step): Inductor lays every convolution of
    its graph out channels-last, which costs the weight's copy this avoids.  Differentiable (its backward an opaque
    op too)."""
    return F.conv2d(frame.contiguous(), weight, bias, 1, padding, dilation)


@_conv_nchw.register_fake
def _(frame, weight, bias, padding, dilation):
    N, _, H, W = frame.shape
    return frame.new_empty(N, weight.shape[0], H, W)  # 'same', stride 1; NCHW, as F.conv2d returns it


@torch.library.custom_op("convgru_ext::_conv_nchw_backward", mutates_args=())
def _conv_nchw_backward(grad: Tensor, frame: Tensor, weight: Tensor, padding: list[int], dilation: list[int],
                        need: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients (frame, weight, bias) of :func:`_conv_nchw`, in NCHW (opaque for the same reason); the ones not
    in ``need`` are empty."""
    grads = torch.ops.aten.convolution_backward(grad.contiguous(), frame.contiguous(), weight, [weight.shape[0]],
                                                [1, 1], padding, dilation, False, [0, 0], 1, need)
    return tuple(g if g is not None else frame.new_empty(0) for g in grads)


@_conv_nchw_backward.register_fake
def _(grad, frame, weight, padding, dilation, need):
    empty = frame.new_empty(0)
    return (frame.new_empty(frame.shape) if need[0] else empty, torch.empty_like(weight) if need[1] else empty,
            weight.new_empty(weight.shape[0]) if need[2] else empty)


def _conv_nchw_setup(ctx, inputs, output):
    frame, weight, bias, padding, dilation = inputs
    ctx.save_for_backward(frame, weight)
    ctx.padding, ctx.dilation, ctx.has_bias = padding, dilation, bias is not None


def _conv_nchw_grads(ctx, grad):
    frame, weight = ctx.saved_tensors
    need = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    d_frame, d_weight, d_bias = _conv_nchw_backward(grad, frame, weight, ctx.padding, ctx.dilation, need)
    return (d_frame if need[0] else None, d_weight if need[1] else None, d_bias if need[2] else None, None, None)


_conv_nchw.register_autograd(_conv_nchw_grads, setup_context=_conv_nchw_setup)


#: a projection on the CPU whose weight has at least this many elements, and four times as many as its frames'
#: input and output together, converts the frames to NCHW instead of the weight to channels-last
#: (benchmarks/results/cpu/decisions.md)
NCHW_MIN_WEIGHT = 400_000


def _through_nchw(frame: Tensor, weight: Tensor) -> bool:
    """Whether the convolution of the channels-last ``frame`` runs on an NCHW copy of it: oneDNN takes the weight in
    the input's layout, so a channels-last input costs a copy of the weight per call, which for a large weight over
    a few small frames costs more than converting the frames."""
    activations = frame.shape[0] * frame.shape[2] * frame.shape[3] * (frame.shape[1] + weight.shape[0])
    return frame.device.type == "cpu" and weight.numel() >= max(NCHW_MIN_WEIGHT, 4 * activations)


def weight_and_input_grads(
    x: Tensor, h0: Tensor, out: Tensor, gates: Tensor, dgh: Tensor, dxn: Optional[Tensor],
    weight_ih: Tensor, weight_hh: Tensor, dilation: list[int], reset_after: bool, need_dx: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dweight_ih, dweight_hh, dbias_ih, dbias_hh)`` from the gate gradients of every step.

    ``dgh`` (T, B, 3C, H, W) holds each step's gradient of the gate pre-activations as the
    recurrent convolution(s) see them (blocks r, z, n); for ``reset="after"``, ``dxn``
    (T, B, C, H, W) holds the n-gradient as the *input* convolution sees it (it differs by
    the factor r), and ``dgh``'s n block is overwritten with it here.  ``dx`` is an empty
    (0,) tensor unless ``need_dx``.
    """
    T, B, Cin, H, W = x.shape
    C = weight_hh.shape[1]
    h_prev = empty_channels_last(x, T, B, C, H, W)  # the state entering each step
    h_prev[0].copy_(h0)
    h_prev[1:].copy_(out[:-1])
    h_prev_all, dgh_all = frames(h_prev), frames(dgh)
    db_hh = dgh_all.sum((0, 2, 3))
    if reset_after:
        _, dw_hh = conv_backward(dgh_all, h_prev_all, weight_hh, dilation, False, True)
        dgh[:, :, 2 * C:].copy_(dxn)  # dgh now holds the input convolution's gradient
        db_ih = dgh_all.sum((0, 2, 3))
    else:
        w_rz, w_n = weight_hh[: 2 * C], weight_hh[2 * C:]
        _, dw_rz = conv_backward(dgh_all[:, : 2 * C], h_prev_all, w_rz, dilation, False, True)
        rh_all = frames(h_prev.mul_(gates[:, :, :C]))
        _, dw_n = conv_backward(dgh_all[:, 2 * C:], rh_all, w_n, dilation, False, True)
        dw_hh = torch.cat([dw_rz, dw_n])
        db_ih = db_hh.clone()
    dx, dw_ih = conv_backward(dgh_all, frames(x), weight_ih, dilation, need_dx, True)
    dx = channels_last(dx).view(T, B, Cin, H, W) if need_dx else x.new_empty(0)
    return dx, like(dw_ih, weight_ih), like(dw_hh, weight_hh), db_ih, db_hh
