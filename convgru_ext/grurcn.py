"""GRURCN: a GRU-RCN over the percepts of several CNN levels (Ballas et al. 2016, "Delving deeper into
convolutional networks for learning video representations"), plain or stacked."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from . import backends
from ._contract import IntOrPair, check_grurcn_options, check_module_options, check_percepts
from .modules import ConvGRU


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
