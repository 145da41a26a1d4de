"""GRURCN (plain and stacked GRU-RCN over several CNN levels) against a loop written from the paper's equations."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from convgru_ext import ConvGRU
from convgru_ext.grurcn import GRURCN
from convgru_ext.testing import rel_err

HAS_CONTEXT = "context" in inspect.signature(ConvGRU.forward).parameters
needs_context = pytest.mark.skipif(not HAS_CONTEXT, reason="ConvGRU.forward has no `context=` argument yet")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "grurcn_video.py"


def conv_gates(inp, weight, bias, gates: slice):
    """Blocks ``gates`` (0 = r, 1 = z, 2 = n) of the "same" convolution of ``inp`` by ``weight``, plus ``bias``."""
    C = weight.shape[0] // 3
    rows = slice(gates.start * C, gates.stop * C)
    return F.conv2d(inp, weight[rows], None if bias is None else bias[rows], padding=weight.shape[-1] // 2)


def oracle(model: GRURCN, percepts: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``model``'s outputs and last states from its parameters, step by step, with torch ops only."""
    pool = F.max_pool2d if model.pool == "max" else F.avg_pool2d
    xs = [p.transpose(0, 1) if model.batch_first else p for p in percepts]  # time-major
    outputs = []
    for level, x in enumerate(xs):
        gru = model.levels[level]
        w_ih, w_hh = gru.weight_ih_l0, gru.weight_hh_l0
        b_ih, b_hh = getattr(gru, "bias_ih_l0", None), getattr(gru, "bias_hh_l0", None)  # absent with bias=False
        h = x.new_zeros(x.shape[1], w_hh.shape[1], *x.shape[3:])
        states = []
        for t in range(x.shape[0]):
            i_r, i_z, i_n = conv_gates(x[t], w_ih, b_ih, slice(0, 3)).chunk(3, dim=1)
            h_r, h_z = conv_gates(h, w_hh, b_hh, slice(0, 2)).chunk(2, dim=1)
            if model.stacked and level > 0:
                below = outputs[level - 1][t]
                ratio = (below.shape[-2] // h.shape[-2], below.shape[-1] // h.shape[-1])
                pooled = pool(below, ratio, ratio)
                w_up = model.bottom_up[level - 1].weight
                l_r, l_z = F.conv2d(pooled, w_up, padding=w_up.shape[-1] // 2).chunk(2, dim=1)
                i_r, i_z = i_r + l_r, i_z + l_z
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            if gru.reset == "before":
                n = torch.tanh(i_n + conv_gates(r * h, w_hh, b_hh, slice(2, 3)))
            else:
                n = torch.tanh(i_n + r * conv_gates(h, w_hh, b_hh, slice(2, 3)))
            h = (1 - z) * h + z * n
            states.append(h)
        outputs.append(torch.stack(states))
    h_n = [out[-1] for out in outputs]
    return [out.transpose(0, 1) if model.batch_first else out for out in outputs], h_n


@dataclasses.dataclass
class Case:
    sizes: tuple  # (H, W) per level
    stacked: bool = True
    pool: str = "max"
    batch_first: bool = False
    backend: str = "torch"
    bias: bool = True
    reset: str = "before"
    kernel_size: int = 3
    T: int = 3
    B: int = 2


CASES = [
    Case(((8, 8), (4, 4))),
    Case(((8, 8), (4, 4)), stacked=False, batch_first=True, backend="reference"),
    Case(((8, 8), (4, 4)), stacked=False, pool="avg"),
    Case(((12, 12), (6, 6), (2, 2)), pool="avg", batch_first=True),
    Case(((12, 12), (6, 6), (2, 2)), backend="reference", reset="after"),
    Case(((8, 6), (4, 6), (4, 2)), batch_first=True, bias=False, kernel_size=1),
    Case(((8, 6), (4, 6), (4, 2)), pool="avg", backend="reference"),
]


def run(case: Case, rng: torch.Generator):
    """A float64 model for ``case``, its random percepts, and the loss's upstream gradients."""
    L = len(case.sizes)
    input_sizes, hidden_sizes = (3, 4, 2)[:L], (2, 3, 4)[:L]
    model = GRURCN(input_sizes, hidden_sizes, case.kernel_size, stacked=case.stacked, pool=case.pool,
                   bias=case.bias, reset=case.reset, batch_first=case.batch_first, backend=case.backend).double()
    lead = (case.B, case.T) if case.batch_first else (case.T, case.B)
    percepts = [torch.randn(*lead, c, *hw, generator=rng, dtype=torch.float64, requires_grad=True)
                for c, hw in zip(input_sizes, case.sizes)]
    grad_out, grad_h = ([torch.randn(*lead_dims, c, *hw, generator=rng, dtype=torch.float64)
                         for c, hw in zip(hidden_sizes, case.sizes)] for lead_dims in (lead, (case.B,)))
    return model, percepts, grad_out, grad_h


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_oracle(case, rng):
    if case.stacked and not HAS_CONTEXT:
        pytest.skip("ConvGRU.forward has no `context=` argument yet")
    model, percepts, grad_out, grad_h = run(case, rng)
    names = [f"percepts[{i}]" for i in range(len(percepts))] + [n for n, _ in model.named_parameters()]
    wrt = percepts + list(model.parameters())
    results = []
    for fn in (model, lambda p: oracle(model, p)):
        outputs, h_n = fn(percepts)
        loss = sum((o * g).sum() for o, g in zip(outputs, grad_out)) + sum((h * g).sum() for h, g in zip(h_n, grad_h))
        results.append(dict(zip([f"outputs[{i}]" for i in range(len(outputs))] + [f"h_n[{i}]" for i in range(len(h_n))]
                                + [f"grad {n}" for n in names],
                                [*outputs, *h_n, *torch.autograd.grad(loss, wrt)])))
    got, want = results
    assert got.keys() == want.keys() and any(n.startswith("grad bottom_up") for n in got) == case.stacked
    errors = {name: rel_err(got[name], want[name]) for name in want}
    bad = {name: err for name, err in errors.items() if not err <= 1e-10 or got[name].shape != want[name].shape}
    assert not bad, f"{case}: {bad}"


def test_submodules():
    model = GRURCN((3, 5, 7), (4, 6, 8), kernel_size=5, stacked=True, pool="avg", batch_first=True)
    assert [type(g) for g in model.levels] == [ConvGRU] * 3
    assert [(g.input_size, g.hidden_size, g.num_layers, g.batch_first, g.kernel_size) for g in model.levels] == [
        (3, 4, 1, True, (5, 5)), (5, 6, 1, True, (5, 5)), (7, 8, 1, True, (5, 5))]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding, c.bias) for c in model.bottom_up] == [
        (4, 12, (5, 5), "same", None), (6, 16, (5, 5), "same", None)]
    assert GRURCN((3, 5), (4, 6)).bottom_up is None


@needs_context
def test_shapes_and_ratio_one():
    """A level at its input's resolution (ratio 1 in a dimension) and non-square frames."""
    model = GRURCN((2, 3), (4, 5), stacked=True)
    outputs, h_n = model([torch.randn(2, 1, 2, 6, 9), torch.randn(2, 1, 3, 6, 3)])
    assert [o.shape for o in outputs] == [(2, 1, 4, 6, 9), (2, 1, 5, 6, 3)]
    assert [h.shape for h in h_n] == [(1, 4, 6, 9), (1, 5, 6, 3)]


BAD_OPTIONS = [
    (dict(input_sizes=(3, 0), hidden_sizes=(2, 2)), ValueError, r"`input_sizes\[1\]`"),
    (dict(input_sizes=3, hidden_sizes=(2,)), TypeError, "`input_sizes`"),
    (dict(input_sizes=(3, 4), hidden_sizes=(2,)), ValueError, "`hidden_sizes`"),
    (dict(input_sizes=(3,), hidden_sizes=(2.0,)), ValueError, r"`hidden_sizes\[0\]`"),
    (dict(input_sizes=(3, 4), hidden_sizes=(2, 2), pool="mean"), ValueError, "`pool`"),
    (dict(input_sizes=(3, 4), hidden_sizes=(2, 2), kernel_size=2), ValueError, "`kernel_size`"),
    (dict(input_sizes=(3, 4), hidden_sizes=(2, 2), reset="never"), ValueError, "`reset`"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_OPTIONS, ids=[m for _, _, m in BAD_OPTIONS])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        GRURCN(**kwargs)


def _percepts(*shapes):
    return [torch.randn(*s) for s in shapes]


BAD_PERCEPTS = [
    (_percepts((2, 1, 3, 8, 8)), ValueError, r"`percepts` must hold one tensor per level \(2\); got 1"),
    (torch.randn(2, 2, 1, 3, 8, 8), TypeError, "`percepts` must be a list or tuple"),
    (_percepts((2, 1, 3, 8, 8), (2, 1, 4, 3, 4)), ValueError, r"`percepts\[1\]` must have H and W that divide"),
    (_percepts((2, 1, 3, 8, 8), (2, 1, 4, 4, 0)), ValueError, r"`percepts\[1\]` must have H and W that divide"),
    (_percepts((2, 1, 3, 8, 8), (2, 1, 4, 16, 4)), ValueError, r"`percepts\[1\]` must have H and W that divide"),
    (_percepts((2, 1, 5, 8, 8), (2, 1, 4, 4, 4)), ValueError, r"`percepts\[0\]` must have input_sizes\[0\]=3"),
    (_percepts((2, 1, 3, 8, 8), (2, 1, 3, 4, 4)), ValueError, r"`percepts\[1\]` must have input_sizes\[1\]=4"),
    (_percepts((2, 1, 3, 8, 8), (3, 1, 4, 4, 4)), ValueError, r"`percepts\[1\]` must have percepts\[0\]'s \(T, B\)"),
    (_percepts((2, 1, 3, 8, 8), (2, 1, 4, 4)), ValueError, r"`percepts\[1\]` must be 5-D"),
    ([torch.randn(2, 1, 3, 8, 8), torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)], TypeError, r"`percepts\[1\]`"),
]


@pytest.mark.parametrize("percepts, error, match", BAD_PERCEPTS, ids=[m for _, _, m in BAD_PERCEPTS])
def test_bad_percepts(percepts, error, match):
    with pytest.raises(error, match=match):
        GRURCN((3, 4), (2, 2), stacked=True)(percepts)


def _load_example():
    spec = importlib.util.spec_from_file_location("grurcn_video", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stacked, all_states", [(False, False), (True, True)])
def test_example_trains(stacked, all_states):
    """One SGD step of the example's classifier at a tiny size: a finite loss, every trainable parameter moved."""
    pytest.importorskip("torchvision", reason="the example builds a torchvision VGG-16")
    if stacked and not HAS_CONTEXT:
        pytest.skip("ConvGRU.forward has no `context=` argument yet")
    argv = ["--batch", "1", "--frames", "2", "--size", "32", "--levels", "3,4,5", "--hidden", "4,4,4",
            "--classes", "3", "--dropout", "0"] + ["--stacked"] * stacked + ["--all-states"] * all_states
    result = _load_example().main(argv)
    assert math.isfinite(result["loss"])
    trained = {n: p for n, p in result["model"].named_parameters() if p.requires_grad}
    assert trained.keys() == result["before"].keys() and any(n.startswith("rcn.bottom_up") for n in trained) == stacked
    unchanged = [n for n, p in trained.items() if torch.equal(p, result["before"][n])]
    assert not unchanged
