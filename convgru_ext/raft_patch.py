"""``patch_raft``: swap the GRUs of a RAFT-family model for ours, in place, with the same calls, values and checkpoints.

The GRUs are recognised by their class name, conv names and ``forward`` signature (no project is imported):

* ``ConvGRU`` with ``convz, convr, convq`` over ``cat([h, x])`` and ``forward(h, x)``: princeton-vl RAFT's and
  torchvision's (a torchvision ``RecurrentBlock`` holds one or two of them; each is replaced);
* ``SepConvGRU`` with ``convz1, convr1, convq1`` then ``convz2, convr2, convq2`` and ``forward(h, x)``:
  princeton-vl RAFT's separable GRU, replaced whole;
* ``ConvGRU`` with ``forward(h, cz, cr, cq, *x_list)``: RAFT-Stereo's and IGEV's, whose per-gate context terms
  become our cell's ``context=(cr, cz, cq)`` and whose inputs are ``x = cat(x_list)``.

A replacement holds one :class:`~convgru_ext.ConvGRUCell` per GRU update, converted by ``from_raft``'s logic
(:mod:`convgru_ext.interop`).  Its ``state_dict`` has the original's keys and values (fresh tensors, not views of
the parameters), and it loads the original's, so checkpoints go both ways.  Its cells carry no ``bias_hh``: RAFT's
convs have one bias per gate, so the patched model has the original's parameters element for element, and an
elementwise optimiser (SGD, Adam, weight decay) trains both alike.  Build the optimiser after patching; hooks
registered on an original GRU module are not carried over.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from . import backends
from ._contract import check_patch_raft, check_raft_gru, raft_checkpoint_mismatch
from .interop import cell_from_raft, gates_to_raft, raft_to_gates
from .modules import ConvGRUCell

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
    cells = [cell_from_raft(ConvGRUCell, *(getattr(module, n) for n in names), backend) for names in updates]
    trainable = next(module.parameters()).requires_grad
    for cell in cells:
        cell.register_parameter("bias_hh", None)  # RAFT has one bias per gate: ours is bias_ih
        cell.requires_grad_(trainable)
    new = (RaftStereoGRU if call == "stereo" else RaftGRU)(cells, updates)
    return new.train(module.training)


def patch_raft(model: nn.Module, backend: str = "auto") -> int:
    """Replace, in place, every RAFT-family GRU inside ``model`` by ours; return how many modules it replaced.

    The forms recognised are listed in :mod:`convgru_ext.raft_patch`.  Each replacement keeps the original's
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
