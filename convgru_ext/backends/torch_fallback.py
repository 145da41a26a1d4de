"""``backend="torch"``: the optimized pure-PyTorch fallback, for CPUs and any GPU.

It computes the same function as the reference with far fewer and larger
operations, and implements the op pair described in ``_op.py``
(``convgru_ext::torch_forward`` / ``convgru_ext::torch_backward``).

Forward:

1. the input projection ``W*x + b`` for all T steps is one convolution over the
   T*B frames, before the time loop (``b_hh`` is folded into its bias, except
   ``b_hn`` under ``reset="after"``, which ``r`` multiplies);
2. per step, ``reset="before"``: one convolution of ``h`` for r and z together
   and one of ``r*h`` for n; ``reset="after"``: one convolution of ``h`` for
   all three gates; the gate math runs in place on the saved ``gates`` buffer.

Backward (explicit, not autograd through the loop):

1. per step in reverse: the gate gradients (elementwise) and the data gradient
   of the recurrent convolution(s), which carries the state gradient back;
2. after the loop, once over all T*B frames: the recurrent weight gradient
   (one call per weight block), the bias gradients (sums), and the input
   weight gradient together with ``dx`` (one ``convolution_backward``).

Everything runs channels-last (the op layout, see ``_op.py``): oneDNN and
cuDNN are fastest there, and on CPU a large NCHW convolution was measured at
twice the per-frame cost of a small one, while channels-last stays flat.

Memory: the forward saves ``gates``, T*B*G*C*H*W elements in the input dtype
(G = 3 for ``reset="before"``, 4 for ``"after"``), and keeps references to
``x``, ``h0`` and the output.  The backward's temporaries are the gate-gradient
buffer (T*B*3C*H*W, plus T*B*C*H*W under ``"after"``) and a stack of the
previous states (T*B*C*H*W).  All arithmetic runs in the input dtype.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._op import channels_last, empty_channels_last, fake_backward, fake_forward, gates_per_channel, register_autograd
from .base import Backend

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # out = grad * y * (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # out = grad * (1 - y^2)


def _padding(weight: Tensor, dilation: list[int]) -> list[int]:
    return [d * (k - 1) // 2 for k, d in zip(weight.shape[2:], dilation)]


def _conv_backward(grad, inp, weight, padding, dilation, need_input: bool, need_weight: bool):
    """(d inp, d weight) of ``conv2d(inp, weight)`` for the output gradient ``grad``."""
    d_inp, d_weight, _ = torch.ops.aten.convolution_backward(
        grad, inp, weight, None, [1, 1], padding, dilation, False, [0, 0], 1,
        [need_input, need_weight, False],
    )
    return d_inp, d_weight


def _input_bias(bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], reset_after: bool) -> Optional[Tensor]:
    """The bias of the hoisted input convolution: b_ih plus every part of b_hh that adds to it."""
    if bias_hh is not None and reset_after:
        C = bias_hh.shape[0] // 3
        bias_hh = torch.cat([bias_hh[: 2 * C], bias_hh.new_zeros(C)])
    if bias_ih is None or bias_hh is None:
        return bias_ih if bias_hh is None else bias_hh
    return bias_ih + bias_hh


@torch.library.custom_op("convgru_ext::torch_forward", mutates_args=())
def torch_forward(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor],
    bias_hh: Optional[Tensor],
    dilation: list[int],
    reset_after: bool,
) -> tuple[Tensor, Tensor]:
    T, B, Cin, H, W = x.shape
    C = weight_hh.shape[1]
    pad = _padding(weight_hh, dilation)
    gx = F.conv2d(x.view(T * B, Cin, H, W), weight_ih, _input_bias(bias_ih, bias_hh, reset_after),
                  1, pad, dilation).view(T, B, 3 * C, H, W)
    out = empty_channels_last(x, T, B, C, H, W)
    gates = empty_channels_last(x, T, B, gates_per_channel(reset_after) * C, H, W)
    h = h0
    if reset_after:
        bias_n = None if bias_hh is None else torch.cat([bias_hh.new_zeros(2 * C), bias_hh[2 * C:]])
        for t in range(T):
            rz, n, ghn = gates[t, :, : 2 * C], gates[t, :, 2 * C: 3 * C], gates[t, :, 3 * C:]
            gh = F.conv2d(h, weight_hh, bias_n, 1, pad, dilation)  # U*h + (0, 0, b_hn)
            torch.add(gx[t, :, : 2 * C], gh[:, : 2 * C], out=rz).sigmoid_()
            ghn.copy_(gh[:, 2 * C:])
            torch.addcmul(gx[t, :, 2 * C:], rz[:, :C], ghn, out=n).tanh_()
            h = torch.lerp(h, n, rz[:, C:], out=out[t])
    else:
        w_rz, w_n = weight_hh[: 2 * C], weight_hh[2 * C:]
        for t in range(T):
            rz, n = gates[t, :, : 2 * C], gates[t, :, 2 * C:]
            torch.add(gx[t, :, : 2 * C], F.conv2d(h, w_rz, None, 1, pad, dilation), out=rz).sigmoid_()
            rh = rz[:, :C] * h
            torch.add(gx[t, :, 2 * C:], F.conv2d(rh, w_n, None, 1, pad, dilation), out=n).tanh_()
            h = torch.lerp(h, n, rz[:, C:], out=out[t])
    return out, gates


@torch.library.custom_op("convgru_ext::torch_backward", mutates_args=())
def torch_backward(
    grad_out: Tensor,
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    gates: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    dilation: list[int],
    reset_after: bool,
    need_dx: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, B, Cin, H, W = x.shape
    C = weight_hh.shape[1]
    pad = _padding(weight_hh, dilation)
    w_rz, w_n = weight_hh[: 2 * C], weight_hh[2 * C:]
    # dgh[t]: the gradient of step t's gate pre-activations (r, z, n blocks) as
    # seen by the recurrent convolution(s); also the input convolution's,
    # except the n block under reset_after, which differs by the factor r and
    # is kept in dxn until the loop is over.
    dgh = empty_channels_last(x, T, B, 3 * C, H, W)
    dxn = empty_channels_last(x, T, B, C, H, W) if reset_after else None
    dh = grad_out[T - 1].clone()  # dL/dh_T; becomes dL/dh_t going back
    for t in reversed(range(T)):
        h_prev = out[t - 1] if t > 0 else h0
        r, z, n = gates[t, :, :C], gates[t, :, C: 2 * C], gates[t, :, 2 * C: 3 * C]
        d_r, d_z, d_n = dgh[t, :, :C], dgh[t, :, C: 2 * C], dgh[t, :, 2 * C:]
        # h' = h + z*(n - h)
        _sigmoid_backward((n - h_prev).mul_(dh), z, grad_input=d_z)
        if reset_after:  # n = tanh(gx_n + r*ghn)
            ghn = gates[t, :, 3 * C:]
            dn = _tanh_backward(dh * z, n, grad_input=dxn[t])
            torch.mul(dn, r, out=d_n)
            _sigmoid_backward(dn * ghn, r, grad_input=d_r)
            dh_prev, _ = _conv_backward(dgh[t], h_prev, weight_hh, pad, dilation, True, False)
        else:  # n = tanh(gx_n + U_n*(r*h))
            _tanh_backward(dh * z, n, grad_input=d_n)
            drh, _ = _conv_backward(d_n, h_prev, w_n, pad, dilation, True, False)
            _sigmoid_backward(drh * h_prev, r, grad_input=d_r)
            dh_prev, _ = _conv_backward(dgh[t, :, : 2 * C], h_prev, w_rz, pad, dilation, True, False)
            dh_prev.addcmul_(drh, r)
        dh = dh_prev.add_(dh).addcmul_(dh, z, value=-1)  # + dh*(1 - z)
        if t > 0:
            dh.add_(grad_out[t - 1])

    # Weight and bias gradients, once over all T*B frames.
    h_prev_all = empty_channels_last(x, T, B, C, H, W)
    h_prev_all[0].copy_(h0)
    h_prev_all[1:].copy_(out[:-1])
    h_prev_all = h_prev_all.view(T * B, C, H, W)
    dgh_all = dgh.view(T * B, 3 * C, H, W)
    db_hh = dgh_all.sum((0, 2, 3))
    if reset_after:
        _, dw_hh = _conv_backward(dgh_all, h_prev_all, weight_hh, pad, dilation, False, True)
        dgh[:, :, 2 * C:].copy_(dxn)  # dgh now holds the input convolution's gradient
        db_ih = dgh_all.sum((0, 2, 3))
    else:
        _, dw_rz = _conv_backward(dgh_all[:, : 2 * C], h_prev_all, w_rz, pad, dilation, False, True)
        rh_all = h_prev_all.view(T, B, C, H, W).mul_(gates[:, :, :C]).view(T * B, C, H, W)
        _, dw_n = _conv_backward(dgh_all[:, 2 * C:], rh_all, w_n, pad, dilation, False, True)
        dw_hh = torch.cat([dw_rz, dw_n])
        db_ih = db_hh.clone()
    dx, dw_ih = _conv_backward(dgh_all, x.view(T * B, Cin, H, W), weight_ih, pad, dilation, need_dx, True)
    dx = channels_last(dx.view(T, B, Cin, H, W)) if need_dx else x.new_empty(0)
    return dx, channels_last(dh), dw_ih.contiguous(), dw_hh.contiguous(), db_ih, db_hh


torch_forward.register_fake(fake_forward)
torch_backward.register_fake(fake_backward)
register_autograd(torch_forward, torch_backward)


class TorchBackend(Backend):
    name = "torch"

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, problem):
        out, _ = torch_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                               list(problem.dilation), problem.reset_after)
        return out
