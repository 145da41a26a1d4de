"""TF32 in float32 convolutions and matmuls: how this package reads and sets PyTorch's switches.

PyTorch has two APIs for them: the legacy flags (``torch.backends.cudnn.allow_tf32``,
``torch.backends.cuda.matmul.allow_tf32``) and, since 2.9, per-operator precisions
(``torch.backends.cudnn.conv.fp32_precision = "tf32" | "ieee"``, falling back to
``torch.backends.cudnn.fp32_precision`` and then ``torch.backends.fp32_precision`` where an
operator's own is ``"none"``).  Reading the legacy cuDNN flag raises once a user has set the
convolution's precision apart from the RNN's through the new API, so everything here reads the
*convolution operator's* flag, as cuDNN's convolutions do: the fused kernels use TF32 for float32
exactly when a float32 ``conv2d`` would; the CUDA backend passes the math mode it implies to C++.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: where an operator's precision comes from when its own is "none": (backend, op) pairs, in order
_FALLBACK = {"conv": (("cuda", "conv"), ("cuda", "all"), ("generic", "all")),
             "matmul": (("cuda", "matmul"), ("generic", "all"))}


def _new_api() -> bool:
    return hasattr(torch._C, "_get_fp32_precision_getter")


def _precision(op: str) -> str:
    """The effective fp32 precision of CUDA operator ``op`` under the new API ("tf32", "ieee" or "none")."""
    for backend, name in _FALLBACK[op]:
        value = torch._C._get_fp32_precision_getter(backend, name)
        if value != "none":
            return value
    return "none"


def conv_allows_tf32() -> bool:
    """Whether float32 convolutions may use TF32 tensor cores (the convolution operator's flag)."""
    if _new_api():
        return _precision("conv") == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def matmul_allows_tf32() -> bool:
    """Whether float32 matmuls may use TF32 tensor cores."""
    if _new_api():
        return _precision("matmul") == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


@contextlib.contextmanager
def tf32(conv: bool, matmul: bool | None = None) -> Iterator[None]:
    """Inside the block, float32 convolutions (and matmuls: ``matmul``, default the same as ``conv``)
    use TF32 exactly when told to; the previous settings come back afterwards.

    Uses the legacy flags while they agree with the per-operator precisions (they set both, and PyTorch's
    own code, ``torch.export`` among it, still reads the legacy cuDNN flag), else, once a user has set the
    convolution's precision apart, the per-operator precisions.
    """
    matmul = conv if matmul is None else matmul
    try:
        saved_legacy = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:  # the two APIs disagree: set the convolution's and the matmul's precisions
        saved = {op: torch._C._get_fp32_precision_getter("cuda", op) for op in ("conv", "matmul")}
        torch.backends.cudnn.conv.fp32_precision = "tf32" if conv else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if matmul else "ieee"
        try:
            yield
        finally:
            for op, value in saved.items():
                torch._C._set_fp32_precision_setter("cuda", op, value)
        return
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_legacy
