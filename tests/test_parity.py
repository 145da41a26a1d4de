"""Every fused backend against the reference: outputs, final state and every gradient."""

import itertools

import pytest
import torch

from convgru_ext import convgru_sequence
from convgru_ext.backends import torch_fallback
from convgru_ext.testing import INPUT_NAMES, context_arg
from helpers import (
    DEVICES,
    FUSED_BACKENDS,
    REL_TOL,
    Case,
    compare,
    make_inputs,
    rel_err,
    run_with_grads,
    skip_unusable,
)

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


# ---- the inference path: a call that needs no gradient (no_grad, inference_mode, or no input requiring grad)

def _inference_check(backend, case, dtype, rng, how):
    skip_unusable(backend, "cpu", dtype)
    inputs = make_inputs(case, dtype, "cpu", rng)
    args = [inputs[k] for k in INPUT_NAMES]
    kw = {"context": context_arg(inputs), "dilation": case.dilation, "reset": case.reset}
    want = convgru_sequence(*args, **kw, backend="reference")
    if how == "no_grad":
        with torch.no_grad():
            got = convgru_sequence(*args, **kw, backend=backend)
    elif how == "inference_mode":
        with torch.inference_mode():
            got = convgru_sequence(*args, **kw, backend=backend)
    else:  # grad mode on, but nothing requires grad
        detached = [None if t is None else t.detach() for t in args]
        ctx = kw["context"]
        kw["context"] = ctx.detach() if isinstance(ctx, torch.Tensor) else ctx if ctx is None else tuple(
            None if t is None else t.detach() for t in ctx)
        got = convgru_sequence(*detached, **kw, backend=backend)
        assert not got[0].requires_grad
    for name, g, w in zip(("output", "h_T"), got, want):
        err = rel_err(g, w)
        assert err <= REL_TOL[dtype], f"{backend} {how} {case}: {name} relative error {err:.2e}"


@pytest.fixture(params=["F.conv2d", "packed"])
def convolutions(request, monkeypatch):
    """Which convolutions the torch backend runs on the CPU: ``F.conv2d``, or (float32) every one on a weight
    prepacked for oneDNN (``torch_fallback.PACK_MIN_MACS``, which these tiny sizes stay below, set to 0)."""
    if request.param == "packed":
        monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", 0)
    else:
        monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", float("inf"))
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((1, 5), (2, 2)), ((1, 1), (1, 1))],
                         ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("reset", ["before", "after"])
def test_torch_backend_training_path_with_either_convolution(reset, kernel, dilation, dtype, convolutions, rng):
    _check("torch", "cpu", dtype, Case(kernel=kernel, dilation=dilation, reset=reset), rng)


@pytest.mark.parametrize("how", ["no_grad", "inference_mode", "no_input_requires_grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((1, 5), (2, 2)), ((1, 1), (1, 1))],
                         ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("reset", ["before", "after"])
def test_inference_path_matches_reference(reset, kernel, dilation, dtype, how, convolutions, rng):
    _inference_check("torch", Case(kernel=kernel, dilation=dilation, reset=reset), dtype, rng, how)


@pytest.mark.parametrize("case", [Case(bias=False, h0=False), Case(T=1, B=1), Case(context="per-step"),
                                  Case(context="gates", reset="after")], ids=["no-bias-h0", "cell", "ctx", "gates"])
def test_inference_path_options(case, convolutions, rng):
    _inference_check("torch", case, torch.float32, rng, "no_grad")


@pytest.fixture(params=["projection", "cat"])
def one_step(request, monkeypatch):
    """How the torch backend convolves a single step (T = 1, no hoisted projection): the projection and then the
    state, or ``cat([x, h])`` with concatenated weights (``torch_fallback.CAT_MIN_PIXELS``, which these tiny frames
    stay below, set to 0)."""
    monkeypatch.setattr(torch_fallback, "CAT_MIN_PIXELS", 0 if request.param == "cat" else float("inf"))
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((1, 5), (2, 2))], ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("options", [{}, {"bias": False, "h0": False}, {"context": "shared"}],
                         ids=["plain", "no-bias-h0", "ctx"])
def test_torch_backend_single_step_either_way(reset, kernel, dilation, dtype, options, one_step, rng):
    case = Case(T=1, kernel=kernel, dilation=dilation, reset=reset, **options)
    _check("torch", "cpu", dtype, case, rng)
    _inference_check("torch", case, dtype, rng, "no_grad")
