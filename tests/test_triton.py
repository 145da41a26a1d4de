"""The Triton backend (convgru_ext/backends/triton/) beyond the shared parity/gradcheck/opcheck tests.

Without a GPU (CI) the kernels run through Triton's interpreter (conftest sets
TRITON_INTERPRET=1): tiling across several pixel, channel and K blocks with partial
tiles, the cell path (x convolved inside the step kernels, nothing hoisted), the launch
budget per step, the configurations' constraints and the backend's error messages.  Every
kernel is also compiled ahead of time for sm_90 (no GPU needed), which the interpreter cannot
stand in for.
With a GPU: every configuration autotuning may pick, run on its own against the reference.
"""

import os
import subprocess
import sys

import pytest
import torch

import convgru_ext
from convgru_ext import backends
from convgru_ext._tf32 import tf32
from convgru_ext.backends import _op
from helpers import GPU, TF32_TOL, Case, compare, lowp_parity, make_inputs, rel_err, run_with_grads, skip_unusable

triton = pytest.importorskip("triton", reason="triton is not installed")


def _ops():
    skip_unusable("triton", "cuda" if torch.cuda.is_available() else "cpu", torch.float64)
    from convgru_ext.backends.triton import ops

    return ops


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _parity(case, dtype, rng, device=None):
    inputs = make_inputs(case, dtype, device or _device(), rng)
    want = run_with_grads("reference", inputs, case, rng)
    got = run_with_grads("triton", inputs, case, rng, upstream=want["_upstream"])
    compare(got, want, dtype, label=f"triton {case}")


#: several pixel blocks with a partial last one (M = 2*7*9 = 126 over 32-pixel tiles), likewise
#: channel blocks (C = 20 over 16), several K-chunks (Cin = 18, C = 20, 2C = 40, 3C = 60 over 16)
SMALL_TILES = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=4, num_stages=1)
TILED = Case(T=2, B=2, Cin=18, C=20, H=7, W=9)
TILED_VARIANTS = [  # (T, reset, kernel, dilation)
    (2, "before", (3, 3), (1, 1)), (2, "after", (3, 3), (1, 1)), (1, "before", (3, 3), (1, 1)),
    (1, "after", (3, 3), (1, 1)), (2, "before", (1, 5), (2, 2)), (1, "after", (5, 1), (1, 2)),
]


@pytest.mark.parametrize("T,reset,kernel,dilation", TILED_VARIANTS,
                         ids=[f"{'cell' if v[0] == 1 else 'seq'}-{v[1]}-k{v[2][0]}x{v[2][1]}-d{v[3][0]}x{v[3][1]}"
                              for v in TILED_VARIANTS])
def test_many_tiles_with_partial_ones(T, reset, kernel, dilation, rng):
    ops = _ops()
    case = Case(**{**TILED.__dict__, "T": T, "reset": reset, "kernel": kernel, "dilation": dilation})
    with ops.forced_config(SMALL_TILES):
        _parity(case, torch.float64, rng)


@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_convolves_x_in_the_step_kernels(reset, bias, monkeypatch, rng):
    """T == 1 (a cell call): no hoisted input projection, and the result is still the reference's."""
    _ops()  # skips where the backend cannot run

    def no_hoisting(*args, **kwargs):
        raise AssertionError("a cell call must not run the hoisted input projection")

    monkeypatch.setattr(_op, "input_projection", no_hoisting)  # where the composition calls it
    _parity(Case(T=1, reset=reset, bias=bias), torch.float64, rng)


@pytest.mark.parametrize("reset,per_step", [("before", (2, 2)), ("after", (1, 1))])
@pytest.mark.parametrize("T", [1, 3])
def test_launch_budget(reset, per_step, T, monkeypatch, rng):
    """Forward: 2 step kernels per step ("before") or 1 ("after"); backward the same, plus one init kernel."""
    ops = _ops()
    launches = []
    real = ops._launch
    monkeypatch.setattr(ops, "_launch",
                        lambda kernel, math, **args: launches.append(args["KIND"]) or real(kernel, math, **args))
    case = Case(T=T, reset=reset, B=1, C=4, Cin=3, H=5, W=6)
    inputs = make_inputs(case, torch.float64, _device(), rng)
    out, _ = convgru_ext.convgru_sequence(*inputs.values(), reset=reset, backend="triton")
    assert len(launches) == per_step[0] * T
    launches.clear()
    out.sum().backward()
    assert len(launches) == per_step[1] * T


def test_configurations_keep_to_what_is_safe():
    """At most 4 warps (8 miscompile tap-looping convolutions, pytorch#173068) and tl.dot's minimum
    block of 16 wherever tl.dot runs (everything but float64)."""
    ops = _ops()
    for math in ("mma", "tf32", "ieee", "f64"):
        found = ops.configs(math)
        assert found, math
        for config in found:
            assert config.num_warps <= 4
            m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
            if math != "f64":
                assert min(m, n, k) >= 16


def test_default_tile_without_autotuning_depends_on_the_shape_alone():
    """Least channel padding first, then the first tile (in order of preference) that fills two waves of
    132 programs, else the one with the most programs."""
    ops = _ops()
    kept = ops.TILES["mma"]
    assert ops.pick_tile(kept, M=16 * 56 * 56, C=64) == kept[0]  # video: every tile fills the GPU
    assert ops.pick_tile(kept, M=64 * 64, C=32) == (64, 32, 64, 4)  # stream: no 64-channel block, most programs
    assert ops.pick_tile(kept, M=10, C=64) == (128, 32, 32, 4)  # tiny: the first of those with most programs (2)
    for math, tiles in ops.TILES.items():
        for M, C in ((1, 1), (126, 20), (8 * 46 * 62, 128), (4 * 128 * 128, 64)):
            assert ops.pick_tile(tiles, M, C) in tiles, math


def test_math_mode_follows_the_dtype_and_the_convolution_tf32_flag():
    ops = _ops()
    for flag in (False, True):
        with tf32(flag):
            assert ops.math_mode(torch.float32) == ("tf32" if flag else "ieee")
    assert [ops.math_mode(d) for d in (torch.bfloat16, torch.float16, torch.float64)] == ["mma", "mma", "f64"]


def test_weight_packing():
    ops = _ops()
    w = torch.randn(9, 4, 3, 5, dtype=torch.float64)
    fwd = ops.pack_forward(w)
    assert fwd.shape == (15, 4, 9) and torch.equal(fwd[7, 2, 5], w[5, 2, 1, 2])  # tap 7 = (1, 2)
    bwd = ops.pack_backward(torch.randn(9, 3, 3, 5, dtype=torch.float64))
    assert bwd.shape == (15, 9, 3)


def test_unsupported_calls_say_why():
    backend = backends.get("triton")
    problem = convgru_ext._contract.Problem(T=1, B=1, Cin=1, C=1, H=1, W=1, kernel=(3, 3), dilation=(1, 1),
                                            reset_after=False, dtype=torch.bfloat16, device=torch.device("meta"))
    (reason,) = backend.why_not(problem)
    assert "runs on CUDA tensors" in reason and "meta" in reason
    if backends.get("triton").unavailable_reason() is None and not torch.cuda.is_available():
        cpu = convgru_ext._contract.Problem(**{**problem.__dict__, "device": torch.device("cpu")})
        (reason,) = backend.why_not(cpu)
        assert "float32 and float64" in reason and "bfloat16" in reason
        x = torch.randn(1, 1, 2, 4, 4, dtype=torch.bfloat16)
        w = torch.randn(6, 2, 3, 3, dtype=torch.bfloat16)
        with pytest.raises(ValueError, match="backend 'triton' cannot run this call"):
            convgru_ext.convgru_sequence(x, None, w, torch.randn(6, 2, 3, 3, dtype=torch.bfloat16), backend="triton")


@pytest.mark.slow
def test_kernels_compile_for_hopper_without_spilling():
    """Triton's CPU interpreter runs code the GPU compiler rejects: compile every kernel and code path
    ahead of time for sm_90 (no GPU needed; ptxas ships with Triton) and bound the register spills."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "convgru_ext.backends.triton.compile_report", "--arch", "90",
                           "--quick", "--max-spill", "64"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_backend_is_experimental_so_auto_skips_it():
    assert backends.get("triton").experimental  # until a GPU run has verified it


# ---- on a GPU ----

def _every_config():
    from convgru_ext.backends.triton.ops import TILES

    return [(math, tile) for math, kept in TILES.items() for tile in kept]


@GPU
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("math,tile", _every_config() if torch.cuda.is_available() else [],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
def test_gpu_every_configuration_we_keep(math, tile, reset, rng):
    """Each configuration autotuning may pick, forced, against the reference (sequence and cell)."""
    ops = _ops()
    m, n, k, stages = tile
    config = triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=ops.NUM_WARPS, num_stages=stages)
    with tf32(math == "tf32"):
        with ops.forced_config(config):
            for T in (3, 1):
                case = Case(T=T, B=2, Cin=24, C=40, H=13, W=12, reset=reset, dilation=(1, 2))
                if math == "f64":
                    _parity(case, torch.float64, rng, "cuda")
                elif math == "ieee":
                    _parity(case, torch.float32, rng, "cuda")
                elif math == "tf32":
                    _tf32_parity(case, rng)
                else:
                    lowp_parity("triton", case, torch.bfloat16, "cuda", rng)


def _tf32_parity(case, rng):
    inputs = make_inputs(case, torch.float64, "cuda", rng)
    want = run_with_grads("reference", inputs, case, rng)
    f32 = {k: None if v is None else v.detach().float().requires_grad_() for k, v in inputs.items()}
    got = run_with_grads("triton", f32, case, rng, upstream=want["_upstream"])
    failures = [f"{k}: {rel_err(got[k], want[k]):.2e}" for k in want
                if not k.startswith("_") and not rel_err(got[k], want[k]) <= TF32_TOL]
    assert not failures, f"triton tf32 {case}: {failures}"
