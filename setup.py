"""Build and install convgru-ext.

The package is pure Python.  When a CUDA toolkit (nvcc) and a CUDA build of torch are
found, setup.py also builds the CUDA extension ``convgru_ext._cuda`` from ``csrc/`` with
``torch.utils.cpp_extension`` (ninja, one job per source file; ``MAX_JOBS`` caps the
jobs).  torch must be importable at build time, so install with
``pip install --no-build-isolation .`` (the Makefile does); otherwise the package is
installed without the extension and ``backend="cuda"`` builds it on first use (JIT).

Environment:

* ``CONVGRU_SKIP_CUDA=1``: build no extension (pure Python);
* ``CONVGRU_FORCE_CUDA=1``: fail if the extension cannot be built;
* ``TORCH_CUDA_ARCH_LIST``: the GPUs to compile for, default ``"8.0;9.0+PTX"``: SASS for
  sm_80 (A100) and sm_90 (H100), plus compute_90 PTX that newer GPUs JIT-compile; the
  kernels need compute capability 8.0 or newer, so older entries are dropped.  No GPU is
  needed (or queried) to build;
* ``CUDA_HOME``: the toolkit, default ``/usr/local/cuda`` when it exists;
* ``CONVGRU_PTXAS_VERBOSE=1``: print every kernel's registers and spills (``-Xptxas -v``;
  benchmarks/results/compile/cuda-ptxas-sm*.txt keep the summary, tests/test_cuda_sass.py
  checks the built extension).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0+PTX"
MIN_ARCH = 8.0  # cp.async and bfloat16 tensor cores


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _note(message: str) -> None:
    print(f"convgru-ext setup: {message}", file=sys.stderr)


def _arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST (default DEFAULT_ARCHS) without the numeric entries below MIN_ARCH."""
    requested = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip() or DEFAULT_ARCHS
    kept = []
    for entry in requested.replace(" ", ";").split(";"):
        if not entry:
            continue
        number = entry.split("+")[0].rstrip("a")
        try:
            too_old = float(number) < MIN_ARCH
        except ValueError:  # a name such as "Hopper": torch.utils.cpp_extension resolves it
            too_old = False
        if too_old:
            _note(f"dropping {entry!r} from TORCH_CUDA_ARCH_LIST: the kernels need compute capability >= {MIN_ARCH}")
        else:
            kept.append(entry)
    if not kept:
        raise RuntimeError(f"TORCH_CUDA_ARCH_LIST={requested!r} names no GPU of compute capability >= {MIN_ARCH}")
    return ";".join(kept)


def _nvidia_include_dirs() -> list[str]:
    """The CUDA 13 wheels' header folder (cusparse etc. for torch's headers), when installed."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [d for base in spec.submodule_search_locations
            if os.path.isdir(d := os.path.join(base, "cu13", "include"))]


def cuda_build_options() -> dict:
    """Compiler options of the extension (the JIT build in convgru_ext/backends/cuda.py uses the same)."""
    nvcc = ["-O3", "-lineinfo"]  # the C++ standard: torch.utils.cpp_extension adds the one torch needs
    if _flag("CONVGRU_PTXAS_VERBOSE"):
        nvcc += ["-Xptxas", "-v"]
    return {
        "include_dirs": [os.path.join(ROOT, "csrc")] + _nvidia_include_dirs(),
        "extra_compile_args": {"cxx": ["-O3"], "nvcc": nvcc},
    }


def _cuda_extension() -> tuple[list, dict]:
    """(ext_modules, cmdclass) for the CUDA extension, or ([], {}) after saying why not."""
    force = _flag("CONVGRU_FORCE_CUDA")

    def without(reason: str) -> tuple[list, dict]:
        if force:
            raise RuntimeError(f"CONVGRU_FORCE_CUDA=1, but the CUDA extension cannot be built: {reason}")
        _note(f"installing without the CUDA extension: {reason}")
        return [], {}

    if _flag("CONVGRU_SKIP_CUDA"):
        return without("CONVGRU_SKIP_CUDA is set")
    if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"  # read when torch.utils.cpp_extension is imported
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as error:
        return without(f"torch is not importable at build time ({error}); build with --no-build-isolation")
    if torch.version.cuda is None:
        return without(f"torch {torch.__version__} is a CPU-only build")
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return without("no CUDA toolkit found (set CUDA_HOME to the folder holding bin/nvcc)")
    os.environ["TORCH_CUDA_ARCH_LIST"] = _arch_list()  # set, so that torch never queries a device
    _note(f"building the CUDA extension for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} "
          f"with {CUDA_HOME}/bin/nvcc")
    sources = sorted(glob.glob("csrc/*.cpp", root_dir=ROOT) + glob.glob("csrc/cuda/*.cu", root_dir=ROOT))
    extension = CUDAExtension("convgru_ext._cuda", sources, **cuda_build_options())
    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":
    ext_modules, cmdclass = _cuda_extension()
    setup(
        name="convgru-ext",
        version="0.1.0",
        description="A fast, trustworthy convolutional GRU for PyTorch: reference, PyTorch, Triton and CUDA backends",
        packages=find_packages(include=["convgru_ext", "convgru_ext.*"]),
        python_requires=">=3.10",
        install_requires=["torch>=2.4", "rich"],
        extras_require={"bench": ["matplotlib", "pytest-benchmark"], "triton": ["triton"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
