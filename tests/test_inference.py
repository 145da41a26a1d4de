"""The torch backend's inference path (``torch_fallback.infer``): its prepacked-weight cache never serves a stale
weight, whatever writes to the weight between calls."""

import pytest
import torch

from convgru_ext import ConvGRU, ConvGRUCell
from convgru_ext.backends import torch_fallback
from helpers import REL_TOL, rel_err

pytestmark = pytest.mark.skipif(not torch_fallback._MKLDNN_BUILT, reason="this torch has no oneDNN (no packed path)")


@pytest.fixture(autouse=True)
def _pack_every_convolution(monkeypatch):
    """These tiny convolutions stay below the packing threshold: pack them all the same."""
    monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", 0)


def _assert_fresh(module, x, h):
    """The inference path (packed weights, cache warm) equals the reference on the module's current weights."""
    with torch.no_grad():
        got = module(x, h)
        module.backend = "reference"
        want = module(x, h)
        module.backend = "torch"
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert rel_err(g, w) <= REL_TOL[torch.float32]


def _cell():
    torch.manual_seed(0)
    return ConvGRUCell(3, 4, backend="torch"), torch.randn(2, 3, 6, 7), torch.randn(2, 4, 6, 7)  # h != 0: U*h counts


def _write_optimizer_step(cell):
    cell(torch.randn(2, 3, 6, 7)).square().sum().backward()
    torch.optim.SGD(cell.parameters(), lr=0.5).step()


def _write_load_state_dict(cell):
    other = ConvGRUCell(3, 4)
    cell.load_state_dict(other.state_dict())


def _write_through_data(cell):  # `.data` has its own version counter: only the values tell
    cell.weight_hh.data.mul_(-2.0)
    cell.weight_ih.data[0, 0, 1, 1] += 1.0


def _write_under_no_grad(cell):
    with torch.no_grad():
        cell.weight_hh.mul_(0.5)
        cell.weight_ih.add_(0.25)


@pytest.mark.parametrize("write", [_write_optimizer_step, _write_load_state_dict, _write_through_data,
                                   _write_under_no_grad], ids=lambda f: f.__name__.removeprefix("_write_"))
def test_a_written_weight_is_never_served_stale(write):
    cell, x, h = _cell()
    _assert_fresh(cell, x, h)  # packs and caches
    _assert_fresh(cell, x, h)  # served from the cache
    write(cell)
    _assert_fresh(cell, x, h)


def test_the_cache_is_used_and_bounded(monkeypatch):
    torch_fallback._PACKED.clear()
    packs = []
    reorder = torch.ops.mkldnn._reorder_convolution_weight

    class CountingOps:  # stands in for torch.ops.mkldnn inside packed_weight
        def __getattr__(self, name):
            return getattr(torch.ops.mkldnn, name)

        def _reorder_convolution_weight(self, *args):
            packs.append(args[0].shape)
            return reorder(*args)

    monkeypatch.setattr(torch_fallback, "_mkldnn_ops", CountingOps())
    gru, x = ConvGRU(3, 4, backend="torch"), torch.randn(5, 2, 3, 6, 7)
    with torch.no_grad():
        gru(x)
        first = len(packs)
        gru(x)
    assert first == 3 and len(packs) == 3  # w_ih, U_rz, U_n packed once, then reused across calls and steps
    monkeypatch.setattr(torch_fallback, "PACKED_CACHE_SIZE", 2)
    with torch.no_grad():
        ConvGRU(3, 4, backend="torch")(x)
    assert len(torch_fallback._PACKED) == 2


def test_weights_packed_under_inference_mode_serve_training_calls():
    """The cache's copies made under inference_mode are inference tensors: a later training call still works."""
    gru, x = ConvGRU(3, 4, backend="torch"), torch.randn(3, 2, 3, 6, 7)
    with torch.inference_mode():
        first = gru(x)[0]
    out = gru(x)[0]
    out.square().sum().backward()
    assert gru.weight_hh_l0.grad is not None and rel_err(out.detach(), first) <= REL_TOL[torch.float32]
