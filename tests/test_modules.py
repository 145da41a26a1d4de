"""ConvGRUCell, ConvGRU and SepConvGRU: nn.GRU's contract, parameters, init, composition."""

import math

import pytest
import torch
from torch import nn

import convgru_ext
from convgru_ext import ConvGRU, ConvGRUCell, SepConvGRU
from convgru_ext.reference import convgru_cell_reference, convgru_sequence_reference
from helpers import REL_TOL, rel_err

F64 = dict(dtype=torch.float64)
TOL = REL_TOL[torch.float64]


def _params(module, layer, suffix=""):
    return [getattr(module, f"{k}_l{layer}{suffix}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_convgru_shapes_and_names_follow_nn_gru(num_layers, bidirectional, batch_first):
    T, B, Cin, C, H, W = 3, 2, 4, 5, 6, 7
    D = 2 if bidirectional else 1
    gru = ConvGRU(Cin, C, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, **F64)
    ref = nn.GRU(Cin, C, num_layers=num_layers, bidirectional=bidirectional)
    assert [n for n, _ in gru.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert len(gru.all_weights) == num_layers * D and len(gru.all_weights[0]) == 4
    lead = (B, T) if batch_first else (T, B)
    out, h_n = gru(torch.randn(*lead, Cin, H, W, **F64))
    assert out.shape == lead + (D * C, H, W)
    assert h_n.shape == (num_layers * D, B, C, H, W)


def test_convgru_matches_stacked_reference():
    """Two bidirectional layers computed by hand from the reference sequence function."""
    T, B, Cin, C, H, W = 4, 2, 3, 4, 5, 6
    gru = ConvGRU(Cin, C, kernel_size=3, num_layers=2, bidirectional=True, dilation=2, **F64)
    x = torch.randn(T, B, Cin, H, W, **F64)
    h0 = torch.randn(4, B, C, H, W, **F64)
    out, h_n = gru(x, h0)
    layer_in, finals = x, []
    for layer in range(2):
        fwd, h_f = convgru_sequence_reference(layer_in, h0[2 * layer], *_params(gru, layer), dilation=2)
        bwd, h_b = convgru_sequence_reference(layer_in.flip(0), h0[2 * layer + 1], *_params(gru, layer, "_reverse"),
                                              dilation=2)
        layer_in = torch.cat([fwd, bwd.flip(0)], dim=2)
        finals += [h_f, h_b]
    assert rel_err(out, layer_in) < TOL
    assert rel_err(h_n, torch.stack(finals)) < TOL


def test_unbatched_inputs():
    gru = ConvGRU(3, 4, num_layers=2, **F64)
    x = torch.randn(5, 3, 6, 7, **F64)
    h0 = torch.randn(2, 4, 6, 7, **F64)
    out, h_n = gru(x, h0)
    out_b, h_b = gru(x.unsqueeze(1), h0.unsqueeze(1))
    assert out.shape == (5, 4, 6, 7) and h_n.shape == (2, 4, 6, 7)
    assert rel_err(out, out_b[:, 0]) < TOL and rel_err(h_n, h_b[:, 0]) < TOL
    cell = ConvGRUCell(3, 4, **F64)
    h = torch.randn(4, 6, 7, **F64)
    assert rel_err(cell(x[0], h), cell(x[0][None], h[None])[0]) < TOL


def test_dropout_between_layers_only_in_training():
    x = torch.randn(3, 2, 3, 5, 5, **F64)
    gru = ConvGRU(3, 4, num_layers=2, dropout=1.0, **F64)  # p=1 drops every activation
    ref = ConvGRU(3, 4, num_layers=2, **F64)
    ref.load_state_dict(gru.state_dict())
    gru.eval()
    assert rel_err(gru(x)[0], ref(x)[0]) < TOL
    gru.train()
    out, h_n = gru(x)
    # layer 1 sees only zeros: its state is the reference run on a zero input
    zero_in = torch.zeros(3, 2, 4, 5, 5, **F64)
    expected, _ = convgru_sequence_reference(zero_in, None, *_params(gru, 1))
    assert rel_err(out, expected) < TOL
    assert rel_err(h_n[0], ref(x)[1][0]) < TOL  # the first layer itself is untouched


def test_cell_equals_one_step_sequence_and_zero_state():
    cell = ConvGRUCell(3, 4, kernel_size=(1, 5), reset="after", **F64)
    x = torch.randn(2, 3, 6, 7, **F64)
    h = torch.randn(2, 4, 6, 7, **F64)
    want = convgru_cell_reference(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, reset="after")
    assert rel_err(cell(x, h), want) < TOL
    assert rel_err(cell(x), cell(x, torch.zeros_like(h))) < TOL


@pytest.mark.parametrize("module", [
    lambda: ConvGRUCell(6, 5, kernel_size=(3, 5)),
    lambda: ConvGRU(6, 5, kernel_size=3, num_layers=2, bidirectional=True),
])
def test_init_is_conv2d_default(module):
    """Every parameter is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in from its own weight block."""
    m = module()
    for name, p in m.named_parameters():
        weight = getattr(m, name.replace("bias", "weight"))
        bound = 1 / math.sqrt(weight[0].numel())
        assert p.abs().max() <= bound, name
        assert p.abs().max() > 0.8 * bound or p.numel() < 20, name  # spread over the whole interval
    big = ConvGRUCell(64, 64, kernel_size=3)
    bound = 1 / math.sqrt(64 * 9)
    assert abs(big.weight_hh.std().item() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)
    assert abs(big.weight_hh.mean().item()) < 0.02 * bound
    before = big.weight_hh.detach().clone()
    big.reset_parameters()
    assert not torch.equal(before, big.weight_hh)


def test_no_bias_and_state_dict_round_trip():
    gru = ConvGRU(3, 4, bias=False)
    assert [n for n, _ in gru.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    other = ConvGRU(3, 4, bias=False)
    other.load_state_dict(gru.state_dict())
    x = torch.randn(2, 1, 3, 4, 4)
    assert torch.equal(gru(x)[0], other(x)[0])


def test_sep_conv_gru_is_horizontal_then_vertical():
    sep = SepConvGRU(3, 4, **F64)
    assert sep.horizontal.kernel_size == (1, 5) and sep.vertical.kernel_size == (5, 1)
    x, h = torch.randn(2, 3, 6, 9, **F64), torch.randn(2, 4, 6, 9, **F64)
    assert rel_err(sep(x, h), sep.vertical(x, sep.horizontal(x, h))) < TOL


def test_repr_and_exports():
    assert "kernel_size=(3, 3)" in repr(ConvGRUCell(2, 3))
    assert "num_layers=2" in repr(ConvGRU(2, 3, num_layers=2))
    assert set(convgru_ext.__all__) >= {"ConvGRU", "ConvGRUCell", "SepConvGRU", "convgru_cell",
                                        "convgru_sequence", "available_backends"}
    avail = convgru_ext.available_backends()
    assert avail["reference"] is None and avail["torch"] is None


def test_modules_move_and_cast():
    gru = ConvGRU(2, 3).to(torch.float64)
    out, _ = gru(torch.randn(2, 1, 2, 4, 4, **F64))
    assert out.dtype == torch.float64


def test_dropout_with_one_layer_warns_like_nn_gru():
    with pytest.warns(UserWarning, match="num_layers > 1"):
        ConvGRU(3, 4, dropout=0.5)


def test_reference_pads_same_for_any_dilation():
    """The reference cell keeps H x W for asymmetric kernels and dilations, an int dilation meaning a pair."""
    x, h = torch.randn(1, 2, 7, 8, **F64), torch.randn(1, 3, 7, 8, **F64)
    w_ih, w_hh = torch.randn(9, 2, 3, 5, **F64), torch.randn(9, 3, 3, 5, **F64)
    assert convgru_cell_reference(x, h, w_ih, w_hh, dilation=(2, 3)).shape == h.shape
    assert torch.equal(convgru_cell_reference(x, h, w_ih, w_hh, dilation=2),
                       convgru_cell_reference(x, h, w_ih, w_hh, dilation=(2, 2)))
