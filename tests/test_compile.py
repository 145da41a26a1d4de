"""torch.compile(fullgraph=True) traces through the custom ops and matches eager, forward and backward."""

import contextlib

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from convgru_ext import ConvGRU, ConvGRUCell
from convgru_ext.backends import torch_fallback
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


@pytest.mark.parametrize("loops", ["cpp", "python"])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_compiled_inference_path_matches_eager(reset, loops):
    """Under no_grad the torch backend's inference path traces fullgraph: into the graph where the C++ loops run
    it (their op one node, Inductor's fused code around it), else as its own opaque op."""
    native = torch_fallback.NATIVE
    if loops == "cpp" and not native.usable(torch.empty(0)):
        pytest.skip(native.error or "the C++ loops are switched off")
    torch._dynamo.reset()
    gru = ConvGRU(3, 4, num_layers=2, reset=reset, backend="torch")
    x, h0 = torch.randn(3, 2, 3, 6, 7), torch.randn(2, 2, 4, 6, 7)
    compiled = torch.compile(gru, fullgraph=True)
    with contextlib.nullcontext() if loops == "cpp" else native.disabled(), torch.no_grad():
        want = gru(x, h0)
        got, code = run_and_get_code(compiled, x, h0)
    for g, w in zip(got, want):
        assert rel_err(g, w) < 10 * REL_TOL[torch.float32]
    code = "\n".join(code)
    if loops == "cpp":
        assert code.count("convgru_ext._cpu_forward_loop.default(") == 2 and "torch_inference" not in code
        assert "cpp_fused" in code  # the layout and weight work around the loops, fused by Inductor
    else:
        assert code.count("convgru_ext.torch_inference.default(") == 2


def test_inference_path_keeps_no_gates(monkeypatch):
    """A call that needs no gradient never reaches the op pair (which saves every step's gates)."""
    from convgru_ext.backends import torch_fallback

    def refuse(*args, **kwargs):
        raise AssertionError("the training op ran under no_grad")

    monkeypatch.setattr(torch_fallback, "torch_forward", refuse)
    gru = ConvGRU(3, 4, backend="torch")
    with torch.no_grad():
        gru(torch.randn(2, 1, 3, 5, 5))
    with pytest.raises(AssertionError, match="the training op ran"):
        gru(torch.randn(2, 1, 3, 5, 5))


@pytest.mark.parametrize("reset", ["before", "after"])
def test_compiled_small_step_matches_eager(reset):
    """A small single step traced: the plain step (``torch_fallback._single_step``), its convolutions NCHW through
    their own op (with its autograd formula), the gate math Inductor's; outputs and every gradient as in eager."""
    torch._dynamo.reset()
    cell = ConvGRUCell(3, 4, reset=reset, backend="torch")
    x, h = torch.randn(2, 3, 6, 7), torch.randn(2, 4, 6, 7)
    compiled = torch.compile(cell, fullgraph=True)
    with torch.no_grad():
        want = cell(x, h)
        got, code = run_and_get_code(compiled, x, h)
    assert rel_err(got, want) < 10 * REL_TOL[torch.float32]
    code = "\n".join(code)
    assert code.count("convgru_ext._conv_nchw.default(") == (2 if reset == "after" else 3)
    assert "_cpu_forward_loop" not in code and "cpp_fused" in code
    x.requires_grad_(), h.requires_grad_()
    inputs = [x, h, *cell.parameters()]
    got, want = compiled(x, h), cell(x, h)
    assert rel_err(got, want) < 10 * REL_TOL[torch.float32]
    upstream = torch.randn_like(want)
    for name, g, w in zip(["x", "h", "weight_ih", "weight_hh", "bias_ih", "bias_hh"],
                          torch.autograd.grad((got * upstream).sum(), inputs),
                          torch.autograd.grad((want * upstream).sum(), inputs)):
        assert rel_err(g, w) < 10 * REL_TOL[torch.float32], name
