"""The specification: a ConvGRU written as the equations read.

Every other backend is tested against these two functions.  They favour
clarity over speed (four or five convolutions per step, autograd does the
backward) and do no argument checking: call them through
:func:`convgru_ext.convgru_sequence` with ``backend="reference"`` for that.

Per step, with ``*`` a 2-D "same" convolution and gate order r, z, n::

    r  = sigmoid(W_r * x + b_ir + U_r * h + b_hr)
    z  = sigmoid(W_z * x + b_iz + U_z * h + b_hz)
    n  = tanh(W_n * x + b_in + U_n * (r . h) + b_hn)        reset="before"
    n  = tanh(W_n * x + b_in + r . (U_n * h + b_hn))        reset="after"
    h' = (1 - z) . h + z . n

``z`` weighs the *candidate* (GRU-RCN, RAFT); ``torch.nn.GRU`` uses the
opposite convention, ``h' = (1 - z) . n + z . h``.  An optional per-gate
``context`` ``(c_r, c_z, c_n)`` (RAFT-Stereo, IGEV, the stacked GRU-RCN) adds
to the input terms: ``W_r * x + b_ir + c_r`` and so on, ``c_n`` outside the
reset in both modes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._contract import same_padding


def _same_conv(inp: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation) -> torch.Tensor:
    dilation = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    return F.conv2d(inp, weight, bias, padding=same_padding(weight.shape[2:], dilation), dilation=dilation)


def convgru_cell_reference(
    x: torch.Tensor,
    h: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor] = None,
    bias_hh: Optional[torch.Tensor] = None,
    *,
    dilation=1,
    reset: str = "before",
    context: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One ConvGRU step: ``x`` (B, Cin, H, W), ``h`` (B, C, H, W) -> ``h'`` (B, C, H, W).

    ``context`` (B, 3C, H, W), blocks ``c_r, c_z, c_n``, adds to the gates' input terms (RAFT-Stereo)."""
    W_r, W_z, W_n = weight_ih.chunk(3)
    U_r, U_z, U_n = weight_hh.chunk(3)
    b_ir, b_iz, b_in = bias_ih.chunk(3) if bias_ih is not None else (None, None, None)
    b_hr, b_hz, b_hn = bias_hh.chunk(3) if bias_hh is not None else (None, None, None)
    c_r, c_z, c_n = context.chunk(3, dim=1) if context is not None else (0, 0, 0)

    r = torch.sigmoid(_same_conv(x, W_r, b_ir, dilation) + c_r + _same_conv(h, U_r, b_hr, dilation))
    z = torch.sigmoid(_same_conv(x, W_z, b_iz, dilation) + c_z + _same_conv(h, U_z, b_hz, dilation))
    if reset == "before":
        n = torch.tanh(_same_conv(x, W_n, b_in, dilation) + c_n + _same_conv(r * h, U_n, b_hn, dilation))
    else:
        n = torch.tanh(_same_conv(x, W_n, b_in, dilation) + c_n + r * _same_conv(h, U_n, b_hn, dilation))
    return (1 - z) * h + z * n


def convgru_sequence_reference(
    x: torch.Tensor,
    h0: Optional[torch.Tensor],
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor] = None,
    bias_hh: Optional[torch.Tensor] = None,
    *,
    dilation=1,
    reset: str = "before",
    context: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the cell over ``x`` (T, B, Cin, H, W) from ``h0`` (B, C, H, W; None = zeros), with ``context``
    (Tc, B, 3C, H, W; Tc = 1: the same at every step) or None.

    Returns ``(output, h_T)``: every state, (T, B, C, H, W), and the last one.
    """
    T, B, _, H, W = x.shape
    C = weight_hh.shape[1]
    h = x.new_zeros(B, C, H, W) if h0 is None else h0
    states = []
    for t in range(T):
        c = None if context is None else context[t if context.shape[0] > 1 else 0]
        h = convgru_cell_reference(x[t], h, weight_ih, weight_hh, bias_ih, bias_hh, dilation=dilation, reset=reset,
                                   context=c)
        states.append(h)
    output = torch.stack(states) if states else x.new_zeros(0, B, C, H, W)
    return output, h
