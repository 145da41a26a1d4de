"""The functional API: check the arguments, pick a backend, call it."""

from __future__ import annotations

from typing import Optional

import torch

from . import backends
from ._contract import IntOrPair, Problem, check, check_context

#: checked signatures -> their Problem (``_checked``); cleared when full
_CHECKED: dict = {}
_CHECKED_SIZE = 256
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _checked(fn, x, h, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset, recompute, sequence) -> Problem:
    """``check``'s Problem, decided once per signature: the check reads only types, shapes, dtypes, devices and
    options, so a call whose tensors are plain tensors with the shapes, dtypes and devices of one checked before,
    with the same options, has that call's Problem.  Anything else (a tensor subclass, an unhashable option,
    tracing) is checked afresh, and so raises the same errors."""
    tensors = (x, h, weight_ih, weight_hh, bias_ih, bias_hh)
    key = None
    if (type(recompute) is bool and type(reset) is str and _plain_ints(dilation) and not torch.compiler.is_compiling()
            and all(t is None or type(t) in _PLAIN for t in tensors)):
        key = (fn, sequence, recompute, reset, dilation) + tuple(
            None if t is None else (t.shape, t.dtype, t.device) for t in tensors)
        problem = _CHECKED.get(key)
        if problem is not None:
            return problem
    problem = check(fn, x, h, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset, sequence=sequence,
                    recompute=recompute)
    if key is not None:
        if len(_CHECKED) >= _CHECKED_SIZE:
            _CHECKED.clear()
        _CHECKED[key] = problem
    return problem


def _plain_ints(value) -> bool:
    """An int or a tuple of ints, none of them a bool (``True == 1`` would make a key match another)."""
    return type(value) is int or (type(value) is tuple and all(type(v) is int for v in value))


def _run(fn, x, h, weight_ih, weight_hh, bias_ih, bias_hh, context, dilation, reset, backend, recompute, *,
         sequence):
    problem = _checked(fn, x, h, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset, recompute, sequence)
    context = check_context(fn, context, problem, sequence=sequence)
    impl = backends.select(backend, problem)
    x = x if sequence else x.unsqueeze(0)  # the backend lays it out (the fused ones: channels-last)
    if problem.T == 0:
        h = x.new_zeros(problem.B, problem.C, problem.H, problem.W) if h is None else h
        return x.new_zeros(0, problem.B, problem.C, problem.H, problem.W), h.clone()
    if h is None:  # channels-last from the start: no copy into the op layout
        h = x.new_zeros(problem.B, problem.H, problem.W, problem.C).permute(0, 3, 1, 2)
    weights = [t if t is None else t.contiguous() for t in (weight_ih, weight_hh, bias_ih, bias_hh)]
    out = impl.sequence(x, h, *weights, context, problem)
    return out, out[-1]


def convgru_sequence(
    x: torch.Tensor,
    h0: Optional[torch.Tensor],
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor] = None,
    bias_hh: Optional[torch.Tensor] = None,
    *,
    context=None,
    dilation: IntOrPair = 1,
    reset: str = "before",
    backend: str = "auto",
    recompute: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one ConvGRU layer (one direction) over a time-major sequence.

    Args:
        x: (T, B, Cin, H, W) input frames.
        h0: (B, C, H, W) initial state, or None for zeros.
        weight_ih: (3C, Cin, kh, kw) input-to-hidden weights, gate blocks r, z, n.
        weight_hh: (3C, C, kh, kw) hidden-to-hidden weights, gate blocks r, z, n.
        bias_ih, bias_hh: (3C,) biases or None.
        context: per-gate terms added to the input projections (RAFT-Stereo's ``cz, cr, cq``): None, one
            tensor with 3C channels in gate order r, z, n, or a tuple ``(c_r, c_z, c_n)`` of C-channel
            tensors (any None for zeros); each (B, ., H, W), the same at every step, or (T, B, ., H, W).
            ``r = sigmoid(W_r*x + b_ir + c_r + U_r*h + b_hr)``, z likewise, ``c_n`` adds to ``W_n*x + b_in``.
            Differentiable.
        dilation: int or (dh, dw); padding is "same", ``dilation*(k-1)//2``.
        reset: ``"before"`` (GRU-RCN, RAFT: ``U_n*(r*h)``) or ``"after"``
            (cuDNN: ``r*(U_n*h + b_hn)``).
        backend: ``"auto"``, ``"reference"``, ``"torch"``, ``"triton"`` or ``"cuda"``.
        recompute: save only the inputs and the states for the backward, which recomputes the gates
            (every step at once, one more forward step over the T*B frames): less memory held between
            forward and backward, for about one more forward step's time.

    Returns:
        ``(output, h_T)``: all states (T, B, C, H, W) and the last one (B, C, H, W).

    Example::

        >>> T, B, Cin, C, H, W = 4, 2, 3, 8, 16, 16
        >>> x = torch.randn(T, B, Cin, H, W)
        >>> w_ih, w_hh = torch.randn(3 * C, Cin, 3, 3) * 0.1, torch.randn(3 * C, C, 3, 3) * 0.1
        >>> out, h = convgru_sequence(x, None, w_ih, w_hh)
        >>> out.shape, h.shape
        (torch.Size([4, 2, 8, 16, 16]), torch.Size([2, 8, 16, 16]))
    """
    return _run("convgru_sequence", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context,
                dilation, reset, backend, recompute, sequence=True)


def convgru_cell(
    x: torch.Tensor,
    h: Optional[torch.Tensor],
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor] = None,
    bias_hh: Optional[torch.Tensor] = None,
    *,
    context=None,
    dilation: IntOrPair = 1,
    reset: str = "before",
    backend: str = "auto",
    recompute: bool = False,
) -> torch.Tensor:
    """One ConvGRU step: ``x`` (B, Cin, H, W) and ``h`` (B, C, H, W; None = zeros) -> ``h'``.

    Arguments as in :func:`convgru_sequence` (``context`` (B, ., H, W) or a tuple of them).  Each call
    convolves its own ``x`` (RAFT-style update blocks, where ``x`` changes every call).

    Example::

        >>> B, Cin, C, H, W = 2, 3, 8, 16, 16
        >>> w_ih, w_hh = torch.randn(3 * C, Cin, 3, 3) * 0.1, torch.randn(3 * C, C, 3, 3) * 0.1
        >>> convgru_cell(torch.randn(B, Cin, H, W), None, w_ih, w_hh).shape
        torch.Size([2, 8, 16, 16])
    """
    return _run("convgru_cell", x, h, weight_ih, weight_hh, bias_ih, bias_hh, context,
                dilation, reset, backend, recompute, sequence=False)[1]
