"""Every fused backend against the reference: outputs, final state and every gradient."""

import itertools

import pytest
import torch

from helpers import DEVICES, FUSED_BACKENDS, Case, compare, make_inputs, run_with_grads, skip_unusable

pytestmark = pytest.mark.onednn  # CI runs these again under ONEDNN_MAX_CPU_ISA=AVX2

KERNELS = [(1, 1), (3, 3), (1, 5), (5, 1)]
DILATIONS = [(1, 1), (2, 2)]


def _check(backend, device, dtype, case, rng):
    skip_unusable(backend, device, dtype)
    inputs = make_inputs(case, dtype, device, rng)
    want = run_with_grads("reference", inputs, case, rng)
    got = run_with_grads(backend, inputs, case, rng, upstream=want["_upstream"])
    compare(got, want, dtype, label=f"{backend} {case}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,dilation", list(itertools.product(KERNELS, DILATIONS)),
                         ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("reset", ["before", "after"])
def test_matches_reference(backend, device, dtype, kernel, dilation, reset, rng):
    case = Case(kernel=kernel, dilation=dilation, reset=reset)
    _check(backend, device, dtype, case, rng)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias,h0", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_matches_reference_without_bias_or_h0(backend, device, bias, h0, reset, rng):
    case = Case(bias=bias, h0=h0, reset=reset, dilation=(1, 2))
    _check(backend, device, torch.float64, case, rng)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T", [1, 7])
def test_sequence_lengths(backend, device, T, rng):
    _check(backend, device, torch.float64, Case(T=T, B=2, C=4, Cin=3, H=5, W=6), rng)
