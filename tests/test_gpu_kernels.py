"""What every GPU kernel backend ("cuda", "triton") must do on a GPU, beyond the shared parity tests.

Low precision on sizes where the kernels take their fast paths (aligned channels, full
tiles), float32 with TF32 on and off as the convolutions' TF32 flag says, capture
in a CUDA graph (the kernels run on PyTorch's current stream), and indices past 2**31
elements.  Each test skips with a reason where the backend cannot run (no GPU, no
extension, no Triton).
"""

import pytest
import torch

import convgru_ext
from convgru_ext._tf32 import tf32
from helpers import (
    GPU,
    LOWP_FACTOR,
    LOWP_SLACK,
    TF32_TOL,
    Case,
    compare,
    lowp_parity,
    make_inputs,
    op_args,
    rel_err,
    run_with_grads,
    skip_unusable,
)

GPU_BACKENDS = ("cuda", "triton")
LOWP_CASES = {
    "odd": Case(),
    "aligned": Case(T=3, B=2, Cin=16, C=32, H=20, W=19, dilation=(1, 2)),
    "cell": Case(T=1, B=2, Cin=32, C=64, H=12, W=17),
}


@GPU
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("reset", ["before", "after"])
@pytest.mark.parametrize("case_name", list(LOWP_CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_gpu_low_precision_matches_the_reference(backend, dtype, case_name, reset, rng):
    """Every output and gradient vs the float64 reference, within LOWP_FACTOR x the eager reference's error."""
    skip_unusable(backend, "cuda", dtype)
    lowp_parity(backend, Case(**{**LOWP_CASES[case_name].__dict__, "reset": reset}), dtype, "cuda", rng)


@GPU
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("reset", ["before", "after"])
def test_gpu_tf32_follows_the_cudnn_flag(backend, reset, rng):
    """Convolution TF32 off: float32 exact to REL_TOL; on: within TF32's error, and not the same numbers."""
    skip_unusable(backend, "cuda", torch.float32)
    case = Case(T=3, B=2, Cin=16, C=32, H=20, W=19, reset=reset)
    inputs = make_inputs(case, torch.float64, "cuda", rng)
    want = run_with_grads("reference", inputs, case, rng)
    f32 = {k: None if v is None else v.detach().float().requires_grad_() for k, v in inputs.items()}
    results = {}
    for flag in (False, True):
        with tf32(flag):
            results[flag] = run_with_grads(backend, f32, case, rng, upstream=want["_upstream"])
    compare(results[False], want, torch.float32, label=f"{backend} f32, TF32 off")
    names = [k for k in want if not k.startswith("_")]
    for name in names:
        assert rel_err(results[True][name], want[name]) <= TF32_TOL, name
    assert not torch.equal(results[True]["output"], results[False]["output"]), "TF32 on changed nothing"


@GPU
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("T", [2, 1], ids=["sequence", "cell"])
def test_gpu_cuda_graph_capture(backend, T, rng):
    """The kernels run on PyTorch's current stream (capture would fail, or replay differ, otherwise)."""
    skip_unusable(backend, "cuda", torch.float32)
    case = Case(T=T, B=2, Cin=8, C=16, H=10, W=12)
    _, args, _, _ = op_args(case, torch.float32, rng)
    args = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    forward = getattr(torch.ops.convgru_ext, f"{backend}_forward")
    want, _ = forward(*args)  # also autotunes / sets kernel attributes before the capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        forward(*args)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured, _ = forward(*args)
    graph.replay()
    torch.cuda.synchronize()
    assert rel_err(captured, want) < 1e-6


@GPU
@pytest.mark.slow
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_indices_beyond_2_to_the_31(backend, rng):
    """B*H*W*3C > 2**31 elements (reset "before", bf16, ~25 GB): the first and the last frame vs the reference."""
    skip_unusable(backend, "cuda", torch.bfloat16)
    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip(f"needs 40 GiB of free GPU memory; {free / 2**30:.0f} GiB free")
    B, Cin, C, H, W = 183, 4, 64, 256, 256
    assert B * H * W * 3 * C > 2**31
    dtype = torch.bfloat16
    inputs = make_inputs(Case(T=1, B=2, Cin=Cin, C=C, H=H, W=W), torch.float64, "cuda", rng)  # frames 0 and B-1
    x = torch.randn(1, B, Cin, H, W, device="cuda", dtype=dtype)
    h0 = torch.randn(B, C, H, W, device="cuda", dtype=dtype)
    x[:, [0, -1]] = inputs["x"].detach().to(dtype)
    h0[[0, -1]] = inputs["h0"].detach().to(dtype)
    x.requires_grad_()
    h0.requires_grad_()
    weights = {k: inputs[k].detach().to(dtype) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    out, _ = convgru_ext.convgru_sequence(x, h0, **weights, backend=backend)
    g_out = torch.randn(2, C, H, W, generator=rng, dtype=torch.float64).to("cuda")
    loss = (out[0, [0, -1]].double() * g_out).sum()
    dx, dh0 = torch.autograd.grad(loss, [x, h0])
    got = {"output": out[:, [0, -1]], "grad_x": dx[:, [0, -1]], "grad_h0": dh0[[0, -1]]}
    del out, dx, dh0, x, h0
    torch.cuda.empty_cache()

    def reference(ins):
        o, _ = convgru_ext.convgru_sequence(ins["x"], ins["h0"], **{k: ins[k] for k in weights}, backend="reference")
        gx, gh = torch.autograd.grad((o.double() * g_out).sum(), [ins["x"], ins["h0"]])
        return {"output": o.detach(), "grad_x": gx, "grad_h0": gh}

    want = reference(inputs)
    eager = reference({k: v.detach().to(dtype).requires_grad_() for k, v in inputs.items()})
    for name in got:
        tol = LOWP_FACTOR * rel_err(eager[name], want[name]) + LOWP_SLACK
        assert rel_err(got[name], want[name]) <= tol, name


# ---- the Triton backend's CUDA graphs (convgru_ext/backends/triton/graphs.py): what only a GPU can show

def _triton_graphs():
    skip_unusable("triton", "cuda", torch.float32)
    from convgru_ext.backends.triton import config, graphs

    graphs.clear()
    return graphs, config


def _triton_forward(inputs, device=None):
    values = [None if v is None else v.detach().to(device) if device else v.detach() for v in inputs.values()]
    out, _ = convgru_ext.convgru_sequence(*values, backend="triton")
    return out


def _triton_eager(inputs, config, device=None):
    with config.configured(graphs=False):
        return _triton_forward(inputs, device)


@GPU
def test_gpu_triton_graph_captured_under_inference_mode_serves_normal_calls(rng):
    graphs, config = _triton_graphs()
    case = Case(T=2, B=2, Cin=8, C=16, H=9, W=7)
    first = graphs.EAGER_CALLS + 1
    runs = [make_inputs(case, torch.float32, "cuda", rng) for _ in range(first + 2)]
    with config.configured(graphs=True), torch.inference_mode():
        for ins in runs[:first]:
            _triton_forward(ins)  # eager calls, then the capture
    with config.configured(graphs=True), torch.no_grad():
        got = [_triton_forward(ins) for ins in runs[first:]]
    assert graphs.held() == 1
    for ins, out in zip(runs[first:], got):
        assert torch.equal(out, _triton_eager(ins, config))
    graphs.clear()


@GPU
def test_gpu_triton_graph_on_a_device_that_is_not_current(rng):
    """Tensors on cuda:1 with cuda:0 current: the capture must record the launches (on cuda:1's stream)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    graphs, config = _triton_graphs()
    case = Case(T=2, B=2, Cin=8, C=16, H=9, W=7)
    runs = [make_inputs(case, torch.float32, "cpu", rng) for _ in range(graphs.EAGER_CALLS + 3)]
    with torch.cuda.device(0), config.configured(graphs=True), torch.no_grad():
        got = [_triton_forward(ins, "cuda:1") for ins in runs]
        for ins, out in zip(runs, got):
            assert out.device == torch.device("cuda", 1)
            assert torch.equal(out, _triton_eager(ins, config, "cuda:1")), "a replay returned stale results"
    assert graphs.held() == 1
    graphs.clear()


@GPU
def test_gpu_triton_graph_calls_on_two_streams_do_not_race(rng):
    """One shape on two streams, the first one held up: the second's copy-in must not reach the first's
    statics before its replay reads them."""
    graphs, config = _triton_graphs()
    case = Case(T=2, B=2, Cin=8, C=16, H=9, W=7)
    a, b = make_inputs(case, torch.float32, "cuda", rng), make_inputs(case, torch.float32, "cuda", rng)
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    with config.configured(graphs=True), torch.no_grad():
        for s in (s1, s2):  # eager calls, then the capture, on each stream
            with torch.cuda.stream(s):
                for _ in range(graphs.EAGER_CALLS + 1):
                    _triton_forward(a)
        torch.cuda.synchronize()
        with torch.cuda.stream(s1):
            torch.cuda._sleep(200_000_000)  # holds s1 up (about 0.1 s of clock cycles)
            got_a = _triton_forward(a)
        with torch.cuda.stream(s2):
            got_b = _triton_forward(b)
        torch.cuda.synchronize()
        assert torch.equal(got_a, _triton_eager(a, config)), "s2's inputs reached s1's replay"
        assert torch.equal(got_b, _triton_eager(b, config))
    graphs.clear()


@GPU
def test_gpu_triton_graph_capture_survives_another_threads_cuda_calls(rng):
    """A thread allocating pinned memory (as a DataLoader's pin-memory thread does) while a loop is captured:
    in the global capture mode its CUDA calls break the capture (which falls back, with a warning)."""
    import threading
    import warnings

    graphs, config = _triton_graphs()
    case = Case(T=4, B=2, Cin=8, C=16, H=9, W=7)
    ins = make_inputs(case, torch.float32, "cuda", rng)
    stop = threading.Event()

    def pin():
        size = 1 << 16
        while not stop.is_set():
            torch.empty(size, pin_memory=True)
            size += 4096  # a new size each time: the host allocator's cache does not answer it

    with config.configured(graphs=True), torch.no_grad():
        for _ in range(graphs.EAGER_CALLS):
            _triton_forward(ins)
        thread = threading.Thread(target=pin, daemon=True)
        thread.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                for _ in range(3):
                    got = _triton_forward(ins)
        finally:
            stop.set()
            thread.join()
        assert graphs.held() == 1
        assert torch.equal(got, _triton_eager(ins, config))
    graphs.clear()
