"""The check of an implementation before it is timed: the workload's data (:class:`Case`), one call
(:func:`run_once`), and its results against the float64 reference by ``convgru_ext.testing``'s rule
(:func:`check_impl`).  Where the check sits in a sweep: see ``sweep.py``."""

from __future__ import annotations

import itertools
import math
import time

import torch

from .._tf32 import conv_allows_tf32, matmul_allows_tf32
from ..testing import random_params, random_tensor, reference_errors
from .catalog import Workload
from .impls import PARAM_NAMES, Built, Implementation, Ours, Params
from .timing import synchronize


class Case:
    """One workload's float64 data on the device: parameters, input set 0 and its output gradient,
    and the reference results (computed once per pass, shared by every dtype)."""

    def __init__(self, wl: Workload, device: torch.device, seed: int):
        self.wl, self.gen = wl, torch.Generator(device=device).manual_seed(seed)
        self.params: Params = [random_params(wl.Cin, wl.C, kernel, self.gen) for kernel in wl.cells]
        self.shapes = (wl.x_shape, wl.h_shape, wl.out_shape)
        self.set0 = tuple(random_tensor(s, self.gen) for s in self.shapes)  # x, h0, grad_out
        self._reference: dict[str, dict] = {}

    def params_as(self, dtype: torch.dtype) -> Params:
        return [{n: t.to(dtype) for n, t in p.items()} for p in self.params]

    def input_sets(self, dtype: torch.dtype, n: int, train: bool) -> list[tuple[torch.Tensor, ...]]:
        """``n`` sets ``(x, h0, grad_out)`` in ``dtype``: set 0 is the checked one, the others fresh."""
        fresh = (tuple(random_tensor(s, self.gen) for s in self.shapes) for _ in range(n - 1))  # one at a time
        return [(x.to(dtype, copy=True).requires_grad_(train), h.to(dtype, copy=True).requires_grad_(train),
                 g.to(dtype)) for x, h, g in itertools.chain([self.set0], fresh)]

    def reference(self, pass_: str) -> dict:
        """The float64 reference for ``pass_``, as :func:`reference_in_dtype` gives it."""
        if pass_ not in self._reference:
            sets = self.input_sets(torch.float64, 1, train=pass_ == "fwd+bwd")
            self._reference[pass_] = reference_in_dtype(self, torch.float64, pass_, sets)
        return self._reference[pass_]


def run_once(built: Built, x, h0, grad_out, train: bool) -> dict[str, torch.Tensor]:
    """One call: ``{"output": ...}`` and, with ``train``, ``grad_x``, ``grad_h0`` and ``grad_<param>``."""
    if not train:
        with torch.no_grad():
            return {"output": built.run(x.detach(), h0.detach())}
    out = built.run(x, h0)
    grads = torch.autograd.grad(out, [x, h0, *built.params], grad_out)
    slots = {"output": out.detach(), "grad_x": grads[0], "grad_h0": grads[1]}
    slots.update({f"grad_{n}": g for n, g in zip(built.param_names, grads[2:])})
    return slots


def reference_in_dtype(case: Case, dtype: torch.dtype, pass_: str, sets) -> dict:
    """The reference backend run in ``dtype`` on input set 0: ``{"built": ..., "slots": ...}``."""
    train = pass_ == "fwd+bwd"
    built = Ours("reference").build(case.wl, case.params_as(dtype), train)
    return {"built": built, "slots": run_once(built, *sets[0], train)}


def _slots_for(built: Built, reference: dict) -> dict[str, torch.Tensor]:
    """A reference's results in ``built``'s terms (its parameters' gradients mapped)."""
    slots = {k: v for k, v in reference["slots"].items() if k in ("output", "grad_x", "grad_h0")}
    if "grad_x" in slots:
        flat = [reference["slots"][f"grad_{n}"] for n in reference["built"].param_names]
        grads = [dict(zip(PARAM_NAMES, flat[i: i + 4])) for i in range(0, len(flat), 4)]
        slots.update({f"grad_{n}": g for n, g in zip(built.param_names, built.map_grads(grads))})
    return slots


def compare(got: dict, want: dict, in_dtype: dict, dtype: torch.dtype, tf32: bool = False) -> dict:
    """Per slot, (relative error, tolerance) by ``testing.reference_errors`` (``want``: the float64 reference,
    ``in_dtype``: the reference run in ``dtype``; a slot missing or of another shape fails), and a summary."""
    same = [k for k, w in want.items() if k in got and got[k].shape == w.shape]
    errors = dict.fromkeys(want, (math.inf, 0.0))
    errors.update(reference_errors(*({k: d[k] for k in same} for d in (got, want, in_dtype)), dtype, tf32))
    worst = max(errors, key=lambda k: errors[k][0] / errors[k][1] if errors[k][1] > 0 else math.inf)
    passed = all(e <= t for e, t in errors.values())  # NaN fails
    return {"passed": passed, "max_rel_err": max(e for e, _ in errors.values()), "worst": worst,
            "worst_err": errors[worst][0], "worst_tol": errors[worst][1],
            "errors": {k: {"err": e, "tol": t} for k, (e, t) in errors.items()}}


def check_impl(impl: Implementation, case: Case, dtype: torch.dtype, pass_: str, sets,
               baseline: dict) -> tuple[Built, dict, float]:
    """Build ``impl`` and compare one call on input set 0 with the references (``baseline``: the reference run in
    ``dtype``, from :func:`reference_in_dtype`); float32 on a GPU where TF32 is allowed counts as TF32.

    Returns ``(built, check, first_call_s)``: ``check`` as :func:`compare` gives it; ``first_call_s`` is
    the wall time of that first call (compilation and autotuning included)."""
    device = sets[0][0].device
    train = pass_ == "fwd+bwd"
    built = impl.build(case.wl, case.params_as(dtype), train)
    want, in_dtype = _slots_for(built, case.reference(pass_)), _slots_for(built, baseline)
    tf32 = device.type == "cuda" and dtype == torch.float32 and (conv_allows_tf32() or matmul_allows_tf32())
    synchronize(device)
    t0 = time.perf_counter()
    got = run_once(built, *sets[0], train)
    synchronize(device)
    first_call_s = time.perf_counter() - t0
    return built, compare(got, want, in_dtype, dtype, tf32), first_call_s
