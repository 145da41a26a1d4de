"""PyTorch's two TF32 APIs: whatever a user sets, the package reads the convolution's flag and never crashes.

Reading ``torch.backends.cudnn.allow_tf32`` (or ``allowTF32CuDNN()`` in C++) raises once a user sets
``torch.backends.cudnn.conv.fp32_precision`` apart from the RNN's; ``convgru_ext._tf32`` and
``csrc/tf32.h`` read the convolution operator's own flag instead.  Without a GPU, TF32 changes no
result here, so these tests check that every path that reads the flag runs under the new API and
reads what the user set.
"""

import os
import shutil
import subprocess

import pytest
import torch

from convgru_ext._tf32 import conv_allows_tf32, matmul_allows_tf32, tf32
from convgru_ext.bench.runner import collect_meta
from helpers import FUSED_BACKENDS, Case, cast_inputs, compare, make_inputs, run_with_grads, unusable_reason

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
NEW_API = hasattr(torch._C, "_get_fp32_precision_getter")
needs_new_api = pytest.mark.skipif(not NEW_API, reason=f"torch {torch.__version__} has no fp32_precision API")


@pytest.fixture
def conv_precision():
    """Set ``torch.backends.cudnn.conv.fp32_precision`` (the new API only); restored afterwards."""
    saved = torch._C._get_fp32_precision_getter("cuda", "conv")

    def set_to(value: str) -> None:
        torch.backends.cudnn.conv.fp32_precision = value

    yield set_to
    torch._C._set_fp32_precision_setter("cuda", "conv", saved)


@needs_new_api
@pytest.mark.parametrize("value", ["ieee", "tf32"])
def test_the_new_api_alone_is_read_and_breaks_nothing(value, conv_precision, rng):
    """The convolution's precision set apart from the RNN's: the legacy getter raises, our reading does
    not; every backend usable here runs; the bench metadata records the flag."""
    conv_precision(value)
    torch.backends.cudnn.rnn.fp32_precision  # noqa: B018 (untouched: "tf32" by default)
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
    """(description, setter) of TF32 states, legacy and new, mixed included."""
    def legacy(flag):
        def go():
            torch.backends.cudnn.allow_tf32 = flag
        return go

    def new(backend, op, value):
        def go():
            torch._C._set_fp32_precision_setter(backend, op, value)
        return go

    return [("legacy on", legacy(True)), ("legacy off", legacy(False)), ("conv ieee", new("cuda", "conv", "ieee")),
            ("conv tf32", new("cuda", "conv", "tf32")), ("conv none, cudnn ieee", new("cuda", "all", "ieee")),
            ("conv none, cudnn tf32", new("cuda", "all", "tf32")), ("conv none", new("cuda", "conv", "none")),
            ("generic tf32", new("generic", "all", "tf32"))]


@needs_new_api
def test_python_and_cpp_read_the_same_flag():
    """``_tf32.conv_allows_tf32`` and the kernels' ``csrc/tf32.h`` agree in every state, legacy and new."""
    from convgru_ext.backends.cuda import load_extension

    reason = load_extension()
    if reason:
        pytest.skip(f"the CUDA extension is not loadable here: {reason}")
    saved = {(b, o): torch._C._get_fp32_precision_getter(b, o)
             for b, o in (("cuda", "conv"), ("cuda", "rnn"), ("cuda", "all"), ("generic", "all"))}
    seen = set()
    try:
        for description, set_state in _set_states():
            set_state()
            python, cpp = conv_allows_tf32(), torch.ops.convgru_ext._cuda_conv_tf32()
            assert python == cpp, f"after {description}: Python reads {python}, C++ reads {cpp}"
            seen.add(python)
    finally:
        for (b, o), value in saved.items():
            torch._C._set_fp32_precision_setter(b, o, value)
    assert seen == {True, False}


MOCKS = r"""
#include <optional>
#include <string>
#include "tf32.h"
struct Legacy { bool allowTF32CuDNN() const { return true; } };
struct Strings { bool allowTF32CuDNN(const std::string& op = std::string()) const { return op == "conv"; } };
enum class Float32Op { ALL, CONV, RNN, MATMUL };
struct Enum { bool allowTF32CuDNN(std::optional<Float32Op> op = std::nullopt) const { return op == Float32Op::CONV; } };
int main() {
  return convgru::conv_allows_tf32(Legacy{}) && convgru::conv_allows_tf32(Strings{}) &&
         convgru::conv_allows_tf32(Enum{}) ? 0 : 1;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to compile csrc/tf32.h against mock contexts")
def test_cpp_reader_compiles_against_every_form_of_the_torch_api(tmp_path):
    """The extension builds against the torch of the machine (2.14 here, 2.11 on the lent GPU); the header
    must pick the convolution's flag in each of PyTorch's three C++ forms of ``allowTF32CuDNN``."""
    source = tmp_path / "mocks.cpp"
    source.write_text(MOCKS)
    binary = tmp_path / "mocks"
    done = subprocess.run(["g++", "-std=c++17", "-I", CSRC, str(source), "-o", str(binary)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(binary)]).returncode == 0, "a form did not name the convolution operator"
