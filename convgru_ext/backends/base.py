"""The interface every backend implements (see ``backends/__init__.py``)."""

from __future__ import annotations

from typing import Optional

import torch

from .._contract import Problem


class Backend:
    #: the name users pass as ``backend=``
    name: str = ""
    #: True until the backend's kernels have been run and checked on a GPU;
    #: ``"auto"`` never picks an experimental backend.
    experimental: bool = False

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
        problem: Problem,
    ) -> torch.Tensor:
        """All hidden states, (T, B, C, H, W); differentiable in every tensor argument."""
        raise NotImplementedError
