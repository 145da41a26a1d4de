"""torch.compile(fullgraph=True) traces through the custom ops and matches eager, forward and backward."""

import pytest
import torch

from convgru_ext import ConvGRU, ConvGRUCell
from helpers import DEVICES, FUSED_BACKENDS, REL_TOL, rel_err, skip_unusable


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_convgru_matches_eager(backend, device):
    skip_unusable(backend, device, torch.float32)
    torch._dynamo.reset()
    gru = ConvGRU(3, 4, num_layers=2, bidirectional=True, reset="after", backend=backend, device=device)
    cell = ConvGRUCell(4, 4, kernel_size=(1, 5), backend=backend, device=device)

    def model(x, h0):
        out, h_n = gru(x, h0)
        return cell(out[-1, :, :4], h_n[0]), out

    x = torch.randn(3, 2, 3, 6, 7, device=device, requires_grad=True)
    h0 = torch.randn(4, 2, 4, 6, 7, device=device, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)
    results = []
    for fn in (model, compiled):
        h, out = fn(x, h0)
        loss = (h * h).sum() + out.sum()
        grads = torch.autograd.grad(loss, [x, h0, *gru.parameters(), *cell.parameters()])
        results.append([h, out, *grads])
    for i, (got, want) in enumerate(zip(results[1], results[0])):
        assert rel_err(got, want) < 10 * REL_TOL[torch.float32], f"result {i}"
