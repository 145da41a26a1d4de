"""``backend="reference"``: the spec in ``convgru_ext/reference.py``, autograd does the backward."""

from __future__ import annotations

from ..reference import convgru_sequence_reference
from .base import Backend


class ReferenceBackend(Backend):
    name = "reference"
    fused = False

    def auto_ok(self, problem):
        return False  # the spec is never the fastest choice

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, problem):
        out, _ = convgru_sequence_reference(
            x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
            dilation=problem.dilation, reset=problem.reset,
        )
        return out
