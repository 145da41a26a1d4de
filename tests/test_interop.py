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


def test_cell_from_raft_dilated():
    """A dilated RAFT conv with its 'same' padding is accepted, and the cell keeps the dilation."""
    C, Cin = 3, 2
    convz, convr, convq = [nn.Conv2d(C + Cin, C, (3, 5), padding=(2, 2), dilation=(2, 1), **F64) for _ in range(3)]
    cell = ConvGRUCell.from_raft(convz, convr, convq)
    assert (cell.kernel_size, cell.dilation) == ((3, 5), (2, 1))
    h, x = torch.randn(1, C, 7, 9, **F64), torch.randn(1, Cin, 7, 9, **F64)
    assert rel_err(cell(x, h), raft_update(h, x, convz, convr, convq)) < REL_TOL[torch.float64]


@pytest.mark.parametrize("name,bad", [
    ("stride", nn.Conv2d(7, 4, 3, padding=1, stride=2)),
    ("groups", nn.Conv2d(8, 4, 3, padding=1, groups=2)),
    ("even kernel", nn.Conv2d(7, 4, (3, 2), padding=(1, 0))),
    ("padding mode", nn.Conv2d(7, 4, 3, padding=1, padding_mode="reflect")),
    ("dilation without its padding", nn.Conv2d(7, 4, 3, padding=1, dilation=2)),
])
def test_from_raft_rejects_a_conv_that_is_not_same(name, bad):
    convz, convr, convq = raft_convs(4, 3, 3, 1)
    with pytest.raises(ValueError, match="`convr` must be a stride-1, ungrouped conv with an odd kernel"):
        ConvGRUCell.from_raft(convz, bad, convq)


def test_from_raft_rejects_mismatched_convs():
    convz, convr, convq = raft_convs(4, 3, 3, 1)
    with pytest.raises(TypeError, match="`convr` must be an nn.Conv2d; got int"):
        ConvGRUCell.from_raft(convz, 3, convq)
    with pytest.raises(ValueError, match="`convq` must match convz's kernel size, dilation and channels"):
        ConvGRUCell.from_raft(convz, convr, nn.Conv2d(7, 4, 5, padding=2))
    with pytest.raises(ValueError, match="`convr` must match convz's kernel size, dilation and channels"):
        ConvGRUCell.from_raft(convz, nn.Conv2d(8, 4, 3, padding=1), convq)
    with pytest.raises(ValueError, match=r"`convz` must take cat\(\[h, x\]\) with more than hidden=4"):
        ConvGRUCell.from_raft(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])


def test_sep_from_raft_rejects_wrong_convs():
    raft = RaftSepConvGRU(4, 3)
    del raft.convq2
    with pytest.raises(TypeError, match=r"`raft_gru` must have RAFT SepConvGRU's convs .*; missing \['convq2'\]"):
        SepConvGRU.from_raft(raft)
    swapped = RaftSepConvGRU(4, 3)
    for n in ("z", "r", "q"):
        first, second = getattr(swapped, f"conv{n}1"), getattr(swapped, f"conv{n}2")
        setattr(swapped, f"conv{n}1", second)
        setattr(swapped, f"conv{n}2", first)
    with pytest.raises(ValueError, match=r"`raft_gru` must hold undilated \(1, k\) convs"):
        SepConvGRU.from_raft(swapped)
    other = RaftSepConvGRU(4, 3)
    other.convz2, other.convr2, other.convq2 = raft_convs(4, 5, (5, 1), (2, 0))
    with pytest.raises(ValueError, match="of the same channels"):
        SepConvGRU.from_raft(other)
    bad = RaftSepConvGRU(4, 3)
    bad.convr1 = nn.Conv2d(7, 4, (1, 5), padding=(0, 1))
    with pytest.raises(ValueError, match="`convr` must be a stride-1"):
        SepConvGRU.from_raft(bad)
