"""An independent oracle: at 1x1 kernels and 1x1 pixels, reset="after", ConvGRU is torch.nn.GRU.

nn.GRU's update gate weighs the old state (h' = (1-z) n + z h); ours weighs the
candidate, so our z block equals nn.GRU's with weights and biases negated.
Outputs, final states and every gradient (input, h0, each parameter) must agree.
"""

import pytest
import torch
from torch import nn

from convgru_ext import ConvGRU
from helpers import DEVICES, REL_TOL, rel_err, skip_unusable


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (3, True)])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_nn_gru(device, backend, num_layers, bidirectional, bias):
    skip_unusable(backend, device, torch.float64)
    T, B, Cin, C = 6, 4, 3, 5
    D = 2 if bidirectional else 1
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias, dtype=torch.float64, device=device)
    gru = nn.GRU(Cin, C, **kw)
    ours = ConvGRU(Cin, C, kernel_size=1, reset="after", backend=backend, **kw)
    sign = torch.ones(3 * C, dtype=torch.float64, device=device)
    sign[C: 2 * C] = -1  # the z block
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in gru.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            src = getattr(gru, name)
            p.copy_((src * sign.view(-1, *[1] * (src.dim() - 1))).view(p.shape))

    x = torch.randn(T, B, Cin, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(num_layers * D, B, C, dtype=torch.float64, device=device, requires_grad=True)
    out_ref, h_ref = gru(x, h0)
    out, h_n = ours(x[..., None, None], h0[..., None, None])
    assert out.shape == (T, B, D * C, 1, 1) and h_n.shape == (num_layers * D, B, C, 1, 1)
    g_out, g_h = torch.randn_like(out_ref), torch.randn_like(h_ref)

    grads_ref = torch.autograd.grad((out_ref * g_out).sum() + (h_ref * g_h).sum(),
                                    [x, h0, *gru.parameters()])
    grads = torch.autograd.grad((out[..., 0, 0] * g_out).sum() + (h_n[..., 0, 0] * g_h).sum(),
                                [x, h0, *[getattr(ours, n) for n, _ in gru.named_parameters()]])
    tol = REL_TOL[torch.float64]
    assert rel_err(out[..., 0, 0], out_ref) < tol
    assert rel_err(h_n[..., 0, 0], h_ref) < tol
    names = ["x", "h0"] + [n for n, _ in gru.named_parameters()]
    for name, g, g_ref in zip(names, grads, grads_ref):
        if name.startswith(("weight", "bias")):
            g_ref = g_ref * sign.view(-1, *[1] * (g_ref.dim() - 1))
        assert rel_err(g.reshape(g_ref.shape), g_ref) < tol, name
