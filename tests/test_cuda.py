"""The CUDA backend (csrc/, convgru_ext/backends/cuda.py) beyond the shared parity/gradcheck/opcheck tests.

Without a GPU (CI): the compiled extension must exist wherever a CUDA toolkit does (so a
silently skipped build fails), its ops must have the schemas of ``_op.py``, CPU tensors
must get a clear error, and the kernels' CPU emulation (the whole kernel body, every lane
of every warp, with CPU implementations of the PTX primitives; csrc/cuda/gemm.cuh says what
runs only on a GPU) must match the ``torch`` backend's op pair on every output, ``gates``
included, for every math mode (so every pipeline depth: 2 for f32 / f64, 3 for tf32, 4 for
bf16 / f16), both reset modes, both A-operand instantiations (16-byte copies; element by
element for unaligned channels), both tiles of the tensor-core maths (narrow for few channels,
wide for more: convgru.h's wide_tile), partial pixel, channel and K tiles, and both of the
emulator's schedules (copies landing at their wait, warps in order; copies landing when
issued, warps in the opposite order: a stage rewritten too early or a missing barrier fails
one of them).  The packed weights are cached per weight version.  The primitives themselves:
tests/test_cuda_primitives.py; the compiled code: tests/test_cuda_sass.py.

With a GPU: the GPU against its own emulation, on aligned and unaligned channels.  The checks
every GPU backend shares (low precision on aligned sizes, TF32 on and off, CUDA-graph capture,
indices past 2**31) are in tests/test_gpu_kernels.py.
"""

import importlib
import os

import pytest
import torch

import convgru_ext
from convgru_ext import backends
from convgru_ext._tf32 import tf32
from convgru_ext.backends import _op
from convgru_ext.backends._layout import significant_strides
from convgru_ext.backends._op import channels_last
from convgru_ext.backends.cuda import PREBUILT, load_extension
from helpers import FUSED_BACKENDS, GPU, TF32_TOL, Case, compare, make_inputs, op_args, rel_err

NAMES = ("out", "gates", "dx", "dh0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")


def _toolkit_reason():
    """Why this machine is not expected to have built the extension, or None when it should have."""
    if os.environ.get("CONVGRU_SKIP_CUDA", "").strip().lower() in ("1", "true", "yes", "on"):
        return "CONVGRU_SKIP_CUDA is set"
    if torch.version.cuda is None:
        return "torch is a CPU-only build"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return "no CUDA toolkit (nvcc) on this machine"
    return None


def _need_extension():
    reason = load_extension()
    if reason:
        pytest.skip(reason)


# ---- the build and the registration (no GPU needed) ----

def test_extension_is_built_where_a_toolkit_is():
    reason = _toolkit_reason()
    if reason:
        pytest.skip(f"the extension is not expected here: {reason}")
    try:
        importlib.import_module(PREBUILT)
    except ImportError as error:
        pytest.fail(f"a CUDA toolkit is present but {PREBUILT} does not import ({error}); build it with "
                    "`pip install --no-build-isolation -e .` or `python setup.py build_ext --inplace`")
    assert load_extension() is None


@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_ops_have_the_contract_schemas(kind):
    """Every fused backend's op pair has _op.py's schema (the backends' ops are defined from it); the C++
    time loops' schemas live in ops.cpp alone (the emulation tests call them as cuda.py does)."""
    _need_extension()
    contract = {"forward": _op.FORWARD_SCHEMA, "backward": _op.BACKWARD_SCHEMA}[kind]
    for name in FUSED_BACKENDS:
        op = getattr(torch.ops.convgru_ext, f"{name}_{kind}", None)
        if op is not None:  # triton's exists where Triton imports
            assert str(op.default._schema) == f"convgru_ext::{name}_{kind}{contract}", name


def test_cpu_tensors_raise_a_clear_error(rng):
    _need_extension()
    inputs = {k: v.detach() for k, v in make_inputs(Case(), torch.float32, "cpu", rng).items()}
    x, h0 = channels_last(inputs["x"]), channels_last(inputs["h0"])
    args = (x, h0, inputs["weight_ih"], inputs["weight_hh"], inputs["bias_ih"], inputs["bias_hh"], [1, 1], False)
    with pytest.raises(RuntimeError, match=r"convgru_ext::cuda_forward needs CUDA tensors.*got `x` on cpu"):
        torch.ops.convgru_ext.cuda_forward(*args)
    out, gates = torch.ops.convgru_ext.torch_forward(*args)
    with pytest.raises(RuntimeError, match=r"convgru_ext::cuda_backward needs CUDA tensors.*got `x` on cpu"):
        torch.ops.convgru_ext.cuda_backward(out, x, h0, out, gates, inputs["weight_ih"], inputs["weight_hh"],
                                            [1, 1], False, True)
    with pytest.raises(ValueError, match="backend 'cuda' cannot run this call"):
        convgru_ext.convgru_sequence(*inputs.values(), backend="cuda")


def test_backend_is_experimental_so_auto_skips_it():
    assert backends.get("cuda").experimental  # until a GPU run has verified it


# ---- the kernels' CPU emulation against the torch backend's op pair ----

def _pair(forward, backward, args, grad_out) -> dict:
    """Every output of a forward/backward op pair, the backward fed with this forward's own results."""
    out, gates = forward(*args)
    grads = backward(grad_out, *args[:2], out, gates, *args[2:4], *args[6:8], True)
    return dict(zip(NAMES, (out, gates) + tuple(grads)))


EMULATED = [("f64", torch.float64), ("f32", torch.float32), ("tf32", torch.float32),
            ("bf16", torch.bfloat16), ("f16", torch.float16)]
EMULATED_CASES = {
    # odd sizes: the element-wise A instantiation (channels not a multiple of 16 bytes), partial tiles
    "odd": Case(T=3, B=2, Cin=5, C=7, H=9, W=11),
    # 16-byte loads; several pixel and channel tiles (the wide tile for bf16 / f16 / tf32) and K-chunks; a 1x5
    # kernel, dilation 2
    "aligned": Case(T=2, B=2, Cin=8, C=72, H=7, W=10, kernel=(1, 5), dilation=(2, 2)),
    "5x1-no-bias": Case(T=2, B=1, Cin=8, C=16, H=11, W=6, kernel=(5, 1), bias=False),
    # 1x1: fewer K-steps (1 or 2) than the pipeline's prologue issues; one partial pixel tile
    "1x1": Case(T=2, B=2, Cin=3, C=16, H=5, W=7, kernel=(1, 1)),
    # over 64 channels: every tensor-core kernel's wide tile on the element-wise A instantiation
    "wide-odd": Case(T=2, B=1, Cin=3, C=67, H=5, W=6),
}


def test_emulated_cases_cover_both_tiles():
    """The cases above run the tensor-core kernels on both tiles (convgru.h's wide_tile: more channels than
    the narrow tile's 32, or 64 for the one-gate kernels); the exact maths keep the narrow one."""
    _need_extension()
    ops = torch.ops.convgru_ext
    kernels = ["FwdRZ", "FwdN", "FwdAfter", "BwdN", "BwdRZ", "BwdAfter"]
    for math in ("bf16", "f16", "tf32"):
        for kernel in kernels:
            narrow_bn = 32 if kernel in ("FwdRZ", "FwdAfter") else 64
            assert not ops._cuda_wide_tile(math, kernel, narrow_bn) and ops._cuda_wide_tile(math, kernel, narrow_bn + 1)
        for name in ("odd", "5x1-no-bias", "1x1"):
            assert not any(ops._cuda_wide_tile(math, k, EMULATED_CASES[name].C) for k in kernels), name
        for name in ("aligned", "wide-odd"):
            assert all(ops._cuda_wide_tile(math, k, EMULATED_CASES[name].C) for k in kernels), name
    assert not any(ops._cuda_wide_tile(m, k, 1024) for m in ("f32", "f64") for k in kernels)


@pytest.fixture(params=["late", "early"])
def schedule(request):
    """The emulator's schedule for the test (csrc/cuda/gemm.cuh): copies landing at their wait and warps in
    order, or copies landing when issued and warps in the opposite order; restored afterwards."""
    _need_extension()
    previous = torch.ops.convgru_ext._cuda_emulate_schedule(request.param)
    yield request.param
    torch.ops.convgru_ext._cuda_emulate_schedule(previous)


def test_emulate_schedule_checks_its_argument():
    _need_extension()
    with pytest.raises(RuntimeError, match='schedule must be "late" or "early"'):
        torch.ops.convgru_ext._cuda_emulate_schedule("soon")
    previous = torch.ops.convgru_ext._cuda_emulate_schedule("early")
    assert torch.ops.convgru_ext._cuda_emulate_schedule(previous) == "early"


@pytest.mark.onednn
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("case_name", list(EMULATED_CASES))
@pytest.mark.parametrize("math,dtype", EMULATED, ids=[m for m, _ in EMULATED])
def test_emulated_kernels_match_the_torch_backend(math, dtype, case_name, reset, schedule, rng):
    case = EMULATED_CASES[case_name]
    case = Case(**{**case.__dict__, "reset": reset})
    args64, args, grad_out64, grad_out = op_args(case, dtype, rng)
    ops = torch.ops.convgru_ext
    want = _pair(ops.torch_forward, ops.torch_backward, args64, grad_out64)
    got = _pair(lambda *a: ops._cuda_emulate_forward(*a, math), lambda *a: ops._cuda_emulate_backward(*a, math),
                args, grad_out)
    for name in NAMES:  # the layout contract (tests/test_layout.py holds it for every op pair)
        assert significant_strides(got[name]) == significant_strides(want[name]) or got[name].numel() == 0, name
    if dtype in (torch.float64, torch.float32) and math != "tf32":
        compare(got, want, dtype, label=f"emulated {math}")
    elif math == "tf32":
        failures = [f"{n}: {rel_err(got[n], want[n]):.2e}" for n in NAMES if not rel_err(got[n], want[n]) <= TF32_TOL]
        assert not failures, f"emulated tf32 off by more than {TF32_TOL:.1e}: {failures}"
    else:  # the torch backend in the same low precision sets the bar
        eager = _pair(ops.torch_forward, ops.torch_backward, args, grad_out)
        compare(got, want, dtype, eager_lowp=eager, label=f"emulated {math}")


def test_emulated_ops_check_their_arguments(rng):
    """The C++ checks guard direct op calls (the CUDA ops run the same ones)."""
    _need_extension()
    ops = torch.ops.convgru_ext
    _, args, _, grad_out = op_args(Case(T=2, B=1, C=2, Cin=2, H=3, W=3), torch.float32, rng)
    with pytest.raises(RuntimeError, match='math "bf16" does not fit dtype'):
        ops._cuda_emulate_forward(*args, "bf16")
    out, gates = ops._cuda_emulate_forward(*args, "f32")
    with pytest.raises(RuntimeError, match=r"`gates` must have shape \(T, B, G\*hidden, H, W\)"):
        ops._cuda_emulate_backward(grad_out, *args[:2], out, gates[:, :, :-1], *args[2:4], *args[6:8], True, "f32")
    with pytest.raises(RuntimeError, match="`h0` has dtype Double but `x` has Float"):
        ops._cuda_emulate_forward(args[0], args[1].double(), *args[2:], "f32")


@pytest.mark.parametrize("T,B", [(0, 2), (2, 0)])
def test_emulated_ops_with_nothing_to_compute(T, B, rng):
    """No step or no frame: no kernel runs, the shapes are right and the gradients are zeros."""
    _need_extension()
    ops = torch.ops.convgru_ext
    _, args, _, grad_out = op_args(Case(T=T, B=B, C=3, Cin=2, H=4, W=5), torch.float32, rng)
    out, gates = ops._cuda_emulate_forward(*args, "f32")
    assert out.shape == (T, B, 3, 4, 5) and gates.shape == (T, B, 9, 4, 5)
    grads = ops._cuda_emulate_backward(grad_out, *args[:2], out, gates, *args[2:4], *args[6:8], True, "f32")
    assert [tuple(g.shape) for g in grads] == [(T, B, 2, 4, 5), (B, 3, 4, 5), (9, 2, 3, 3), (9, 3, 3, 3), (9,), (9,),
                                               (0,)]  # no context: an empty dcontext
    assert all(g.abs().sum() == 0 for g in grads)


# ---- the packed-weight cache (csrc/ops.cpp) ----

def _emulated_forward(args):
    return torch.ops.convgru_ext._cuda_emulate_forward(*args, "f32")


def test_packed_weights_are_cached_per_weight_version(rng):
    """A second call with the same weight reuses its packing; an in-place write (a new version) repacks."""
    _need_extension()
    ops = torch.ops.convgru_ext
    _, args, _, _ = op_args(Case(T=2, B=1, Cin=3, C=6, H=5, W=4), torch.float32, rng)
    ops._cuda_pack_cache_info(True)
    first, _ = _emulated_forward(args)
    hits, misses, entries = ops._cuda_pack_cache_info()
    assert (hits, misses, entries) == (0, 2, 2)  # reset "before": the r/z and the n packing
    again, _ = _emulated_forward(args)
    assert ops._cuda_pack_cache_info() == [2, 2, 2]
    assert torch.equal(first, again)
    with torch.no_grad():
        args[3].mul_(-1.5)  # weight_hh, in place: its version changes
    changed, _ = _emulated_forward(args)
    assert ops._cuda_pack_cache_info()[1] == 4
    want, _ = ops.torch_forward(*args)
    assert rel_err(changed, want) <= 1e-5 and rel_err(changed, first) > 1e-2


def test_weights_that_require_grad_are_repacked_every_call(rng):
    """gradcheck writes its inputs through `.data`, unseen by the version counter: never cached."""
    _need_extension()
    ops = torch.ops.convgru_ext
    _, args, _, _ = op_args(Case(T=2, B=1, Cin=3, C=6, H=5, W=4), torch.float32, rng)
    args[3] = args[3].clone().requires_grad_()
    ops._cuda_pack_cache_info(True)
    with torch.no_grad():
        _emulated_forward(args)
        args[3].data.mul_(0.5)
        got, _ = _emulated_forward(args)
        want, _ = ops.torch_forward(*args)
    assert ops._cuda_pack_cache_info() == [0, 0, 0]
    assert rel_err(got, want) <= 1e-5


# ---- on a GPU ----

@GPU
@pytest.mark.parametrize("C", [40, 37, 72], ids=["aligned", "unaligned", "wide"])  # 37: element-wise A; 72: every
# tensor-core kernel on its wide tile (40, 37: FwdRZ / FwdAfter only)
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("math,dtype,tol", [("f64", torch.float64, 1e-13), ("f32", torch.float32, 1e-6),
                                            ("tf32", torch.float32, 1e-3), ("bf16", torch.bfloat16, 3e-2),
                                            ("f16", torch.float16, 1e-2)],
                         ids=["f64", "f32", "tf32", "bf16", "f16"])
def test_gpu_matches_its_cpu_emulation(math, dtype, tol, reset, C, rng):
    """The device-only code (the PTX primitives: csrc/cuda/gemm.cuh's list) against the emulated kernels.

    When a parity test fails on the GPU but the emulator tests pass on the CPU, this one says
    whether the device-only code is to blame.  Same algorithm; only the summation order (and
    FMA contraction) differ, hence the tight float64 bound.
    """
    _need_extension()
    case = Case(T=2, B=2, Cin=8, C=C, H=13, W=12, reset=reset)
    _, args, _, grad_out = op_args(case, dtype, rng)
    ops = torch.ops.convgru_ext
    emulated = _pair(lambda *a: ops._cuda_emulate_forward(*a, math), lambda *a: ops._cuda_emulate_backward(*a, math),
                     args, grad_out)
    on_gpu = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    with tf32(math == "tf32"):
        got = _pair(ops.cuda_forward, ops.cuda_backward, on_gpu, grad_out.cuda())
    failures = [f"{n}: {rel_err(got[n].cpu(), emulated[n]):.2e}" for n in NAMES
                if not rel_err(got[n].cpu(), emulated[n]) <= tol]
    assert not failures, f"GPU vs emulated {math} beyond {tol:.0e}: {failures}"
