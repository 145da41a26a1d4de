"""The layout contract of every op's outputs (``convgru_ext/backends/_op.py``, "Layout"), on every machine.

Activations and state gradients are channels-last; weight and bias gradients have exactly the layout of
``torch.empty_like(parameter)``, which the fake kernels promise and ``torch.compile`` trusts.  Layouts are
compared by the strides that place an element (:func:`significant_strides`), except the weight gradients,
which must match raw as well.  oneDNN chooses its kernels, and the layout of what they return, by the CPU's
instruction set: CI runs this file a second time under ``ONEDNN_MAX_CPU_ISA=AVX2`` (the ``onednn`` mark), and
one test here plays the other machine's part by making every convolution backward return channels-last.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from convgru_ext import ConvGRU
from convgru_ext.backends import _hoisted, _layout
from convgru_ext.backends._layout import significant_strides
from convgru_ext.backends._op import fake_backward, fake_forward
from helpers import FUSED_BACKENDS, Case, op_args, skip_unusable

pytestmark = pytest.mark.onednn

NAMES = ("out", "gates", "dx", "dh0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh", "dcontext")
WEIGHTS = ("dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")
CASES = {"1x1": Case(T=2, B=2, Cin=3, C=4, H=5, W=6, kernel=(1, 1)),
         "3x3": Case(T=2, B=1, Cin=3, C=4, H=5, W=6)}


def _op_pairs():
    """(id, forward, backward) of every op pair runnable on CPU tensors here, the CUDA kernels' emulation included."""
    pairs = [pytest.param(name, id=name) for name in FUSED_BACKENDS if name != "cuda"]
    pairs.append(pytest.param("cuda-emulated", id="cuda-emulated"))
    return pairs


def _pair(name):
    ops = torch.ops.convgru_ext
    if name == "cuda-emulated":
        if not hasattr(ops, "_cuda_emulate_forward"):
            pytest.skip("the CUDA extension is not built here")
        math = {torch.float64: "f64", torch.float32: "f32", torch.bfloat16: "bf16"}
        return (lambda *a: ops._cuda_emulate_forward(*a[:8], math[a[0].dtype]),
                lambda *a: ops._cuda_emulate_backward(*a[:10], math[a[0].dtype]))
    skip_unusable(name, "cpu", torch.float64)
    return getattr(ops, f"{name}_forward"), getattr(ops, f"{name}_backward")


def _outputs(forward, backward, args, grad_out) -> dict:
    out, gates = forward(*args)
    grads = backward(grad_out, *args[:2], out, gates, *args[2:4], *args[6:8], True)
    return dict(zip(NAMES, (out, gates) + tuple(grads)))


def _fake_outputs(args, grad_out) -> dict:
    """What the fake kernels promise for the same arguments."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        out, gates = fake_forward(*fake)
        grads = fake_backward(mode.from_tensor(grad_out), *fake[:2], out, gates, *fake[2:4], *fake[6:8], True)
    return dict(zip(NAMES, (out, gates) + tuple(grads)))


def _assert_layouts(got: dict, want: dict) -> None:
    for name in NAMES:
        assert got[name].shape == want[name].shape, name
        if got[name].numel() == 0:
            continue
        assert significant_strides(got[name]) == significant_strides(want[name]), \
            f"{name}: strides {got[name].stride()} where the fake kernel says {want[name].stride()}"
        if name in WEIGHTS:  # the parameter's own layout, raw (what AccumulateGrad and the fake kernels see)
            assert got[name].stride() == want[name].stride(), name


def _args(case, dtype, rng, weight_format):
    _, args, _, grad_out = op_args(case, dtype, rng)
    if weight_format == "channels_last":  # a 1x1 parameter made channels_last: contiguous, with odd size-1 strides
        args[2:4] = [torch.empty_like(w, memory_format=torch.channels_last).copy_(w) for w in args[2:4]]
        assert args[2].is_contiguous() and args[2].stride() != torch.empty(args[2].shape).stride()
    return args, grad_out


@pytest.mark.parametrize("weight_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["f64", "bf16"])
@pytest.mark.parametrize("name", _op_pairs())
def test_op_outputs_have_the_fake_kernels_layout(name, dtype, case_name, weight_format, rng):
    if weight_format == "channels_last" and case_name != "1x1":
        pytest.skip("the ops take contiguous weights; only a 1x1 channels_last weight is contiguous")
    forward, backward = _pair(name)
    if name == "triton" and dtype == torch.bfloat16:
        pytest.skip("Triton's CPU interpreter runs float32/float64 only")
    args, grad_out = _args(CASES[case_name], dtype, rng, weight_format)
    _assert_layouts(_outputs(forward, backward, args, grad_out), _fake_outputs(args, grad_out))


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("name", _op_pairs())
def test_weight_grads_keep_the_layout_when_the_conv_library_returns_channels_last(name, case_name, rng, monkeypatch):
    """Plays the AVX-512 BF16 / AMX machine, where oneDNN's convolution backward returns channels-last."""
    conv_backward = _hoisted.conv_backward

    def channels_last_backward(*a, **kw):
        d_inp, d_weight = conv_backward(*a, **kw)
        if d_weight is not None:
            d_weight = torch.empty_like(d_weight, memory_format=torch.channels_last).copy_(d_weight)
        return d_inp, d_weight

    monkeypatch.setattr(_hoisted, "conv_backward", channels_last_backward)
    forward, backward = _pair(name)
    args, grad_out = _args(CASES[case_name], torch.float64, rng, "contiguous")
    got = _outputs(forward, backward, args, grad_out)
    _assert_layouts(got, _fake_outputs(args, grad_out))
    assert got["dweight_ih"].stride() == args[2].stride() and got["dweight_hh"].stride() == args[3].stride()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("backend", ("reference",) + FUSED_BACKENDS)
def test_parameter_grads_have_the_parameters_layout(backend, memory_format, rng):
    skip_unusable(backend, "cpu", torch.float64)
    gru = ConvGRU(3, 4, kernel_size=3, backend=backend, dtype=torch.float64).to(memory_format=memory_format)
    x = torch.randn(2, 2, 3, 5, 6, generator=rng, dtype=torch.float64, requires_grad=True)
    out, h_n = gru(x)
    (out * torch.randn(out.shape, generator=rng, dtype=torch.float64)).sum().backward()
    for pname, p in gru.named_parameters():
        assert significant_strides(p.grad) == significant_strides(p), pname
    assert significant_strides(x.grad) == significant_strides(x)


@pytest.mark.parametrize("T, B", [(1, 1), (1, 3), (3, 1), (2, 3)])
def test_frames_have_pytorchs_own_channels_last_strides(T, B):
    """The convolutions outside the loops see (T*B, C, H, W) frames; for one frame a plain view gives the batch
    dimension the stride C, and oneDNN then runs NCHW (an input copy, an NCHW output copied back)."""
    t = _layout.empty_channels_last(torch.empty(0), T, B, 5, 4, 3)
    want = torch.empty(T * B, 5, 4, 3, memory_format=torch.channels_last).stride()
    assert _layout.frames(t).stride() == want
    assert _layout.frames(t).data_ptr() == t.data_ptr()  # a view
    frames = _layout.frames(t).normal_()
    assert torch.nn.functional.conv2d(frames, torch.randn(6, 5, 3, 3), padding=1).is_contiguous(
        memory_format=torch.channels_last)
