"""The op layout of activations: logically (..., C, H, W), dense in memory as (..., H, W, C) (see ``_op.py``)."""

from __future__ import annotations

from torch import Tensor


def _to_channel_last_order(ndim: int) -> list[int]:
    return list(range(ndim - 3)) + [ndim - 2, ndim - 1, ndim - 3]


def _from_channel_last_order(ndim: int) -> list[int]:
    return list(range(ndim - 3)) + [ndim - 1, ndim - 3, ndim - 2]


def physical(t: Tensor) -> Tensor:
    """The dense (..., H, W, C) storage of a logical (..., C, H, W) tensor; no copy if it is channels-last."""
    return t.permute(_to_channel_last_order(t.dim())).contiguous()


def logical(t: Tensor) -> Tensor:
    """The logical (..., C, H, W) view of a dense (..., H, W, C) tensor."""
    return t.permute(_from_channel_last_order(t.dim()))


def channels_last(t: Tensor) -> Tensor:
    """``t`` (..., C, H, W) with the same values, dense in memory as (..., H, W, C); no copy if it already is."""
    return logical(physical(t))


def empty_channels_last(like: Tensor, *shape: int) -> Tensor:
    """An uninitialised channels-last tensor of logical ``shape`` (..., C, H, W), ``like``'s dtype and device."""
    return logical(like.new_empty([shape[i] for i in _to_channel_last_order(len(shape))]))
