"""bfloat16 / float16: error against the float64 reference within a small multiple of PyTorch's own.

flash-attention's rule: a backend in low precision may be at most LOWP_FACTOR times as far from the
float64 reference as the eager reference run in that same precision, plus LOWP_SLACK.  On CPU only the
torch backend runs here; every fused backend runs on a GPU.
"""

import pytest
import torch

from helpers import DEVICES, FUSED_BACKENDS, Case, cast_inputs, compare, make_inputs, run_with_grads, skip_unusable


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_low_precision_error_is_pytorchs(backend, device, dtype, reset, rng):
    if device == "cpu" and backend != "torch":
        pytest.skip("low precision runs on CPU only for the torch backend; fused kernels are checked on a GPU")
    skip_unusable(backend, device, dtype)
    case = Case(reset=reset, kernel=(3, 3), dilation=(1, 2), T=6)
    inputs64 = make_inputs(case, torch.float64, device, rng)
    want = run_with_grads("reference", inputs64, case, rng)
    lowp = cast_inputs(inputs64, dtype)
    eager = run_with_grads("reference", lowp, case, rng, upstream=want["_upstream"])
    got = run_with_grads(backend, cast_inputs(inputs64, dtype), case, rng, upstream=want["_upstream"])
    compare(got, want, dtype, eager_lowp=eager, label=f"{backend} {dtype} {reset}")
