"""``backend="triton"``: fused Triton kernels (``_op.py`` holds the design every fused backend shares).

* ``kernels.py``: the ``@triton.jit`` kernels of one time step (implicit-GEMM convolutions whose
  epilogues do the gate math), with a table of what each computes;
* ``ops.py``: configurations, weight packing, the two time loops and the op pair
  (``convgru_ext::triton_forward`` / ``triton_backward``);
* ``graphs.py``: a loop replayed as a CUDA graph where the host is slower than the GPU;
* ``model.py``: the static cost model of a step's launches;
* ``compile_report.py``: the kernels compiled ahead of time for a GPU architecture, no GPU needed.

This module imports without Triton: it only says why the backend is unavailable, and imports ``ops``
(which needs Triton) on first use.  Without a GPU, ``TRITON_INTERPRET=1`` runs the kernels on the CPU
through Triton's interpreter (the tests do).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import torch

from ..._contract import Problem
from ..base import FusedBackend, capability_reasons

GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: under the interpreter: numpy has no bfloat16, and float16 products round differently there
INTERPRETER_DTYPES = (torch.float32, torch.float64)
MIN_CAPABILITY = (8, 0)  # bfloat16 tensor cores


def _ops():
    from . import ops

    return ops


def interpreted() -> bool:
    """Whether the kernels run (or, once loaded, will run) through Triton's CPU interpreter.

    Fixed when ``ops`` is first imported: ``@triton.jit`` reads TRITON_INTERPRET then.
    """
    ops = sys.modules.get(f"{__name__}.ops")
    return ops.INTERPRET if ops is not None else os.environ.get("TRITON_INTERPRET", "") == "1"


class TritonBackend(FusedBackend):
    name = "triton"
    experimental = True  # until a GPU run has verified it: "auto" does not pick it
    jit = True

    def unavailable_reason(self) -> Optional[str]:
        try:
            import triton  # noqa: F401
        except ImportError as error:
            return f"triton is not importable ({error})"
        if not torch.cuda.is_available() and not interpreted():
            return ("no CUDA device visible to torch (TRITON_INTERPRET=1 runs the Triton kernels on the CPU "
                    "through Triton's interpreter: slow, for tests)")
        try:
            ops = _ops()
        except Exception as error:  # a Triton too old or broken: say so instead of failing every call
            return f"the Triton kernels failed to load: {type(error).__name__}: {error}"
        return ops.interpreter_problem()  # under TRITON_INTERPRET=1: can this Triton interpret the kernels?

    def benchmark_reason(self) -> Optional[str]:
        if interpreted():
            return "TRITON_INTERPRET=1: the Triton interpreter is for checking, timing it means nothing"
        return None

    def why_not(self, problem: Problem) -> list[str]:
        reasons = []
        if problem.device.type == "cuda":
            reasons += capability_reasons(self.name, problem.device, MIN_CAPABILITY)
            if problem.dtype not in GPU_DTYPES:
                reasons.append(f'backend "triton" supports float16, bfloat16, float32 and float64; got {problem.dtype}')
        elif problem.device.type == "cpu" and interpreted():
            if problem.dtype not in INTERPRETER_DTYPES:
                reasons.append(f'backend "triton" under TRITON_INTERPRET=1 (CPU) supports float32 and float64; '
                               f"got {problem.dtype}")
        else:
            reasons.append(f'backend "triton" runs on CUDA tensors (or on the CPU under TRITON_INTERPRET=1); '
                           f"got tensors on {problem.device}")
        return reasons

    def forward_op(self):
        return _ops().triton_forward_op

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem):
        tensors = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context)
        if torch.compiler.is_compiling() or (  # traced: no graphs (graphs.py)
                torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)):
            return super().sequence(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem)
        from .graphs import outputs_unread

        with outputs_unread(1):  # no backward reads this call's gates: a replay need not copy them out
            return super().sequence(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem)

