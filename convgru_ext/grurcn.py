"""GRURCN: a GRU-RCN over the percepts of several CNN levels (Ballas et al. 2016, "Delving deeper into
convolutional networks for learning video representations"), plain or stacked."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import backends
from ._contract import IntOrPair, check_module_options, check_positive_int, check_tensor
from .modules import ConvGRU

POOLS = ("max", "avg")


def check_grurcn_options(input_sizes, hidden_sizes, pool) -> int:
    """GRURCN's ``input_sizes`` and ``hidden_sizes`` (L >= 1 positive ints each) and ``pool``; returns L."""
    for name, sizes in (("input_sizes", input_sizes), ("hidden_sizes", hidden_sizes)):
        if isinstance(sizes, (str, torch.Tensor)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
            raise TypeError(f"GRURCN: `{name}` must be a non-empty sequence of positive ints; got {sizes!r}")
        for i, size in enumerate(sizes):
            check_positive_int(size, f"{name}[{i}]", "GRURCN")
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
        check_tensor(p, name, "GRURCN", 5, layout)
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


class GRURCN(nn.Module):
    r"""One GRU-RCN (a one-layer :class:`ConvGRU`) per level of a CNN's percepts.

    Level ``l`` runs over its percepts ``x^l_t``.  With ``stacked=True``, its r
    and z gates also see level ``l-1``'s current state, pooled to level ``l``'s
    resolution (the candidate ``n`` does not):

    .. math::
        z^l_t = \sigma(W^l_z * x^l_t + W^l_{zl} * \mathrm{pool}(h^{l-1}_t) + U^l_z * h^l_{t-1})
        \quad (r \text{ likewise})

    Args:
        input_sizes: channels of each level's percepts (L positive ints, finest level first).
        hidden_sizes: channels of each level's state (L positive ints).
        kernel_size: odd int or pair, of every convolution (padding is "same").
        stacked: feed each level's pooled state to the r and z gates of the level above.
        pool: ``"max"`` or ``"avg"``; the kernel and the stride are the resolution ratio.
        bias, reset, batch_first, backend: as in :class:`ConvGRU`.

    Submodules: ``levels``, an ``nn.ModuleList`` of L one-layer ``ConvGRU``; with
    ``stacked``, ``bottom_up``, L-1 ``nn.Conv2d(hidden_sizes[l-1], 2 * hidden_sizes[l])``
    without bias whose output channel blocks are (r, z) of level ``l`` (``None``
    otherwise).

    Shapes: ``percepts[l]`` (T, B, input_sizes[l], H_l, W_l), or (B, T, ...) with
    ``batch_first``, where H_{l-1} / H_l and W_{l-1} / W_l are positive ints.
    ``forward`` returns ``(outputs, h_n)``, lists of L tensors: ``outputs[l]``
    (T, B, hidden_sizes[l], H_l, W_l) (batch first likewise) and ``h_n[l]``
    (B, hidden_sizes[l], H_l, W_l), level ``l``'s last state.

    Example::

        >>> rcn = GRURCN(input_sizes=(64, 128), hidden_sizes=(16, 32), stacked=True)
        >>> outputs, h_n = rcn([torch.randn(4, 2, 64, 32, 32), torch.randn(4, 2, 128, 16, 16)])
        >>> [tuple(o.shape) for o in outputs], [tuple(h.shape) for h in h_n]
        ([(4, 2, 16, 32, 32), (4, 2, 32, 16, 16)], [(2, 16, 32, 32), (2, 32, 16, 16)])
    """

    def __init__(self, input_sizes: Sequence[int], hidden_sizes: Sequence[int], kernel_size: IntOrPair = 3,
                 stacked: bool = False, pool: str = "max", bias: bool = True, reset: str = "before",
                 batch_first: bool = False, backend: str = "auto"):
        super().__init__()
        L = check_grurcn_options(input_sizes, hidden_sizes, pool)
        check_module_options("GRURCN", input_sizes[0], hidden_sizes[0], kernel_size, 1, reset, backend,
                             backends.names())
        self.input_sizes, self.hidden_sizes = tuple(input_sizes), tuple(hidden_sizes)
        self.stacked, self.pool, self.batch_first = stacked, pool, batch_first
        self.levels = nn.ModuleList(
            ConvGRU(i, h, kernel_size, bias=bias, batch_first=batch_first, reset=reset, backend=backend)
            for i, h in zip(input_sizes, hidden_sizes))
        self.bottom_up = nn.ModuleList(
            nn.Conv2d(hidden_sizes[level - 1], 2 * hidden_sizes[level], kernel_size, padding="same", bias=False)
            for level in range(1, L)) if stacked else None

    def extra_repr(self) -> str:
        return f"stacked={self.stacked}, pool={self.pool!r}"

    def forward(self, percepts: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        ratios = check_percepts(percepts, self.input_sizes, self.batch_first)
        outputs, h_n = [], []
        for level, (gru, x) in enumerate(zip(self.levels, percepts)):
            if self.stacked and level > 0:
                out, h = gru(x, context=[self._bottom_up(level, outputs[-1], ratios[level - 1])])
            else:
                out, h = gru(x)
            outputs.append(out)
            h_n.append(h[0])
        return outputs, h_n

    def _bottom_up(self, level: int, below: Tensor, ratio: tuple[int, int]) -> tuple[Tensor, Tensor, None]:
        """Level ``level``'s context ``(c_r, c_z, None)``: ``below`` (the states of level - 1, every step)
        pooled by ``ratio`` and convolved by ``bottom_up[level - 1]``, over all T*B frames at once."""
        pool = F.max_pool2d if self.pool == "max" else F.avg_pool2d
        frames = pool(below.flatten(0, 1), kernel_size=ratio, stride=ratio)
        c_r, c_z = self.bottom_up[level - 1](frames).unflatten(0, below.shape[:2]).chunk(2, dim=2)
        return c_r, c_z, None
