"""``nn.Module`` front ends: ConvGRUCell, ConvGRU (torch.nn.GRU's contract), SepConvGRU."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from . import backends
from ._contract import (
    IntOrPair,
    check_flag,
    check_input_channels,
    check_layer_contexts,
    check_module_options,
    check_sep_kernel,
    check_sequence_input,
)
from .functional import convgru_cell, convgru_sequence


def _map_context(context, fn):
    """``fn`` applied to the context's tensor, or to each tensor of its ``(c_r, c_z, c_n)`` form."""
    if isinstance(context, Tensor):
        return fn(context)
    if isinstance(context, (tuple, list)):
        return tuple(None if t is None else fn(t) if isinstance(t, Tensor) else t for t in context)
    return context  # None, or a bad value for _contract.check_context to name


def _init_uniform(weight: Tensor, bias: Optional[Tensor]) -> None:
    """nn.Conv2d's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(weight[0].numel())
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


class ConvGRUCell(nn.Module):
    r"""A convolutional GRU cell (GRU-RCN, Ballas et al. 2016).

    .. math::
        r &= \sigma(W_r * x + b_{ir} + U_r * h + b_{hr}) \\
        z &= \sigma(W_z * x + b_{iz} + U_z * h + b_{hz}) \\
        n &= \tanh(W_n * x + b_{in} + U_n * (r \odot h) + b_{hn})
             \quad\text{(reset="before"; "after": } r \odot (U_n * h + b_{hn})\text{)} \\
        h' &= (1 - z) \odot h + z \odot n

    ``z`` weighs the candidate ``n`` (as in GRU-RCN and RAFT; ``torch.nn.GRU``
    uses the opposite convention).

    Args:
        input_size: channels of ``x`` (Cin).
        hidden_size: channels of ``h`` (C).
        kernel_size: odd int or pair of odd ints; padding is "same".
        bias: learn ``bias_ih`` and ``bias_hh``.
        dilation: int or pair.
        reset: ``"before"`` or ``"after"`` (see above).
        backend: see :func:`convgru_ext.convgru_sequence`.

    Parameters: ``weight_ih`` (3C, Cin, kh, kw), ``weight_hh`` (3C, C, kh, kw),
    ``bias_ih`` and ``bias_hh`` (3C,), gate blocks in the order r, z, n.  Each
    is initialised like ``nn.Conv2d``: uniform in +-1/sqrt(fan_in), where
    fan_in = Cin*kh*kw for ``*_ih`` and C*kh*kw for ``*_hh``.

    Shapes: ``x`` (B, Cin, H, W) or unbatched (Cin, H, W); ``h`` likewise with
    C channels, or None for zeros.  Returns ``h'``, shaped like ``h``.

    Example::

        >>> cell = ConvGRUCell(16, 32, kernel_size=3)
        >>> h = cell(torch.randn(2, 16, 24, 24))          # h=None: zeros
        >>> h = cell(torch.randn(2, 16, 24, 24), h)
        >>> h.shape
        torch.Size([2, 32, 24, 24])
    """

    def __init__(self, input_size: int, hidden_size: int, kernel_size: IntOrPair = 3, bias: bool = True,
                 dilation: IntOrPair = 1, reset: str = "before", backend: str = "auto",
                 device=None, dtype=None, recompute: bool = False):
        super().__init__()
        self.kernel_size, self.dilation = check_module_options(
            "ConvGRUCell", input_size, hidden_size, kernel_size, dilation, reset, backend, backends.names())
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bias, self.reset, self.backend = bias, reset, backend
        self.recompute = check_flag("ConvGRUCell", "recompute", recompute)
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size, *self.kernel_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size, *self.kernel_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **kw))
            self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_uniform(self.weight_ih, self.bias_ih)
        _init_uniform(self.weight_hh, self.bias_hh)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, kernel_size={self.kernel_size}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if not self.bias:
            s += ", bias=False"
        return s + f", reset={self.reset!r}, backend={self.backend!r}"

    def forward(self, x: Tensor, h: Optional[Tensor] = None, context=None) -> Tensor:
        """``h'`` from ``x`` and ``h`` (None: zeros); ``context``: per-gate terms, as ``convgru_cell`` takes them."""
        check_input_channels("ConvGRUCell", x, self.input_size, channel_dim=-3)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
            h = None if h is None else h.unsqueeze(0)
            context = _map_context(context, lambda t: t.unsqueeze(0))
        h_next = convgru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, context=context,
                              dilation=self.dilation, reset=self.reset, backend=self.backend,
                              recompute=self.recompute)
        return h_next.squeeze(0) if unbatched else h_next

    @classmethod
    def from_raft(cls, convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d, backend: str = "auto") -> ConvGRUCell:
        """A cell equal to RAFT's ``ConvGRU`` update for its three convolutions.

        RAFT computes, with ``hx = cat([h, x], 1)``::

            z = sigmoid(convz(hx)); r = sigmoid(convr(hx))
            q = tanh(convq(cat([r * h, x], 1)));  h = (1 - z) * h + z * q

        Note the argument order: RAFT's module is called ``gru(h, x)``, this
        cell ``cell(x, h)``.  The weights are copied; the cell is on the
        convolutions' device and dtype.
        """
        from .raft import cell_from_raft  # raft.py owns the conversion and builds on this module

        return cell_from_raft(convz, convr, convq, backend, cell_cls=cls)


class SepConvGRU(nn.Module):
    """RAFT's separable ConvGRU: a (1, k) cell followed by a (k, 1) cell.

    ``SepConvGRU(Cin, C)(x, h) == vertical(x, horizontal(x, h))``, the update
    of RAFT's ``SepConvGRU`` (called there as ``gru(h, x)``).

    Example::

        >>> gru = SepConvGRU(input_size=8, hidden_size=16)
        >>> gru(torch.randn(1, 8, 12, 20), torch.randn(1, 16, 12, 20)).shape
        torch.Size([1, 16, 12, 20])
    """

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int = 5, bias: bool = True,
                 reset: str = "before", backend: str = "auto", device=None, dtype=None, recompute: bool = False):
        super().__init__()
        check_sep_kernel(kernel_size)
        kw = dict(bias=bias, reset=reset, backend=backend, device=device, dtype=dtype, recompute=recompute)
        self.horizontal = ConvGRUCell(input_size, hidden_size, (1, kernel_size), **kw)
        self.vertical = ConvGRUCell(input_size, hidden_size, (kernel_size, 1), **kw)

    def forward(self, x: Tensor, h: Optional[Tensor] = None, context=None) -> Tensor:
        """Both passes; ``context`` (per-gate terms, as ``ConvGRUCell`` takes them) enters both."""
        return self.vertical(x, self.horizontal(x, h, context), context)

    @classmethod
    def from_raft(cls, raft_gru: nn.Module, backend: str = "auto") -> SepConvGRU:
        """Build from a RAFT ``SepConvGRU`` (``convz1, convr1, convq1`` (1x5), ``convz2, convr2, convq2`` (5x1))."""
        from .raft import sep_from_raft  # raft.py owns the conversion and builds on this module

        return sep_from_raft(raft_gru, backend, sep_cls=cls)


class ConvGRU(nn.Module):
    """A multi-layer, optionally bidirectional ConvGRU with ``torch.nn.GRU``'s contract.

    Args as ``nn.GRU`` (``input_size, hidden_size, num_layers, bias,
    batch_first, dropout, bidirectional``) plus ``kernel_size``, ``dilation``,
    ``reset`` and ``backend`` as in :class:`ConvGRUCell`.

    Shapes, with D = 2 if bidirectional else 1 and L = num_layers:
    ``x`` (T, B, Cin, H, W), or (B, T, Cin, H, W) with ``batch_first``, or
    unbatched (T, Cin, H, W); ``h0`` (L*D, B, C, H, W) or None for zeros.
    Returns ``(output, h_n)``: ``output`` (T, B, D*C, H, W) (batch first if
    ``batch_first``), the last layer's states, and ``h_n`` (L*D, B, C, H, W),
    every layer's and direction's final state.  Dropout (in training) applies to
    each layer's output except the last.

    Parameters are named as in ``nn.GRU``: ``weight_ih_l{k}``,
    ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``_reverse``
    for the backward direction; each shaped and initialised as in
    :class:`ConvGRUCell`.

    Example::

        >>> gru = ConvGRU(3, 16, kernel_size=3, num_layers=2, bidirectional=True)
        >>> out, h_n = gru(torch.randn(5, 2, 3, 32, 32))
        >>> out.shape, h_n.shape
        (torch.Size([5, 2, 32, 32, 32]), torch.Size([4, 2, 16, 32, 32]))
    """

    def __init__(self, input_size: int, hidden_size: int, kernel_size: IntOrPair = 3, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, dilation: IntOrPair = 1, reset: str = "before",
                 backend: str = "auto", device=None, dtype=None, recompute: bool = False):
        super().__init__()
        self.kernel_size, self.dilation = check_module_options(
            "ConvGRU", input_size, hidden_size, kernel_size, dilation, reset, backend, backends.names(), num_layers,
            dropout)
        self.recompute = check_flag("ConvGRU", "recompute", recompute)
        if dropout > 0 and num_layers == 1:
            warnings.warn("ConvGRU: dropout applies to every layer's output except the last, so a non-zero "
                          f"dropout expects num_layers > 1; got dropout={dropout} and num_layers=1", stacklevel=2)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.reset, self.backend = bidirectional, reset, backend
        kw = {"device": device, "dtype": dtype}
        D = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else D * hidden_size
            for suffix in ("", "_reverse")[:D]:
                shapes = {
                    "weight_ih": (3 * hidden_size, layer_in, *self.kernel_size),
                    "weight_hh": (3 * hidden_size, hidden_size, *self.kernel_size),
                }
                if bias:
                    shapes.update(bias_ih=(3 * hidden_size,), bias_hh=(3 * hidden_size,))
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{suffix}"
                    setattr(self, name, nn.Parameter(torch.empty(shape, **kw)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    def _layer_params(self, layer: int, suffix: str) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        get = lambda kind: getattr(self, f"{kind}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def reset_parameters(self) -> None:
        D = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[:D]:
                w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, suffix)
                _init_uniform(w_ih, b_ih)
                _init_uniform(w_hh, b_hh)

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per layer and direction, ``[weight_ih, weight_hh(, bias_ih, bias_hh)]`` as in nn.GRU."""
        per = 4 if self.bias else 2
        flat = [getattr(self, n) for n in self._flat_weights_names]
        return [flat[i: i + per] for i in range(0, len(flat), per)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, kernel_size={self.kernel_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s + f", reset={self.reset!r}, backend={self.backend!r}"

    def forward(self, x: Tensor, h0: Optional[Tensor] = None, context=None) -> tuple[Tensor, Tensor]:
        """``(output, h_n)`` as ``nn.GRU``.  ``context``: None or one entry per layer (None, or per-gate terms in
        any form ``convgru_sequence`` takes, in this module's batch layout), the same for both directions."""
        D = 2 if self.bidirectional else 1
        x, h0, unbatched = check_sequence_input(x, h0, self.input_size, self.hidden_size, self.num_layers * D,
                                                self.batch_first)
        contexts = check_layer_contexts(context, self.num_layers)

        def time_major(t):  # a context tensor in this module's layout -> convgru_sequence's
            if unbatched:
                return t.unsqueeze(1 if t.dim() == 4 else 0)
            return t.transpose(0, 1) if self.batch_first and t.dim() == 5 else t

        contexts = [_map_context(c, time_major) for c in contexts]
        kw = {"dilation": self.dilation, "reset": self.reset, "backend": self.backend, "recompute": self.recompute}
        finals = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:D]):
                h = None if h0 is None else h0[layer * D + d]
                seq = layer_in if d == 0 else layer_in.flip(0)
                ctx = contexts[layer] if d == 0 else _map_context(
                    contexts[layer], lambda t: t.flip(0) if t.dim() == 5 else t)  # per-step: reversed time
                out, h_last = convgru_sequence(seq, h, *self._layer_params(layer, suffix), context=ctx, **kw)
                outs.append(out if d == 0 else out.flip(0))
                finals.append(h_last)
            layer_in = outs[0] if D == 1 else torch.cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        output, h_n = layer_in, torch.stack(finals)
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        return (output.transpose(0, 1) if self.batch_first else output), h_n
