"""torch.autograd.gradcheck in float64 for the reference and every fused backend.

The Triton backend under the interpreter (CPU, CI) runs gradcheck's fast mode: the full
Jacobian takes one forward per input element (~1,600 here), minutes through the interpreter,
while fast mode checks the analytical against the numerical Jacobian along random
directions of every input and output (a few forwards).  On a GPU every backend runs the
full check.
"""

import pytest
import torch

import convgru_ext
from convgru_ext import backends
from helpers import DEVICES, FUSED_BACKENDS, Case, make_inputs, skip_unusable


@pytest.mark.parametrize("backend", ("reference",) + FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((1, 3), (1, 2))], ids=["k3", "k1x3-d2"])
def test_gradcheck(backend, device, reset, kernel, dilation, rng):
    skip_unusable(backend, device, torch.float64)
    case = Case(T=3, B=2, Cin=2, C=3, H=4, W=5, kernel=kernel, dilation=dilation, reset=reset)
    inputs = make_inputs(case, torch.float64, device, rng)

    def fn(*args):
        return convgru_ext.convgru_sequence(*args, dilation=dilation, reset=reset, backend=backend)

    fast = backends.get(backend).benchmark_reason() is not None  # not at speed here (Triton's interpreter)
    assert torch.autograd.gradcheck(fn, tuple(inputs.values()), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)
