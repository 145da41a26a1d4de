"""The torch backend's inference path: its packed weights (``torch_fallback.packed_weight``: packed once per call and
reused by its steps, never across calls, so that no write to a weight between calls can be missed), and the single
small step it runs without the loops (``torch_fallback._single_step``)."""

import contextlib

import pytest
import torch

from convgru_ext import ConvGRU, ConvGRUCell
from convgru_ext.backends import torch_fallback
from convgru_ext.testing import LOWP_FACTOR, LOWP_SLACK
from helpers import REL_TOL, rel_err

pytestmark = pytest.mark.skipif(not torch_fallback._MKLDNN_BUILT, reason="this torch has no oneDNN (no packed path)")


@pytest.fixture(autouse=True)
def _pack_every_convolution(monkeypatch):
    """These tiny convolutions stay below the packing threshold: pack them all the same."""
    monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", 0)


def _assert_fresh(module, x, h):
    """The inference path (packed weights) equals the reference on the module's current weights."""
    with torch.no_grad():
        got = module(x, h)
        module.backend = "reference"
        want = module(x, h)
        module.backend = "torch"
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert rel_err(g, w) <= REL_TOL[torch.float32]


def _layer():
    """A layer whose calls pack (T >= 2 steps reuse each packed weight); h0 != 0: U*h counts."""
    torch.manual_seed(0)
    return ConvGRU(3, 4, backend="torch"), torch.randn(3, 2, 3, 6, 7), torch.randn(1, 2, 4, 6, 7)


def _write_optimizer_step(gru):
    gru(torch.randn(3, 2, 3, 6, 7))[0].square().sum().backward()
    torch.optim.SGD(gru.parameters(), lr=0.5).step()


def _write_load_state_dict(gru):
    other = ConvGRU(3, 4)
    gru.load_state_dict(other.state_dict())


def _write_through_data(gru):  # `.data` has its own version counter: only the values tell
    gru.weight_hh_l0.data.mul_(-2.0)
    gru.weight_ih_l0.data[0, 0, 1, 1] += 1.0


def _write_under_no_grad(gru):
    with torch.no_grad():
        gru.weight_hh_l0.mul_(0.5)
        gru.weight_ih_l0.add_(0.25)


@pytest.mark.parametrize("write", [_write_optimizer_step, _write_load_state_dict, _write_through_data,
                                   _write_under_no_grad], ids=lambda f: f.__name__.removeprefix("_write_"))
def test_a_written_weight_is_never_served_stale(write):
    gru, x, h = _layer()
    _assert_fresh(gru, x, h)  # packs
    _assert_fresh(gru, x, h)
    write(gru)
    _assert_fresh(gru, x, h)


def _packs(fn) -> list:
    """The shapes of the weights that ``fn()`` packs for oneDNN (the profiler sees the C++ loops' packing too)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return [tuple(e.input_shapes[0]) for e in prof.events() if e.name == "mkldnn::_reorder_convolution_weight"]


@pytest.mark.parametrize("native", [True, False], ids=["cpp-loops", "python-loops"])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_weights_are_packed_once_per_call_and_reused_by_its_steps(reset, native):
    if native and not torch_fallback.NATIVE.usable(torch.empty(0)):
        pytest.skip(torch_fallback.NATIVE.error or "the C++ loops are switched off")
    gru, x = ConvGRU(3, 4, backend="torch", reset=reset), torch.randn(5, 2, 3, 6, 7)
    recurrent = [(8, 4, 3, 3), (4, 4, 3, 3)] if reset == "before" else [(12, 4, 3, 3)]  # U_rz, U_n; or all of U
    with contextlib.nullcontext() if native else torch_fallback.NATIVE.disabled(), torch.no_grad():
        assert sorted(_packs(lambda: gru(x))) == sorted(recurrent)  # the projection runs once: nothing to reuse
        assert sorted(_packs(lambda: gru(x))) == sorted(recurrent)  # packed again: nothing outlives a call
    with contextlib.nullcontext() if native else torch_fallback.NATIVE.disabled():
        out = gru(x)[0]
        packs = _packs(lambda: out.sum().backward())
    # the backward's data gradients: the transposed recurrent weights, once for every step
    assert sorted(packs) == sorted((w[1], w[0], *w[2:]) for w in recurrent)


def test_a_single_step_packs_nothing():
    """One step would use a packed weight once: F.conv2d's own reorder is the same work."""
    with torch.no_grad():
        cell = ConvGRUCell(3, 4, backend="torch")
        assert _packs(lambda: cell(torch.randn(2, 3, 6, 7), torch.randn(2, 4, 6, 7))) == []


def test_weights_packed_under_inference_mode_serve_training_calls():
    """Weights packed under inference_mode are inference tensors: a later training call still works."""
    gru, x = ConvGRU(3, 4, backend="torch"), torch.randn(3, 2, 3, 6, 7)
    with torch.inference_mode():
        first = gru(x)[0]
    out = gru(x)[0]
    out.square().sum().backward()
    assert gru.weight_hh_l0.grad is not None and rel_err(out.detach(), first) <= REL_TOL[torch.float32]


def _small_step_case(reset, bias, dilation, dtype, seed):
    torch.manual_seed(seed)
    cell = ConvGRUCell(5, 6, 3, bias=bias, dilation=dilation, reset=reset, backend="torch").to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.3)
    reference = ConvGRUCell(5, 6, 3, bias=bias, dilation=dilation, reset=reset, backend="reference").double()
    reference.load_state_dict(cell.state_dict())
    return cell, reference, torch.randn(2, 5, 7, 9, dtype=dtype), torch.randn(2, 6, 7, 9, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("bias", [True, False])
def test_one_small_step_matches_reference_without_the_loops(monkeypatch, reset, bias, dtype):
    """One step of fewer than CAT_MIN_PIXELS pixels under no_grad: the plain NCHW step, never the loops (the C++
    loop's op refuses here), equal to the reference for NCHW and channels-last inputs and h=None, with a context,
    and returning channels-last as every other call does."""
    cell, reference, x, h = _small_step_case(reset, bias, (1, 2), dtype, seed=7)
    context = torch.randn(2, 18, 7, 9, dtype=dtype)

    def refuse(*args):
        raise AssertionError("the loops ran")

    monkeypatch.setattr(torch_fallback.NATIVE, "forward", refuse)
    monkeypatch.setattr(torch_fallback, "torch_inference", refuse)
    cl = torch.channels_last
    for args in ((x, h), (x.contiguous(memory_format=cl), h.contiguous(memory_format=cl)), (x, None)):
        kwargs = {"context": context}
        with torch.no_grad():
            got = cell(*args, **kwargs)
            want = reference(*(None if t is None else t.double() for t in args), context=context.double())
        assert got.dtype == dtype and got.is_contiguous(memory_format=cl)
        if dtype in REL_TOL:
            assert rel_err(got, want) <= REL_TOL[dtype]
        else:  # bfloat16: flash-attention's rule, against the reference's own error in that dtype
            with torch.no_grad():
                eager = reference.to(dtype)(*args, **kwargs)
            reference.double()
            assert rel_err(got, want) <= LOWP_FACTOR * rel_err(eager, want) + LOWP_SLACK
    with pytest.raises(AssertionError, match="the loops ran"):  # a larger step takes the loops
        with torch.no_grad():
            cell(torch.randn(1, 5, 32, 32, dtype=dtype), None)
