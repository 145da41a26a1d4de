"""Per-gate context (RAFT-Stereo, IGEV, the stacked GRU-RCN): ``context=`` on every entry point and backend.

The reference against an independent oracle (a context constant over the batch and the pixels is a shift of
the input bias, in both reset modes); every fused backend against the reference in every accepted form
(outputs and every gradient, the context's included); gradcheck, opcheck and torch.compile with a
context; the modules' forms; and every bad context's error.
"""

import pytest
import torch

import convgru_ext
from convgru_ext import ConvGRU, ConvGRUCell, SepConvGRU, convgru_cell, convgru_sequence
from convgru_ext.backends._op import channels_last
from helpers import DEVICES, FUSED_BACKENDS, REL_TOL, Case, compare, make_inputs, rel_err, run_with_grads, skip_unusable

FORMS = ["shared", "per-step", "gates"]


@pytest.mark.parametrize("reset", ["before", "after"])
def test_reference_context_is_an_input_bias_shift_when_constant(reset, rng):
    """The oracle: c = (c_r, c_z, c_n) the same at every pixel and frame equals b_ih + c."""
    case = Case(T=3, reset=reset)
    inputs = {k: v.detach() for k, v in make_inputs(case, torch.float64, "cpu", rng).items()}
    shift = torch.randn(3 * case.C, generator=rng, dtype=torch.float64)
    context = shift.view(1, -1, 1, 1).expand(case.B, -1, case.H, case.W)
    args = [inputs[k] for k in ("x", "h0", "weight_ih", "weight_hh")]
    got, _ = convgru_sequence(*args, inputs["bias_ih"], inputs["bias_hh"], context=context, reset=reset,
                              backend="reference")
    want, _ = convgru_sequence(*args, inputs["bias_ih"] + shift, inputs["bias_hh"], reset=reset, backend="reference")
    assert rel_err(got, want) < REL_TOL[torch.float64]
    plain, _ = convgru_sequence(*args, inputs["bias_ih"], inputs["bias_hh"], reset=reset, backend="reference")
    assert rel_err(got, plain) > 1e-3  # the context does something


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("T", [3, 1], ids=["sequence", "cell"])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_fused_backends_match_the_reference_with_context(backend, device, form, T, reset, rng):
    skip_unusable(backend, device, torch.float64)
    case = Case(T=T, B=2, Cin=3, C=4, H=5, W=6, reset=reset, context=form, dilation=(1, 2))
    inputs = make_inputs(case, torch.float64, device, rng)
    want = run_with_grads("reference", inputs, case, rng)
    got = run_with_grads(backend, inputs, case, rng, upstream=want["_upstream"])
    assert any(k.startswith("grad_c") for k in got), "the context's gradient is checked"
    compare(got, want, torch.float64, label=f"{backend} context={form}")


@pytest.mark.parametrize("backend", ("reference",) + FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["before", "after"])
def test_gradcheck_with_context(backend, device, reset):
    skip_unusable(backend, device, torch.float64)
    case = Case(T=2, B=1, Cin=2, C=2, H=3, W=4, reset=reset, context="per-step")
    inputs = make_inputs(case, torch.float64, device, torch.Generator().manual_seed(0))
    names = list(inputs)

    def fn(*args):
        given = dict(zip(names, args))
        ctx = given.pop("context")
        return convgru_sequence(*given.values(), context=ctx, reset=reset, backend=backend)

    fast = convgru_ext.backends.get(backend).benchmark_reason() is not None  # Triton's interpreter
    assert torch.autograd.gradcheck(fn, tuple(inputs.values()), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("steps", [1, 2])
def test_opcheck_with_context(backend, device, steps, rng):
    skip_unusable(backend, device, torch.float64)
    case = Case(T=2, B=2, Cin=3, C=4, H=5, W=6)
    inputs = {k: v.detach() for k, v in make_inputs(case, torch.float64, device, rng).items()}
    context = channels_last(torch.randn(steps, 2, 12, 5, 6, generator=rng, dtype=torch.float64).to(device))
    args = [channels_last(inputs["x"]), channels_last(inputs["h0"]), inputs["weight_ih"], inputs["weight_hh"],
            inputs["bias_ih"], inputs["bias_hh"], [1, 1], False, context.requires_grad_()]
    forward = getattr(torch.ops.convgru_ext, f"{backend}_forward")
    torch.library.opcheck(forward, args)
    with torch.no_grad():
        out, gates = forward(*args)
    backward = getattr(torch.ops.convgru_ext, f"{backend}_backward")
    grad_out = channels_last(torch.randn(out.shape, generator=rng, dtype=torch.float64).to(device))
    torch.library.opcheck(backward, [grad_out, *args[:2], out, gates, *args[2:4], [1, 1], False, True, steps])


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_with_context_matches_eager(backend, device):
    skip_unusable(backend, device, torch.float32)
    torch._dynamo.reset()
    cell = ConvGRUCell(3, 4, backend=backend, device=device)
    x = torch.randn(2, 3, 5, 6, device=device)
    h = torch.randn(2, 4, 5, 6, device=device)
    c_r, c_n = (torch.randn(2, 4, 5, 6, device=device, requires_grad=True) for _ in range(2))

    def model(x, h, c_r, c_n):
        return cell(x, cell(x, h, context=(c_r, None, c_n)), context=(c_r, None, c_n))

    results = []
    for fn in (model, torch.compile(model, fullgraph=True)):
        out = fn(x, h, c_r, c_n)
        results.append([out, *torch.autograd.grad((out * out).sum(), [c_r, c_n, *cell.parameters()])])
    for i, (got, want) in enumerate(zip(*results)):
        assert rel_err(got, want) < 10 * REL_TOL[torch.float32], f"result {i}"


def test_modules_take_context_in_each_form(rng):
    """ConvGRUCell, SepConvGRU (the same context for both passes) and ConvGRU (per layer; batch-first and the
    reverse direction see the per-step context in their own time order) against the functional API."""
    kw = dict(dtype=torch.float64)
    B, Cin, C, H, W, T = 2, 3, 4, 5, 6, 3
    x = torch.randn(B, Cin, H, W, generator=rng, **kw)
    c = torch.randn(B, 3 * C, H, W, generator=rng, **kw)
    cell = ConvGRUCell(Cin, C, **kw)
    p = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    assert rel_err(cell(x, context=c), convgru_cell(x, None, *p, context=c)) < 1e-12
    assert rel_err(cell(x[0], context=c[0]), convgru_cell(x[:1], None, *p, context=c[:1])[0]) < 1e-12  # unbatched
    sep = SepConvGRU(Cin, C, **kw)
    want = sep.vertical(x, sep.horizontal(x, context=c), context=c)
    assert rel_err(sep(x, context=c), want) < 1e-12

    gru = ConvGRU(Cin, C, num_layers=2, bidirectional=True, batch_first=True, **kw)
    xs = torch.randn(B, T, Cin, H, W, generator=rng, **kw)
    per_step = torch.randn(B, T, 3 * C, H, W, generator=rng, **kw)
    out, h_n = gru(xs, context=[per_step, None])
    fwd = convgru_sequence(xs.transpose(0, 1), None, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0,
                           gru.bias_hh_l0, context=per_step.transpose(0, 1))[0]
    rev = convgru_sequence(xs.transpose(0, 1).flip(0), None, gru.weight_ih_l0_reverse, gru.weight_hh_l0_reverse,
                           gru.bias_ih_l0_reverse, gru.bias_hh_l0_reverse,
                           context=per_step.transpose(0, 1).flip(0))[0].flip(0)
    layer0 = torch.cat([fwd, rev], dim=2)
    plain, _ = gru(xs)
    assert rel_err(out, plain) > 1e-3
    gru_l0 = ConvGRU(Cin, C, bidirectional=True, batch_first=True, **kw)
    gru_l0.load_state_dict({k: v for k, v in gru.state_dict().items() if "_l0" in k})
    assert rel_err(gru_l0(xs, context=[per_step])[0], layer0.transpose(0, 1)) < 1e-12


BAD = [
    ("a list of two", lambda c, C: [c[:, :C], c[:, C:2 * C]], TypeError, "`context` must be"),
    ("a string", lambda c, C: "context", TypeError, "`context` must be"),
    ("2C channels", lambda c, C: c[:, : 2 * C], ValueError, r"`context` must have shape \(2, 12, 5, 6\)"),
    ("a tuple with 3C channels", lambda c, C: (c, None, None), ValueError, r"`context\[0\] \(c_r\)` must have shape"),
    ("other sizes", lambda c, C: c[..., :4], ValueError, "`context` must have shape"),
    ("per-step of another T", lambda c, C: c.expand(4, -1, -1, -1, -1), ValueError, "`context` must have shape"),
    ("float32", lambda c, C: c.float(), TypeError, "`context` must be torch.float64"),
    ("two shapes", lambda c, C: (c[:, :C], c[:, :C].expand(3, -1, -1, -1, -1), None), ValueError, "one shape"),
]


@pytest.mark.parametrize("what,make,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_context_raises_a_named_error(what, make, error, match, rng):
    case = Case(T=3, B=2, Cin=3, C=4, H=5, W=6)
    inputs = {k: v.detach() for k, v in make_inputs(case, torch.float64, "cpu", rng).items()}
    c = torch.randn(2, 12, 5, 6, generator=rng, dtype=torch.float64)
    with pytest.raises(error, match=match):
        convgru_sequence(*inputs.values(), context=make(c, 4))
    with pytest.raises(ValueError, match="`context` must have shape"):  # a cell takes no per-step context
        convgru_cell(inputs["x"][0], inputs["h0"], *list(inputs.values())[2:], context=c.expand(3, -1, -1, -1, -1))
