"""PyTorch's two TF32 APIs: whatever a user sets, the package reads the convolution's flag and never crashes.

Reading ``torch.backends.cudnn.allow_tf32`` (or ``allowTF32CuDNN()`` in C++) raises once a user sets
``torch.backends.cudnn.conv.fp32_precision`` apart from the RNN's; ``convgru_ext._tf32`` reads the
convolution operator's own flag instead, and the kernel backends take their math mode from it.
Without a GPU, TF32 changes no result here, so these tests check that every path that reads the flag
runs under the new API and reads what the user set.
"""

import pytest
import torch

from convgru_ext._tf32 import conv_allows_tf32, matmul_allows_tf32, tf32
from convgru_ext.bench.meta import collect_meta
from helpers import FUSED_BACKENDS, Case, cast_inputs, compare, make_inputs, run_with_grads, unusable_reason

NEW_API = hasattr(torch._C, "_get_fp32_precision_getter")
needs_new_api = pytest.mark.skipif(not NEW_API, reason=f"torch {torch.__version__} has no fp32_precision API")


@pytest.fixture
def conv_precision():
    """Set ``torch.backends.cudnn.conv.fp32_precision`` (the new API only) from PyTorch's default state of the
    RNN's precision ("tf32"); both restored afterwards."""
    saved = {op: torch._C._get_fp32_precision_getter("cuda", op) for op in ("conv", "rnn")}

    def set_to(value: str) -> None:
        torch.backends.cudnn.rnn.fp32_precision = "tf32"  # as a fresh process has it
        torch.backends.cudnn.conv.fp32_precision = value

    yield set_to
    for op, value in saved.items():
        torch._C._set_fp32_precision_setter("cuda", op, value)


@needs_new_api
@pytest.mark.parametrize("value", ["ieee", "tf32"])
def test_the_new_api_alone_is_read_and_breaks_nothing(value, conv_precision, rng):
    """The convolution's precision set apart from the RNN's: the legacy getter raises, our reading does
    not; every backend usable here runs; the bench metadata records the flag."""
    conv_precision(value)
    if value == "ieee":
        with pytest.raises(RuntimeError, match="TF32"):
            torch.backends.cudnn.allow_tf32  # noqa: B018 (the crash this file is about)
    assert conv_allows_tf32() is (value == "tf32")
    meta = collect_meta(torch.device("cpu"), [], 1.0, "")
    assert meta["tf32_conv"] is (value == "tf32")
    case = Case(T=2, B=2, Cin=3, C=5, H=4, W=6)
    ran = []
    for backend in FUSED_BACKENDS:
        if unusable_reason(backend, "cpu", torch.float32):
            continue
        inputs = make_inputs(case, torch.float64, "cpu", rng)
        want = run_with_grads("reference", inputs, case, rng)
        got = run_with_grads(backend, cast_inputs(inputs, torch.float32), case, rng, upstream=want["_upstream"])
        compare(got, want, torch.float32, label=f"{backend} under conv.fp32_precision={value}")
        ran.append(backend)
    assert "torch" in ran
    assert conv_allows_tf32() is (value == "tf32")  # nothing we ran changed the user's setting


@needs_new_api
@pytest.mark.slow
@pytest.mark.parametrize("value", ["ieee", "tf32"])
def test_check_runs_under_the_new_api_alone(value, conv_precision, capsys):
    from convgru_ext.__main__ import main

    conv_precision(value)
    assert main(["check", "--device", "cpu"]) == 0, capsys.readouterr().out[-3000:]
    assert conv_allows_tf32() is (value == "tf32")


@needs_new_api
def test_the_switch_sets_and_restores_through_the_new_api(conv_precision):
    conv_precision("ieee")
    saved_matmul = matmul_allows_tf32()
    for flag in (True, False):
        with tf32(flag):
            assert conv_allows_tf32() is flag and matmul_allows_tf32() is flag
    assert conv_allows_tf32() is False and matmul_allows_tf32() is saved_matmul


def _set_states():
    """(description, setter, expected) of TF32 states, legacy and new: whether convolutions may use TF32 after
    the setter, by PyTorch's rule (the convolution's own precision, else cuDNN's, else the generic one).  Each
    new-API state sets the parents first and the children last, so that its answer does not depend on how a
    parent's setter propagates to its children."""
    def legacy(flag):
        def go():
            torch.backends.cudnn.allow_tf32 = flag
        return go

    def new(*settings):
        def go():
            for backend, op, value in settings:
                torch._C._set_fp32_precision_setter(backend, op, value)
        return go

    states = [("legacy on", legacy(True), True), ("legacy off", legacy(False), False)]
    for value in ("tf32", "ieee"):
        tf = value == "tf32"
        states += [(f"conv {value}", new(("cuda", "conv", value)), tf),
                   (f"cudnn {value}, conv none", new(("cuda", "all", value), ("cuda", "conv", "none")), tf),
                   (f"generic {value}, cudnn and conv none",
                    new(("generic", "all", value), ("cuda", "all", "none"), ("cuda", "conv", "none")), tf)]
    return states


@needs_new_api
def test_every_backend_reads_the_same_flag_in_every_state():
    """The Triton and CUDA math modes (one function: ``_math.math_mode``) follow ``_tf32.conv_allows_tf32`` in
    every state, legacy and new."""
    from convgru_ext.backends import _math, cuda

    assert cuda.math_mode is _math.math_mode
    if unusable_reason("triton", "cuda" if torch.cuda.is_available() else "cpu", torch.float32) is None:
        from convgru_ext.backends.triton import ops

        assert ops.math_mode is _math.math_mode
    saved = {(b, o): torch._C._get_fp32_precision_getter(b, o)
             for b, o in (("cuda", "conv"), ("cuda", "rnn"), ("cuda", "all"), ("generic", "all"))}
    try:
        for description, set_state, expected in _set_states():
            set_state()
            assert conv_allows_tf32() is expected, description
            assert _math.math_mode(torch.float32) == ("tf32" if expected else "f32"), description
    finally:
        for (b, o), value in saved.items():
            torch._C._set_fp32_precision_setter(b, o, value)
