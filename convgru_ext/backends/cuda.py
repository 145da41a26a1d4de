"""``backend="cuda"``: hand-written fused CUDA kernels (``csrc/``).  EXPERIMENTAL, UNVERIFIED ON A GPU.

The op pair of ``_op.py`` (``convgru_ext::cuda_forward`` / ``cuda_backward``) is
declared, checked and run in C++ (``csrc/ops.cpp``); this module loads that extension,
registers the fake kernels and the autograd formula, and exposes the backend.

Design (``csrc/convgru.h`` has the details):

* forward: the input projection ``W*x + b`` of all T steps is one cuDNN convolution over
  T*B frames; per step, the recurrent convolution is an implicit GEMM (M = B*H*W pixels,
  N = the channel tile of every gate at once, K = taps x channels, channels-last so K is
  contiguous) on tensor cores (bf16/fp16 with fp32 accumulation; TF32 for float32 when
  ``torch.backends.cudnn.allow_tf32`` is true, exact fp32 FMA otherwise; fp64 FMA), with the
  gate math in the epilogue: ``reset="before"`` takes two kernels per step (r, z and r*h;
  then n and the new state), ``reset="after"`` one;
* backward: per step in reverse, the data gradient of the recurrent convolution is the same
  GEMM with the transposed, tap-flipped weight, and its epilogue completes dL/dh_{t-1} and
  computes step t-1's gate gradients (two kernels per step for "before", one for "after");
  the weight and bias gradients are computed once after the loop over all T*B frames
  (cuDNN), as in the ``torch`` backend;
* saved for the backward: ``gates`` as ``_op.py`` specifies, nothing else.

What has been checked: the extension compiles and links in CI; every kernel's tiling,
addressing, per-thread FMA code and gate math run on the CPU through the emulator ops
(``_cuda_emulate_forward`` / ``_cuda_emulate_backward``, tests/test_cuda.py) and match
the ``torch`` backend.  What has not: anything on a GPU (tensor-core fragments, the cp.async
pipeline, launch configuration, speed).  Until a GPU run has, ``experimental`` stays True and
``"auto"`` never picks this backend.

Loading: the extension built by setup.py (``convgru_ext._cuda``) if present; otherwise, with
a CUDA toolkit and a CUDA device present, the same sources are built with ninja on first use
(``torch.utils.cpp_extension.load``, cached under torch's extension folder), saying so once, unless
``CONVGRU_CUDA_JIT=0``.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from pathlib import Path
from typing import Optional

import torch

from .._contract import Problem
from ._op import fake_backward, fake_forward, register_autograd
from .base import Backend, capability_reasons

#: the CUDA sources, present in a source checkout or an editable install
CSRC = Path(__file__).resolve().parents[2] / "csrc"
PREBUILT = "convgru_ext._cuda"
JIT_NAME = "convgru_ext_cuda"
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MIN_CAPABILITY = (8, 0)  # cp.async, bfloat16 tensor cores
#: set to 0 to never build the extension on first use (``make gpu-check`` builds it beforehand)
NO_JIT_VAR = "CONVGRU_CUDA_JIT"


def _ops_defined() -> bool:
    try:
        torch.ops.convgru_ext.cuda_forward.default  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def _default_cuda_home() -> None:
    """Make /usr/local/cuda the toolkit when CUDA_HOME is unset, as setup.py does.

    torch guesses the toolkit from the ``nvcc`` on PATH, which can be a wrapper script
    outside the toolkit (/usr/local/bin/nvcc on this project's machines) whose parent
    folder holds no CUDA headers.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or not os.path.exists("/usr/local/cuda/bin/nvcc"):
        return
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
    cpp_extension = sys.modules.get("torch.utils.cpp_extension")
    if cpp_extension is not None:  # imported already: it read CUDA_HOME then
        cpp_extension.CUDA_HOME = "/usr/local/cuda"


def _nvidia_include_dirs() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    locations = spec.submodule_search_locations if spec is not None else None
    return [str(Path(base) / "cu13" / "include") for base in (locations or [])
            if (Path(base) / "cu13" / "include").is_dir()]


class _Extension:
    """The compiled extension, loaded at most once per process; remembers why it could not be."""

    def __init__(self):
        self._lock = threading.Lock()
        self.loaded = False
        self.origin: Optional[str] = None  # "prebuilt", "jit" or "already loaded"
        self.error: Optional[str] = None  # why loading failed, once tried
        self._python_side = False

    def register_python_side(self) -> None:
        """Fake kernels and autograd for the C++-defined ops (once)."""
        if self._python_side:
            return
        torch.library.register_fake("convgru_ext::cuda_forward", fake_forward)
        torch.library.register_fake("convgru_ext::cuda_backward", fake_backward)
        register_autograd("convgru_ext::cuda_forward", torch.ops.convgru_ext.cuda_backward)
        self._python_side = True

    def load(self) -> Optional[str]:
        """Load the extension if it is not loaded yet; None on success, else why not."""
        if self.loaded:
            return None
        with self._lock:
            if not self.loaded and self.error is None:
                self.origin, self.error = self._load()
                if self.error is None:
                    self.register_python_side()
                    self.loaded = True
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
        _default_cuda_home()
        from torch.utils import cpp_extension

        if cpp_extension.CUDA_HOME is None:
            return None, f"{missing}, and no CUDA toolkit (nvcc) was found to build it (set CUDA_HOME)"
        sources = sorted(str(p) for p in CSRC.glob("*.cpp")) + sorted(str(p) for p in CSRC.glob("cuda/*.cu"))
        if not sources:
            return None, f"{missing}, and its sources ({CSRC}) are not in this installation to build it"
        cache = os.environ.get("TORCH_EXTENSIONS_DIR") or "torch's extension cache"
        print(f"convgru_ext: {PREBUILT} is not installed; building the CUDA kernels with ninja "
              f"(minutes the first time, then cached under {cache})", file=sys.stderr, flush=True)
        try:
            cpp_extension.load(
                name=JIT_NAME,
                sources=sources,
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3", "-lineinfo"],  # as setup.py
                extra_include_paths=[str(CSRC)] + _nvidia_include_dirs(),
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


class CudaBackend(Backend):
    name = "cuda"
    experimental = True  # never run on a GPU yet; "auto" does not pick it

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

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, problem):
        out, _ = torch.ops.convgru_ext.cuda_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                                                    list(problem.dilation), problem.reset_after)
        return out


# Loaded already (e.g. torch imported this module for the ops' fake kernels): register now.
if _ops_defined():
    _EXTENSION.register_python_side()
