"""Converting other projects' ConvGRU layers into ours, without retraining.

RAFT's ``ConvGRU`` (Teed & Deng, 2020) holds three ``nn.Conv2d`` over the
concatenation ``cat([h, x])``::

    z = sigmoid(convz(cat([h, x]))); r = sigmoid(convr(cat([h, x])))
    q = tanh(convq(cat([r * h, x])));  h = (1 - z) * h + z * q

which is our cell with ``reset="before"``: the first C input channels of each
conv are the recurrent weights ``U``, the rest the input weights ``W``, and the
convs' biases become ``bias_ih`` (``bias_hh`` is zero).  :func:`raft_to_gates` and
:func:`gates_to_raft` map the tensors both ways; ``patch_raft`` (:mod:`convgru_ext.raft_patch`) uses
them for whole models and their checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from ._contract import check_raft_convs, check_raft_sep

#: RAFT's convs (z, r, q) in our gate order (r, z, n), and back: the permutation is its own inverse
_GATE_ORDER = (1, 0, 2)


def raft_to_gates(weights, biases):
    """RAFT's z, r, q conv weights (C, C + Cin, kh, kw) and biases (C,) as our ``(weight_ih, weight_hh, bias_ih)``."""
    C = weights[0].shape[0]
    w = [weights[i] for i in _GATE_ORDER]
    return (torch.cat([t[:, C:] for t in w]), torch.cat([t[:, :C] for t in w]),
            torch.cat([biases[i] for i in _GATE_ORDER]))


def gates_to_raft(weight_ih, weight_hh, bias):
    """The inverse of :func:`raft_to_gates`: RAFT's ``([w_z, w_r, w_q], [b_z, b_r, b_q])`` from our weights and
    ``bias`` (bias_ih + bias_hh, which add up in every gate with ``reset="before"``)."""
    w, b = torch.cat([weight_hh, weight_ih], dim=1).chunk(3), bias.chunk(3)
    return [w[i] for i in _GATE_ORDER], [b[i] for i in _GATE_ORDER]


def _load_raft(cell, convz, convr, convq) -> None:
    """Copy RAFT's three convs into ``cell`` (shapes already checked to agree)."""
    convs = (convz, convr, convq)
    biases = [c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in convs]
    with torch.no_grad():
        for param, value in zip((cell.weight_ih, cell.weight_hh, cell.bias_ih),
                                raft_to_gates([c.weight for c in convs], biases)):
            param.copy_(value)
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
