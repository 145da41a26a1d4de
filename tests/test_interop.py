"""from_raft: our cells reproduce RAFT's ConvGRU and SepConvGRU updates, computed here from the convs."""

import pytest
import torch
from torch import nn

from convgru_ext import ConvGRUCell, SepConvGRU
from helpers import REL_TOL, rel_err

F64 = dict(dtype=torch.float64)


def raft_update(h, x, convz, convr, convq):
    """RAFT's ConvGRU.forward(h, x), written from the paper's code description."""
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))
    r = torch.sigmoid(convr(hx))
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


def raft_convs(C, Cin, kernel, padding):
    return [nn.Conv2d(C + Cin, C, kernel, padding=padding, **F64) for _ in range(3)]


def test_cell_from_raft():
    C, Cin = 6, 5
    convz, convr, convq = raft_convs(C, Cin, 3, 1)
    cell = ConvGRUCell.from_raft(convz, convr, convq)
    assert (cell.input_size, cell.hidden_size, cell.kernel_size) == (Cin, C, (3, 3))
    h, x = torch.randn(2, C, 7, 9, **F64), torch.randn(2, Cin, 7, 9, **F64)
    assert rel_err(cell(x, h), raft_update(h, x, convz, convr, convq)) < REL_TOL[torch.float64]


class RaftSepConvGRU(nn.Module):
    """RAFT's separable GRU: horizontal (1x5) then vertical (5x1) updates."""

    def __init__(self, C, Cin):
        super().__init__()
        self.convz1, self.convr1, self.convq1 = raft_convs(C, Cin, (1, 5), (0, 2))
        self.convz2, self.convr2, self.convq2 = raft_convs(C, Cin, (5, 1), (2, 0))

    def forward(self, h, x):
        h = raft_update(h, x, self.convz1, self.convr1, self.convq1)
        return raft_update(h, x, self.convz2, self.convr2, self.convq2)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_sep_from_raft(backend):
    C, Cin = 4, 7
    raft = RaftSepConvGRU(C, Cin)
    sep = SepConvGRU.from_raft(raft, backend=backend)
    h, x = torch.randn(2, C, 8, 10, **F64), torch.randn(2, Cin, 8, 10, **F64)
    assert rel_err(sep(x, h), raft(h, x)) < REL_TOL[torch.float64]


def test_from_raft_rejects_non_same_padding():
    convz, convr, convq = raft_convs(4, 3, 3, 1)
    bad = nn.Conv2d(7, 4, 3, padding=0)
    with pytest.raises(ValueError, match="convq"):
        ConvGRUCell.from_raft(convz, convr, bad)
    with pytest.raises(TypeError, match="convz"):
        ConvGRUCell.from_raft("not a conv", convr, convq)
    with pytest.raises(TypeError, match="raft_gru"):
        SepConvGRU.from_raft(nn.Linear(2, 2))
