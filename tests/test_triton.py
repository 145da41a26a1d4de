"""The Triton backend (convgru_ext/backends/triton/) beyond the shared parity/gradcheck/opcheck tests.

Without a GPU (CI) the kernels run through Triton's interpreter (conftest sets
TRITON_INTERPRET=1): tiling across several pixel, channel and K blocks with partial
tiles, the cell path (x convolved inside the step kernels, nothing hoisted), the launch
budget per step, the configurations' constraints and the backend's error messages.  Every
kernel is also compiled ahead of time for sm_90 (no GPU needed), which the interpreter cannot
stand in for.
With a GPU: every configuration autotuning may pick, run on its own against the reference.
"""

import contextlib
import dataclasses
import itertools
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



@pytest.fixture
def triton_config():
    """``triton_config(**switches)``: set Triton switches for the rest of one test, through
    ``config.configured`` (restored after it)."""
    from convgru_ext.backends.triton import config

    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(config.configured(**changes))

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
SMALL_TILES = (32, 16, 16, 1, 4)  # (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps)
TILED = Case(T=2, B=2, Cin=18, C=20, H=7, W=9)
TILED_VARIANTS = [  # (T, reset, kernel, dilation)
    (2, "before", (3, 3), (1, 1)), (2, "after", (3, 3), (1, 1)), (1, "before", (3, 3), (1, 1)),
    (1, "after", (3, 3), (1, 1)), (2, "before", (1, 5), (2, 2)), (1, "after", (5, 1), (1, 2)),
    # more than 32 taps: the K loop tests each tap's pixels itself (no precomputed bit per tap)
    (2, "before", (7, 5), (1, 1)), (1, "after", (5, 7), (1, 2)),
]


@pytest.mark.parametrize("T,reset,kernel,dilation", TILED_VARIANTS,
                         ids=[f"{'cell' if v[0] == 1 else 'seq'}-{v[1]}-k{v[2][0]}x{v[2][1]}-d{v[3][0]}x{v[3][1]}"
                              for v in TILED_VARIANTS])
def test_many_tiles_with_partial_ones(T, reset, kernel, dilation, rng):
    ops = _ops()
    case = Case(**{**TILED.__dict__, "T": T, "reset": reset, "kernel": kernel, "dilation": dilation})
    with ops.forced_tile(SMALL_TILES):
        _parity(case, torch.float64, rng)


#: FWD_RZ's 128-pixel 4-warp tile (ops.RZ_M), which takes C as a constant and copies A through L1
#: (ops.l1_taps): two pixel blocks with a partial one (M = 140), one K chunk (C = 64) or a partial one
#: (C = 20, Cin = 18), cell and sequence calls, a dilated 1 x 5 kernel
RZ_VARIANTS = [  # (T, C, Cin, kernel, dilation)
    (2, 64, 64, (3, 3), (1, 1)), (1, 64, 64, (3, 3), (1, 1)), (2, 20, 18, (3, 3), (1, 1)),
    (1, 20, 18, (1, 5), (2, 2)),
]


@pytest.mark.parametrize("T,C,Cin,kernel,dilation", RZ_VARIANTS,
                         ids=[f"{'cell' if v[0] == 1 else 'seq'}-C{v[1]}-k{v[3][0]}x{v[3][1]}-d{v[4][0]}x{v[4][1]}"
                              for v in RZ_VARIANTS])
def test_fwd_rz_wide_tile_with_l1_copies(T, C, Cin, kernel, dilation, rng, triton_config):
    ops = _ops()
    tile = (ops.RZ_M, 64, 64, 3, ops.NUM_WARPS)
    assert ops.l1_taps(ops.K.FWD_RZ.value, tile) and not ops.l1_taps(ops.K.FWD_N.value, tile)
    a_l1 = []
    real = ops.default_launcher

    class Seen:  # the real launch; records each FWD_RZ launch's A_L1
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                if kwargs.get("KIND") == ops.K.FWD_RZ.value:
                    a_l1.append(kwargs["A_L1"])
                return real(self.kernel)[grid](*args, **kwargs)
            return launch

    triton_config(launcher=Seen)
    case = Case(T=T, B=1, Cin=Cin, C=C, H=10, W=14, kernel=kernel, dilation=dilation)
    with ops.forced_tile(tile):
        _parity(case, torch.float64, rng)
    assert a_l1 and set(a_l1) == {C}  # C as the constant, in every FWD_RZ launch


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
def test_launch_budget(reset, per_step, T, triton_config, rng):
    """Forward: 2 step kernels per step ("before") or 1 ("after"); backward the same, plus one init kernel."""
    ops = _ops()
    launches = []
    real = ops.default_launcher

    class Counted:  # the real launch, counted per step kernel (the init kernel has no KIND)
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                if "KIND" in kwargs:
                    launches.append(kwargs["KIND"])
                return real(self.kernel)[grid](*args, **kwargs)
            return launch

    triton_config(launcher=Counted)
    case = Case(T=T, reset=reset, B=1, C=4, Cin=3, H=5, W=6)
    inputs = make_inputs(case, torch.float64, _device(), rng)
    out, _ = convgru_ext.convgru_sequence(*inputs.values(), reset=reset, backend="triton")
    assert len(launches) == per_step[0] * T
    launches.clear()
    out.sum().backward()
    assert len(launches) == per_step[1] * T


def test_configurations_keep_to_what_is_safe(triton_config):
    """4 warps by default; the 8-warp tiles (pytorch#173068 saw a miscompile at 8) only with
    CONVGRU_TRITON_8_WARPS=1.  tl.dot's minimum block of 16 wherever tl.dot runs (everything but
    float64), at most 64 x 64 outputs per gate at 4 warps (but bfloat16 FWD_RZ's RZ_M x 64 tile, at 3
    stages alone) and 128 x 64 at 8, and autotuning times at most 3 of the kept tiles."""
    ops = _ops()
    assert ops.NUM_WARPS == 4 and not ops.CONFIG.wide  # the default until a GPU has run the 8-warp tiles
    triton_config(interpreter_tiles=False)  # the GPU's tiles
    for math in ops.MATHS:
        for ng in (1, 2, 3):
            kept = ops.kept_tiles(math, ng)
            assert kept, (math, ng)
            for m, n, k, stages, warps in kept:
                if math != "f64":
                    assert min(m, n, k) >= 16
                rz = (math, ng, m, n, stages, warps) == ("bf16", 2, ops.RZ_M, 64, 3, 4)
                assert warps in (4, 8) and (n * m <= 64 * 64 * warps // 4 or rz) and stages >= 1
            for M, C in ((1, 1), (126, 20), (8 * 46 * 62, 128), (4 * 128 * 128, 64), (16 * 56 * 56, 256)):
                cands = ops.candidates(math, ng, M, C)
                assert 1 <= len(cands) <= 3 and set(cands) <= set(kept)
                assert all(t[4] == 4 for t in cands)


def test_tiles_without_autotuning_follow_the_shape_bucket(triton_config):
    """BLOCK_N spans every channel of a gate up to the mode's widest (A read once per tap for all gates),
    from the shape alone; always a kept tile; the 8-warp tiles only when asked for and the grid fills a
    wave of the GPU's SMs (the device's count, the H200's 132 where none is visible)."""
    ops = _ops()
    triton_config(interpreter_tiles=False)  # the GPU's choice (the interpreter's are larger)
    assert ops.tile_for("bf16", 2, 16 * 56 * 56, 64) == (128, 64, 64, 3, 4)  # video's FWD_RZ: 392 programs
    assert ops.tile_for("bf16", 1, 16 * 56 * 56, 64) == (64, 64, 64, 3, 4)  # FWD_N: the 128-pixel tile spills
    assert ops.tile_for("f16", 2, 16 * 56 * 56, 64) == (64, 64, 64, 3, 4)  # float16 spills on Triton 3.6
    assert ops.tile_for("bf16", 2, 64 * 64, 64) == (64, 64, 64, 3, 4)  # 32 programs of 128: not a wave
    assert ops.tile_for("bf16", 2, 16 * 56 * 56, 96) == (64, 64, 32, 3, 4)  # C not a multiple of 64
    assert ops.tile_for("bf16", 2, 64 * 64, 32) == (64, 32, 32, 3, 4)  # 64 channels per K chunk would be padding
    assert ops.tile_for("bf16", 3, 64 * 64, 20) == (64, 32, 32, 3, 4)
    assert ops.tile_for("tf32", 3, 100, 64) == (64, 32, 32, 3, 4)  # TF32 spills at 3 x 64 with 4 warps
    assert ops.tile_for("bf16", 2, 100, 40, aligned=False) == (64, 32, 32, 3, 4)
    triton_config(wide=True)
    assert ops.tile_for("bf16", 3, 16 * 56 * 56, 64) == (128, 64, 64, 3, 8)
    assert ops.tile_for("tf32", 3, 16 * 56 * 56, 64) == (128, 32, 32, 3, 8)  # 3.6 spills at 128 x 64
    assert ops.tile_for("bf16", 3, 64 * 64, 64) == (64, 64, 64, 3, 4)  # 32 programs of 128: not a wave
    assert ops.tile_for("bf16", 3, 16 * 56 * 56, 64, sms=400)[4] == 4  # 392 programs: not a wave of 400 SMs
    assert ops.sm_count(torch.device("cpu")) == ops.DEFAULT_SMS == 132
    assert ops.tile_for("f32", 3, 16 * 56 * 56, 64)[4] == 4
    for wide in (False, True):
        triton_config(wide=wide)
        for math in ops.MATHS:
            for ng in (1, 2, 3):
                for M, C in ((1, 1), (126, 20), (8 * 46 * 62, 128), (4 * 128 * 128, 64), (16 * 56 * 56, 256)):
                    for aligned in (True, False):
                        tile = ops.tile_for(math, ng, M, C, aligned)
                        assert tile in ops.kept_tiles(math, ng, aligned=aligned), (math, ng, M, C, aligned)


def test_the_cost_model_credits_l1_only_where_a_kernel_copies_a_through_it(triton_config):
    """model.py: A's taps served by L1, and FWD_RZ's epilogue read of h an L1 hit, only for the launches whose
    tile ops.l1_taps names (the compile report shows their A copies allocating in L1) and only given the frame;
    the other kernels are charged every tap's A tile.  Video's FWD_RZ step reaches issue 20's target: at most
    half of the 211.9 MB of its 64-pixel tiles."""
    ops = _ops()
    from convgru_ext.backends.triton import model

    triton_config(interpreter_tiles=False)
    M, C, e = 16 * 56 * 56, 64, 2
    frame = dict(kernel=(3, 3), width=56, dilation=(1, 1))
    with_frame = {r["kernel"]: r for r in model.launches("bf16", e, M, C, C, 9, False, False, **frame)}
    without = {r["kernel"]: r for r in model.launches("bf16", e, M, C, C, 9, False, False)}
    assert with_frame["FWD_N"] == without["FWD_N"]  # FWD_N's A copies bypass L1: no credit
    ctas = -(-M // ops.RZ_M)
    b_bytes, epilogue = ctas * 9 * C * 2 * C * e, M * 6 * C * e
    assert without["FWD_RZ"]["l2_bytes"] == ctas * 9 * ops.RZ_M * C * e + b_bytes + epilogue
    span = 128 + 2 + 2 * 56  # each kernel row's 130 pixels, the next row's 56 pixels on
    assert model.l1_span(128, (3, 3), 56, (1, 1)) == span
    assert with_frame["FWD_RZ"]["l2_bytes"] == ctas * span * C * e + b_bytes + M * 5 * C * e  # h read: L1
    assert with_frame["FWD_RZ"]["l2_bytes"] <= 211.9e6 / 2
    # rows of a wide frame do not overlap: each kernel row's pixels once
    assert model.l1_span(128, (3, 3), 500, (1, 1)) == 3 * 130
    assert model.l1_span(128, (3, 3), 56, (2, 2)) == 132 + 2 * 112
    for math in ("f16", "tf32", "f32", "f64"):  # no L1 tile: no credit
        assert model.launches(math, e, M, C, C, 9, False, False, **frame) == model.launches(math, e, M, C, C, 9,
                                                                                            False, False)


def test_math_mode_follows_the_dtype_and_the_convolution_tf32_flag():
    ops = _ops()
    for flag in (False, True):
        with tf32(flag):
            assert ops.math_mode(torch.float32) == ("tf32" if flag else "f32")
    assert [ops.math_mode(d) for d in (torch.bfloat16, torch.float16, torch.float64)] == ["bf16", "f16", "f64"]


def test_weight_packing():
    """K-contiguous, in the K loop's order (tap, chunk, channel block, gate), and zero-padded, so that no B
    load needs a mask."""
    ops = _ops()
    w = torch.randn(9, 4, 3, 5, dtype=torch.float64)  # C = 3, K = 4, taps = 15
    fwd = ops.pack_forward(w, 2, 3)  # channels in blocks of 2 (padded to 4), K in chunks of 3 (padded to 6)
    assert fwd.shape == (15, 2, 2, 3, 2, 3)
    assert torch.equal(fwd[7, 1, 1, 1, 0, 0], w[1 * 3 + 2, 3, 1, 2])  # tap 7 = (1, 2), k 3, gate z, channel 2
    for tap, kc, nb, g, c, k in itertools.product(*map(range, fwd.shape)):
        channel, k_in = nb * 2 + c, kc * 3 + k
        want = w[g * 3 + channel, k_in, tap // 5, tap % 5] if channel < 3 and k_in < 4 else 0.0
        assert fwd[tap, kc, nb, g, c, k] == want, (tap, kc, nb, g, c, k)
    wh = torch.randn(9, 3, 3, 5, dtype=torch.float64)
    bwd = ops.pack_backward(wh, 16, 32)
    assert bwd.shape == (15, 16, 32)
    assert torch.equal(bwd[7, 2, 5], wh[5, 2, 1, 2])  # tap 7 flipped is tap 7 (the centre of 3x5)
    assert torch.equal(bwd[0, 1, 4], wh[4, 1, 2, 4])  # tap 0 reads the last tap
    assert bwd[:, 3:].abs().sum() == 0 and bwd[:, :, 9:].abs().sum() == 0


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
                           "--quick", "--max-spill", "0"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_compiled_ops_trace_through_wrap_triton_without_a_gpu():
    """The path a GPU takes (a triton_op, launches through wrap_triton), which the interpreter never runs:
    tests/trace_triton.py traces every dtype, reset mode and call kind over fake CUDA tensors."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = os.path.join(os.path.dirname(__file__), "trace_triton.py")
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 of 16 traces failed" in done.stdout


def test_the_op_bodies_annotations_say_the_schemas():
    """torch 2.11's triton_op (the lent GPU's torch) infers the schema from the annotations and ignores
    ``schema=``: the annotations must say what FORWARD_SCHEMA / BACKWARD_SCHEMA say (int lists infer as SymInt)."""
    for body, schema in ((_op.compose_forward(None), _op.FORWARD_SCHEMA),
                         (_op.compose_backward(None), _op.BACKWARD_SCHEMA)):
        inferred = torch.library.infer_schema(body, mutates_args=())
        assert inferred.replace("SymInt", "int") == schema


@pytest.mark.parametrize("version", ["3.6", "3.8"])
def test_committed_compile_report_covers_every_kept_kernel(version):
    """benchmarks/results/compile/triton-<version>-sm90.json (Triton 3.6 is the lent GPU's, 3.8 CI's) holds
    every kernel variant the backend can launch today, with no spill and at most one full pipeline
    drain per main loop: a change of the tiles or kernels without a new report fails here."""
    import json

    from convgru_ext.backends.triton import compile_report

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "compile",
                        f"triton-{version}-sm90.json")
    with open(path) as f:
        report = json.load(f)
    assert report["meta"]["triton"].startswith(version) and report["meta"]["arch"] == 90
    assert compile_report.failures(report["rows"]) == [] == report["missed"]
    assert all("sass_per_mma" in r and "load_bytes_per_mma" in r and "l1_bytes_per_mma" in r
               for r in report["rows"]), "regenerate the report"
    # A's copies allocate in L1 exactly in the variants ops.l1_taps names (the cost model's L1 credit); at
    # BLOCK_N = 64 every B copy is 16 bytes (narrower B tiles copy 8 bytes a thread, which allocate in L1 too)
    for r in report["rows"]:
        if r["aligned"] and r["tensor_cores"] == "wgmma" and r["tile"][1] == 64:
            assert (r["l1_bytes_per_mma"] > 0) == (" C=" in r["variant"]), r["variant"]
    committed = {r["variant"] for r in report["rows"]}
    missing = [v.label() for v in compile_report.default_variants() if v.label() not in committed]
    assert not missing, f"regenerate the report (see benchmarks/results/compile/README.md): {missing[:5]}"
    # the cost model's section says what the model says today (it depends on no Triton version)
    assert report["model"] == json.loads(json.dumps(compile_report.model_rows())), \
        "rewrite the model's section: compile_report --model-only (benchmarks/results/compile/README.md)"


def test_compile_report_model_only_rewrites_the_model_section_alone(tmp_path):
    """``--model-only`` compiles nothing: the variants' rows stay as they were, the model's section is today's,
    with the eager peer's bound beside each forward step."""
    import json
    import shutil

    from convgru_ext.backends.triton import compile_report

    committed = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "compile", "triton-3.8-sm90")
    out = str(tmp_path / "report")
    for ext in (".json", ".md"):
        shutil.copy(committed + ext, out + ext)
    with open(out + ".json") as f:
        before = json.load(f)
    before_model, before["model"] = before["model"], [{"workload": "stale"}]
    with open(out + ".json", "w") as f:
        json.dump(before, f)
    assert compile_report.main(["--model-only", "--out", out]) == 0
    with open(out + ".json") as f:
        after = json.load(f)
    assert after["rows"] == before["rows"] and after["meta"] == before["meta"] and after["model"] == before_model
    text = open(out + ".md").read()
    assert text == open(committed + ".md").read() and "| video | eager peer's step |" in text


def _graph_runs(case, calls, rng, device):
    """``calls`` forward+backward runs on fresh inputs of ``case``: [(inputs, results)]."""
    runs = []
    for _ in range(calls):
        inputs = make_inputs(case, torch.float64 if device == "cpu" else torch.float32, device, rng)
        runs.append((inputs, run_with_grads("triton", inputs, case, rng, upstream=runs[0][1]["_upstream"]
                                            if runs else None)))
    return runs


def _replay_equals_eager(triton_config, rng, device):
    from convgru_ext.backends.triton import graphs

    graphs.clear()
    triton_config(graphs=True)
    for i, reset in enumerate(("before", "after")):
        case = Case(T=2, B=2, C=4, Cin=3, H=4, W=5, reset=reset)
        runs = _graph_runs(case, graphs.EAGER_CALLS + 2, rng, device)  # eager (compiles, timed), capture, replay
        assert graphs.held() == 2 * (i + 1), "one forward and one backward graph per shape"
        triton_config(graphs=False)
        for inputs, got in runs:  # every result kept its own values: nothing aliases a later call's
            want = run_with_grads("triton", inputs, case, rng, upstream=runs[0][1]["_upstream"])
            for key in want:
                if not key.startswith("_"):
                    assert torch.equal(got[key], want[key]), f"{reset} {key}: replayed loop != eager loop"
        triton_config(graphs=True)
    triton_config(max_graphs=2)
    for C in range(1, 4):  # new shapes: new captures, the least recently used dropped
        _graph_runs(Case(T=2, B=1, C=C, Cin=2, H=3, W=3), graphs.EAGER_CALLS + 1, rng, device)
        assert graphs.held() <= graphs.CONFIG.max_graphs
    graphs.clear()


def test_graph_replay_matches_the_eager_loop(rng, triton_config):
    """The capture/replay plumbing of graphs.py on the CPU, with a stand-in graph that re-runs the loop
    into the captured outputs: the static inputs take each call's values, every result is a copy that
    no later call overwrites, each shape gets its own graph, and at most ``max_graphs`` are held."""
    _ops()
    from convgru_ext.backends.triton import graphs

    if torch.cuda.is_available():
        pytest.skip("covered by test_gpu_graph_replay_matches_the_eager_loop with real CUDA graphs")
    triton_config(graph=graphs.RerunGraph)
    triton_config(graph_devices=("cpu",))
    _replay_equals_eager(triton_config, rng, "cpu")


def test_graphs_stand_aside_where_they_cannot_capture(triton_config):
    from convgru_ext.backends.triton import graphs

    triton_config(graphs=True)
    x = torch.randn(2, 3, 4)
    assert graphs._why_eager((x,)) == "tensors on cpu"
    triton_config(graph_devices=("cpu",))
    assert graphs._why_eager((x,)) is None
    assert "strides" in graphs._why_eager((x.expand(2, 2, 3, 4),))
    assert "strides" in graphs._why_eager((x[:, :, ::2],))
    triton_config(graphs=False)
    assert graphs._why_eager((x,)) == "CONVGRU_TRITON_GRAPHS=0"


def test_backend_is_experimental_so_auto_skips_it():
    assert backends.get("triton").experimental  # until a GPU run has verified it


# ---- on a GPU ----

def _every_tile():
    from convgru_ext.backends._math import Math
    from convgru_ext.backends.triton.ops import MATHS, kept_tiles

    # every width and warp count at the default depth, and the deeper pipeline at the widest tiles (float16:
    # bfloat16's tiles and code)
    kept = {(math.value, tile) for math in MATHS if math != "f16" for ng in (1, 2, 3) for tile in kept_tiles(math, ng)}
    return sorted((math, t) for math, t in kept
                  if t[3] == MATHS[Math(math)].stages or t[1] == max(u[1] for m, u in kept if m == math))


@GPU
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("math,tile", _every_tile() if torch.cuda.is_available() else [],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
def test_gpu_every_tile_we_keep(math, tile, reset, rng):
    """Each tile the choice or autotuning may launch, forced, against the reference (sequence and cell)."""
    ops = _ops()
    with tf32(math == "tf32"):
        with ops.forced_tile(tile):
            for T in (3, 1):
                case = Case(T=T, B=2, Cin=24, C=40, H=13, W=12, reset=reset, dilation=(1, 2))
                if math == "f64":
                    _parity(case, torch.float64, rng, "cuda")
                elif math == "f32":
                    _parity(case, torch.float32, rng, "cuda")
                elif math == "tf32":
                    _tf32_parity(case, rng)
                else:
                    lowp_parity("triton", case, torch.bfloat16, "cuda", rng)


@GPU
def test_gpu_fwd_rz_wide_tile_where_tile_for_picks_it(rng, triton_config):
    """FWD_RZ's RZ_M-pixel tile with A copied through L1 and C a constant, as video's shape gets it: C = Cin = 64
    (whole K chunks: no channel mask), unforced (the grid fills a wave), sequence and cell, bfloat16."""
    ops = _ops()
    triton_config(graphs=False)
    case = Case(T=3, B=6, Cin=64, C=64, H=56, W=56)  # 147 programs of 128 pixels: a wave of 132 SMs
    assert ops.tile_for("bf16", 2, case.B * case.H * case.W, case.C, sms=ops.sm_count())[0] == ops.RZ_M
    for T in (3, 1):
        lowp_parity("triton", Case(**{**case.__dict__, "T": T}), torch.bfloat16, "cuda", rng)


@GPU
@pytest.mark.parametrize("reset", ["before", "after"])
def test_gpu_kernels_of_more_than_32_taps(reset, rng):
    """The K loop's other A mask (each tap's pixels tested in the loop, no precomputed bits) on the GPU."""
    _ops()
    for T in (3, 1):
        case = Case(T=T, B=2, Cin=24, C=32, H=13, W=12, reset=reset, kernel=(7, 5), dilation=(1, 2))
        lowp_parity("triton", case, torch.bfloat16, "cuda", rng)


@GPU
def test_gpu_graph_replay_matches_the_eager_loop(triton_config, rng):
    """Real CUDA graphs: replay equals the eager loop bit for bit, and many calls do not grow memory."""
    _ops()
    from convgru_ext.backends.triton import graphs

    _replay_equals_eager(triton_config, rng, "cuda")
    case = Case(T=4, B=2, C=16, Cin=8, H=9, W=7)
    _graph_runs(case, 3, rng, "cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    _graph_runs(case, 20, rng, "cuda")
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before + (1 << 20)
    graphs.clear()


def _tf32_parity(case, rng):
    inputs = make_inputs(case, torch.float64, "cuda", rng)
    want = run_with_grads("reference", inputs, case, rng)
    f32 = {k: None if v is None else v.detach().float().requires_grad_() for k, v in inputs.items()}
    got = run_with_grads("triton", f32, case, rng, upstream=want["_upstream"])
    failures = [f"{k}: {rel_err(got[k], want[k]):.2e}" for k in want
                if not k.startswith("_") and not rel_err(got[k], want[k]) <= TF32_TOL]
    assert not failures, f"triton tf32 {case}: {failures}"



def test_switches_change_through_configured_only():
    """config.configured sets fields of the one CONFIG and restores them; an unknown switch is an error."""
    from convgru_ext.backends.triton import config

    before = dataclasses.replace(config.CONFIG)
    with config.configured(wide=not before.wide, max_graphs=3) as changed:
        assert changed is config.CONFIG and config.CONFIG.wide is not before.wide and config.CONFIG.max_graphs == 3
    assert config.CONFIG == before
    with pytest.raises(TypeError, match=r"unknown Triton switches \['WIDE'\]"):
        with config.configured(WIDE=True):
            pass


# ---- the graph bugs of issue 20 (the stand-in graph where the CPU can show them; tests/test_gpu_kernels.py where
# only a GPU can)

def _stand_in_graphs(triton_config, graph=None):
    """Graphs on the CPU through the stand-in (skips with a GPU: real graphs cover it there)."""
    _ops()
    from convgru_ext.backends.triton import graphs

    if torch.cuda.is_available():
        pytest.skip("a GPU runs real CUDA graphs: tests/test_gpu_kernels.py")
    graphs.clear()
    triton_config(graphs=True, graph=graph or graphs.RerunGraph, graph_devices=("cpu",))
    return graphs


def _forward(inputs, case):
    out, _ = convgru_ext.convgru_sequence(*[v.detach() if v is not None else None for v in inputs.values()],
                                          reset=case.reset, backend="triton")
    return out


def test_graph_captured_under_inference_mode_serves_later_normal_calls(rng, triton_config):
    """A capture made under inference_mode must not make inference tensors its statics: a later normal call
    would fail copying its inputs in ("Inplace update to inference tensor outside InferenceMode")."""
    graphs = _stand_in_graphs(triton_config)
    case = Case(T=2, B=1, C=4, Cin=3, H=4, W=5)
    first = graphs.EAGER_CALLS + 1
    runs = [make_inputs(case, torch.float64, "cpu", rng) for _ in range(first + 2)]
    with torch.inference_mode():
        for ins in runs[:first]:
            _forward(ins, case)  # eager calls, then the capture
    assert graphs.held() == 1
    with torch.no_grad():
        got = [_forward(ins, case) for ins in runs[first:]]  # replays, outside inference mode
    triton_config(graphs=False)
    for ins, out in zip(runs[first:], got):
        assert torch.equal(out, _forward(ins, case))
    graphs.clear()


def test_graph_calls_from_two_threads_do_not_share_statics_mid_call(rng, triton_config):
    """One shape called from two threads: a call's copy-in, replay and copy-out must not interleave with
    another's (the second call's inputs would land in the statics the first one's replay reads)."""
    import threading
    import time

    from convgru_ext.backends.triton import graphs as g

    replaying = threading.Event()

    class SlowGraph(g.RerunGraph):  # a replay that takes a while, as a GPU's does (asynchronously)
        def replay(self):
            replaying.set()
            time.sleep(0.5)
            super().replay()

    graphs = _stand_in_graphs(triton_config, SlowGraph)
    case = Case(T=2, B=1, C=4, Cin=3, H=4, W=5)
    a, b = make_inputs(case, torch.float64, "cpu", rng), make_inputs(case, torch.float64, "cpu", rng)
    with torch.no_grad():
        for _ in range(graphs.EAGER_CALLS + 1):
            _forward(a, case)  # eager calls, then the capture
        replaying.clear()
        got = {}
        thread = threading.Thread(target=lambda: got.setdefault("a", _forward(a, case)))
        thread.start()
        replaying.wait(10)
        got["b"] = _forward(b, case)
        thread.join()
        triton_config(graphs=False)
        assert torch.equal(got["a"], _forward(a, case)), "the first call's result holds the second call's inputs"
        assert torch.equal(got["b"], _forward(b, case))
    graphs.clear()


def test_cuda_graph_captures_on_the_tensors_device_in_thread_local_mode(monkeypatch):
    """graphs.CudaGraph captures on a stream of the tensors' device (not the current device's: the capture
    would come out empty), with that device current, in "thread_local" mode (another thread's CUDA calls,
    such as a DataLoader's pin-memory thread, must not break the capture).  The CUDA calls are recorded
    here; tests/test_gpu_kernels.py runs them for real."""
    from convgru_ext.backends.triton import graphs

    seen = {}
    device = torch.device("cuda", 1)

    class Recorder:
        def __init__(self, name, *args, **kwargs):
            seen[name] = (args, kwargs)

        def __enter__(self):
            seen.setdefault("order", []).append(self)
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: "graph")
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **k: ("stream", a, k))
    monkeypatch.setattr(torch.cuda, "device", lambda *a, **k: Recorder("device", *a, **k))
    monkeypatch.setattr(torch.cuda, "graph", lambda *a, **k: Recorder("graph", *a, **k))
    captured = graphs.CudaGraph(lambda: (seen.setdefault("ran", list(seen.get("order", []))), None), device)
    assert captured.outputs[1] is None
    assert seen["device"][0] == (device,), "the capture must run with the tensors' device current"
    args, kwargs = seen["graph"]
    assert kwargs.get("capture_error_mode") == "thread_local"
    stream = kwargs.get("stream")
    assert stream is not None and device in stream[1] + tuple(stream[2].values()), \
        "the capture stream must be one of the tensors' device"
    assert [r for r in seen["ran"]] == seen["order"] and len(seen["order"]) == 2, "fn must run inside both"


def _loop(a, b):
    """A stand-in loop for graphs.run: two outputs."""
    return a * 2, a + b


def _runs(graphs, calls, gpu_us=None):
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    return [graphs.run(_loop, (a, b), (), (), gpu_us=gpu_us) for _ in range(calls)], (a, b)


def test_graphs_only_where_the_host_takes_longer_than_the_gpu(triton_config):
    """The rule of graphs.py: the second call's host time against the model's GPU time of the call plus the
    graph's copies; a key whose graph would hold more than max_graph_bytes stays eager too."""
    graphs = _stand_in_graphs(triton_config)
    calls = graphs.EAGER_CALLS + 2
    _runs(graphs, calls, gpu_us=lambda: 1e12)  # GPU-bound
    assert graphs.held() == 0 and len(graphs.eager_reasons()) == 1 and "GPU-bound" in graphs.eager_reasons()[0]
    graphs.clear()
    results, (a, b) = _runs(graphs, calls, gpu_us=lambda: 0.0)  # host-bound
    assert graphs.held() == 1 and graphs.eager_reasons() == []
    for got in results:
        assert torch.equal(got[0], a * 2) and torch.equal(got[1], a + b)
    graphs.clear()
    triton_config(max_graph_bytes=4 * 3 * 4 * 4 - 1)  # 2 inputs + 2 outputs of 3 x 4 float32
    _runs(graphs, calls, gpu_us=lambda: 0.0)
    assert graphs.held() == 0 and "would hold" in graphs.eager_reasons()[0]
    graphs.clear()


def test_replays_copy_out_only_what_is_read_after_the_call(triton_config, rng):
    """Outputs inside ``outputs_unread`` come back uncloned from a replay (the others are fresh copies); a
    Triton call that needs no gradient marks its gates so, one that needs a gradient does not."""
    graphs = _stand_in_graphs(triton_config)
    with graphs.outputs_unread(1):
        results, _ = _runs(graphs, graphs.EAGER_CALLS + 2, gpu_us=lambda: 0.0)
    replayed = results[-2:]
    assert replayed[0][1] is replayed[1][1] and replayed[0][0] is not replayed[1][0]
    graphs.clear()
    seen = []
    real = graphs.run

    def spy(*args, **kwargs):
        seen.append(getattr(graphs._unread_outputs, "positions", ()))
        return real(*args, **kwargs)

    triton_config(graphs=False)
    case = Case(T=2, B=1, C=4, Cin=3, H=4, W=5)
    inputs = make_inputs(case, torch.float64, "cpu", rng)
    try:
        graphs.run = spy
        with torch.no_grad():
            _forward(inputs, case)
        run_with_grads("triton", inputs, case, rng)
    finally:
        graphs.run = real
    assert seen[0] == (1,) and seen[1] == (), seen
