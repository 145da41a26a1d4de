"""The fused kernels' math modes: how a time step's GEMM is computed, chosen by dtype at each call.

The one list of modes for the Triton and CUDA backends; ``csrc/ops.cpp`` (``parse_math``) accepts the
same names.  float32 runs on TF32 tensor cores exactly when a float32 convolution may
(``_tf32.conv_allows_tf32``, PyTorch's default), so a fused backend rounds as cuDNN would.
"""

from __future__ import annotations

import enum

import torch

from .._tf32 import conv_allows_tf32


class Math(str, enum.Enum):
    F16 = "f16"    # float16 operands on tensor cores, float32 accumulation
    BF16 = "bf16"  # bfloat16 operands on tensor cores, float32 accumulation
    TF32 = "tf32"  # float32 tensors, TF32 tensor cores, float32 accumulation
    F32 = "f32"    # float32 throughout, on the CUDA cores
    F64 = "f64"    # float64 throughout, on the CUDA cores

    def __str__(self) -> str:
        return self.value

    @property
    def tensor_cores(self) -> bool:
        """Whether the GEMM runs on tensor cores (else as FMAs on the CUDA cores)."""
        return self in (Math.F16, Math.BF16, Math.TF32)


_BY_DTYPE = {torch.float16: Math.F16, torch.bfloat16: Math.BF16, torch.float64: Math.F64}


def math_mode(dtype: torch.dtype) -> Math:
    """The math mode of ``dtype``, with float32's read from PyTorch's TF32 switch at each call."""
    found = _BY_DTYPE.get(dtype)
    if found is not None:
        return found
    return Math.TF32 if conv_allows_tf32() else Math.F32
