"""The op layout (see ``_op.py``): activations logically (..., C, H, W), dense in memory as (..., H, W, C);
weight and bias gradients in their parameter's own layout, whatever layout a convolution library returned."""

from __future__ import annotations

from typing import Optional

import torch
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
    if t.dim() == 4:  # PyTorch's own channels_last is this layout: one call instead of three
        return t.contiguous(memory_format=torch.channels_last)
    if t.dim() == 5 and t.shape[0] == 1:  # one step (a cell call): likewise
        return t[0].contiguous(memory_format=torch.channels_last).unsqueeze(0)
    return logical(physical(t))


def frames(t: Tensor) -> Tensor:
    """The (T*B, C, H, W) frames of a channels-last (T, B, C, H, W) tensor, as a view in PyTorch's own
    channels_last strides.  A plain ``view`` of one frame (T*B = 1) gives its batch dimension the stride C,
    which oneDNN takes for NCHW: it then copies the input and returns NCHW, which the next step copies back."""
    return t[0] if t.shape[0] == 1 else t.flatten(0, 1)


def empty_channels_last(like: Tensor, *shape: int) -> Tensor:
    """An uninitialised channels-last tensor of logical ``shape`` (..., C, H, W), ``like``'s dtype and device."""
    return logical(like.new_empty([shape[i] for i in _to_channel_last_order(len(shape))]))


def significant_strides(t: Tensor) -> tuple[Optional[int], ...]:
    """``t``'s strides with None for every dimension of size 1: the strides that place an element in memory.

    Two tensors of one shape have the same layout exactly when these agree (PyTorch's own layout checks
    ignore the strides of size-1 dimensions too); raw ``stride()`` tuples differ between machines there,
    since oneDNN returns other layouts on other instruction sets."""
    return tuple(None if n == 1 else s for n, s in zip(t.shape, t.stride()))


def like(grad: Tensor, param: Tensor) -> Tensor:
    """``grad`` with exactly the strides of ``torch.empty_like(param)``, the layout ``param``'s fake kernel
    promises: a view where only size-1 strides differ, else a copy (convolution backward passes may return a
    weight gradient channels-last, e.g. oneDNN's bf16 kernels on CPUs with AVX-512 BF16 or AMX)."""
    target = torch.empty_like(param, device="meta").stride()
    if grad.stride() == target:
        return grad
    if significant_strides(grad) == tuple(None if n == 1 else s for n, s in zip(param.shape, target)):
        return grad.as_strided(grad.shape, target)
    return torch.empty_like(param, dtype=grad.dtype).copy_(grad)
