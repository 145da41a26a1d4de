"""The argument contract shared by every backend.

Every public entry point checks its arguments here, before any kernel runs, so
that each error message exists in exactly one place and names the argument and
what was expected.  Backends receive a checked :class:`Problem` and may assume
it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional, Union

import torch

RESETS = ("before", "after")
IntOrPair = Union[int, Sequence[int]]


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """'Same' padding of an odd ``kernel`` at ``dilation``, per dimension: ``d * (k - 1) // 2`` on each side.

    The one place this formula is written; every convolution of the package pads with it.
    """
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))


@dataclasses.dataclass(frozen=True)
class Problem:
    """The sizes of one checked ConvGRU layer call (one layer, one direction).

    ``T`` steps of a batch of ``B`` frames, ``Cin`` input channels, ``C`` hidden
    channels, ``H x W`` pixels, a ``kernel`` of ``(kh, kw)`` taps with
    ``dilation`` ``(dh, dw)`` and "same" padding.
    """

    T: int
    B: int
    Cin: int
    C: int
    H: int
    W: int
    kernel: tuple[int, int]
    dilation: tuple[int, int]
    reset_after: bool
    dtype: torch.dtype
    device: torch.device

    @property
    def padding(self) -> tuple[int, int]:
        """'Same' padding on each side (:func:`same_padding`)."""
        return same_padding(self.kernel, self.dilation)

    @property
    def reset(self) -> str:
        return "after" if self.reset_after else "before"


def pair(value: IntOrPair, name: str, *, odd: bool = False) -> tuple[int, int]:
    """``value`` as a pair of positive ints (odd ones if ``odd``), or a ValueError naming ``name``."""
    what = "a positive odd int or a pair of them" if odd else "a positive int or a pair of them"
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be {what}; got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"`{name}` must be {what}; got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"`{name}` must be {what}; got {value!r}")
    if any(v <= 0 for v in items):
        raise ValueError(f"`{name}` must be {what}; got {value!r} (sizes must be positive)")
    if odd and any(v % 2 == 0 for v in items):
        raise ValueError(
            f"`{name}` must be {what}; got {value!r} (even kernels have no symmetric 'same' padding)"
        )
    return items  # type: ignore[return-value]


def check_reset(reset: str) -> bool:
    """True for ``reset="after"``, False for ``"before"``; ValueError otherwise."""
    if reset not in RESETS:
        raise ValueError(f'`reset` must be "before" or "after"; got {reset!r}')
    return reset == "after"


def _check_tensor(t, name: str, fn: str, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor; got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{fn}: `{name}` must be a floating-point tensor; got dtype {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(
            f"{fn}: `{name}` must be {ndim}-D {layout}; got {t.dim()}-D with shape {tuple(t.shape)}"
        )


def _shape(*dims) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def check(
    fn: str,
    x: torch.Tensor,
    h: Optional[torch.Tensor],
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor],
    bias_hh: Optional[torch.Tensor],
    dilation: IntOrPair,
    reset: str,
    *,
    sequence: bool,
) -> Problem:
    """Check one layer call and return its :class:`Problem`.

    ``sequence=True``: ``x`` is (T, B, Cin, H, W) and ``h`` is the initial state
    ``h0``; ``sequence=False``: ``x`` is (B, Cin, H, W) and ``h`` the state.
    Raises TypeError (wrong type or dtype) or ValueError (wrong shape, device or
    option) naming the offending argument.
    """
    hname = "h0" if sequence else "h"
    if sequence:
        _check_tensor(x, "x", fn, 5, "(T, B, C_in, H, W)")
        T, B, Cin, H, W = x.shape
    else:
        _check_tensor(x, "x", fn, 4, "(B, C_in, H, W)")
        B, Cin, H, W = x.shape
        T = 1
    _check_tensor(weight_hh, "weight_hh", fn, 4, "(3*hidden, hidden, kh, kw)")
    _check_tensor(weight_ih, "weight_ih", fn, 4, "(3*hidden, C_in, kh, kw)")
    C = weight_hh.shape[1]
    kernel = tuple(weight_hh.shape[2:])
    if C == 0 or weight_hh.shape[0] != 3 * C:
        raise ValueError(
            f"{fn}: `weight_hh` must have shape (3*hidden, hidden, kh, kw) with hidden >= 1; "
            f"got {tuple(weight_hh.shape)}"
        )
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(
            f"{fn}: `weight_hh` must have odd kernel sizes (kh, kw) for 'same' padding; got {kernel}"
        )
    expected_ih = (3 * C, Cin) + kernel
    if tuple(weight_ih.shape) != expected_ih:
        raise ValueError(
            f"{fn}: `weight_ih` must have shape (3*hidden, C_in, kh, kw) = {_shape(*expected_ih)} "
            f"to match x's {Cin} input channels and weight_hh's hidden size {C} and kernel {kernel}; "
            f"got {tuple(weight_ih.shape)}"
        )
    if H == 0 or W == 0:
        raise ValueError(f"{fn}: `x` must have non-empty spatial dimensions; got H={H}, W={W}")
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is None:
            continue
        _check_tensor(b, name, fn, 1, "(3*hidden,)")
        if b.shape[0] != 3 * C:
            raise ValueError(f"{fn}: `{name}` must have shape ({3 * C},); got {tuple(b.shape)}")
    if h is not None:
        _check_tensor(h, hname, fn, 4, "(B, hidden, H, W)")
        if tuple(h.shape) != (B, C, H, W):
            raise ValueError(
                f"{fn}: `{hname}` must have shape (B, hidden, H, W) = {_shape(B, C, H, W)}; "
                f"got {tuple(h.shape)}"
            )
    named = [("x", x), (hname, h), ("weight_ih", weight_ih), ("weight_hh", weight_hh),
             ("bias_ih", bias_ih), ("bias_hh", bias_hh)]
    for name, t in named[1:]:
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{fn}: `{name}` has dtype {t.dtype} but `x` has {x.dtype}; they must match")
    for name, t in named[1:]:
        if t is not None and t.device != x.device:
            raise ValueError(
                f"{fn}: `{name}` is on {t.device} but `x` is on {x.device}; they must be on one device"
            )
    return Problem(
        T=T, B=B, Cin=Cin, C=C, H=H, W=W,
        kernel=kernel,  # type: ignore[arg-type]
        dilation=pair(dilation, "dilation"),
        reset_after=check_reset(reset),
        dtype=x.dtype,
        device=x.device,
    )
