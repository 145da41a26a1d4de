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
from ._tf32 import tf32
from .functional import convgru_sequence

#: the backends built from fused ops (everything registered but the reference), in registry order
FUSED_BACKENDS = tuple(name for name in backends.names() if backends.get(name).fused)
#: norm-wise relative error allowed against the reference computed in the same dtype
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
#: low precision: error vs the float64 reference <= LOWP_FACTOR * eager error + LOWP_SLACK
LOWP_FACTOR, LOWP_SLACK = 3.0, 1e-3
#: float32 on TF32 tensor cores vs the float64 reference: TF32 keeps 10 mantissa bits (unit roundoff
#: 2**-11); a few roundoffs of norm-wise error
TF32_TOL = 4 * 2.0**-11
INPUT_NAMES = ("x", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


@contextlib.contextmanager
def exact_float32():
    """No TF32 in cuDNN convolutions or matmuls inside the block: REL_TOL[float32] assumes exact float32.

    PyTorch allows TF32 in convolutions by default, which on a GPU puts float32
    results ~1e-3 from exact ones; the TF32 paths are tested on their own.
    """
    with tf32(False):
        yield


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
    #: per-gate context: "none"; "shared" (one (B, 3C, H, W) tensor); "per-step" ((T, B, 3C, H, W));
    #: "gates" (the tuple (c_r, None, c_n) of (B, C, H, W) tensors)
    context: str = "none"


def make_inputs(case: Case, dtype, device, generator: torch.Generator) -> dict[str, Optional[torch.Tensor]]:
    """Fresh random leaf tensors (never zeros), keyed by argument name; weights scaled like
    the modules' init so that the gates do not saturate (see :func:`random_params`)."""
    inputs = {"x": random_tensor((case.T, case.B, case.Cin, case.H, case.W), generator, device=device),
              "h0": random_tensor((case.B, case.C, case.H, case.W), generator, device=device) if case.h0 else None}
    inputs.update(random_params(case.Cin, case.C, case.kernel, generator, device, case.bias))
    frame = (case.B, case.C, case.H, case.W)
    if case.context in ("shared", "per-step"):
        shape = (case.T,) * (case.context == "per-step") + (case.B, 3 * case.C, case.H, case.W)
        inputs["context"] = random_tensor(shape, generator, 0.5, device)
    elif case.context == "gates":
        inputs.update({k: random_tensor(frame, generator, 0.5, device) for k in ("c_r", "c_n")})
    elif case.context != "none":
        raise ValueError(f"Case.context must be none, shared, per-step or gates; got {case.context!r}")
    return cast_inputs(inputs, dtype)


def context_arg(inputs: dict):
    """The ``context=`` argument that ``inputs`` (from :func:`make_inputs`) hold, or None."""
    if "context" in inputs:
        return inputs["context"]
    gates = tuple(inputs.get(k) for k in ("c_r", "c_z", "c_n"))
    return gates if any(t is not None for t in gates) else None


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
    out, h_T = convgru_sequence(*args, context=context_arg(inputs), dilation=case.dilation, reset=case.reset,
                                backend=backend)
    if upstream is None:
        upstream = {
            "g_out": torch.randn(out.shape, generator=generator, dtype=torch.float64),
            "g_h": torch.randn(h_T.shape, generator=generator, dtype=torch.float64),
        }
    loss = (out * upstream["g_out"].to(out)).sum() + (h_T * upstream["g_h"].to(h_T)).sum()
    names = [k for k, v in inputs.items() if v is not None]  # every input, the context's included
    grads = torch.autograd.grad(loss, [inputs[k] for k in names])
    result = {"output": out.detach(), "h_T": h_T.detach()}
    result.update({f"grad_{k}": g for k, g in zip(names, grads)})
    result["_upstream"] = upstream
    return result


def errors(got: dict, want: dict, dtype, eager_lowp: Optional[dict] = None,
           tf32: bool = False) -> dict[str, tuple[float, float]]:
    """For every output and gradient: (relative error, tolerance) at ``dtype``.

    The tolerance is REL_TOL[dtype] against the reference in ``dtype``; with ``eager_lowp`` (the
    reference run in a low-precision ``dtype``) the low-precision rule against the float64 reference;
    with ``tf32``, TF32_TOL against the float64 reference."""
    if set(got) != set(want):
        raise AssertionError(f"different results {sorted(got)} vs {sorted(want)}")
    table = {}
    for name in sorted(k for k in want if not k.startswith("_")):
        g, w = got[name], want[name]
        if g.shape != w.shape:
            raise AssertionError(f"{name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}")
        if tf32:
            tol = TF32_TOL
        elif eager_lowp is None:
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


# ---------------------------------------------------------------- the plan of `python -m convgru_ext check`

#: the shapes ``check`` runs on each device type, each as a sequence and as a cell (T = 1):
#: "partial" has odd sizes (partial tiles, per-element loads) and dilation; "real" has channel counts
#: a multiple of 16 (the kernels' fast paths) at a real layer's size on a GPU, shrunk on the CPU
#: (where Triton runs through its interpreter)
CHECK_SHAPES = {
    "cuda": {"partial": Case(T=3, B=2, Cin=5, C=7, H=9, W=11, dilation=(1, 2)),
             "real": Case(T=4, B=4, Cin=64, C=64, H=28, W=28)},
    "cpu": {"partial": Case(T=3, B=2, Cin=5, C=7, H=9, W=11, dilation=(1, 2)),
            "real": Case(T=2, B=1, Cin=16, C=16, H=6, W=5)},
}
#: (dtype, TF32 allowed) per device type: float32 exactly and, on a GPU, on TF32 tensor cores
CHECK_PRECISIONS = {
    "cuda": ((torch.float64, False), (torch.float32, False), (torch.float32, True), (torch.bfloat16, False),
             (torch.float16, False)),
    "cpu": ((torch.float64, False), (torch.float32, False)),
}


@dataclasses.dataclass(frozen=True)
class Check:
    """One row of ``check``: a backend on a device, in one precision, on one case."""

    backend: str
    device: str
    dtype: torch.dtype
    tf32: bool
    shape: str
    case: Case = dataclasses.field(hash=False)

    @property
    def precision(self) -> str:
        return str(self.dtype).removeprefix("torch.") + ("+tf32" if self.tf32 else "")

    @property
    def label(self) -> str:
        api = "cell" if self.case.T == 1 else "sequence"
        return f"{self.backend} {self.device} {self.precision} {self.shape} {api} reset={self.case.reset}"


def check_plan(backend_names, devices) -> list[Check]:
    """Every row ``check`` runs for these backends and device types, in order."""
    plan = []
    for name in backend_names:
        for device in devices:
            for dtype, allow_tf32 in CHECK_PRECISIONS[device]:
                for shape, case in CHECK_SHAPES[device].items():
                    for T in (case.T, 1):
                        for reset in ("before", "after"):
                            plan.append(Check(name, device, dtype, allow_tf32, shape,
                                              dataclasses.replace(case, T=T, reset=reset)))
    return plan


def run_check(check: Check, generator: torch.Generator) -> dict[str, tuple[float, float]]:
    """``check``'s backend against the reference on fresh inputs: (error, tolerance) per output and gradient,
    by :func:`reference_errors`'s rule."""
    case = check.case
    with tf32(check.tf32):
        inputs64 = make_inputs(case, torch.float64, check.device, generator)
        want64 = run_with_grads("reference", inputs64, case, generator)
        given = cast_inputs(inputs64, check.dtype)
        got = run_with_grads(check.backend, given, case, generator, upstream=want64["_upstream"])
        in_dtype = run_with_grads("reference", given, case, generator, upstream=want64["_upstream"])
        return reference_errors(got, want64, in_dtype, check.dtype, check.tf32)


def random_tensor(shape, generator: torch.Generator, scale: float = 1.0, device=None) -> torch.Tensor:
    """Fresh standard normal values times ``scale`` (never zeros), drawn in float64 on ``generator``'s device,
    then moved to ``device`` (None: left there)."""
    return (torch.randn(*shape, generator=generator, device=generator.device, dtype=torch.float64) * scale).to(device)


def random_params(Cin: int, C: int, kernel, generator: torch.Generator, device=None,
                  bias: bool = True) -> dict[str, Optional[torch.Tensor]]:
    """One cell's float64 ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (None without ``bias``), scaled
    like the modules' init so that the gates do not saturate."""
    kh, kw = kernel
    return {"weight_ih": random_tensor((3 * C, Cin, kh, kw), generator, (Cin * kh * kw) ** -0.5, device),
            "weight_hh": random_tensor((3 * C, C, kh, kw), generator, (C * kh * kw) ** -0.5, device),
            "bias_ih": random_tensor((3 * C,), generator, 0.5, device) if bias else None,
            "bias_hh": random_tensor((3 * C,), generator, 0.5, device) if bias else None}


def reference_errors(got: dict, want64: dict, in_dtype: dict, dtype,
                     tf32: bool = False) -> dict[str, tuple[float, float]]:
    """:func:`errors` by the suite's rule, given the reference in float64 (``want64``) and run in ``dtype`` on the
    same values (``in_dtype``): float64 and exact float32 compare with ``in_dtype`` within REL_TOL; float32 on
    TF32 (``tf32``) and the low precisions with ``want64``."""
    if tf32 or dtype not in REL_TOL:
        return errors(got, want64, dtype, eager_lowp=None if tf32 else in_dtype, tf32=tf32)
    return errors(got, in_dtype, dtype)
