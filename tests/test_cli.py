"""`python -m convgru_ext info|check`, and proof that the checks can fail."""

import subprocess
import sys

import pytest
import torch

from convgru_ext import backends
from convgru_ext.__main__ import main
from convgru_ext.backends.torch_fallback import TorchBackend
from helpers import Case, compare, make_inputs, run_with_grads


class _SwappedGates(TorchBackend):
    """A plausible bug: r and z blocks of the weights exchanged."""

    name = "swapped-test"

    def sequence(self, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, context, problem):
        def swap(t):
            return None if t is None else torch.cat(list(reversed(t.chunk(3)[:2])) + [t.chunk(3)[2]])

        return super().sequence(x, h0, swap(weight_ih), swap(weight_hh), swap(bias_ih), swap(bias_hh), context,
                                problem)


@pytest.fixture
def broken_backend():
    backends.register(_SwappedGates())
    yield _SwappedGates.name
    backends._REGISTRY.pop(_SwappedGates.name)


def test_parity_check_catches_a_wrong_backend(broken_backend, rng):
    case = Case()
    inputs = make_inputs(case, torch.float64, "cpu", rng)
    want = run_with_grads("reference", inputs, case, rng)
    got = run_with_grads(broken_backend, inputs, case, rng, upstream=want["_upstream"])
    with pytest.raises(AssertionError, match="output: relative error"):
        compare(got, want, torch.float64)
    got["grad_x"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(AssertionError, match="grad_x"):
        compare(got, want, torch.float64)


def test_check_command_fails_on_a_wrong_backend(broken_backend, capsys):
    assert main(["check", "--backend", broken_backend, "--device", "cpu"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_command_passes_for_torch(capsys):
    assert main(["check", "--backend", "torch", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "float64" in out and "float32" in out


def test_info_command_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "convgru_ext", "info"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for word in ("torch", "reference", "backends", "CPU loops"):
        assert word in result.stdout
