"""``backend="cuda"``: hand-written fused CUDA kernels (``csrc/``).

``csrc/ops.cpp`` implements the backend's two time loops as the ops ``convgru_ext::_cuda_forward_loop``
/ ``_cuda_backward_loop`` (CUDA tensors launch the kernels; CPU tensors run every kernel's CPU
emulation); this module loads that extension and composes the op pair of ``_op.py`` around the loops
(``convgru_ext::cuda_forward`` / ``cuda_backward``, and the CPU-emulated twins
``_cuda_emulate_forward`` / ``_cuda_emulate_backward`` for tests, which take the math mode as an extra
argument).  ``csrc/convgru.h`` says what each kernel computes.  The math mode (bf16, fp16, TF32 when a
float32 convolution may use it, exact fp32, fp64: ``_math.py``) is chosen per call and passed to C++.

Loading: the extension built by setup.py (``convgru_ext._cuda``) if present; otherwise, with a CUDA
toolkit and a CUDA device present, the same sources with the same flags (``_build.py``; an installed
package carries them) are built with ninja on first use (``torch.utils.cpp_extension.load``, cached
under torch's extension folder), saying so once, unless ``CONVGRU_CUDA_JIT=0``.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Optional

import torch

from .. import _build
from .._contract import Problem
from ._layout import logical, physical
from ._math import Math, math_mode
from ._op import backward_schema, compose_backward, compose_forward, define_op_pair, forward_schema
from .base import FusedBackend, capability_reasons

PREBUILT = "convgru_ext._cuda"
JIT_NAME = "convgru_ext_cuda"
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MIN_CAPABILITY = (8, 0)  # cp.async, bfloat16 tensor cores
#: set to 0 to never build the extension on first use (``make gpu-check`` builds it beforehand)
NO_JIT_VAR = "CONVGRU_CUDA_JIT"


def _ops_defined() -> bool:
    try:
        torch.ops.convgru_ext._cuda_forward_loop.default  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


class _Extension:
    """The compiled extension, loaded at most once per process; remembers why it could not be."""

    def __init__(self):
        self._lock = threading.Lock()
        self.loaded = False
        self.origin: Optional[str] = None  # "prebuilt", "jit" or "already loaded"
        self.error: Optional[str] = None  # why loading failed, once tried

    def load(self) -> Optional[str]:
        """Load the extension if it is not loaded yet; None on success, else why not."""
        if self.loaded:
            return None
        with self._lock:
            if not self.loaded and self.error is None:
                self.origin, self.error = self._load()
                self.loaded = self.error is None
            return self.error

    def _load(self) -> tuple[Optional[str], Optional[str]]:
        if _ops_defined():
            return "already loaded", None
        try:
            importlib.import_module(PREBUILT)
            return "prebuilt", None
        except ModuleNotFoundError as error:
            if error.name != PREBUILT:
                return None, f"the compiled extension {PREBUILT} failed to import: {error}"
            missing = f"the compiled extension {PREBUILT} is not installed"
        except ImportError as error:  # built, but does not load (e.g. against another torch)
            return None, f"the compiled extension {PREBUILT} failed to load: {error}; rebuild it"
        return self._jit_build(missing)

    def _jit_build(self, missing: str) -> tuple[Optional[str], Optional[str]]:
        if torch.version.cuda is None:
            return None, f"{missing}, and torch {torch.__version__} is a CPU-only build"
        if not torch.cuda.is_available():
            return None, f"no CUDA device visible to torch (and {missing})"
        if os.environ.get(NO_JIT_VAR, "").strip() == "0":
            return None, f"{missing}, and {NO_JIT_VAR}=0 forbids building it on first use"
        _build.use_default_cuda_home()
        from torch.utils import cpp_extension

        if cpp_extension.CUDA_HOME is None:
            return None, f"{missing}, and no CUDA toolkit (nvcc) was found to build it (set CUDA_HOME)"
        sources = _build.sources()
        if not sources:
            return None, (f"{missing}, and its sources ({_build.sources_dir()}) are not in this installation to "
                          f"build it")
        cache = os.environ.get("TORCH_EXTENSIONS_DIR") or "torch's extension cache"
        print(f"convgru_ext: {PREBUILT} is not installed; building the CUDA kernels with ninja "
              f"(minutes the first time, then cached under {cache})", file=sys.stderr, flush=True)
        try:
            options = _build.build_options()
            cpp_extension.load(
                name=JIT_NAME,
                sources=sources,
                extra_cflags=options["extra_compile_args"]["cxx"],
                extra_cuda_cflags=options["extra_compile_args"]["nvcc"],
                extra_include_paths=options["include_dirs"],
                is_python_module=False,
            )
        except Exception as error:  # compiler errors come as RuntimeError, a missing ninja as others
            first_lines = " ".join(str(error).strip().splitlines()[:3])
            return None, f"{missing}, and building it with ninja failed: {first_lines}"
        return "jit", None


_EXTENSION = _Extension()


def load_extension() -> Optional[str]:
    """Load the extension (prebuilt, else JIT-built); None when its ops are registered, else why not."""
    return _EXTENSION.load()


class CudaLoops:
    """The time loops of ``backend="cuda"`` (``_op.StepLoops``): the C++ ops, on CUDA tensors, or with
    ``emulated_math`` on CPU tensors through the kernels' CPU emulation in that math mode."""

    def __init__(self, emulated_math: Optional[str] = None):
        self.emulated_math = emulated_math

    def hoists(self, T: int) -> bool:
        return True

    def _math(self, t: torch.Tensor, direction: str) -> str:
        if self.emulated_math is None and t.device.type != "cuda":
            raise RuntimeError(f'convgru_ext::cuda_{direction} needs CUDA tensors: backend="cuda" runs hand-written '
                               f'GPU kernels; got `x` on {t.device}. Use backend="torch" (or "auto") for CPU tensors.')
        if self.emulated_math is not None and t.device.type != "cpu":
            raise RuntimeError(f"convgru_ext::_cuda_emulate_{direction} emulates the kernels on CPU tensors; "
                               f"got `x` on {t.device}")
        reason = load_extension()
        if reason:
            raise RuntimeError(f'backend "cuda" is unavailable: {reason}')
        return (Math(self.emulated_math) if self.emulated_math else math_mode(t.dtype)).value

    def forward(self, x, gx, h0, weight_ih, weight_hh, bias_x, bias_hn, dilation, reset_after):
        math = self._math(x, "forward")
        out, gates = torch.ops.convgru_ext._cuda_forward_loop(x, physical(gx), physical(h0), weight_hh, bias_hn,
                                                              dilation, reset_after, math)
        return logical(out), logical(gates)

    def backward(self, grad_out, h0, out, gates, weight_hh, dilation, reset_after):
        math = self._math(out, "backward")
        dgh, dxn, dh0 = torch.ops.convgru_ext._cuda_backward_loop(
            physical(grad_out), physical(h0), physical(out), physical(gates), weight_hh, dilation, reset_after, math)
        return logical(dgh), logical(dxn) if reset_after else None, logical(dh0)


cuda_forward, cuda_backward = define_op_pair("cuda", CudaLoops())


@torch.library.custom_op("convgru_ext::_cuda_emulate_forward", mutates_args=(), schema=forward_schema("str math"))
def cuda_emulate_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after, math, context=None,
                         recompute=False):
    """``cuda_forward`` on CPU tensors, every kernel emulated in math mode ``math`` (tests)."""
    return compose_forward(CudaLoops(math))(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, dilation, reset_after,
                                            context)


@torch.library.custom_op("convgru_ext::_cuda_emulate_backward", mutates_args=(), schema=backward_schema("str math"))
def cuda_emulate_backward(grad_out, x, h0, out, gates, weight_ih, weight_hh, dilation, reset_after, need_dx, math,
                          context_steps=0):
    """``cuda_backward`` on CPU tensors, every kernel emulated in math mode ``math`` (tests)."""
    return compose_backward(CudaLoops(math))(grad_out, x, h0, out, gates, weight_ih, weight_hh, dilation,
                                             reset_after, need_dx, context_steps)


class CudaBackend(FusedBackend):
    name = "cuda"
    experimental = True  # until a GPU run has verified it: "auto" does not pick it

    def unavailable_reason(self) -> Optional[str]:
        if _EXTENSION.loaded and torch.cuda.is_available():
            return None
        if not torch.cuda.is_available():
            # Still load a prebuilt extension, so that its ops are registered (and checked) on
            # machines without a GPU; a JIT build needs a device, and is not attempted.
            error = _EXTENSION.load()
            if error is None:
                return "no CUDA device visible to torch"
            return error if error.startswith("no CUDA device") else f"no CUDA device visible to torch; also, {error}"
        return _EXTENSION.load()

    def why_not(self, problem: Problem) -> list[str]:
        reasons = []
        if problem.device.type != "cuda":
            reasons.append(f'backend "cuda" runs on CUDA tensors; got tensors on {problem.device}')
        else:
            reasons += capability_reasons(self.name, problem.device, MIN_CAPABILITY)
        if problem.dtype not in DTYPES:
            reasons.append(f'backend "cuda" supports float16, bfloat16, float32 and float64; got {problem.dtype}')
        return reasons

    def forward_op(self):
        return cuda_forward
