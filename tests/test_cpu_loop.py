"""The torch backend's loops in C++ (``csrc/cpu/loops.cpp``, ``torch_fallback.NATIVE``): every output and gradient
against the float64 reference and the Python loops, under both instruction sets of the gate math, on every form of
the loops (hoisted or one concatenated step, reset before or after, weights packed or not, channel counts with a
tail past the last register)."""

import os

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from convgru_ext import ConvGRU, ConvGRUCell
from convgru_ext.backends import _hoisted, torch_fallback
from convgru_ext.backends.torch_fallback import NATIVE
from helpers import REL_TOL, rel_err

pytestmark = pytest.mark.onednn  # CI runs these again under ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's other layouts)


@pytest.fixture(autouse=True)
def _loops_for_every_inference_call(monkeypatch):
    """An inference call of one small step skips the loops (``torch_fallback._single_step``, tested in
    test_inference.py): here every call runs them."""
    monkeypatch.setattr(torch_fallback, "_one_small_step", lambda x, problem: False)


def test_the_extension_is_built():
    """Every install that can build it (torch importable at build time) carries it: CI must not fall back unseen."""
    if os.environ.get("CONVGRU_SKIP_CPU"):
        pytest.skip("CONVGRU_SKIP_CPU is set: this install has no CPU extension by request")
    assert NATIVE.error is None, NATIVE.error


needs_native = pytest.mark.skipif(NATIVE.error is not None, reason=f"no CPU extension: {NATIVE.error}")
HAS_AVX2 = NATIVE.error is None and torch.ops.convgru_ext._cpu_gate_isa() == "avx2"
ISAS = ["generic", pytest.param("avx2", marks=pytest.mark.skipif(not HAS_AVX2, reason="this CPU has no AVX2 and FMA"))]


@pytest.fixture(params=ISAS)
def isa(request):
    """Each test once per instruction set of the gate math, then the process' own choice again."""
    torch.ops.convgru_ext._cpu_gate_isa(request.param)
    yield request.param
    torch.ops.convgru_ext._cpu_gate_isa("auto")


# (T, B, Cin, C, H, W, kernel, dilation): calls of 1024+ pixels over their steps (T*B*H*W) convolve cat([x_t, h]),
# smaller ones read a hoisted projection; C = 13, 11 and 9 leave a tail past an 8-float register; 1x1 frames and
# 1x1 kernels (GEMMs in the C++ loops) of either form; dilated
SHAPES = [(3, 2, 5, 13, 7, 6, 3, 1), (1, 1, 8, 16, 40, 30, 3, 1), (1, 2, 3, 8, 5, 4, 3, 1), (4, 1, 3, 9, 9, 11, 3, 2),
          (2, 3, 4, 8, 1, 1, 1, 1), (5, 1, 6, 24, 6, 5, (1, 5), 1), (3, 2, 4, 11, 14, 13, 3, 1),
          (2, 1, 5, 8, 24, 24, 3, 2), (1, 2, 3, 8, 24, 24, 1, 1)]


@needs_native
def test_every_form_is_covered():
    """The shapes above hold calls of either form (torch_fallback._concatenates), sequences among those that
    concatenate."""
    forms = {(T > 1, torch_fallback._concatenates(torch.empty(T, B, Cin, H, W))) for T, B, Cin, C, H, W, *_ in SHAPES}
    assert forms == {(False, True), (True, True), (False, False), (True, False)}


def _layer_and_inputs(shape, reset, requires_grad):
    T, B, Cin, C, H, W, kernel, dilation = shape
    torch.manual_seed(hash((shape, reset)) % 2**31)
    layer = ConvGRU(Cin, C, kernel, reset=reset, dilation=dilation, backend="torch")
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    reference = ConvGRU(Cin, C, kernel, reset=reset, dilation=dilation, backend="reference").double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(T, B, Cin, H, W).requires_grad_(requires_grad)
    h0 = torch.randn(1, B, C, H, W).requires_grad_(requires_grad)
    return layer, reference, x, h0


def _outputs_and_grads(layer, x, h0, upstream):
    """(out, h_n) and the gradients of x, h0 and every parameter for the output gradient ``upstream``."""
    inputs = [x, h0]
    out, h_n = layer(*inputs)
    grads = torch.autograd.grad((out * upstream).sum(), inputs + list(layer.parameters()))
    return [out, h_n, *grads]


SHAPE_IDS = {"ids": lambda s: "x".join(map(str, s[:6]))}


@pytest.fixture(params=[False, True], ids=["conv2d", "packed"])
def packed(request, monkeypatch):
    if request.param:  # these small convolutions stay below the packing threshold: pack them all the same
        monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", 0)
    return request.param


@needs_native
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("shape", SHAPES, **SHAPE_IDS)
def test_inference_matches_reference_and_python_loop(shape, reset, packed, isa):
    layer, reference, x, h0 = _layer_and_inputs(shape, reset, False)
    with torch.no_grad():
        out, h_n = layer(x, h0)
        with NATIVE.disabled():
            py_out, _ = layer(x, h0)
        want, want_h = reference(x.double(), h0.double())
    assert rel_err(out, want) <= REL_TOL[torch.float32]
    assert rel_err(h_n, want_h) <= REL_TOL[torch.float32]
    assert rel_err(out, py_out.double()) <= REL_TOL[torch.float32]


@needs_native
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("shape", SHAPES, **SHAPE_IDS)
def test_training_matches_reference_and_python_loops(shape, reset, packed, isa):
    """The forward that keeps the gates and the backward loop: outputs, dx, dh0 and every weight and bias gradient."""
    layer, reference, x, h0 = _layer_and_inputs(shape, reset, True)
    upstream = torch.randn(x.shape[0], *h0.shape[1:])
    got = _outputs_and_grads(layer, x, h0, upstream)
    with NATIVE.disabled():
        python = _outputs_and_grads(layer, x, h0, upstream)
    want = _outputs_and_grads(reference, x.detach().double().requires_grad_(), h0.detach().double().requires_grad_(),
                              upstream.double())
    names = ["out", "h_n", "dx", "dh0"] + [name for name, _ in layer.named_parameters()]
    for name, g, p, w in zip(names, got, python, want):
        assert rel_err(g, w) <= REL_TOL[torch.float32], name
        assert rel_err(g, p.double()) <= REL_TOL[torch.float32], name


@needs_native
def test_cell_with_context(isa):
    """A cell call (the single-step forms) with a context, which enters through the projection."""
    torch.manual_seed(3)
    cell = ConvGRUCell(6, 10, backend="torch")
    x, h, context = torch.randn(2, 6, 33, 32), torch.randn(2, 10, 33, 32), torch.randn(2, 30, 33, 32)
    reference = ConvGRUCell(6, 10, backend="reference").double()
    reference.load_state_dict(cell.state_dict())
    with torch.no_grad():
        got = cell(x, h, context=context)
        want = reference(x.double(), h.double(), context=context.double())
    assert rel_err(got, want) <= REL_TOL[torch.float32]


@needs_native
def test_used_only_where_it_applies():
    """float32 on the CPU, eager or traced; other dtypes run the Python loop."""
    x = torch.randn(2, 1, 3, 4, 4)
    assert NATIVE.usable(x) and NATIVE.forward is not None and NATIVE.backward is not None
    assert not NATIVE.usable(x.double())
    with NATIVE.disabled():
        assert not NATIVE.usable(x)
    assert NATIVE.usable(x)


def _loop_calls(monkeypatch, reset, pack):
    """The arguments the layer passes to the two loop ops in one training call (``pack``: every convolution that
    may run on a packed weight does)."""
    if pack:
        monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", 0)
    calls = {}

    def record(name, op):
        def run(*args):
            calls[name] = args
            return op(*args)
        return run

    monkeypatch.setattr(NATIVE, "forward", record("forward", NATIVE.forward))
    monkeypatch.setattr(NATIVE, "backward", record("backward", NATIVE.backward))
    layer, _, x, h0 = _layer_and_inputs((3, 2, 5, 13, 7, 6, 3, 1), reset, True)
    layer(x, h0)[0].sum().backward()
    return calls


@needs_native
@pytest.mark.parametrize("pack", [False, True], ids=["conv2d", "packed"])
@pytest.mark.parametrize("reset", ["before", "after"])
def test_opcheck_loop_ops(monkeypatch, reset, pack):
    """The loop ops' schemas and fake kernels (what a traced inference call runs: torch_fallback) agree with them."""
    calls = _loop_calls(monkeypatch, reset, pack)
    assert calls["forward"][5] is pack and calls["backward"][5] is pack  # pack_a, as asked
    for name in ("forward", "backward"):
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in calls[name]]
        torch.library.opcheck(getattr(torch.ops.convgru_ext, f"_cpu_{name}_loop").default, args)


@needs_native
def test_gate_isa_rejects_unknown_names():
    with pytest.raises(RuntimeError, match="force must be 'auto', 'generic' or 'avx2'"):
        torch.ops.convgru_ext._cpu_gate_isa("sse9")


@pytest.mark.parametrize("reset", ["before", "after"])
def test_projection_through_nchw(reset, monkeypatch):
    """A projection whose weight outweighs its frames runs on NCHW frames (``_hoisted._through_nchw``): outputs and
    gradients unchanged."""
    monkeypatch.setattr(_hoisted, "NCHW_MIN_WEIGHT", 0)
    shape = (2, 1, 16, 16, 2, 2, 3, 1)
    T, B, Cin, C, H, W, *_ = shape
    assert _hoisted._through_nchw(torch.empty(T * B, Cin, H, W), torch.empty(3 * C, Cin, 3, 3))
    layer, reference, x, h0 = _layer_and_inputs(shape, reset, True)
    upstream = torch.randn(T, B, C, H, W)
    got = _outputs_and_grads(layer, x, h0, upstream)
    want = _outputs_and_grads(reference, x.detach().double().requires_grad_(), h0.detach().double().requires_grad_(),
                              upstream.double())
    for g, w in zip(got, want):
        assert rel_err(g, w) <= REL_TOL[torch.float32]


@pytest.mark.parametrize("bias", [True, False])
def test_projection_through_nchw_traced(bias, monkeypatch):
    """Traced, that projection is an opaque op of its own (Inductor would lay its convolution out channels-last):
    its fake kernel agrees with it, and the compiled layer runs it and matches eager."""
    monkeypatch.setattr(_hoisted, "NCHW_MIN_WEIGHT", 0)
    frame, weight = torch.randn(3, 16, 2, 2), torch.randn(24, 16, 3, 3)
    for grad in (False, True):  # with a gradient: its autograd formula (convgru_ext::_conv_nchw_backward)
        args = [frame, weight, torch.randn(24) if bias else None, [1, 1], [1, 1]]
        args[:3] = [t if t is None else t.clone().requires_grad_(grad) for t in args[:3]]
        torch.library.opcheck(torch.ops.convgru_ext._conv_nchw.default, args)
    args = [t if t is None else t.double().requires_grad_() for t in (frame, weight, torch.randn(24) if bias else None)]
    assert torch.autograd.gradcheck(lambda *a: _hoisted._conv_nchw(*a, [1, 2], [1, 2]), args)
    torch._dynamo.reset()
    layer, _, x, h0 = _layer_and_inputs((2, 1, 16, 8, 2, 2, 3, 1), "before", False)
    with torch.no_grad():
        want = layer(x, h0)
        got, code = run_and_get_code(torch.compile(layer, fullgraph=True), x, h0)
    assert "convgru_ext._conv_nchw.default(" in "\n".join(code)
    for g, w in zip(got, want):
        assert rel_err(g, w) <= REL_TOL[torch.float32]
