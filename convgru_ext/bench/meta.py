"""The run's metadata: where and how the figures were measured (:func:`collect_meta`)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Optional

import torch

from .. import backends
from .._tf32 import conv_allows_tf32, matmul_allows_tf32


def _output(*cmd: str, timeout: float = 10) -> Optional[str]:
    """The stripped standard output of ``cmd`` (run in this folder), or None where it fails."""
    try:
        out = subprocess.run(cmd, cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True, text=True,
                             timeout=timeout)
        return out.stdout.strip() if out.returncode == 0 else None
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def collect_meta(device: torch.device, argv: list[str], scale: float, scale_note: str) -> dict:
    """Where and how the figures were measured."""
    import convgru_ext

    try:
        import triton
        triton_version = triton.__version__
    except Exception as e:
        triton_version = f"not importable ({type(e).__name__})"
    dirty = _output("git", "status", "--porcelain", "--untracked-files=no")
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m convgru_ext bench " + " ".join(argv),
        "git_commit": _output("git", "rev-parse", "HEAD"), "git_dirty": bool(dirty) if dirty is not None else None,
        "convgru_ext": convgru_ext.__version__, "python": platform.python_version(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "triton": triton_version,
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_threads": torch.get_num_threads(),
        "device_type": device.type, "scale": scale, "scale_note": scale_note,
        "backends": backends.available_backends(),
        "inputs": "contiguous NCHW tensors, as most user code passes them",
        # whether float32 convolutions and matmuls may use TF32 (on a GPU; the CPU has none)
        "tf32_conv": conv_allows_tf32(), "tf32_matmul": matmul_allows_tf32(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        driver = _output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", timeout=20)
        meta.update(device=p.name, sm=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                    gpu_memory_bytes=p.total_memory, driver=driver.split()[0] if driver else None,
                    cudnn=torch.backends.cudnn.version(), cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    else:
        meta["device"] = f"CPU: {meta['cpu']}"
    return dict(meta, argv=list(sys.argv))
