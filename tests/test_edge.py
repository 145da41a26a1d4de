"""Edge cases: empty batches and sequences, odd memory layouts, NaN."""

import pytest
import torch

from convgru_ext import ConvGRU, ConvGRUCell, convgru_sequence
from helpers import DEVICES, FUSED_BACKENDS, REL_TOL, Case, make_inputs, rel_err, skip_unusable

BACKENDS = ("reference",) + FUSED_BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(backend, device, rng):
    skip_unusable(backend, device)
    inputs = make_inputs(Case(B=0), torch.float32, device, rng)
    out, h = convgru_sequence(*inputs.values(), backend=backend)
    assert out.shape == (4, 0, 7, 9, 11) and h.shape == (0, 7, 9, 11)
    out.sum().backward()
    assert inputs["weight_hh"].grad.shape == inputs["weight_hh"].shape
    assert inputs["weight_hh"].grad.abs().sum() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_sequence(backend, rng):
    skip_unusable(backend, "cpu")
    inputs = make_inputs(Case(T=0), torch.float32, "cpu", rng)
    out, h = convgru_sequence(*inputs.values(), backend=backend)
    assert out.shape == (0, 3, 7, 9, 11)
    assert torch.equal(h, inputs["h0"]) and h is not inputs["h0"]
    h.sum().backward()
    assert torch.equal(inputs["h0"].grad, torch.ones_like(inputs["h0"]))
    out, h = convgru_sequence(inputs["x"], None, *list(inputs.values())[2:], backend=backend)
    assert h.shape == (3, 7, 9, 11) and h.abs().sum() == 0
    gru = ConvGRU(5, 7, num_layers=2, bidirectional=True, backend=backend)
    out, h_n = gru(torch.randn(0, 2, 5, 4, 4))
    assert out.shape == (0, 2, 14, 4, 4) and h_n.shape == (4, 2, 7, 4, 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_layouts_give_the_same_result(backend, device, rng):
    """Non-contiguous (sliced, transposed) and channels_last inputs: same values and gradients."""
    skip_unusable(backend, device, torch.float64)
    inputs = make_inputs(Case(), torch.float64, device, rng)
    args = [t.detach() for t in inputs.values()]
    want = convgru_sequence(*args, backend=backend)
    x, h0, w_ih, w_hh, b_ih, b_hh = args
    x_nc = torch.randn(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype, device=device)[..., ::2].copy_(x)
    x_cl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    h_cl = h0.contiguous(memory_format=torch.channels_last)
    w_t = w_hh.transpose(2, 3).contiguous().transpose(2, 3)
    b_nc = torch.stack([b_ih, b_ih], 1)[:, 0]
    for variant in [(x_nc, h0, w_ih, w_hh, b_nc, b_hh), (x_cl, h_cl, w_ih, w_t, b_ih, b_hh)]:
        assert not all(t.is_contiguous() for t in variant)
        got = convgru_sequence(*variant, backend=backend)
        assert rel_err(got[0], want[0]) < REL_TOL[torch.float64]
        assert rel_err(got[1], want[1]) < REL_TOL[torch.float64]
    x_cl.requires_grad_()
    convgru_sequence(x_cl, h_cl, w_ih, w_hh, b_ih, b_hh, backend=backend)[0].sum().backward()
    x.requires_grad_()
    convgru_sequence(x, h0, w_ih, w_hh, b_ih, b_hh, backend=backend)[0].sum().backward()
    assert rel_err(x_cl.grad, x.grad) < REL_TOL[torch.float64]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_nan_propagates(backend, device, rng):
    skip_unusable(backend, device)
    inputs = make_inputs(Case(), torch.float32, device, rng)
    x = inputs["x"].detach().clone()
    x[1, 0, 0, 4, 5] = float("nan")
    out, h = convgru_sequence(x, *list(inputs.values())[1:], backend=backend)
    assert not out[0].isnan().any()  # step 0 does not see it
    assert out[1, 0].isnan().any() and not out[1, 1:].isnan().any()  # only batch 0, from step 1 on
    assert h[0].isnan().any()
    out.sum().backward()
    assert inputs["weight_hh"].grad.isnan().any()


def test_cell_module_with_batch_zero():
    cell = ConvGRUCell(3, 4)
    assert cell(torch.randn(0, 3, 5, 5)).shape == (0, 4, 5, 5)
