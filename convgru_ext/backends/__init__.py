"""Backend registry.

A backend is an object with a ``name`` and three methods:

* ``unavailable_reason()``: why it cannot run in this process at all (a missing
  package or extension), or None;
* ``why_not(problem)``: the reasons it cannot serve this particular call (wrong
  device, unsupported dtype, ...), an empty list when it can;
* ``sequence(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem)``: the
  layer's output, (T, B, C, H, W), differentiable with respect to every tensor
  argument.  It is called with checked arguments in the op layout of
  ``_op.py`` (activations channels-last, weights contiguous), ``h0`` never
  None and ``T >= 1``; a cell is a sequence of length 1.

``"auto"`` walks :data:`AUTO_ORDER` and takes the first backend that can serve
the call and whose ``auto_ok(problem)`` says it is the fastest choice there.  A
backend whose kernels have not yet been run on a GPU is ``experimental``:
usable when asked for by name, never chosen by ``"auto"``.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .._contract import Problem, unknown_backend
from .base import Backend
from .reference import ReferenceBackend
from .torch_fallback import TorchBackend

ENV_VAR = "CONVGRU_BACKEND"

_REGISTRY: dict[str, Backend] = {}

#: Preference order of ``backend="auto"``, fastest first.
AUTO_ORDER: tuple[str, ...] = ("cuda", "triton", "torch")


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Backend:
    """The backend registered as ``name`` (ValueError, naming the choices, for any other name)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise unknown_backend(name, names()) from None


def available_backends() -> dict[str, Optional[str]]:
    """Every backend's name mapped to None when it is usable here, else to why not.

    "Usable" means the code can run in this process; whether a given call can
    be served also depends on its device and dtype (see ``select``).  For
    example, on a machine without a GPU::

        {"reference": None, "torch": None, "triton": "no CUDA device ...", ...}
    """
    return {name: b.unavailable_reason() for name, b in _REGISTRY.items()}


def _reasons(backend: Backend, problem: Problem) -> list[str]:
    reason = backend.unavailable_reason()
    return [reason] if reason else backend.why_not(problem)


def select(name: str, problem: Problem) -> Backend:
    """The backend that serves ``problem``: ``name`` itself, or the choice of "auto".

    ``CONVGRU_BACKEND`` overrides "auto" (not an explicit name).  A backend named
    explicitly that cannot serve the call raises ValueError listing the reasons:
    there is no silent fallback.
    """
    if not isinstance(name, str):
        raise TypeError(f"`backend` must be a str; got {type(name).__name__}")
    if exporting():  # torch.export / ONNX: the graph is the reference's standard operators, whatever was asked
        return _REGISTRY["reference"]
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env != "auto":
            if env not in _REGISTRY:
                raise ValueError(f"environment variable {ENV_VAR} must be one of "
                                 f"{('auto',) + names()}; got {env!r}")
            name = env
    if name != "auto":
        backend = get(name)
        reasons = _reasons(backend, problem)
        if reasons:
            raise ValueError(f"backend {name!r} cannot run this call: " + "; ".join(reasons))
        return backend
    for candidate in AUTO_ORDER:
        backend = _REGISTRY.get(candidate)
        if backend is None or backend.experimental or _reasons(backend, problem):
            continue
        if backend.auto_ok(problem):
            return backend
    return _REGISTRY["torch"]


def exporting() -> bool:
    """Whether ``torch.export`` (and so ``torch.onnx.export(..., dynamo=True)``) or the TorchScript-based ONNX
    exporter is tracing the call.  The fused backends' ops are opaque to an exported graph, and ONNX has no
    such operators, so while exporting every call runs the ``reference`` backend: the spec written in
    Conv, Sigmoid, Tanh, Mul, Add and Sub, one unrolled block per step."""
    compiler = getattr(torch, "compiler", None)
    is_exporting = getattr(compiler, "is_exporting", None)
    return bool((is_exporting is not None and is_exporting()) or torch.onnx.is_in_onnx_export())


def _register_optional(module: str, cls: str) -> None:
    """Register a backend living in its own module, if that module exists in this checkout.

    The module must import without its toolchain (no triton, no compiled
    extension) and report what is missing through ``unavailable_reason()``.
    """
    import importlib
    import importlib.util

    if importlib.util.find_spec(f"{__name__}.{module}") is not None:
        register(getattr(importlib.import_module(f"{__name__}.{module}"), cls)())


register(ReferenceBackend())
register(TorchBackend())
_register_optional("triton", "TritonBackend")
_register_optional("cuda", "CudaBackend")
