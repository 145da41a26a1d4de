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
   weight gradient together with ``dx`` (one ``convolution_backward``); this
   part and the hoisted input projection live in ``_hoisted.py``, shared with
   the Triton backend.

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

from ._hoisted import conv_backward, input_projection, padding, weight_and_input_grads
from ._op import channels_last, empty_channels_last, fake_backward, fake_forward, gates_per_channel, register_autograd
from .base import Backend

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # out = grad * y * (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # out = grad * (1 - y^2)


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
    T, B, _, H, W = x.shape
    C = weight_hh.shape[1]
    pad = padding(weight_hh, dilation)
    gx = input_projection(x, weight_ih, bias_ih, bias_hh, dilation, reset_after)
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
    T, B, _, H, W = x.shape
    C = weight_hh.shape[1]
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
            dh_prev, _ = conv_backward(dgh[t], h_prev, weight_hh, dilation, True, False)
        else:  # n = tanh(gx_n + U_n*(r*h))
            _tanh_backward(dh * z, n, grad_input=d_n)
            drh, _ = conv_backward(d_n, h_prev, w_n, dilation, True, False)
            _sigmoid_backward(drh * h_prev, r, grad_input=d_r)
            dh_prev, _ = conv_backward(dgh[t, :, : 2 * C], h_prev, w_rz, dilation, True, False)
            dh_prev.addcmul_(drh, r)
        dh = dh_prev.add_(dh).addcmul_(dh, z, value=-1)  # + dh*(1 - z)
        if t > 0:
            dh.add_(grad_out[t - 1])

    # Weight and bias gradients, once over all T*B frames.
    dx, dw_ih, dw_hh, db_ih, db_hh = weight_and_input_grads(
        x, h0, out, gates, dgh, dxn, weight_ih, weight_hh, dilation, reset_after, need_dx)
    return dx, channels_last(dh), dw_ih, dw_hh, db_ih, db_hh


torch_forward.register_fake(fake_forward)
torch_backward.register_fake(fake_backward)
register_autograd(torch_forward, torch_backward)


class TorchBackend(Backend):
    name = "torch"

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, problem):
        out, _ = torch_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                               list(problem.dilation), problem.reset_after)
        return out
