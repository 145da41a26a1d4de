"""The interface every backend implements (see ``backends/__init__.py``)."""

from __future__ import annotations

from typing import Optional

import torch

from .._contract import Problem
from ._layout import channels_last
from ._op import eager

#: (major, minor) compute capability per CUDA device index, cached (calls under torch.compile read it)
_CAPABILITY: dict[int, tuple[int, int]] = {}


def capability_reasons(backend: str, device: torch.device, minimum: tuple[int, int]) -> list[str]:
    """Why ``backend`` cannot run on CUDA ``device`` for want of compute capability ``minimum``, if so."""
    if not torch.cuda.is_available():
        return []
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPABILITY:
        _CAPABILITY[index] = torch.cuda.get_device_capability(index)
    if _CAPABILITY[index] >= minimum:
        return []
    major, minor = _CAPABILITY[index]
    return [f'backend "{backend}" needs a GPU of compute capability >= {minimum[0]}.{minimum[1]}; '
            f"cuda:{index} is sm_{major}{minor}"]


class Backend:
    #: the name users pass as ``backend=``
    name: str = ""
    #: True until the backend's kernels have been run and checked on a GPU;
    #: ``"auto"`` never picks an experimental backend.  The one place a backend's verification
    #: status is recorded (README's backend table says the same in words).
    experimental: bool = False
    #: True for the fused backends (:class:`FusedBackend`: the op pair of ``_op.py``); False for the reference
    fused: bool = False
    #: True when a first call compiles kernels for its shapes (``make gpu-check`` compiles them ahead of time)
    jit: bool = False

    def benchmark_reason(self) -> Optional[str]:
        """Why timing this backend in this process would mean nothing (it runs, but not at speed), or None."""
        return None

    def unavailable_reason(self) -> Optional[str]:
        """Why this backend cannot run in this process at all, or None."""
        return None

    def why_not(self, problem: Problem) -> list[str]:
        """Why this backend cannot serve ``problem``; empty when it can."""
        return []

    def auto_ok(self, problem: Problem) -> bool:
        """Whether ``"auto"`` should pick this backend for ``problem`` (it is fastest there)."""
        return True

    def sequence(
        self,
        x: torch.Tensor,
        h0: torch.Tensor,
        weight_ih: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_ih: Optional[torch.Tensor],
        bias_hh: Optional[torch.Tensor],
        context: Optional[torch.Tensor],
        problem: Problem,
    ) -> torch.Tensor:
        """All hidden states, (T, B, C, H, W); differentiable in every tensor argument.  ``x`` and ``h0`` come in
        the caller's layout (a fused backend converts them to its op layout); ``context`` is None or
        (Tc, B, 3C, H, W), Tc = 1 or T, added to the gate pre-activations (see ``_op.py``)."""
        raise NotImplementedError


class FusedBackend(Backend):
    """A backend whose time loops run inside the op pair of ``_op.py`` (everything around them is composed
    there once): its ``sequence`` calls :meth:`forward_op` with ``x`` and ``h0`` channels-last (the op layout) and
    the checked problem's options, in eager mode through ``_op.eager`` (the same composition without the
    dispatcher)."""

    fused = True

    def forward_op(self):
        """The backend's ``convgru_ext::{name}_forward`` op (``_op.define_op_pair``'s first), once importable."""
        raise NotImplementedError

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem):
        out, _ = eager(self.forward_op())(channels_last(x), channels_last(h0), weight_ih, weight_hh, bias_ih,
                                          bias_hh, list(problem.dilation), problem.reset_after, context,
                                          problem.recompute)
        return out
