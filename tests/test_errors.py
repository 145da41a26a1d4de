"""Bad input raises TypeError or ValueError naming the argument, before any kernel runs."""

import pytest
import torch

import convgru_ext
from convgru_ext import ConvGRU, ConvGRUCell, SepConvGRU, convgru_cell, convgru_sequence

T, B, Cin, C, H, W = 2, 2, 3, 4, 5, 6


def good():
    return dict(
        x=torch.randn(T, B, Cin, H, W), h0=torch.randn(B, C, H, W),
        weight_ih=torch.randn(3 * C, Cin, 3, 3), weight_hh=torch.randn(3 * C, C, 3, 3),
        bias_ih=torch.randn(3 * C), bias_hh=torch.randn(3 * C),
    )


SEQUENCE_CASES = {
    "x wrong ndim": (dict(x=torch.randn(B, Cin, H, W)), ValueError, "`x` must be 5-D"),
    "x integer": (dict(x=torch.ones(T, B, Cin, H, W, dtype=torch.int64)), TypeError, "`x` must be a floating"),
    "x not a tensor": (dict(x=[[1.0]]), TypeError, "`x` must be a torch.Tensor"),
    "x wrong channels": (dict(x=torch.randn(T, B, Cin + 1, H, W)), ValueError, "`weight_ih` must have shape"),
    "x empty pixels": (dict(x=torch.randn(T, B, Cin, 0, W)), ValueError, "`x` must have non-empty spatial"),
    "h0 wrong shape": (dict(h0=torch.randn(B, C, H, W + 1)), ValueError, "`h0` must have shape"),
    "h0 wrong ndim": (dict(h0=torch.randn(1, B, C, H, W)), ValueError, "`h0` must be 4-D"),
    "h0 mixed dtype": (dict(h0=torch.randn(B, C, H, W, dtype=torch.float64)), TypeError, "`h0` has dtype"),
    "weight_hh not 3C": (dict(weight_hh=torch.randn(3 * C + 1, C, 3, 3)), ValueError, "`weight_hh` must have shape"),
    "even kernel": (dict(weight_ih=torch.randn(3 * C, Cin, 2, 2), weight_hh=torch.randn(3 * C, C, 2, 2)),
                    ValueError, "`weight_hh` must have odd kernel"),
    "kernels differ": (dict(weight_ih=torch.randn(3 * C, Cin, 1, 1)), ValueError, "`weight_ih` must have shape"),
    "weight integer": (dict(weight_hh=torch.ones(3 * C, C, 3, 3, dtype=torch.int32)), TypeError,
                       "`weight_hh` must be a floating"),
    "weight mixed dtype": (dict(weight_ih=torch.randn(3 * C, Cin, 3, 3, dtype=torch.float64)), TypeError,
                           "`weight_ih` has dtype"),
    "bias wrong shape": (dict(bias_hh=torch.randn(C)), ValueError, "`bias_hh` must have shape"),
    "bias wrong ndim": (dict(bias_ih=torch.randn(3 * C, 1)), ValueError, "`bias_ih` must be 1-D"),
    "bias mixed dtype": (dict(bias_ih=torch.randn(3 * C, dtype=torch.float16)), TypeError, "`bias_ih` has dtype"),
    "device mismatch": (dict(bias_hh=torch.randn(3 * C, device="meta")), ValueError, "`bias_hh` is on meta"),
}


@pytest.mark.parametrize("case", list(SEQUENCE_CASES), ids=list(SEQUENCE_CASES))
def test_convgru_sequence_rejects(case):
    change, exc, message = SEQUENCE_CASES[case]
    args = good() | change
    with pytest.raises(exc, match=message):
        convgru_sequence(args.pop("x"), args.pop("h0"), **args)


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(reset="middle"), ValueError, "`reset` must be"),
    (dict(backend="nope"), ValueError, "`backend` must be one of"),
    (dict(backend=3), TypeError, "`backend` must be a str"),
    (dict(dilation=0), ValueError, "`dilation` must be"),
    (dict(dilation=(1, 2, 3)), TypeError, "`dilation` must be"),
    (dict(dilation=1.5), TypeError, "`dilation` must be"),
])
def test_options_rejected(kwargs, exc, message):
    args = good()
    with pytest.raises(exc, match=message):
        convgru_sequence(args.pop("x"), args.pop("h0"), **args, **kwargs)


def test_cell_names_h():
    args = good()
    with pytest.raises(ValueError, match="`h` must have shape"):
        convgru_cell(args["x"][0], torch.randn(B, C + 1, H, W), args["weight_ih"], args["weight_hh"])
    with pytest.raises(ValueError, match="`x` must be 4-D"):
        convgru_cell(args["x"], None, args["weight_ih"], args["weight_hh"])


def test_env_override_is_checked(monkeypatch):
    args = good()
    monkeypatch.setenv("CONVGRU_BACKEND", "bogus")
    with pytest.raises(ValueError, match="CONVGRU_BACKEND"):
        convgru_sequence(args.pop("x"), args.pop("h0"), **args)


def test_env_override_selects_backend(monkeypatch):
    from convgru_ext import backends
    problem = convgru_ext._contract.check("t", *good().values(), 1, "before", sequence=True)
    monkeypatch.setenv("CONVGRU_BACKEND", "reference")
    assert backends.select("auto", problem).name == "reference"
    assert backends.select("torch", problem).name == "torch"  # an explicit name wins
    monkeypatch.delenv("CONVGRU_BACKEND")
    assert backends.select("auto", problem).name == "torch"


def test_explicit_backend_that_cannot_serve_lists_reasons():
    from convgru_ext import backends
    from convgru_ext.backends.base import Backend

    class Picky(Backend):
        name = "picky-test"

        def why_not(self, problem):
            return ["needs a GPU", "needs bfloat16"]

    backends.register(Picky())
    try:
        args = good()
        with pytest.raises(ValueError, match="needs a GPU; needs bfloat16"):
            convgru_sequence(args.pop("x"), args.pop("h0"), **args, backend="picky-test")
    finally:
        backends._REGISTRY.pop("picky-test")


@pytest.mark.parametrize("make,exc,message", [
    (lambda: ConvGRUCell(3, 4, kernel_size=2), ValueError, "`kernel_size` must be"),
    (lambda: ConvGRUCell(3, 4, kernel_size=(3, 4)), ValueError, "`kernel_size` must be"),
    (lambda: ConvGRUCell(3, 4, kernel_size=-1), ValueError, "`kernel_size` must be"),
    (lambda: ConvGRUCell(3, 4, kernel_size="3"), TypeError, "`kernel_size` must be"),
    (lambda: ConvGRUCell(0, 4), ValueError, "`input_size` must be"),
    (lambda: ConvGRUCell(3, 4.0), ValueError, "`hidden_size` must be"),
    (lambda: ConvGRUCell(3, 4, reset="x"), ValueError, "`reset` must be"),
    (lambda: ConvGRUCell(3, 4, backend="x"), ValueError, "`backend` must be"),
    (lambda: ConvGRU(3, 4, num_layers=0), ValueError, "`num_layers` must be"),
    (lambda: ConvGRU(3, 4, dropout=2), ValueError, "`dropout` must be"),
    (lambda: ConvGRU(3, 4, dilation=(1, 0)), ValueError, "`dilation` must be"),
    (lambda: SepConvGRU(3, 4, kernel_size=(1, 5)), TypeError, "`kernel_size` must be"),
    (lambda: SepConvGRU(3, 4, kernel_size=4), ValueError, "`kernel_size` must be"),
])
def test_module_options_rejected(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_module_inputs_rejected():
    gru = ConvGRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="`x` must have input_size=3"):
        gru(torch.randn(2, 1, 5, 6, 6))
    with pytest.raises(ValueError, match="`x` must be 5-D"):
        gru(torch.randn(6, 6, 2))
    with pytest.raises(ValueError, match="`h0` must have shape"):
        gru(torch.randn(2, 1, 3, 6, 6), torch.randn(1, 1, 4, 6, 6))
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        gru([1, 2])
    cell = ConvGRUCell(3, 4)
    with pytest.raises(ValueError, match="`x` must have input_size=3"):
        cell(torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match="`h` must have shape"):
        cell(torch.randn(1, 3, 6, 6), torch.randn(1, 4, 6, 5))
    with pytest.raises(TypeError, match="`x` must be a floating"):
        cell(torch.ones(1, 3, 6, 6, dtype=torch.int64))


@pytest.mark.parametrize("make,exc,message", [
    (lambda: ConvGRU(0, 4), ValueError, "ConvGRU: `input_size` must be a positive int"),
    (lambda: ConvGRU(3, -4), ValueError, "ConvGRU: `hidden_size` must be a positive int"),
    (lambda: ConvGRUCell(True, 4), ValueError, "ConvGRUCell: `input_size` must be a positive int"),
    (lambda: ConvGRUCell(3, "4"), ValueError, "ConvGRUCell: `hidden_size` must be a positive int"),
    (lambda: ConvGRU(3, 4, kernel_size=(3, 3, 3)), TypeError, "`kernel_size` must be"),
    (lambda: ConvGRU(3, 4, kernel_size=True), TypeError, "`kernel_size` must be"),
    (lambda: ConvGRUCell(3, 4, dilation=(1, 1.0)), TypeError, "`dilation` must be"),
    (lambda: ConvGRU(3, 4, reset="both"), ValueError, "`reset` must be"),
    (lambda: ConvGRU(3, 4, backend="nope"), ValueError, "`backend` must be one of"),
    (lambda: ConvGRU(3, 4, num_layers=True), ValueError, "ConvGRU: `num_layers` must be a positive int"),
    (lambda: ConvGRU(3, 4, num_layers=2.0), ValueError, "ConvGRU: `num_layers` must be a positive int"),
    (lambda: ConvGRU(3, 4, num_layers=2, dropout=-0.1), ValueError, "ConvGRU: `dropout` must be a number in"),
    (lambda: ConvGRU(3, 4, num_layers=2, dropout="0.5"), ValueError, "ConvGRU: `dropout` must be a number in"),
    (lambda: ConvGRU(3, 4, num_layers=2, dropout=True), ValueError, "ConvGRU: `dropout` must be a number in"),
    (lambda: SepConvGRU(3, 4, kernel_size=True), TypeError, "SepConvGRU: `kernel_size` must be a positive odd int"),
    (lambda: SepConvGRU(3, 4, kernel_size=5.0), TypeError, "SepConvGRU: `kernel_size` must be a positive odd int"),
    (lambda: SepConvGRU(0, 4), ValueError, "ConvGRUCell: `input_size` must be a positive int"),
])
def test_more_module_options_rejected(make, exc, message):
    """Each of a constructor's checks, with the module's name in front of the argument's."""
    with pytest.raises(exc, match=message):
        make()


def test_module_options_accepted():
    assert ConvGRU(3, 4, kernel_size=(1, 5), dilation=(2, 1), num_layers=2, dropout=1, backend="torch").dropout == 1
    assert SepConvGRU(3, 4, kernel_size=3).vertical.kernel_size == (3, 1)


@pytest.mark.parametrize("batch_first", [False, True])
def test_convgru_forward_inputs_rejected(batch_first):
    gru = ConvGRU(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    layout = r"\(B, T, C_in, H, W\)" if batch_first else r"\(T, B, C_in, H, W\)"
    with pytest.raises(ValueError, match=f"ConvGRU: `x` must be 5-D {layout} or unbatched 4-D"):
        gru(torch.randn(1, 2, 1, 3, 6, 6))
    with pytest.raises(ValueError, match=r"ConvGRU: `x` must have input_size=3 channels \(dim 2\)"):
        gru(torch.randn(2, 2, 5, 6, 6))
    with pytest.raises(ValueError, match=r"ConvGRU: `x` must have input_size=3 channels \(dim 2\)"):
        gru(torch.randn(2, 5, 6, 6))  # unbatched
    with pytest.raises(TypeError, match="ConvGRU: `x` must be a torch.Tensor; got list"):
        gru([[1.0]])
    x = torch.randn(2, 2, 3, 6, 6)
    with pytest.raises(ValueError, match=r"`h0` must have shape \(num_layers\*D, .*\) = \(4, 2, 4, 6, 6\)"):
        gru(x, torch.randn(2, 2, 4, 6, 6))  # num_layers states, not num_layers * D
    with pytest.raises(ValueError, match="`h0` must have shape .*; got list"):
        gru(x, [[1.0]])
    with pytest.raises(ValueError, match="for unbatched 4-D `x`, `h0` must be 4-D"):
        gru(x[:, 0], torch.randn(4, 1, 4, 6, 6))
    with pytest.raises(ValueError, match="for unbatched 4-D `x`, `h0` must be 4-D"):
        gru(x[:, 0], "h0")
    with pytest.raises(ValueError, match=r"`h0` must have shape .* = \(4, 1, 4, 6, 6\); got \(4, 1, 4, 6, 5\)"):
        gru(x[:, 0], torch.randn(4, 4, 6, 5))


def test_cell_forward_inputs_rejected():
    cell = ConvGRUCell(3, 4)
    with pytest.raises(TypeError, match="ConvGRUCell: `x` must be a torch.Tensor; got list"):
        cell([[1.0]])
    with pytest.raises(ValueError, match=r"ConvGRUCell: `x` must have input_size=3 channels \(dim -3\)"):
        cell(torch.randn(2, 6, 6))  # unbatched
