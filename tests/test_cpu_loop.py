"""The torch backend's inference loop in C++ (``csrc/cpu/infer.cpp``, ``torch_fallback.NATIVE``): against the float64
reference and the Python loop, under both of its instruction sets, on every form of the loop (hoisted or one
concatenated step, reset before or after, weights packed or not, channel counts with a tail past the last register)."""

import os

import pytest
import torch

from convgru_ext import ConvGRU, ConvGRUCell
from convgru_ext.backends import torch_fallback
from convgru_ext.backends.torch_fallback import NATIVE
from helpers import REL_TOL, rel_err

pytestmark = pytest.mark.onednn  # CI runs these again under ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's other layouts)


def test_the_extension_is_built():
    """Every install that can build it (torch importable at build time) carries it: CI must not fall back unseen."""
    if os.environ.get("CONVGRU_SKIP_CPU"):
        pytest.skip("CONVGRU_SKIP_CPU is set: this install has no CPU extension by request")
    assert NATIVE.error is None, NATIVE.error


needs_native = pytest.mark.skipif(NATIVE.op is None, reason=f"no CPU extension: {NATIVE.error}")
ISAS = ["generic", pytest.param("avx2", marks=pytest.mark.skipif(
    NATIVE.op is None or torch.ops.convgru_ext._cpu_gate_isa() != "avx2", reason="this CPU has no AVX2 and FMA"))]


@pytest.fixture(params=ISAS)
def isa(request):
    """Each test once per instruction set of the gate math, then the process' own choice again."""
    torch.ops.convgru_ext._cpu_gate_isa(request.param)
    yield request.param
    torch.ops.convgru_ext._cpu_gate_isa("auto")


# (T, B, Cin, C, H, W, kernel, dilation): T = 1 with 1024+ pixels runs the concatenated single step; C = 13 and 9
# leave a tail past an 8-float register; 1x1 frames; a dilated 3x3
SHAPES = [(3, 2, 5, 13, 7, 6, 3, 1), (1, 1, 8, 16, 40, 30, 3, 1), (1, 2, 3, 8, 5, 4, 3, 1), (4, 1, 3, 9, 9, 11, 3, 2),
          (2, 3, 4, 8, 1, 1, 1, 1), (5, 1, 6, 24, 6, 5, (1, 5), 1)]


@needs_native
@pytest.mark.parametrize("packed", [False, True], ids=["conv2d", "packed"])
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
def test_matches_reference_and_python_loop(shape, reset, packed, isa, monkeypatch):
    T, B, Cin, C, H, W, kernel, dilation = shape
    if packed:  # these small convolutions stay below the packing threshold: pack them all the same
        monkeypatch.setattr(torch_fallback, "PACK_MIN_MACS", 0)
    torch.manual_seed(hash((shape, reset)) % 2**31)
    layer = ConvGRU(Cin, C, kernel, reset=reset, dilation=dilation, backend="torch")
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    x, h0 = torch.randn(T, B, Cin, H, W), torch.randn(1, B, C, H, W)
    reference = ConvGRU(Cin, C, kernel, reset=reset, dilation=dilation, backend="reference").double()
    reference.load_state_dict(layer.state_dict())
    with torch.no_grad():
        out, h_n = layer(x, h0)
        with NATIVE.disabled():
            py_out, _ = layer(x, h0)
        want, want_h = reference(x.double(), h0.double())
    assert rel_err(out, want) <= REL_TOL[torch.float32]
    assert rel_err(h_n, want_h) <= REL_TOL[torch.float32]
    assert rel_err(out, py_out.double()) <= REL_TOL[torch.float32]


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
    """float32 on the CPU, outside tracing; other dtypes run the Python loop."""
    x = torch.randn(2, 1, 3, 4, 4)
    assert NATIVE.usable(x)
    assert not NATIVE.usable(x.double())
    with NATIVE.disabled():
        assert not NATIVE.usable(x)
    assert NATIVE.usable(x)


@needs_native
def test_gate_isa_rejects_unknown_names():
    with pytest.raises(RuntimeError, match="force must be 'auto', 'generic' or 'avx2'"):
        torch.ops.convgru_ext._cpu_gate_isa("sse9")
