"""``backend="torch"``: the optimized pure-PyTorch fallback, for CPUs and any GPU.

Its two time loops (``_op.py`` composes the rest around them), with far fewer and larger
operations than the reference:

* forward, per step: ``reset="before"``, one convolution of ``h`` for r and z together and one of
  ``r*h`` for n; ``reset="after"``, one convolution of ``h`` for all three gates; the gate math
  runs in place on the saved ``gates`` buffer;
* backward, per step in reverse (explicit, not autograd through the loop): the gate gradients
  (elementwise) and the data gradient of the recurrent convolution(s), which carries the state
  gradient back.

Everything runs channels-last: oneDNN and cuDNN are fastest there, and on CPU a large NCHW
convolution was measured at twice the per-frame cost of a small one, while channels-last stays
flat.  Memory: the forward's ``gates`` (T*B*G*C*H*W elements, the op contract); the backward's
temporaries are the gate-gradient buffer (T*B*3C*H*W, plus T*B*C*H*W under ``"after"``).  All
arithmetic runs in the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._hoisted import conv_backward, padding
from ._layout import empty_channels_last
from ._op import define_op_pair, gates_per_channel
from .base import Backend

_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # out = grad * y * (1 - y)
_tanh_backward = torch.ops.aten.tanh_backward.grad_input  # out = grad * (1 - y^2)


class TorchLoops:
    """The time loops of ``backend="torch"`` (``_op.StepLoops``)."""

    def hoists(self, T: int) -> bool:
        return True

    def forward(self, x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
        T, B, _, H, W = x.shape
        C = weight_hh.shape[1]
        pad = padding(weight_hh, dilation)
        out = empty_channels_last(x, T, B, C, H, W)
        gates = empty_channels_last(x, T, B, gates_per_channel(reset_after) * C, H, W)
        h = h0
        if reset_after:
            bias_n = None if bias_hn is None else torch.cat([bias_hn.new_zeros(2 * C), bias_hn])
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

    def backward(self, grad_out, h0, out, gates, weight_hh, dilation, reset_after):
        T, B, C, H, W = out.shape
        w_rz, w_n = weight_hh[: 2 * C], weight_hh[2 * C:]
        # dgh[t]: the gradient of step t's gate pre-activations (r, z, n blocks) as
        # seen by the recurrent convolution(s); also the input convolution's,
        # except the n block under reset_after, which differs by the factor r and
        # is kept in dxn until the loop is over.
        dgh = empty_channels_last(out, T, B, 3 * C, H, W)
        dxn = empty_channels_last(out, T, B, C, H, W) if reset_after else None
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
        return dgh, dxn, dh


torch_forward, torch_backward = define_op_pair("torch", TorchLoops())


class TorchBackend(Backend):
    name = "torch"

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem):
        out, _ = torch_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                               list(problem.dilation), problem.reset_after, context, problem.recompute)
        return out
