"""Converting other projects' ConvGRU layers into ours, without retraining.

RAFT's ``ConvGRU`` (Teed & Deng, 2020) holds three ``nn.Conv2d`` over the
concatenation ``cat([h, x])``::

    z = sigmoid(convz(cat([h, x]))); r = sigmoid(convr(cat([h, x])))
    q = tanh(convq(cat([r * h, x])));  h = (1 - z) * h + z * q

which is our cell with ``reset="before"``: the first C input channels of each
conv are the recurrent weights ``U``, the rest the input weights ``W``, and the
convs' biases become ``bias_ih`` (``bias_hh`` is zero).
"""

from __future__ import annotations

import torch
from torch import nn

from ._contract import check_raft_convs, check_raft_sep


def _load_raft(cell, convz, convr, convq) -> None:
    """Copy RAFT's three convs into ``cell`` (shapes already checked to agree)."""
    C = convz.out_channels
    convs = (convr, convz, convq)  # our gate order: r, z, n
    with torch.no_grad():
        cell.weight_hh.copy_(torch.cat([c.weight[:, :C] for c in convs]))
        cell.weight_ih.copy_(torch.cat([c.weight[:, C:] for c in convs]))
        cell.bias_ih.copy_(torch.cat([c.bias if c.bias is not None else c.weight.new_zeros(C) for c in convs]))
        cell.bias_hh.zero_()


def cell_from_raft(cell_cls, convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d, backend: str = "auto"):
    """A ``cell_cls`` (ConvGRUCell) equal to RAFT's ConvGRU(convz, convr, convq)."""
    Cin, C, kernel, dilation = check_raft_convs(convz, convr, convq)
    w = convz.weight
    cell = cell_cls(Cin, C, kernel_size=kernel, bias=True, dilation=dilation, reset="before",
                    backend=backend, device=w.device, dtype=w.dtype)
    _load_raft(cell, convz, convr, convq)
    return cell


def sep_from_raft(sep_cls, raft_gru: nn.Module, backend: str = "auto"):
    """A ``sep_cls`` (SepConvGRU) equal to RAFT's SepConvGRU module ``raft_gru``."""
    Cin, C, k, first, second = check_raft_sep(raft_gru)
    w = raft_gru.convz1.weight
    sep = sep_cls(Cin, C, kernel_size=k, bias=True, reset="before", backend=backend,
                  device=w.device, dtype=w.dtype)
    _load_raft(sep.horizontal, *first)
    _load_raft(sep.vertical, *second)
    return sep
