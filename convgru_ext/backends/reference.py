"""``backend="reference"``: the spec in ``convgru_ext/reference.py``, autograd does the backward."""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from ..reference import convgru_sequence_reference
from .base import Backend


class ReferenceBackend(Backend):
    name = "reference"

    def auto_ok(self, problem):
        return False  # the spec is never the fastest choice

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem):
        def run(*tensors):
            return convgru_sequence_reference(*tensors, dilation=problem.dilation, reset=problem.reset,
                                              context=context)[0]

        if problem.recompute:  # autograd saves the inputs only, and runs the forward again in the backward
            return torch.utils.checkpoint.checkpoint(run, x, h0, weight_ih, weight_hh, bias_ih, bias_hh,
                                                     use_reentrant=False)
        return run(x, h0, weight_ih, weight_hh, bias_ih, bias_hh)
