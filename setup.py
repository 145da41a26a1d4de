"""Build and install convgru-ext.

The package is Python with two optional compiled extensions.  When torch is importable at build time,
setup.py builds the CPU extension ``convgru_ext._cpu`` from ``csrc/cpu/`` (a C++ compiler is all it
needs): the torch backend's time loops for float32 on the CPU; without it they run in Python.
When a CUDA toolkit (nvcc) and a CUDA build of torch are
found, setup.py also builds the CUDA extension ``convgru_ext._cuda`` from ``csrc/`` with
``torch.utils.cpp_extension`` (ninja, one job per source file; ``MAX_JOBS`` caps the
jobs).  torch must be importable at build time, so install with
``pip install --no-build-isolation .`` (the Makefile does); otherwise the package is
installed without the extension and ``backend="cuda"`` builds it on first use (JIT) from the
sources that every install carries (``csrc/`` ships in the package as ``convgru_ext/_csrc``).
``convgru_ext/_build.py`` holds the sources, flags and toolkit rule that both builds use.

Environment:

* ``CONVGRU_SKIP_CUDA=1``: build no CUDA extension; ``CONVGRU_SKIP_CPU=1``: no CPU extension;
* ``CONVGRU_FORCE_CUDA=1``: fail if the extension cannot be built;
* ``TORCH_CUDA_ARCH_LIST``: the GPUs to compile for, default ``_build.DEFAULT_ARCHS``; the
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


def _load_build():
    """convgru_ext/_build.py, loaded by path: importing the package would import torch."""
    spec = importlib.util.spec_from_file_location("_convgru_ext_build", os.path.join(ROOT, "convgru_ext", "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


def _note(message: str) -> None:
    print(f"convgru-ext setup: {message}", file=sys.stderr)


def _cuda_extension() -> list:
    """[the CUDA extension], or [] after saying why not."""
    force = build.env_flag("CONVGRU_FORCE_CUDA")

    def without(reason: str) -> list:
        if force:
            raise RuntimeError(f"CONVGRU_FORCE_CUDA=1, but the CUDA extension cannot be built: {reason}")
        _note(f"installing without the CUDA extension: {reason}")
        return []

    if build.env_flag("CONVGRU_SKIP_CUDA"):
        return without("CONVGRU_SKIP_CUDA is set")
    build.use_default_cuda_home()  # before torch.utils.cpp_extension reads CUDA_HOME
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, CUDAExtension
    except ImportError as error:
        return without(f"torch is not importable at build time ({error}); build with --no-build-isolation")
    if torch.version.cuda is None:
        return without(f"torch {torch.__version__} is a CPU-only build")
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return without("no CUDA toolkit found (set CUDA_HOME to the folder holding bin/nvcc)")
    # set, so that torch never queries a device
    os.environ["TORCH_CUDA_ARCH_LIST"] = build.arch_list(os.environ.get("TORCH_CUDA_ARCH_LIST", ""), _note)
    _note(f"building the CUDA extension for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} "
          f"with {CUDA_HOME}/bin/nvcc")
    sources = [os.path.relpath(path, ROOT) for path in build.sources()]  # setuptools wants relative paths
    extension = CUDAExtension("convgru_ext._cuda", sources, **build.build_options())
    return [extension]


def _cpu_extension() -> list:
    """[the CPU extension], or [] after saying why not: it needs torch at build time, nothing else."""
    if build.env_flag("CONVGRU_SKIP_CPU"):
        _note("installing without the CPU extension: CONVGRU_SKIP_CPU is set")
        return []
    try:
        from torch.utils.cpp_extension import CppExtension
    except ImportError as error:
        _note(f"installing without the CPU extension: torch is not importable at build time ({error})")
        return []
    sources = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    return [CppExtension("convgru_ext._cpu", sources, extra_compile_args=["-O3"])]


if __name__ == "__main__":
    ext_modules = _cuda_extension()  # first: it sets CUDA_HOME before torch.utils.cpp_extension reads it
    ext_modules += _cpu_extension()
    cmdclass = {}
    if ext_modules:  # torch is importable: each extension needed it
        from torch.utils.cpp_extension import BuildExtension
        cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}
    setup(
        name="convgru-ext",
        version="0.1.0",  # the one place: convgru_ext.__version__ reads the installed metadata
        description="A fast, trustworthy convolutional GRU for PyTorch: reference, PyTorch, Triton and CUDA backends",
        packages=find_packages(include=["convgru_ext", "convgru_ext.*"]) + ["convgru_ext._csrc"],
        # the CUDA sources ship inside the package, so that an installed package can JIT-build them
        package_dir={"convgru_ext._csrc": "csrc"},
        package_data={"convgru_ext._csrc": list(build.SOURCE_PATTERNS)},
        python_requires=">=3.10",
        install_requires=["torch>=2.4", "rich"],
        extras_require={"bench": ["rich", "matplotlib", "pytest-benchmark"], "triton": ["triton"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
