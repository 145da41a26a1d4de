"""torch.library.opcheck on every registered custom op: schema, fake kernel, autograd, AOT dispatch."""

import pytest
import torch

from convgru_ext.backends._op import channels_last
from helpers import DEVICES, FUSED_BACKENDS, Case, make_inputs, skip_unusable

pytestmark = pytest.mark.onednn  # CI runs these again under ONEDNN_MAX_CPU_ISA=AVX2


def _forward_args(case, dtype, device, rng, requires_grad):
    inputs = make_inputs(case, dtype, device, rng)
    args = []
    for k in ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        t = inputs[k]
        if t is not None:
            t = t.detach()
            t = channels_last(t) if k in ("x", "h0") else t
            t.requires_grad_(requires_grad)
        args.append(t)
    return args + [list(case.dilation), case.reset == "after"]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("requires_grad", [True, False])
def test_opcheck_forward_and_backward(backend, device, reset, bias, requires_grad, rng):
    dtype = torch.float64
    skip_unusable(backend, device, dtype)
    forward = getattr(torch.ops.convgru_ext, f"{backend}_forward")
    backward = getattr(torch.ops.convgru_ext, f"{backend}_backward")
    case = Case(T=2, B=2, Cin=3, C=4, H=5, W=6, reset=reset, bias=bias, dilation=(1, 2))
    args = _forward_args(case, dtype, device, rng, requires_grad)
    torch.library.opcheck(forward, args)

    with torch.no_grad():
        out, gates = forward(*args)
    x, h0, w_ih, w_hh = (a.detach() for a in args[:4])
    grad_out = channels_last(torch.randn(out.shape, generator=rng, dtype=dtype).to(device))
    for need_dx in (True, False):
        torch.library.opcheck(backward, [grad_out, x, h0, out, gates, w_ih, w_hh,
                                         args[-2], args[-1], need_dx])


@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck_inference_op(reset, bias, rng):
    """The torch backend's inference op (what a call needing no gradient runs under torch.compile)."""
    case = Case(T=2, B=2, Cin=3, C=4, H=5, W=6, reset=reset, bias=bias, dilation=(1, 2))
    args = _forward_args(case, torch.float32, "cpu", rng, False)
    torch.library.opcheck(torch.ops.convgru_ext.torch_inference.default, args)
