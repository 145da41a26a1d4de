"""bfloat16 / float16: error against the float64 reference within a small multiple of PyTorch's own.

flash-attention's rule: a backend in low precision may be at most LOWP_FACTOR times as far from the
float64 reference as the eager reference run in that same precision, plus LOWP_SLACK.  On CPU only the
torch backend runs here; every fused backend runs on a GPU.
"""

import pytest
import torch

from helpers import DEVICES, FUSED_BACKENDS, Case, lowp_parity, skip_unusable

pytestmark = pytest.mark.onednn  # CI runs these again under ONEDNN_MAX_CPU_ISA=AVX2


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_low_precision_error_is_pytorchs(backend, device, dtype, reset, rng):
    if device == "cpu" and backend != "torch":
        pytest.skip("low precision runs on CPU only for the torch backend; fused kernels are checked on a GPU")
    skip_unusable(backend, device, dtype)
    lowp_parity(backend, Case(reset=reset, kernel=(3, 3), dilation=(1, 2), T=6), dtype, device, rng)
