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
from torch import nn

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


def _check_tensor(t, name: str, fn: str, ndim: int, layout: str) -> None:
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
    _check_tensor(x, "x", fn, 5 if sequence else 4, "(T, B, C_in, H, W)" if sequence else "(B, C_in, H, W)")
    T, B, Cin, H, W = x.shape if sequence else (1, *x.shape)
    _check_tensor(weight_hh, "weight_hh", fn, 4, "(3*hidden, hidden, kh, kw)")
    _check_tensor(weight_ih, "weight_ih", fn, 4, "(3*hidden, C_in, kh, kw)")
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
        _check_tensor(b, name, fn, 1, "(3*hidden,)")
        if b.shape[0] != 3 * C:
            raise ValueError(f"{fn}: `{name}` must have shape ({3 * C},); got {tuple(b.shape)}")
    if h is not None:
        _check_tensor(h, hname, fn, 4, "(B, hidden, H, W)")
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


def _check_positive_int(value, name: str, owner: str) -> None:
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
    _check_positive_int(input_size, "input_size", owner)
    _check_positive_int(hidden_size, "hidden_size", owner)
    kernel, dil = pair(kernel_size, "kernel_size", odd=True), pair(dilation, "dilation")
    check_reset(reset)
    check_backend_name(backend, backend_names)
    _check_positive_int(num_layers, "num_layers", owner)
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


def check_raft_convs(convz, convr, convq) -> tuple[int, int, tuple[int, int], tuple[int, int]]:
    """``(Cin, C, kernel, dilation)`` of RAFT ConvGRU's three convs over ``cat([h, x])``, once checked."""
    signature = None  # convz's (kernel_size, dilation, in_channels, out_channels), which the others must match
    for name, conv in (("convz", convz), ("convr", convr), ("convq", convq)):
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_raft: `{name}` must be an nn.Conv2d; got {type(conv).__name__}")
        same = same_padding(conv.kernel_size, conv.dilation)
        if (conv.stride != (1, 1) or conv.groups != 1 or any(k % 2 == 0 for k in conv.kernel_size)
                or tuple(conv.padding) != same or conv.padding_mode != "zeros"):
            raise ValueError(
                f"from_raft: `{name}` must be a stride-1, ungrouped conv with an odd kernel and zero 'same' "
                f"padding {same}; got stride={conv.stride}, groups={conv.groups}, kernel={conv.kernel_size}, "
                f"padding={conv.padding}, padding_mode={conv.padding_mode!r}")
        got = (conv.kernel_size, conv.dilation, conv.in_channels, conv.out_channels)
        if signature is not None and got != signature:
            raise ValueError(f"from_raft: `{name}` must match convz's kernel size, dilation and channels "
                             f"{signature}; got {got}")
        signature = got
    C = convz.out_channels
    if convz.in_channels <= C:
        raise ValueError(f"from_raft: `convz` must take cat([h, x]) with more than hidden={C} input "
                         f"channels; got {convz.in_channels}")
    return convz.in_channels - C, C, convz.kernel_size, convz.dilation


def check_raft_sep(raft_gru) -> tuple[int, int, int, list, list]:
    """``(Cin, C, k, first, second)`` of a RAFT SepConvGRU: its (1, k) and (k, 1) convs z, r, q, once checked."""
    needed = ("convz1", "convr1", "convq1", "convz2", "convr2", "convq2")
    missing = [n for n in needed if not hasattr(raft_gru, n)]
    if missing:
        raise TypeError(f"from_raft: `raft_gru` must have RAFT SepConvGRU's convs {needed}; missing {missing}")
    first, second = ([getattr(raft_gru, n) for n in names] for names in (needed[:3], needed[3:]))
    Cin, C, k1, d1 = check_raft_convs(*first)
    Cin2, C2, k2, d2 = check_raft_convs(*second)
    k = k1[1]
    if k1 != (1, k) or k2 != (k, 1) or (Cin2, C2) != (Cin, C) or d1 != (1, 1) or d2 != (1, 1):
        raise ValueError(f"from_raft: `raft_gru` must hold undilated (1, k) convs in convz1/convr1/convq1 "
                         f"and (k, 1) convs of the same channels in convz2/convr2/convq2; got kernels "
                         f"{k1} and {k2}, dilations {d1} and {d2}, channels {(Cin, C)} and {(Cin2, C2)}")
    return Cin, C, k, first, second


POOLS = ("max", "avg")


def check_grurcn_options(input_sizes, hidden_sizes, pool) -> int:
    """GRURCN's ``input_sizes`` and ``hidden_sizes`` (L >= 1 positive ints each) and ``pool``; returns L."""
    for name, sizes in (("input_sizes", input_sizes), ("hidden_sizes", hidden_sizes)):
        if isinstance(sizes, (str, torch.Tensor)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
            raise TypeError(f"GRURCN: `{name}` must be a non-empty sequence of positive ints; got {sizes!r}")
        for i, size in enumerate(sizes):
            _check_positive_int(size, f"{name}[{i}]", "GRURCN")
    if len(hidden_sizes) != len(input_sizes):
        raise ValueError(f"GRURCN: `hidden_sizes` must have one entry per level, as many as input_sizes "
                         f"({len(input_sizes)}); got {len(hidden_sizes)}")
    if pool not in POOLS:
        raise ValueError(f'GRURCN: `pool` must be "max" or "avg"; got {pool!r}')
    return len(input_sizes)


def check_percepts(percepts, input_sizes: Sequence[int], batch_first: bool) -> list[tuple[int, int]]:
    """GRURCN.forward's ``percepts``: one 5-D tensor per level with ``input_sizes[l]`` channels, all of one
    (T, B), dtype and device, each level's H and W dividing the previous level's; returns the L-1 ratios (rh, rw)."""
    L = len(input_sizes)
    if isinstance(percepts, torch.Tensor) or not isinstance(percepts, Sequence):
        raise TypeError(f"GRURCN: `percepts` must be a list or tuple of {L} tensors (one per level); "
                        f"got {type(percepts).__name__}")
    if len(percepts) != L:
        raise ValueError(f"GRURCN: `percepts` must hold one tensor per level ({L}); got {len(percepts)}")
    layout = "(B, T, C_in, H, W)" if batch_first else "(T, B, C_in, H, W)"
    leading = "(B, T)" if batch_first else "(T, B)"
    ratios = []
    for level, p in enumerate(percepts):
        name = f"percepts[{level}]"
        _check_tensor(p, name, "GRURCN", 5, layout)
        if p.shape[2] != input_sizes[level]:
            raise ValueError(f"GRURCN: `{name}` must have input_sizes[{level}]={input_sizes[level]} channels "
                             f"(dim 2); got shape {tuple(p.shape)}")
        if level == 0:
            continue
        first = percepts[0]
        if p.shape[:2] != first.shape[:2]:
            raise ValueError(f"GRURCN: `{name}` must have percepts[0]'s {leading} = {tuple(first.shape[:2])}; "
                             f"got {tuple(p.shape[:2])}")
        if p.dtype != first.dtype or p.device != first.device:
            raise TypeError(f"GRURCN: `{name}` is {p.dtype} on {p.device} but `percepts[0]` is {first.dtype} "
                            f"on {first.device}; they must match")
        (Hp, Wp), (H, W) = percepts[level - 1].shape[3:], p.shape[3:]
        if H == 0 or W == 0 or Hp % H or Wp % W:
            raise ValueError(f"GRURCN: `{name}` must have H and W that divide percepts[{level - 1}]'s {Hp}x{Wp} "
                             f"(a positive integer resolution ratio per dimension); got {H}x{W}")
        ratios.append((Hp // H, Wp // W))
    return ratios


def check_patch_raft(model, backend: str, backend_names: Sequence[str]) -> None:
    """patch_raft's arguments: ``model`` an nn.Module, ``backend`` one of ``backend_names`` or "auto"."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"patch_raft: `model` must be an nn.Module; got {type(model).__name__}")
    check_backend_name(backend, backend_names)


def check_raft_gru(name: str, module, updates, call: Optional[str], calls: Sequence[str], signature: str) -> None:
    """Why patch_raft cannot replace ``module``, a RAFT-family GRU by its class and conv names, as a ValueError.

    ``name``: its name in the model; ``updates``: the names of its (z, r, q) convs for each GRU update it makes, in
    order; ``call``: the form of its ``forward`` (``signature``), one of ``calls`` or None.
    """
    if not name:
        raise ValueError("it is the model itself, which cannot be replaced in place; patch a module that holds it")
    if call not in calls:
        raise ValueError(f"its forward{signature} is not RAFT's forward(h, x)"
                         + (" nor RAFT-Stereo's forward(h, cz, cr, cq, *x_list)" if "stereo" in calls else ""))
    for names in updates:
        convs = [getattr(module, n, None) for n in names]
        try:
            check_raft_convs(*convs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"its convs {', '.join(names)}: {e}") from None
        unbiased = [n for n, conv in zip(names, convs) if conv.bias is None]
        if unbiased:
            raise ValueError(f"it has convs without a bias ({', '.join(unbiased)}); RAFT's have one per gate")
    expected = {f"{n}.{kind}" for names in updates for n in names for kind in ("weight", "bias")}
    extra = sorted({n for n, _ in module.named_parameters()} - expected) + [n for n, _ in module.named_buffers()]
    if extra:
        raise ValueError(f"it holds parameters or buffers besides its convs' weights and biases: {extra}")
    if len({p.requires_grad for p in module.parameters()}) > 1:
        raise ValueError("it mixes frozen (requires_grad=False) and trainable parameters")


def raft_checkpoint_mismatch(key: str, got, expected) -> str:
    """The load_state_dict error for a RAFT GRU's checkpoint entry of the wrong shape (worded as torch's)."""
    return (f"size mismatch for {key}: copying a param with shape {tuple(got)} from checkpoint, "
            f"the shape in current model is {tuple(expected)}.")
