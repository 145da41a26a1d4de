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


def _check_raft_conv(conv, name: str, kernel=None) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"from_raft: `{name}` must be an nn.Conv2d; got {type(conv).__name__}")
    kh, kw = conv.kernel_size
    same = (conv.dilation[0] * (kh - 1) // 2, conv.dilation[1] * (kw - 1) // 2)
    if (conv.stride != (1, 1) or conv.groups != 1 or kh % 2 == 0 or kw % 2 == 0
            or tuple(conv.padding) != same or conv.padding_mode != "zeros"):
        raise ValueError(
            f"from_raft: `{name}` must be a stride-1, ungrouped conv with an odd kernel and zero 'same' "
            f"padding {same}; got stride={conv.stride}, groups={conv.groups}, kernel={conv.kernel_size}, "
            f"padding={conv.padding}, padding_mode={conv.padding_mode!r}")
    if kernel is not None and (conv.kernel_size, conv.dilation, conv.in_channels, conv.out_channels) != kernel:
        raise ValueError(f"from_raft: `{name}` must match convz's kernel size, dilation and channels "
                         f"{kernel}; got {(conv.kernel_size, conv.dilation, conv.in_channels, conv.out_channels)}")


def _raft_signature(convz, convr, convq):
    """(Cin, C, kernel, dilation) of a checked RAFT ConvGRU's three convs."""
    _check_raft_conv(convz, "convz")
    signature = (convz.kernel_size, convz.dilation, convz.in_channels, convz.out_channels)
    _check_raft_conv(convr, "convr", signature)
    _check_raft_conv(convq, "convq", signature)
    C = convz.out_channels
    if convz.in_channels <= C:
        raise ValueError(f"from_raft: `convz` must take cat([h, x]) with more than hidden={C} input "
                         f"channels; got {convz.in_channels}")
    return convz.in_channels - C, C, convz.kernel_size, convz.dilation


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
    Cin, C, kernel, dilation = _raft_signature(convz, convr, convq)
    w = convz.weight
    cell = cell_cls(Cin, C, kernel_size=kernel, bias=True, dilation=dilation, reset="before",
                    backend=backend, device=w.device, dtype=w.dtype)
    _load_raft(cell, convz, convr, convq)
    return cell


def sep_from_raft(sep_cls, raft_gru: nn.Module, backend: str = "auto"):
    """A ``sep_cls`` (SepConvGRU) equal to RAFT's SepConvGRU module ``raft_gru``."""
    needed = ("convz1", "convr1", "convq1", "convz2", "convr2", "convq2")
    missing = [n for n in needed if not hasattr(raft_gru, n)]
    if missing:
        raise TypeError(f"from_raft: `raft_gru` must have RAFT SepConvGRU's convs {needed}; missing {missing}")
    first = [getattr(raft_gru, n) for n in needed[:3]]
    second = [getattr(raft_gru, n) for n in needed[3:]]
    Cin, C, k1, d1 = _raft_signature(*first)
    Cin2, C2, k2, d2 = _raft_signature(*second)
    k = k1[1]
    if k1 != (1, k) or k2 != (k, 1) or (Cin2, C2) != (Cin, C) or d1 != (1, 1) or d2 != (1, 1):
        raise ValueError(f"from_raft: `raft_gru` must hold undilated (1, k) convs in convz1/convr1/convq1 "
                         f"and (k, 1) convs of the same channels in convz2/convr2/convq2; got kernels "
                         f"{k1} and {k2}, dilations {d1} and {d2}, channels {(Cin, C)} and {(Cin2, C2)}")
    w = raft_gru.convz1.weight
    sep = sep_cls(Cin, C, kernel_size=k, bias=True, reset="before", backend=backend,
                  device=w.device, dtype=w.dtype)
    _load_raft(sep.horizontal, *first)
    _load_raft(sep.vertical, *second)
    return sep
