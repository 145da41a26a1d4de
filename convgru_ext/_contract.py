"""The argument contract shared by every backend and module: the ground floor of the package.

Every public entry point checks its tensors and options here, before any kernel runs, and gets a
checked :class:`Problem` that the backends may assume holds.  Each error message names the argument
and what was expected, and lives with its check: the tensor and option checks here, RAFT's in
``raft.py``, GRURCN's in ``grurcn.py``, and why a backend cannot serve a call in ``backends/``.
This module imports nothing from the package.
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
    #: the backward recomputes the gates instead of the forward saving them (``_op.py``)
    recompute: bool = False

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
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        items = tuple(value)
    except TypeError:  # a bool or another non-iterable
        items = ()
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"`{name}` must be {what}; got {value!r}")
    if any(v <= 0 for v in items):
        raise ValueError(f"`{name}` must be {what}; got {value!r} (sizes must be positive)")
    if odd and any(v % 2 == 0 for v in items):
        raise ValueError(f"`{name}` must be {what}; got {value!r} (even kernels have no symmetric 'same' padding)")
    return items  # type: ignore[return-value]


def check_reset(reset: str) -> bool:
    """True for ``reset="after"``, False for ``"before"``; ValueError otherwise."""
    if reset not in RESETS:
        raise ValueError(f'`reset` must be "before" or "after"; got {reset!r}')
    return reset == "after"


def _check_is_tensor(t, name: str, fn: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor; got {type(t).__name__}")


def check_tensor(t, name: str, fn: str, ndim: int, layout: str) -> None:
    _check_is_tensor(t, name, fn)
    if not t.is_floating_point():
        raise TypeError(f"{fn}: `{name}` must be a floating-point tensor; got dtype {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{fn}: `{name}` must be {ndim}-D {layout}; got {t.dim()}-D with shape {tuple(t.shape)}")


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
    recompute: bool = False,
) -> Problem:
    """Check one layer call and return its :class:`Problem`.

    ``sequence=True``: ``x`` is (T, B, Cin, H, W) and ``h`` is the initial state
    ``h0``; ``sequence=False``: ``x`` is (B, Cin, H, W) and ``h`` the state.
    Raises TypeError (wrong type or dtype) or ValueError (wrong shape, device or
    option) naming the offending argument.
    """
    hname = "h0" if sequence else "h"
    check_tensor(x, "x", fn, 5 if sequence else 4, "(T, B, C_in, H, W)" if sequence else "(B, C_in, H, W)")
    T, B, Cin, H, W = x.shape if sequence else (1, *x.shape)
    check_tensor(weight_hh, "weight_hh", fn, 4, "(3*hidden, hidden, kh, kw)")
    check_tensor(weight_ih, "weight_ih", fn, 4, "(3*hidden, C_in, kh, kw)")
    C = weight_hh.shape[1]
    kernel = tuple(weight_hh.shape[2:])
    if C == 0 or weight_hh.shape[0] != 3 * C:
        raise ValueError(f"{fn}: `weight_hh` must have shape (3*hidden, hidden, kh, kw) with hidden >= 1; "
                         f"got {tuple(weight_hh.shape)}")
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"{fn}: `weight_hh` must have odd kernel sizes (kh, kw) for 'same' padding; got {kernel}")
    expected_ih = (3 * C, Cin) + kernel
    if tuple(weight_ih.shape) != expected_ih:
        raise ValueError(f"{fn}: `weight_ih` must have shape (3*hidden, C_in, kh, kw) = {_shape(*expected_ih)} "
                         f"to match x's {Cin} input channels and weight_hh's hidden size {C} and kernel {kernel}; "
                         f"got {tuple(weight_ih.shape)}")
    if H == 0 or W == 0:
        raise ValueError(f"{fn}: `x` must have non-empty spatial dimensions; got H={H}, W={W}")
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is None:
            continue
        check_tensor(b, name, fn, 1, "(3*hidden,)")
        if b.shape[0] != 3 * C:
            raise ValueError(f"{fn}: `{name}` must have shape ({3 * C},); got {tuple(b.shape)}")
    if h is not None:
        check_tensor(h, hname, fn, 4, "(B, hidden, H, W)")
        if tuple(h.shape) != (B, C, H, W):
            raise ValueError(f"{fn}: `{hname}` must have shape (B, hidden, H, W) = {_shape(B, C, H, W)}; "
                             f"got {tuple(h.shape)}")
    named = [("x", x), (hname, h), ("weight_ih", weight_ih), ("weight_hh", weight_hh),
             ("bias_ih", bias_ih), ("bias_hh", bias_hh)]
    for name, t in named[1:]:
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{fn}: `{name}` has dtype {t.dtype} but `x` has {x.dtype}; they must match")
    for name, t in named[1:]:
        if t is not None and t.device != x.device:
            raise ValueError(f"{fn}: `{name}` is on {t.device} but `x` is on {x.device}; they must be on one device")
    return Problem(
        T=T, B=B, Cin=Cin, C=C, H=H, W=W,
        kernel=kernel,  # type: ignore[arg-type]
        dilation=pair(dilation, "dilation"),
        reset_after=check_reset(reset),
        dtype=x.dtype,
        device=x.device,
        recompute=check_flag(fn, "recompute", recompute),
    )


def check_flag(fn: str, name: str, value) -> bool:
    """``value`` if it is a bool, else a TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: `{name}` must be a bool; got {value!r}")
    return value


def check_context(fn: str, context, problem: Problem, *, sequence: bool) -> Optional[torch.Tensor]:
    """``context`` as one (Tc, B, 3C, H, W) tensor (Tc = 1: the same for every step, or T), or None.

    Accepted: one tensor with 3C channels in gate order r, z, n, or a tuple ``(c_r, c_z, c_n)`` of
    C-channel tensors, any of them None for zeros; each (B, ., H, W), or for a sequence also
    (T, B, ., H, W) per step.  Raises TypeError or ValueError naming the argument."""
    if context is None:
        return None
    C, what = problem.C, "a tensor with 3*hidden channels or a tuple (c_r, c_z, c_n)"
    parts = list(context) if isinstance(context, (tuple, list)) else [context]
    if len(parts) not in (1, 3) or (len(parts) == 1 and not isinstance(context, torch.Tensor)):
        raise TypeError(f"{fn}: `context` must be {what}; got {type(context).__name__} of {len(parts)}")
    names = ["context"] if len(parts) == 1 else ["context[0] (c_r)", "context[1] (c_z)", "context[2] (c_n)"]
    given = [(n, t) for n, t in zip(names, parts) if t is not None]
    if not given:
        return None
    layouts = [(problem.B, problem.H, problem.W)] + ([(problem.T, problem.B, problem.H, problem.W)] if sequence else [])
    channels = 3 * C if len(parts) == 1 else C
    first = None
    for name, t in given:
        _check_is_tensor(t, name, fn)
        if t.dtype != problem.dtype or t.device != problem.device:
            raise (TypeError if t.dtype != problem.dtype else ValueError)(
                f"{fn}: `{name}` must be {problem.dtype} on {problem.device} like `x`; got {t.dtype} on {t.device}")
        dims = tuple(t.shape[:-3]) + tuple(t.shape[-2:])
        if t.dim() < 4 or t.shape[-3] != channels or dims not in layouts:
            expected = " or ".join(_shape(*d[:-2], channels, *d[-2:]) for d in layouts)
            raise ValueError(f"{fn}: `{name}` must have shape {expected}; got {tuple(t.shape)}")
        if first is not None and t.shape != first.shape:
            raise ValueError(f"{fn}: the context tensors must have one shape; got {tuple(first.shape)} and "
                             f"{tuple(t.shape)}")
        first = t
    full = [t if t is not None else first.new_zeros(first.shape) for t in parts]
    out = full[0] if len(full) == 1 else torch.cat(full, dim=-3)
    return out if out.dim() == 5 else out.unsqueeze(0)


def check_layer_contexts(context, num_layers: int) -> list:
    """ConvGRU's ``context``: None, or a list or tuple of one entry per layer; returned as such a list."""
    if context is None:
        return [None] * num_layers
    if not isinstance(context, (list, tuple)) or len(context) != num_layers:
        got = f"{type(context).__name__} of {len(context)}" if isinstance(context, (list, tuple)) else \
            type(context).__name__
        raise TypeError(f"ConvGRU: `context` must be None or a list of num_layers={num_layers} entries (one per "
                        f"layer, each None or a context); got {got}")
    return list(context)


def check_positive_int(value, name: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: `{name}` must be a positive int; got {value!r}")


def check_backend_name(backend, names: Sequence[str]) -> None:
    """``backend`` is "auto" or one of the registered ``names`` (the registry passes them in: this module, the
    ground floor of the package, imports nothing from it)."""
    if not isinstance(backend, str) or (backend != "auto" and backend not in names):
        raise unknown_backend(backend, names)


def unknown_backend(backend, names: Sequence[str]) -> ValueError:
    """The one error for a backend name that is neither "auto" nor registered."""
    return ValueError(f"`backend` must be one of {('auto',) + tuple(names)}; got {backend!r}")


def check_module_options(owner: str, input_size, hidden_size, kernel_size, dilation, reset, backend,
                         backend_names: Sequence[str], num_layers=1,
                         dropout=0.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """A module constructor's options (``num_layers``, ``dropout``: ConvGRU's); ``(kernel_size, dilation)`` as pairs.
    ``backend_names``: the registered backends (``backends.names()``)."""
    check_positive_int(input_size, "input_size", owner)
    check_positive_int(hidden_size, "hidden_size", owner)
    kernel, dil = pair(kernel_size, "kernel_size", odd=True), pair(dilation, "dilation")
    check_reset(reset)
    check_backend_name(backend, backend_names)
    check_positive_int(num_layers, "num_layers", owner)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"{owner}: `dropout` must be a number in [0, 1]; got {dropout!r}")
    return kernel, dil


def check_sep_kernel(kernel_size) -> None:
    """SepConvGRU's ``kernel_size`` is one int (its cells check that it is positive and odd)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(f"SepConvGRU: `kernel_size` must be a positive odd int; got {kernel_size!r}")


def check_input_channels(owner: str, x, input_size: int, channel_dim: int) -> None:
    """``x`` is a tensor with ``input_size`` channels in ``channel_dim`` (when it has 3 dims or more)."""
    _check_is_tensor(x, "x", owner)
    if x.dim() >= 3 and x.shape[channel_dim] != input_size:
        raise ValueError(f"{owner}: `x` must have input_size={input_size} channels (dim {channel_dim}); "
                         f"got shape {tuple(x.shape)}")


def check_sequence_input(x, h0, input_size: int, hidden_size: int, num_states: int, batch_first: bool):
    """ConvGRU.forward's ``x`` and ``h0``, returned time-major and batched, and whether ``x`` was unbatched."""
    _check_is_tensor(x, "x", "ConvGRU")
    unbatched = x.dim() == 4
    if unbatched:
        if h0 is not None and (not isinstance(h0, torch.Tensor) or h0.dim() != 4):
            raise ValueError("ConvGRU: for unbatched 4-D `x`, `h0` must be 4-D (num_layers*D, hidden, H, W)")
        x, h0 = x.unsqueeze(1), None if h0 is None else h0.unsqueeze(1)
    elif x.dim() != 5:
        layout = "(B, T, C_in, H, W)" if batch_first else "(T, B, C_in, H, W)"
        raise ValueError(f"ConvGRU: `x` must be 5-D {layout} or unbatched 4-D (T, C_in, H, W); "
                         f"got {x.dim()}-D with shape {tuple(x.shape)}")
    elif batch_first:
        x = x.transpose(0, 1)
    check_input_channels("ConvGRU", x, input_size, channel_dim=2)
    if h0 is not None:
        expected = (num_states, x.shape[1], hidden_size, *x.shape[3:])
        got = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
        if got != expected:
            raise ValueError(f"ConvGRU: `h0` must have shape (num_layers*D, B, hidden, H, W) = "
                             f"{expected}; got {got}")
    return x, h0, unbatched
