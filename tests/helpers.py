"""Test-only glue over :mod:`convgru_ext.testing` (which ``python -m convgru_ext check`` shares)."""

from __future__ import annotations

from typing import Optional

import pytest
import torch

from convgru_ext.testing import (  # noqa: F401  (re-exported for the tests)
    FUSED_BACKENDS,
    LOWP_FACTOR,
    LOWP_SLACK,
    REL_TOL,
    Case,
    cast_inputs,
    errors,
    make_inputs,
    rel_err,
    run_with_grads,
    unusable_reason,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)"))]


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
