"""The two ops every fused backend implements, written down once.

Each fused backend (``torch``, ``triton``, ``cuda``) provides a *forward* and a
*backward* op in the ``convgru_ext`` namespace with exactly these schemas::

    {name}_forward(Tensor x, Tensor h0, Tensor weight_ih, Tensor weight_hh,
                   Tensor? bias_ih, Tensor? bias_hh, int[] dilation, bool reset_after)
        -> (Tensor out, Tensor gates)

    {name}_backward(Tensor grad_out, Tensor x, Tensor h0, Tensor out, Tensor gates,
                    Tensor weight_ih, Tensor weight_hh, int[] dilation, bool reset_after,
                    bool need_dx)
        -> (Tensor dx, Tensor dh0, Tensor dweight_ih, Tensor dweight_hh,
            Tensor dbias_ih, Tensor dbias_hh)

Shapes (one dtype, T >= 1): ``x`` (T, B, Cin, H, W), ``h0`` (B, C, H, W),
``weight_ih`` (3C, Cin, kh, kw), ``weight_hh`` (3C, C, kh, kw), biases (3C,),
``out`` (T, B, C, H, W) = every state h_1..h_T.

Layout: the activations (``x``, ``h0``, ``out``, ``gates``, ``grad_out``,
``dx``, ``dh0``) are *channels-last*: logically (..., C, H, W) as above, in
memory (..., H, W, C) and dense (see :func:`channels_last`).  That is the
layout the convolution libraries and our kernels run fastest in (channels are
the GEMM's reduction dimension).  Weights and biases are contiguous.

``gates`` is what the forward saves for the backward, in the input dtype:
(T, B, G*C, H, W) holding, channel block by channel block, the activations
``r, z, n`` (G = 3) and, for ``reset_after``, also ``U_n*h + b_hn`` (G = 4).
Together with ``x``, ``h0`` and ``out`` this is all the backward needs; the
input projection ``W*x`` is not saved.  The bias values do not enter the
backward at all.  ``dx`` is an empty (0,) tensor when ``need_dx`` is false;
``dbias_*`` are returned even when the bias was None (autograd drops them).

This module registers the fake (meta) kernels and the autograd formula for such
a pair, so that every backend gets ``torch.compile`` support and the same
autograd behaviour from one piece of code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch


def gates_per_channel(reset_after: bool) -> int:
    """G: how many (T, B, C, H, W) blocks ``gates`` holds."""
    return 4 if reset_after else 3


def _to_channel_last_order(ndim: int) -> list[int]:
    return list(range(ndim - 3)) + [ndim - 2, ndim - 1, ndim - 3]


def _from_channel_last_order(ndim: int) -> list[int]:
    return list(range(ndim - 3)) + [ndim - 1, ndim - 3, ndim - 2]


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` (..., C, H, W) with the same values, dense in memory as (..., H, W, C); no copy if it already is."""
    return t.permute(_to_channel_last_order(t.dim())).contiguous().permute(_from_channel_last_order(t.dim()))


def empty_channels_last(like: torch.Tensor, *shape: int) -> torch.Tensor:
    """An uninitialised channels-last tensor of logical ``shape`` (..., C, H, W), ``like``'s dtype and device."""
    physical = [shape[i] for i in _to_channel_last_order(len(shape))]
    return like.new_empty(physical).permute(_from_channel_last_order(len(shape)))


def fake_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after):
    T, B, _, H, W = x.shape
    C = weight_hh.shape[1]
    G = gates_per_channel(reset_after)
    return empty_channels_last(x, T, B, C, H, W), empty_channels_last(x, T, B, G * C, H, W)


def fake_backward(grad_out, x, h0, out, gates, weight_ih, weight_hh, dilation, reset_after, need_dx):
    C3 = weight_hh.shape[0]
    return (
        empty_channels_last(x, *x.shape) if need_dx else x.new_empty(0),
        empty_channels_last(h0, *h0.shape),
        torch.empty_like(weight_ih),
        torch.empty_like(weight_hh),
        x.new_empty(C3),
        x.new_empty(C3),
    )


def register_autograd(forward_op, backward_op: Callable) -> None:
    """Make ``forward_op`` differentiable through ``backward_op`` (schemas above)."""

    def setup_context(ctx, inputs, output):
        x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after = inputs
        out, gates = output
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for `gates`
        ctx.save_for_backward(x, h0, out, gates, weight_ih, weight_hh)
        ctx.dilation = list(dilation)
        ctx.reset_after = reset_after

    def backward(ctx, grad_out, _grad_gates):
        x, h0, out, gates, weight_ih, weight_hh = ctx.saved_tensors
        need = ctx.needs_input_grad
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = backward_op(
            channels_last(grad_out), x, h0, out, gates, weight_ih, weight_hh,
            ctx.dilation, ctx.reset_after, bool(need[0]),
        )

        def keep(grad: torch.Tensor, wanted: bool) -> Optional[torch.Tensor]:
            return grad if wanted else None

        return (
            keep(dx, need[0]),
            keep(dh0, need[1]),
            keep(dw_ih, need[2]),
            keep(dw_hh, need[3]),
            keep(db_ih, need[4]),  # False where the bias is None
            keep(db_hh, need[5]),
            None,
            None,
        )

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)
