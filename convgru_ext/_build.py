"""How the CUDA extension is built: its sources, compiler options and toolkit, for both builds.

``setup.py`` (the prebuilt ``convgru_ext._cuda``) loads this file by path, and ``backends/cuda.py``
(the JIT build on first use) imports it, so the two builds use one set of sources and flags.  It
imports nothing from the package and nothing heavy at import time (setup.py runs it before torch
may be importable).

Sources: a source checkout (or an editable install) has them in ``csrc/`` beside the package; an
installed wheel carries the same files as package data in ``convgru_ext/_csrc`` (setup.py maps
``csrc/`` there).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
#: what a wheel ships of csrc/ (setup.py's package data): every file a build reads
SOURCE_PATTERNS = ("*.h", "*.cpp", "cuda/*.cu", "cuda/*.cuh")
#: the GPUs setup.py compiles for when TORCH_CUDA_ARCH_LIST is unset: SASS for sm_80 (A100) and sm_90
#: (H100/H200), plus compute_90 PTX that newer GPUs JIT-compile
DEFAULT_ARCHS = "8.0;9.0+PTX"
MIN_ARCH = 8.0  # cp.async and bfloat16 tensor cores
DEFAULT_CUDA_HOME = "/usr/local/cuda"


def sources_dir() -> Path:
    """The folder of the CUDA sources: the installed package's ``_csrc``, else the checkout's ``csrc``."""
    shipped = PACKAGE / "_csrc"
    return shipped if (shipped / "ops.cpp").is_file() else PACKAGE.parent / "csrc"


def sources() -> list[str]:
    """The extension's translation units (C++ op registrations, then the per-dtype CUDA files)."""
    root = sources_dir()
    return sorted(str(p) for p in root.glob("*.cpp")) + sorted(str(p) for p in root.glob("cuda/*.cu"))


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to 1/true/yes/on (the build switches' one rule)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _nvidia_include_dirs() -> list[str]:
    """The CUDA 13 wheels' header folder (cusparse etc. for torch's headers), when installed."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [d for base in spec.submodule_search_locations
            if os.path.isdir(d := os.path.join(base, "cu13", "include"))]


def build_options() -> dict:
    """The compiler options of the extension: include folders and per-compiler flags
    (``CONVGRU_PTXAS_VERBOSE=1`` adds ptxas' per-kernel register and spill report)."""
    nvcc = ["-O3", "-lineinfo"]  # the C++ standard: torch.utils.cpp_extension adds the one torch needs
    if env_flag("CONVGRU_PTXAS_VERBOSE"):
        nvcc += ["-Xptxas", "-v"]
    return {
        "include_dirs": [str(sources_dir())] + _nvidia_include_dirs(),
        "extra_compile_args": {"cxx": ["-O3"], "nvcc": nvcc},
    }


def use_default_cuda_home() -> None:
    """Make /usr/local/cuda the toolkit when neither CUDA_HOME nor CUDA_PATH is set and it holds nvcc.

    torch otherwise guesses the toolkit from the ``nvcc`` on PATH, which can be a wrapper script outside
    the toolkit (/usr/local/bin/nvcc on this project's machines) whose parent folder holds no CUDA
    headers.  torch.utils.cpp_extension reads the variable when imported; if it is imported already,
    its guess is replaced too.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    if not os.path.exists(os.path.join(DEFAULT_CUDA_HOME, "bin", "nvcc")):
        return
    os.environ["CUDA_HOME"] = DEFAULT_CUDA_HOME
    cpp_extension = sys.modules.get("torch.utils.cpp_extension")
    if cpp_extension is not None:
        cpp_extension.CUDA_HOME = DEFAULT_CUDA_HOME


def arch_list(requested: str, note=print) -> str:
    """``requested`` (a TORCH_CUDA_ARCH_LIST value; empty: DEFAULT_ARCHS) without its numeric entries
    below MIN_ARCH, each dropped entry said through ``note``."""
    requested = requested.strip() or DEFAULT_ARCHS
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
            note(f"dropping {entry!r} from TORCH_CUDA_ARCH_LIST: the kernels need compute capability >= {MIN_ARCH}")
        else:
            kept.append(entry)
    if not kept:
        raise RuntimeError(f"TORCH_CUDA_ARCH_LIST={requested!r} names no GPU of compute capability >= {MIN_ARCH}")
    return ";".join(kept)
