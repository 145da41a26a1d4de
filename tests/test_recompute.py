"""``recompute=True``: the forward saves no gates, the backward recomputes them; the same results, less saved.

Every backend usable here against its own default mode (float64, outputs and every gradient to 1e-12), with
and without context, sequence and cell; gradcheck, opcheck and torch.compile with recompute; and the bytes
saved for the backward (counted with ``torch.autograd.graph.saved_tensors_hooks``) against the default
mode and the per-step peer most public code uses (``bench.impls.PublicConvGRUCell``).
"""

import pytest
import torch

import convgru_ext
from convgru_ext import ConvGRU, convgru_sequence
from convgru_ext.bench.impls import PublicConvGRUCell
from convgru_ext.bench.timing import saved_bytes
from convgru_ext.testing import INPUT_NAMES, context_arg
from helpers import DEVICES, FUSED_BACKENDS, REL_TOL, Case, make_inputs, rel_err, run_with_grads, skip_unusable


def _grads(backend, inputs, case, upstream, recompute):
    out, h_T = convgru_sequence(*[inputs[k] for k in INPUT_NAMES], context=context_arg(inputs),
                                dilation=case.dilation, reset=case.reset, backend=backend, recompute=recompute)
    loss = (out * upstream["g_out"].to(out)).sum() + (h_T * upstream["g_h"].to(h_T)).sum()
    names = [k for k, v in inputs.items() if v is not None]
    return [out, h_T, *torch.autograd.grad(loss, [inputs[k] for k in names])]


@pytest.mark.parametrize("backend", ("reference",) + FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("T,context", [(4, "none"), (3, "per-step"), (1, "shared")], ids=["seq", "seq-ctx", "cell"])
def test_recompute_gives_the_default_modes_results(backend, device, reset, T, context, rng):
    skip_unusable(backend, device, torch.float64)
    case = Case(T=T, B=2, Cin=3, C=4, H=5, W=6, reset=reset, context=context, dilation=(1, 2))
    inputs = make_inputs(case, torch.float64, device, rng)
    upstream = run_with_grads("reference", inputs, case, rng)["_upstream"]
    default = _grads(backend, inputs, case, upstream, recompute=False)
    recomputed = _grads(backend, inputs, case, upstream, recompute=True)
    for i, (got, want) in enumerate(zip(recomputed, default)):
        assert rel_err(got, want) <= 1e-12, f"result {i}"


@pytest.mark.parametrize("backend", ("reference",) + FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_with_recompute(backend, device):
    skip_unusable(backend, device, torch.float64)
    case = Case(T=2, B=1, Cin=2, C=2, H=3, W=4, reset="after")
    inputs = make_inputs(case, torch.float64, device, torch.Generator().manual_seed(0))

    def fn(*args):
        return convgru_sequence(*args, reset="after", backend=backend, recompute=True)

    fast = convgru_ext.backends.get(backend).benchmark_reason() is not None  # Triton's interpreter
    assert torch.autograd.gradcheck(fn, tuple(inputs.values()), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_opcheck_with_recompute(backend, rng):
    from convgru_ext.backends._op import channels_last

    skip_unusable(backend, "cpu", torch.float64)
    inputs = make_inputs(Case(T=2, B=2, Cin=3, C=4, H=5, W=6), torch.float64, "cpu", rng)
    args = [channels_last(v) if k in ("x", "h0") else v for k, v in inputs.items()]
    args = [a.detach().requires_grad_() for a in args] + [[1, 1], False, None, True]
    torch.library.opcheck(getattr(torch.ops.convgru_ext, f"{backend}_forward"), args)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_with_recompute_matches_eager(backend, device):
    skip_unusable(backend, device, torch.float32)
    torch._dynamo.reset()
    gru = ConvGRU(3, 4, num_layers=2, backend=backend, device=device, recompute=True)
    x = torch.randn(3, 2, 3, 6, 7, device=device, requires_grad=True)
    results = []
    for fn in (gru, torch.compile(gru, fullgraph=True)):
        out, h_n = fn(x)
        results.append([out, *torch.autograd.grad((out * out).sum() + h_n.sum(), [x, *gru.parameters()])])
    for i, (got, want) in enumerate(zip(*results)):
        assert rel_err(got, want) < 10 * REL_TOL[torch.float32], f"result {i}"


#: the bench's video workload (T=16, B=16, 64 channels, 56x56) with B and the pixels shrunk for the CPU
VIDEO = dict(T=16, B=2, C=64, H=14, W=14)


def test_recompute_saves_at_most_0_35x_the_naive_peers_bytes_at_the_video_shape():
    T, B, C, H, W = (VIDEO[k] for k in ("T", "B", "C", "H", "W"))
    x = torch.randn(T, B, C, H, W, requires_grad=True)
    h0 = torch.randn(B, C, H, W, requires_grad=True)
    gru = ConvGRU(C, C, backend="torch")
    ours = {mode: saved_bytes(lambda mode=mode: convgru_sequence(
        x, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0, backend="torch", recompute=mode))
        for mode in (False, True)}
    peer = PublicConvGRUCell(C, C, (3, 3))

    def naive():
        h = h0
        for t in range(T):
            h = peer(x[t], h)

    naive_bytes = saved_bytes(naive)
    assert ours[True] <= 0.35 * naive_bytes, (ours, naive_bytes)
    assert ours[True] < ours[False] <= naive_bytes
