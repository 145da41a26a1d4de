"""Property-based parity (hypothesis): every usable backend equals the reference on drawn problems.

What one example draws (a :class:`Problem`, printed by hypothesis as the falsifying example):

* sizes: T in 1..4 (T = 0 is ``test_edge.py``'s), B in 1..3, Cin and C in 1..6, H and W in 1..9;
  with T = 1 also the API: ``convgru_sequence`` or ``convgru_cell``;
* options: odd and rectangular kernels (1x1 .. 5x5, e.g. (1, 3), (5, 3)), dilation 1 or 2 per dimension,
  ``reset`` "before" or "after", biases or None, ``h0`` or None;
* the per-gate ``context=``: None; one tensor with 3C channels, (B, 3C, H, W) or per step (T, B, 3C, H, W);
  or a tuple ``(c_r, c_z, c_n)`` of C-channel tensors with any of them None;
* every tensor argument's memory layout: contiguous, channels-last, transposed (H and W swapped in
  memory), strided (every other element of a NaN-filled buffer, at an offset) or expanded (stride 0
  along one dimension, e.g. ``x[:1].expand(T, ...)``);
* float64 or float32, and a seed for the values: standard normals on a ``torch.Generator``, weights
  scaled like ``testing.random_params`` (never zeros).

The check: the backend's output (and final state) and the gradient of every tensor argument (``x``,
``h0``, both weights and biases, each context tensor; of the tensor as passed, a view included) equal
those of the reference run on contiguous copies of the same values in the same dtype, within
``testing.REL_TOL`` (norm-wise relative error, ``testing.errors``).  The reference itself is checked
too (its odd layouts against its contiguous self).  Backends that run interpreted here (Triton under
``TRITON_INTERPRET=1``: ``benchmark_reason()`` is set) draw tiny problems (T <= 3 with T*kh*kw <= 27,
B <= 2, H and W <= 5, T*B*H*W <= 48) and 1/SLOW_SHARE of the examples.

Budget: the hypothesis profile named by ``CONVGRU_HYPOTHESIS_PROFILE`` (registered in ``tests/conftest.py``):
``ci`` (the default: 120 examples per backend, 12 for Triton; 30-45 s for this file on the 2-core CI
machine) or ``long`` (1600, and 160 for Triton: about 5 minutes).  ``--hypothesis-profile=NAME`` also works.

Replaying a failure: hypothesis prints the shrunk ``Problem(...)`` (with every relative error, as a note)
and a ``@reproduce_failure(...)`` line: add that line above the test (the ``test`` in :func:`_property`)
to rerun exactly that example.  ``pytest --hypothesis-seed=N`` makes a whole run's draws deterministic
(hypothesis prints the seed itself when a failure does not reproduce).  The printed problem also replays
by hand, without hypothesis::

    cd tests && TRITON_INTERPRET=1 CONVGRU_TRITON_AUTOTUNE=0 ../.venv/bin/python -c \
        "from test_properties import *; check(Problem(...), 'triton')"
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import currently_in_test_context, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from convgru_ext import backends, convgru_cell, convgru_sequence  # noqa: E402
from convgru_ext.testing import FUSED_BACKENDS, Case, errors, unusable_reason  # noqa: E402

BACKENDS = ("reference",) + FUSED_BACKENDS
DEVICE = "cpu"
#: simplest first: hypothesis shrinks towards the start of each list
KERNELS = ((1, 1), (3, 3), (1, 3), (3, 1), (3, 5), (5, 3), (1, 5), (5, 1), (5, 5))
DTYPES = (torch.float64, torch.float32)
LAYOUTS = ("contiguous", "channels_last", "transposed", "strided", "expanded")
#: an interpreted backend runs this share of the profile's examples
SLOW_SHARE = 10


@dataclasses.dataclass
class Problem(Case):
    """One drawn call: ``Case``'s sizes and options, the API, the context's form, every tensor's layout, the
    dtype and the seed."""

    context: str = "none"  # here "none", "tensor" (3C channels) or "tuple" ((c_r, c_z, c_n))
    api: str = "sequence"  # or "cell" (T = 1 only)
    context_per_step: bool = False  # (T, B, ., H, W) rather than (B, ., H, W)
    context_given: tuple = ()  # for "tuple": which of c_r, c_z, c_n are tensors (the others None)
    dtype: torch.dtype = torch.float64
    layouts: tuple = ()  # ((argument name, layout), ...); layout "expanded:<dim>" has stride 0 along <dim>
    seed: int = 0


def _names(p: Problem) -> list[str]:
    """The tensor arguments of ``p`` in call order (context tensors last)."""
    names = ["x"] + ["h0"] * p.h0 + ["weight_ih", "weight_hh"] + ["bias_ih", "bias_hh"] * p.bias
    if p.context == "tensor":
        names.append("context")
    elif p.context == "tuple":
        names += [n for n, given in zip(("c_r", "c_z", "c_n"), p.context_given) if given]
    return names


def _shapes(p: Problem) -> dict[str, tuple]:
    frame = (p.B, p.C, p.H, p.W)
    steps = (p.T,) if p.context_per_step else ()
    gate = p.C if p.context == "tuple" else 3 * p.C
    kh, kw = p.kernel
    shapes = {"x": ((p.T,) if p.api == "sequence" else ()) + (p.B, p.Cin, p.H, p.W), "h0": frame,
              "weight_ih": (3 * p.C, p.Cin, kh, kw), "weight_hh": (3 * p.C, p.C, kh, kw),
              "bias_ih": (3 * p.C,), "bias_hh": (3 * p.C,)}
    shapes.update({n: steps + (p.B, gate, p.H, p.W) for n in ("context", "c_r", "c_z", "c_n")})
    return shapes


def _scales(p: Problem) -> dict[str, float]:
    """Like ``testing.random_params`` and ``make_inputs``: the gates do not saturate."""
    taps = p.kernel[0] * p.kernel[1]
    return {"weight_ih": (p.Cin * taps) ** -0.5, "weight_hh": (p.C * taps) ** -0.5, "bias_ih": 0.5, "bias_hh": 0.5,
            "context": 0.5, "c_r": 0.5, "c_z": 0.5, "c_n": 0.5}


def _layouts_for(ndim: int) -> list[str]:
    return [lay for lay in LAYOUTS if (lay != "channels_last" or ndim >= 3) and (lay != "transposed" or ndim >= 2)]


@st.composite
def problems(draw, dtypes, tiny: bool) -> Problem:
    """A :class:`Problem` in ``dtypes``; ``tiny``: few steps, taps and pixels (for a backend interpreted on the CPU)."""
    kernel = draw(st.sampled_from(KERNELS))
    # tiny: the interpreter's time grows with the steps times the taps, and the programs per launch
    T = draw(st.integers(1, min(3, 27 // (kernel[0] * kernel[1])) if tiny else 4))
    api = draw(st.sampled_from(("sequence", "cell"))) if T == 1 else "sequence"
    B = draw(st.integers(1, 2 if tiny else 3))
    Cin, C = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    side = 5 if tiny else 9
    H, W = draw(st.integers(1, side)), draw(st.integers(1, side))
    while tiny and T * B * H * W > 48:
        H, W = max(1, H - 1), max(1, W - 1)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    context = draw(st.sampled_from(("none", "tensor", "tuple")))
    per_step = context != "none" and api == "sequence" and draw(st.booleans())
    given_parts = draw(st.tuples(st.booleans(), st.booleans(), st.booleans())) if context == "tuple" else ()
    p = Problem(api=api, T=T, B=B, Cin=Cin, C=C, H=H, W=W, kernel=kernel, dilation=dilation,
                reset=draw(st.sampled_from(("before", "after"))), bias=draw(st.booleans()), h0=draw(st.booleans()),
                context=context, context_per_step=per_step, context_given=given_parts,
                dtype=draw(st.sampled_from(dtypes)), layouts=(), seed=draw(st.integers(0, 2**32 - 1)))
    layouts = []
    shapes = _shapes(p)
    for name in _names(p):
        ndim = len(shapes[name])
        layout = draw(st.sampled_from(_layouts_for(ndim)))
        if layout == "expanded":
            layout = f"expanded:{draw(st.integers(0, ndim - 1))}"
        layouts.append((name, layout))
    return dataclasses.replace(p, layouts=tuple(layouts))


def _laid_out(values: torch.Tensor, layout: str) -> torch.Tensor:
    """``values`` in ``layout``, requiring grad: a leaf, or for strided and expanded a view of one."""
    if layout == "contiguous":
        leaf = values.clone()
    elif layout == "channels_last":  # dense (..., H, W, C)
        order = list(range(values.dim() - 3)) + [values.dim() - 2, values.dim() - 1, values.dim() - 3]
        leaf = values.permute(order).contiguous().permute(_inverse(order))
    elif layout == "transposed":
        leaf = values.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif layout == "strided":  # every other element of a NaN-filled buffer, at an offset of one
        buffer = values.new_full(values.shape[:-1] + (2 * values.shape[-1] + 1,), math.nan)
        buffer[..., 1::2] = values
        return buffer.requires_grad_()[..., 1::2]
    elif layout.startswith("expanded:"):
        dim = int(layout.split(":")[1])
        return values.narrow(dim, 0, 1).clone().requires_grad_().expand(values.shape)
    else:
        raise ValueError(layout)
    return leaf.detach().requires_grad_()


def _inverse(order: list[int]) -> list[int]:
    return sorted(range(len(order)), key=order.__getitem__)


def _call(p: Problem, backend: str, args: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    if p.context == "tensor":
        context = args["context"]
    elif p.context == "tuple":
        context = tuple(args.get(n) for n in ("c_r", "c_z", "c_n"))
    else:
        context = None
    call = [args["x"], args.get("h0"), args["weight_ih"], args["weight_hh"], args.get("bias_ih"), args.get("bias_hh")]
    options = dict(context=context, dilation=p.dilation, reset=p.reset, backend=backend)
    if p.api == "cell":
        return (convgru_cell(*call, **options),)
    return convgru_sequence(*call, **options)


def _run(p: Problem, backend: str, args: dict[str, torch.Tensor], upstream: list[torch.Tensor]) -> dict:
    """Outputs and the gradient of every tensor argument (as passed) of one call."""
    outs = _call(p, backend, args)
    loss = sum((out * g).sum() for out, g in zip(outs, upstream))
    names = list(args)
    grads = torch.autograd.grad(loss, [args[n] for n in names], allow_unused=True)
    result = dict(zip(("output", "h_T") if p.api == "sequence" else ("h",), (out.detach() for out in outs)))
    # an argument the call ignored has the gradient zero (and an error of 1 where the reference uses it)
    result.update({f"grad_{n}": torch.zeros_like(args[n]) if g is None else g for n, g in zip(names, grads)})
    return result


def check(p: Problem, backend: str) -> None:
    """Assert ``backend`` equals the reference on ``p`` (outputs and every gradient, ``testing.errors``)."""
    gen = torch.Generator().manual_seed(p.seed)
    shapes, scales = _shapes(p), _scales(p)
    given, plain = {}, {}
    for name, layout in p.layouts:
        values = torch.randn(shapes[name], generator=gen, dtype=torch.float64) * scales.get(name, 1.0)
        given[name] = _laid_out(values.to(p.dtype), layout)
        # the reference's: contiguous, the same values (an expanded argument repeats its first slice)
        plain[name] = given[name].detach().clone(memory_format=torch.contiguous_format).requires_grad_()
        assert plain[name].is_contiguous()
    assert [n for n, _ in p.layouts] == _names(p)
    out_shapes = [shapes["h0"]] if p.api == "cell" else [(p.T,) + shapes["h0"], shapes["h0"]]
    upstream = [torch.randn(s, generator=gen, dtype=torch.float64).to(p.dtype) for s in out_shapes]
    want = _run(p, "reference", plain, upstream)
    got = _run(p, backend, given, upstream)
    table = errors(got, want, p.dtype)
    if currently_in_test_context():  # check() also runs by hand, to replay a printed problem
        note(f"{backend}: " + ", ".join(f"{k} {err:.2e}" for k, (err, _) in table.items()))
    failures = [f"{k}: relative error {err:.3e} > {tol:.1e}" for k, (err, tol) in table.items() if not err <= tol]
    assert not failures, f"{backend} vs reference on {p}: " + "; ".join(failures)


def _usable_dtypes(backend: str) -> tuple:
    return tuple(d for d in DTYPES if unusable_reason(backend, DEVICE, d) is None)


def _slow(backend: str) -> bool:
    """Whether ``backend`` runs here but not at speed (Triton's CPU interpreter)."""
    return backend in backends.names() and backends.get(backend).benchmark_reason() is not None


def _property(backend: str):
    """The property test of one backend: its own strategy (tiny if slow) and example count."""
    dtypes = _usable_dtypes(backend)
    slow = _slow(backend)
    examples = settings().max_examples
    examples = max(1, examples // SLOW_SHARE) if slow else examples

    @pytest.mark.skipif(not dtypes, reason=str(unusable_reason(backend, DEVICE)))
    @settings(max_examples=examples)
    @given(p=problems(dtypes or DTYPES, tiny=slow))
    def test(p):
        check(p, backend)

    test.__doc__ = f"backend {backend!r} equals the reference on every drawn problem"
    return test


# one test per registered backend (the reference's: its odd layouts against its contiguous self)
for _name in BACKENDS:
    globals()[f"test_{_name}_matches_the_reference"] = _property(_name)
