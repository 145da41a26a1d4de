"""Test-only glue over :mod:`convgru_ext.testing` (which ``python -m convgru_ext check`` shares)."""

from __future__ import annotations

from typing import Optional

import pytest
import torch

from convgru_ext.backends._op import channels_last
from convgru_ext.testing import (  # noqa: F401  (re-exported for the tests)
    FUSED_BACKENDS,
    LOWP_FACTOR,
    LOWP_SLACK,
    REL_TOL,
    TF32_TOL,
    Case,
    cast_inputs,
    errors,
    make_inputs,
    rel_err,
    run_with_grads,
    unusable_reason,
)

#: the marks of a GPU-only test or case: `gpu` (``pytest -m gpu`` selects every GPU case, as
#: ``make gpu-check`` does) and a skip with the reason where no GPU is visible
GPU_MARKS = (pytest.mark.gpu,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)"))
DEVICES = ["cpu", pytest.param("cuda", marks=GPU_MARKS)]


def GPU(test):  # noqa: N802 (a decorator that reads like a mark)
    """Decorator: ``test`` is GPU-only (marks ``GPU_MARKS``)."""
    for mark in GPU_MARKS:
        test = mark(test)
    return test


def compare(got: dict, want: dict, dtype, eager_lowp: Optional[dict] = None, label: str = "") -> None:
    """Assert every output and gradient of ``got`` matches ``want`` at ``dtype``'s tolerance."""
    failures = [f"{name}: relative error {err:.3e} > {tol:.3e}"
                for name, (err, tol) in errors(got, want, dtype, eager_lowp).items()
                if not err <= tol]  # `not <=` catches NaN
    assert not failures, f"{label}: " + "; ".join(failures)


def skip_unusable(backend: str, device: str, dtype=torch.float32) -> None:
    """Skip the calling test, with the reason, where ``backend`` cannot run on ``device`` in ``dtype``."""
    reason = unusable_reason(backend, device, dtype)
    if reason:
        pytest.skip(reason)


def lowp_parity(backend: str, case: Case, dtype, device, rng) -> None:
    """Every output and gradient of ``backend`` in ``dtype`` vs the float64 reference, within
    LOWP_FACTOR times the error of the eager reference run in ``dtype`` (plus LOWP_SLACK)."""
    inputs64 = make_inputs(case, torch.float64, device, rng)
    want = run_with_grads("reference", inputs64, case, rng)
    eager = run_with_grads("reference", cast_inputs(inputs64, dtype), case, rng, upstream=want["_upstream"])
    got = run_with_grads(backend, cast_inputs(inputs64, dtype), case, rng, upstream=want["_upstream"])
    compare(got, want, dtype, eager_lowp=eager, label=f"{backend} {dtype} {case}")


def op_args(case: Case, dtype, rng):
    """An op pair's forward arguments (op layout) in float64 and in ``dtype``, plus a channels-last grad_out."""
    inputs = make_inputs(case, torch.float64, "cpu", rng)
    args = []
    for k in ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        t = inputs[k]
        if t is not None:
            t = channels_last(t.detach()) if k in ("x", "h0") else t.detach()
        args.append(t)
    args += [list(case.dilation), case.reset == "after"]
    grad_out = channels_last(torch.randn(case.T, case.B, case.C, case.H, case.W, generator=rng, dtype=torch.float64))

    def cast(a):
        return a.to(dtype) if isinstance(a, torch.Tensor) else a

    return args, [cast(a) for a in args], grad_out, grad_out.to(dtype)
