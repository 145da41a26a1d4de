"""Checking a backend against the reference: shared by the test suite and ``python -m convgru_ext check``.

Tolerances are tied to the dtype.  float64 and float32 use a norm-wise
relative error bound against the reference run in the same dtype; float16 and
bfloat16 use flash-attention's rule: the backend's error against the float64
reference may be at most a small multiple of the error that the reference
itself makes when run eagerly in that dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import torch

from . import backends
from ._contract import Problem
from .functional import convgru_sequence

#: the backends built from fused ops (everything but the reference)
FUSED_BACKENDS = ("torch", "triton", "cuda")
#: norm-wise relative error allowed against the reference computed in the same dtype
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
#: low precision: error vs the float64 reference <= LOWP_FACTOR * eager error + LOWP_SLACK
LOWP_FACTOR, LOWP_SLACK = 3.0, 1e-3
INPUT_NAMES = ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


@contextlib.contextmanager
def exact_float32():
    """No TF32 in cuDNN convolutions or matmuls inside the block: REL_TOL[float32] assumes exact float32.

    PyTorch allows TF32 in convolutions by default, which on a GPU puts float32
    results ~1e-3 from exact ones; the TF32 paths are tested on their own.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||, computed in float64 (NaN if either holds NaN)."""
    got, want = got.double(), want.double()
    denom = want.norm().item()
    return (got - want).norm().item() / (denom if denom > 0 else 1.0)


@dataclasses.dataclass
class Case:
    """One layer call's sizes and options (odd sizes by default)."""

    T: int = 4
    B: int = 3
    Cin: int = 5
    C: int = 7
    H: int = 9
    W: int = 11
    kernel: tuple = (3, 3)
    dilation: tuple = (1, 1)
    reset: str = "before"
    bias: bool = True
    h0: bool = True


def make_inputs(case: Case, dtype, device, generator: torch.Generator) -> dict[str, Optional[torch.Tensor]]:
    """Fresh random leaf tensors (never zeros), keyed by argument name; weights scaled like
    the modules' init so that the gates do not saturate."""

    def rand(*shape, scale=1.0):
        t = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
        return t.to(device=device, dtype=dtype).requires_grad_()

    kh, kw = case.kernel
    C3 = 3 * case.C
    return {
        "x": rand(case.T, case.B, case.Cin, case.H, case.W),
        "h0": rand(case.B, case.C, case.H, case.W) if case.h0 else None,
        "weight_ih": rand(C3, case.Cin, kh, kw, scale=(case.Cin * kh * kw) ** -0.5),
        "weight_hh": rand(C3, case.C, kh, kw, scale=(case.C * kh * kw) ** -0.5),
        "bias_ih": rand(C3, scale=0.5) if case.bias else None,
        "bias_hh": rand(C3, scale=0.5) if case.bias else None,
    }


def cast_inputs(inputs: dict, dtype) -> dict:
    """The same values as new leaves in ``dtype``."""
    return {k: None if v is None else v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}


def run_with_grads(backend: str, inputs: dict, case: Case, generator: torch.Generator,
                   upstream: Optional[dict] = None) -> dict[str, torch.Tensor]:
    """Output, final state and the gradient of every given input, keyed by name.

    The loss is a random projection of *both* outputs, so the gradient paths
    through ``output`` and through ``h_T`` are both exercised; pass the
    ``_upstream`` entry of one result to another run to reuse its projection.
    """
    args = [inputs[k] for k in INPUT_NAMES]
    out, h_T = convgru_sequence(*args, dilation=case.dilation, reset=case.reset, backend=backend)
    if upstream is None:
        upstream = {
            "g_out": torch.randn(out.shape, generator=generator, dtype=torch.float64),
            "g_h": torch.randn(h_T.shape, generator=generator, dtype=torch.float64),
        }
    loss = (out * upstream["g_out"].to(out)).sum() + (h_T * upstream["g_h"].to(h_T)).sum()
    names = [k for k in INPUT_NAMES if inputs[k] is not None]
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    result = {"output": out.detach(), "h_T": h_T.detach()}
    result.update({f"grad_{k}": g for k, g in zip(names, grads)})
    result["_upstream"] = upstream
    return result


def errors(got: dict, want: dict, dtype, eager_lowp: Optional[dict] = None) -> dict[str, tuple[float, float]]:
    """For every output and gradient: (relative error, tolerance) at ``dtype``."""
    if set(got) != set(want):
        raise AssertionError(f"different results {sorted(got)} vs {sorted(want)}")
    table = {}
    for name in sorted(k for k in want if not k.startswith("_")):
        g, w = got[name], want[name]
        if g.shape != w.shape:
            raise AssertionError(f"{name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}")
        if eager_lowp is None:
            tol = REL_TOL[dtype]
        else:
            tol = LOWP_FACTOR * rel_err(eager_lowp[name], w) + LOWP_SLACK
        table[name] = (rel_err(g, w), tol)
    return table


def unusable_reason(backend: str, device, dtype=torch.float32) -> Optional[str]:
    """Why ``backend`` cannot run on ``device`` in ``dtype`` here, or None."""
    if backend not in backends.names():
        return f"backend {backend!r} is not registered"
    reason = backends.available_backends()[backend]
    if reason:
        return reason
    probe = Problem(T=1, B=1, Cin=1, C=1, H=1, W=1, kernel=(3, 3), dilation=(1, 1), reset_after=False,
                    dtype=dtype, device=torch.device(device))
    reasons = backends.get(backend).why_not(probe)
    return "; ".join(reasons) if reasons else None
