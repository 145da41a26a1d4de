"""RAFT's GRUs and ours: ``from_raft`` (one GRU converted), ``patch_raft`` (every GRU of a model swapped in place,
checkpoints both ways) and their argument checks.

RAFT's ``ConvGRU`` (Teed & Deng, 2020) holds three ``nn.Conv2d`` over the concatenation ``cat([h, x])``::

    z = sigmoid(convz(cat([h, x]))); r = sigmoid(convr(cat([h, x])))
    q = tanh(convq(cat([r * h, x])));  h = (1 - z) * h + z * q

which is our cell with ``reset="before"``: the first C input channels of each conv are the recurrent weights ``U``,
the rest the input weights ``W``, and the convs' biases become ``bias_ih`` (``bias_hh`` is zero).
:func:`raft_to_gates` and :func:`gates_to_raft` map the tensors both ways.

``patch_raft`` recognises the GRUs by their class name, conv names and ``forward`` signature (no project is imported):

* ``ConvGRU`` with ``convz, convr, convq`` over ``cat([h, x])`` and ``forward(h, x)``: princeton-vl RAFT's and
  torchvision's (a torchvision ``RecurrentBlock`` holds one or two of them; each is replaced);
* ``SepConvGRU`` with ``convz1, convr1, convq1`` then ``convz2, convr2, convq2`` and ``forward(h, x)``:
  princeton-vl RAFT's separable GRU, replaced whole;
* ``ConvGRU`` with ``forward(h, cz, cr, cq, *x_list)``: RAFT-Stereo's and IGEV's, whose per-gate context terms
  become our cell's ``context=(cr, cz, cq)`` and whose inputs are ``x = cat(x_list)``.

A replacement holds one :class:`~convgru_ext.ConvGRUCell` per GRU update, converted as ``from_raft`` converts.  Its
``state_dict`` has the original's keys and values (fresh tensors, not views of the parameters), and it loads the
original's, so checkpoints go both ways.  Its cells carry no ``bias_hh``: RAFT's convs have one bias per gate, so the
patched model has the original's parameters element for element, and an elementwise optimiser (SGD, Adam, weight
decay) trains both alike.  Build the optimiser after patching; hooks registered on an original GRU module are not
carried over.

``ConvGRUCell.from_raft`` and ``SepConvGRU.from_raft`` call :func:`cell_from_raft` and :func:`sep_from_raft` here.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from . import backends
from ._contract import check_backend_name, same_padding
from .modules import ConvGRUCell, SepConvGRU

# ---------------------------------------------------------------------------------------------------------------
# checks: every RAFT error message
# ---------------------------------------------------------------------------------------------------------------

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

# ---------------------------------------------------------------------------------------------------------------
# one GRU: RAFT's convs <-> our gates
# ---------------------------------------------------------------------------------------------------------------

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


def cell_from_raft(convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d, backend: str = "auto",
                   cell_cls: type = ConvGRUCell) -> ConvGRUCell:
    """A ``cell_cls`` (ConvGRUCell or a subclass) equal to RAFT's ConvGRU(convz, convr, convq)."""
    Cin, C, kernel, dilation = check_raft_convs(convz, convr, convq)
    w = convz.weight
    cell = cell_cls(Cin, C, kernel_size=kernel, bias=True, dilation=dilation, reset="before",
                    backend=backend, device=w.device, dtype=w.dtype)
    _load_raft(cell, convz, convr, convq)
    return cell


def sep_from_raft(raft_gru: nn.Module, backend: str = "auto", sep_cls: type = SepConvGRU) -> SepConvGRU:
    """A ``sep_cls`` (SepConvGRU or a subclass) equal to RAFT's SepConvGRU module ``raft_gru``."""
    Cin, C, k, first, second = check_raft_sep(raft_gru)
    w = raft_gru.convz1.weight
    sep = sep_cls(Cin, C, kernel_size=k, bias=True, reset="before", backend=backend,
                  device=w.device, dtype=w.dtype)
    _load_raft(sep.horizontal, *first)
    _load_raft(sep.vertical, *second)
    return sep

# ---------------------------------------------------------------------------------------------------------------
# patch_raft: a model's GRUs swapped in place
# ---------------------------------------------------------------------------------------------------------------

#: class name -> (the names of its z, r, q convs for each GRU update, in order; the forward calls it may have)
_FORMS = {
    "ConvGRU": ((("convz", "convr", "convq"),), ("raft", "stereo")),
    "SepConvGRU": ((("convz1", "convr1", "convq1"), ("convz2", "convr2", "convq2")), ("raft",)),
}


class RaftGRU(nn.Module):
    """Our stand-in for a RAFT GRU: ``forward(h, x)`` runs its cells in turn, ``h = cell(x, h)``.

    ``convs[i]`` names the original's (z, r, q) convs of ``cells[i]``: the keys of its ``state_dict``.
    """

    def __init__(self, cells: list[ConvGRUCell], convs):
        super().__init__()
        self.cells = nn.ModuleList(cells)
        self.convs = tuple(tuple(names) for names in convs)
        self.hidden_size = cells[0].hidden_size
        self.register_state_dict_post_hook(_save_as_raft)
        self.register_load_state_dict_pre_hook(_load_from_raft)

    def extra_repr(self) -> str:
        return f"convs={self.convs}"

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        for cell in self.cells:
            h = cell(x, h)
        return h


class RaftStereoGRU(RaftGRU):
    """Our stand-in for RAFT-Stereo's ConvGRU: ``forward(h, cz, cr, cq, *x_list)``, the context added per gate."""

    def forward(self, h: Tensor, cz: Tensor, cr: Tensor, cq: Tensor, *x_list: Tensor) -> Tensor:
        x = x_list[0] if len(x_list) == 1 else torch.cat(x_list, dim=1)
        return self.cells[0](x, h, context=(cr, cz, cq))


def _keys(prefix: str, names) -> list[str]:
    """The original's state_dict keys for the convs ``names``, in order: each one's weight then bias."""
    return [f"{prefix}{n}.{kind}" for n in names for kind in ("weight", "bias")]


def _our_keys(prefix: str, i: int) -> list[str]:
    """Our state_dict keys for cell ``i`` (which has no ``bias_hh``)."""
    return [f"{prefix}cells.{i}.{k}" for k in ("weight_ih", "weight_hh", "bias_ih")]


def _save_as_raft(module: RaftGRU, state_dict, prefix: str, local_metadata) -> None:
    """state_dict post-hook: our cells' entries become the original's convs' (``convz.weight``, ...)."""
    for i, names in enumerate(module.convs):
        ours = [state_dict.pop(k) for k in _our_keys(prefix, i)]
        with torch.no_grad():
            weights, biases = gates_to_raft(*ours)
            values = [t.clone() for pair in zip(weights, biases) for t in pair]
        state_dict.update(zip(_keys(prefix, names), values))


def _load_from_raft(module: RaftGRU, state_dict, prefix: str, local_metadata, strict, missing_keys,
                    unexpected_keys, error_msgs) -> None:
    """load_state_dict pre-hook: the original's conv entries become our cells' (groups missing a key are left)."""
    for i, (cell, names) in enumerate(zip(module.cells, module.convs)):
        keys = _keys(prefix, names)
        if not all(k in state_dict for k in keys):
            continue
        values = [state_dict.pop(k) for k in keys]
        C, Cin = cell.hidden_size, cell.input_size
        shapes = [(C, C + Cin, *cell.kernel_size), (C,)] * 3
        wrong = [raft_checkpoint_mismatch(k, v.shape, s) for k, v, s in zip(keys, values, shapes) if v.shape != s]
        if wrong:
            error_msgs.extend(wrong)
            continue
        ours = raft_to_gates(values[0::2], values[1::2])
        state_dict.update(zip(_our_keys(prefix, i), ours))


def _call(module: nn.Module) -> tuple[Optional[str], str]:
    """The form of ``module.forward``: "raft" for ``(h, x)``, "stereo" for ``(h, cz, cr, cq, *x_list)``, or None;
    and its signature."""
    signature = inspect.signature(module.forward)
    kinds = [p.kind for p in signature.parameters.values()]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(kinds) == 2 and all(k in positional for k in kinds):
        return "raft", str(signature)
    if len(kinds) == 5 and all(k in positional for k in kinds[:4]) and kinds[4] == inspect.Parameter.VAR_POSITIONAL:
        return "stereo", str(signature)
    return None, str(signature)


def _replacement(name: str, module: nn.Module, backend: str) -> Optional[RaftGRU]:
    """Ours for ``module`` if it is a RAFT-family GRU; None (with a warning if it looks like one but differs)."""
    form = _FORMS.get(type(module).__name__)
    if form is None or not hasattr(module, form[0][0][0]):
        return None
    updates, calls = form
    call, signature = _call(module)
    try:
        check_raft_gru(name, module, updates, call, calls, signature)
    except ValueError as e:
        warnings.warn(f"patch_raft: left `{name}` ({type(module).__name__}) as it is: {e}", stacklevel=3)
        return None
    cells = [cell_from_raft(*(getattr(module, n) for n in names), backend) for names in updates]
    trainable = next(module.parameters()).requires_grad
    for cell in cells:
        cell.register_parameter("bias_hh", None)  # RAFT has one bias per gate: ours is bias_ih
        cell.requires_grad_(trainable)
    new = (RaftStereoGRU if call == "stereo" else RaftGRU)(cells, updates)
    return new.train(module.training)


def patch_raft(model: nn.Module, backend: str = "auto") -> int:
    """Replace, in place, every RAFT-family GRU inside ``model`` by ours; return how many modules it replaced.

    The forms recognised are listed in :mod:`convgru_ext.raft`.  Each replacement keeps the original's
    ``forward`` signature, values and gradients, device and dtype, training mode and ``requires_grad``, and its
    ``state_dict`` keys (checkpoints load both ways); its cells use ``backend``.  A module that looks like one of
    these forms but differs (a conv's kernel, padding, stride, bias, groups or dilation, extra parameters, another
    ``forward`` signature) is left alone, with a warning that names it and says why.  A module shared under several
    names is replaced everywhere and counted once.

    Example::

        >>> from torchvision.models.optical_flow import raft_large
        >>> model = raft_large()
        >>> patch_raft(model)      # the two GRUs of its RecurrentBlock
        2
    """
    check_patch_raft(model, backend, backends.names())
    done: dict[int, Optional[RaftGRU]] = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) not in done:
            done[id(module)] = _replacement(name, module, backend)
        new = done[id(module)]
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)
    return sum(new is not None for new in done.values())
