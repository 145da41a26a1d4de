"""patch_raft: RAFT-family GRUs swapped in place for ours compute the same values and gradients, and keep checkpoints.

The oracles are the originals: torchvision's real RAFT models, and princeton-vl RAFT's and RAFT-Stereo's GRUs
written here from their published code.  Everything in float64 on random weights and inputs, with the backend
"torch"; every output and every gradient is compared.
"""

import copy
import inspect
import io

import pytest
import torch
from test_interop import raft_update
from torch import nn

from convgru_ext.raft import RaftGRU, RaftStereoGRU, patch_raft
from helpers import REL_TOL, rel_err

tv_raft = pytest.importorskip("torchvision.models.optical_flow.raft")

F64 = dict(dtype=torch.float64)
TOL = REL_TOL[torch.float64]


class Princeton:
    """princeton-vl RAFT's GRUs (core/update.py), as published: z, r, q convs over cat([h, x])."""

    class ConvGRU(nn.Module):
        def __init__(self, hidden_dim, input_dim):
            super().__init__()
            self.convz, self.convr, self.convq = (nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1, **F64)
                                                  for _ in range(3))

        def forward(self, h, x):
            return raft_update(h, x, self.convz, self.convr, self.convq)

    class SepConvGRU(nn.Module):
        def __init__(self, hidden_dim, input_dim):
            super().__init__()
            convs = [nn.Conv2d(hidden_dim + input_dim, hidden_dim, k, padding=p, **F64)
                     for k, p in [((1, 5), (0, 2))] * 3 + [((5, 1), (2, 0))] * 3]
            self.convz1, self.convr1, self.convq1, self.convz2, self.convr2, self.convq2 = convs

        def forward(self, h, x):
            h = raft_update(h, x, self.convz1, self.convr1, self.convq1)
            return raft_update(h, x, self.convz2, self.convr2, self.convq2)


class Stereo:
    """RAFT-Stereo's (and IGEV's) ConvGRU, from its published equations: context added per gate."""

    class ConvGRU(nn.Module):
        def __init__(self, hidden_dim, input_dim, kernel_size=3):
            super().__init__()
            self.convz, self.convr, self.convq = (
                nn.Conv2d(hidden_dim + input_dim, hidden_dim, kernel_size, padding=kernel_size // 2, **F64)
                for _ in range(3))

        def forward(self, h, cz, cr, cq, *x_list):
            x = torch.cat(x_list, dim=1)
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(self.convz(hx) + cz)
            r = torch.sigmoid(self.convr(hx) + cr)
            q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)) + cq)
            return (1 - z) * h + z * q


class Block(nn.Module):
    """A parent as in an update block: the GRU under ``gru``, run for a few steps, and a head after it."""

    def __init__(self, gru, hidden):
        super().__init__()
        self.gru, self.head = gru, nn.Conv2d(hidden, 2, 3, padding=1, **F64)

    def forward(self, h, *args, steps=3):
        outs = []
        for _ in range(steps):
            h = self.gru(h, *args)
            outs.append(self.head(h))
        return outs


def randn(*shape):
    return torch.randn(*shape, **F64, requires_grad=True)


def grads_as_original(model, original):
    """``model``'s parameter gradients keyed as ``original``'s parameters (a patched model's mapped back through its
    state_dict hooks, which are linear in the parameters)."""
    params = list(model.parameters())
    values = [p.data for p in params]
    try:
        for p in params:
            p.data = p.grad
        state = model.state_dict()
    finally:
        for p, v in zip(params, values):
            p.data = v
    return {name: state[name] for name, _ in original.named_parameters()}


def assert_same(got_outs, want_outs, got_model, want_model, inputs=()):
    """Every output, every input's gradient and every parameter's gradient agree (the inputs hold each run's
    ``(got, want)`` leaf pairs)."""
    upstream = [torch.randn_like(w) for w in want_outs]
    for outs, model in ((got_outs, got_model), (want_outs, want_model)):
        model.zero_grad()
        sum((o * u).sum() for o, u in zip(outs, upstream)).backward()
    assert len(got_outs) == len(want_outs)
    for i, (g, w) in enumerate(zip(got_outs, want_outs)):
        assert rel_err(g, w) < TOL, f"output {i}: {rel_err(g, w):.2e}"
    for i, (g, w) in enumerate(inputs):
        assert rel_err(g.grad, w.grad) < TOL, f"input {i}'s gradient: {rel_err(g.grad, w.grad):.2e}"
    want_grads = {n: p.grad for n, p in want_model.named_parameters()}
    got_grads = grads_as_original(got_model, want_model)
    total = torch.cat([w.flatten() for w in want_grads.values()]).norm()
    for name, w in want_grads.items():
        g = got_grads[name]
        if w.norm() <= TOL * total:  # zero but for rounding (RAFT's biases ahead of a normalisation): so is ours
            assert g.norm() <= TOL * total, f"{name}'s gradient: {g.norm():.2e}, not zero"
        else:
            assert rel_err(g, w) < TOL, f"{name}'s gradient: {rel_err(g, w):.2e}"


def twins(model, expected_count, backend="torch"):
    """``(patched deep copy, model)``, checking the count and that parameters stay element for element."""
    patched = copy.deepcopy(model)
    assert patch_raft(patched, backend=backend) == expected_count
    assert sum(p.numel() for p in patched.parameters()) == sum(p.numel() for p in model.parameters())
    return patched, model


@pytest.fixture
def raft64(monkeypatch):
    """torchvision's RAFT runs in float64 once its coordinate grid (hard-wired to float32) follows the images."""
    make = tv_raft.make_coords_grid
    monkeypatch.setattr(tv_raft, "make_coords_grid", lambda *a, **k: make(*a, **k).double())


def run_raft(model, images):
    return model(*images, num_flow_updates=3)


def raft_images():
    return [randn(1, 3, 128, 128) for _ in range(2)]  # the smallest torchvision's RAFT accepts


@pytest.mark.parametrize("build,count", [(tv_raft.raft_small, 1), (tv_raft.raft_large, 2)],
                         ids=["raft_small", "raft_large"])
def test_torchvision_raft_flows_and_gradients(raft64, build, count):
    patched, model = twins(build().double(), count)
    block = patched.update_block.recurrent_block
    assert [type(m) for m in block.children()] == [RaftGRU] * count
    images = raft_images()
    images_copy = [i.detach().clone().requires_grad_() for i in images]
    assert_same(run_raft(patched, images_copy), run_raft(model, images), patched, model,
                inputs=zip(images_copy, images))


def test_torchvision_state_dict_round_trips(raft64):
    model = tv_raft.raft_small().double()
    patched = tv_raft.raft_small().double()
    patch_raft(patched, backend="torch")
    patched.load_state_dict(model.state_dict())  # original -> patched, strict
    saved = io.BytesIO()
    torch.save(patched.state_dict(), saved)
    state = torch.load(io.BytesIO(saved.getvalue()))
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    fresh = tv_raft.raft_small().double()
    fresh.load_state_dict(state)  # patched -> unpatched, strict
    images = [i.detach() for i in raft_images()]
    with torch.no_grad():
        for got, want in zip(run_raft(patched, images), run_raft(fresh, images)):
            assert rel_err(got, want) < TOL


@pytest.mark.parametrize("form", ["ConvGRU", "SepConvGRU"])
def test_princeton_raft_grus(form):
    C, Cin = 5, 7
    model = Block(getattr(Princeton, form)(C, Cin), C)
    patched, model = twins(model, 1)
    assert type(patched.gru) is RaftGRU and len(patched.gru.cells) == (2 if form == "SepConvGRU" else 1)
    h, x = randn(2, C, 9, 11), randn(2, Cin, 9, 11)
    h2, x2 = (t.detach().clone().requires_grad_() for t in (h, x))
    assert_same(patched(h2, x2), model(h, x), patched, model, inputs=[(h2, h), (x2, x)])
    reloaded = Block(getattr(Princeton, form)(C, Cin), C)
    reloaded.load_state_dict(patched.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_raft_stereo_gru():
    C, inputs = 4, (3, 5)
    model = Block(Stereo.ConvGRU(C, sum(inputs)), C)
    patched, model = twins(model, 1)
    assert type(patched.gru) is RaftStereoGRU
    assert ([(p.name, p.kind) for p in inspect.signature(patched.gru.forward).parameters.values()]
            == [(p.name, p.kind) for p in inspect.signature(model.gru.forward).parameters.values()])
    want_in = [randn(2, c, 6, 10) for c in (C, C, C, C) + inputs]  # h, cz, cr, cq, *x_list
    got_in = [t.detach().clone().requires_grad_() for t in want_in]
    assert_same(patched(*got_in), model(*want_in), patched, model, inputs=zip(got_in, want_in))
    source = Block(Stereo.ConvGRU(C, sum(inputs)), C).state_dict()
    twin = copy.deepcopy(patched)  # the hooks follow a copy
    twin.load_state_dict(source)
    assert list(twin.state_dict()) == list(source)
    for key, value in source.items():
        assert torch.equal(twin.state_dict()[key], value), key


def test_other_modules_and_frozen_and_shared_grus():
    """What is not a GRU stays; a frozen GRU stays frozen; one GRU under two names is replaced once, everywhere."""
    gru = Princeton.ConvGRU(3, 2).requires_grad_(False).eval()
    model = nn.ModuleDict({"a": Block(gru, 3), "b": gru})
    head = model["a"].head
    assert patch_raft(model) == 1
    assert model["a"].gru is model["b"] and type(model["b"]) is RaftGRU and model["a"].head is head
    assert not any(p.requires_grad for p in model["b"].parameters()) and not model["b"].training
    assert patch_raft(model) == 0  # ours are left alone


def near_miss(kind):
    gru = Princeton.ConvGRU(4, 3)
    bad = {
        "padding": dict(kernel_size=3, padding=0),
        "kernel": dict(kernel_size=5, padding=1),
        "even kernel": dict(kernel_size=2, padding=1),
        "stride": dict(kernel_size=3, padding=1, stride=2),
        "groups": dict(kernel_size=3, padding=1, groups=7),
        "dilation": dict(kernel_size=3, padding=1, dilation=2),
        "padding mode": dict(kernel_size=3, padding=1, padding_mode="reflect"),
        "bias": dict(kernel_size=3, padding=1, bias=False),
    }.get(kind)
    if bad is not None:
        gru.convr = nn.Conv2d(7, 7 if kind == "groups" else 4, **bad, **F64)
    elif kind == "extra parameter":
        gru.scale = nn.Parameter(torch.ones(1))
    elif kind == "signature":
        gru.forward = lambda net, *inputs: raft_update(net, torch.cat(inputs, 1), gru.convz, gru.convr, gru.convq)
    return gru


REASONS = {
    "padding": "padding", "kernel": "padding", "even kernel": "odd kernel", "stride": "stride-1",
    "groups": "ungrouped", "dilation": "padding", "padding mode": "padding_mode",
    "bias": r"convs without a bias \(convr\)", "extra parameter": r"besides its convs.*\['scale'\]",
    "signature": r"forward\(net, \*inputs\) is not RAFT's forward\(h, x\)",
}


@pytest.mark.parametrize("kind", list(REASONS))
def test_near_misses_are_left_alone_with_a_warning_naming_them(kind):
    gru = near_miss(kind)
    model = nn.Sequential(nn.Identity(), Block(gru, 4), Block(Princeton.ConvGRU(4, 3), 4))
    with pytest.warns(UserWarning, match=rf"patch_raft: left `1\.gru` \(ConvGRU\) as it is: .*{REASONS[kind]}"):
        assert patch_raft(model) == 1
    assert model[1].gru is gru and type(model[2].gru) is RaftGRU


def test_near_miss_in_a_sep_gru_and_the_model_itself():
    sep = Princeton.SepConvGRU(4, 3)
    sep.convq2 = nn.Conv2d(7, 4, (5, 1), padding=(1, 0), **F64)
    with pytest.warns(UserWarning, match=r"left `gru` \(SepConvGRU\) as it is: its convs convz2, convr2, convq2: "
                                         r"from_raft: `convq` must be a stride-1"):
        assert patch_raft(Block(sep, 4)) == 0
    with pytest.warns(UserWarning, match="it is the model itself, which cannot be replaced in place"):
        assert patch_raft(Princeton.ConvGRU(4, 3)) == 0


def test_bad_arguments_and_checkpoints():
    with pytest.raises(TypeError, match="patch_raft: `model` must be an nn.Module; got str"):
        patch_raft("raft")
    with pytest.raises(ValueError, match="nope"):
        patch_raft(nn.Identity(), backend="nope")
    patched = Block(Princeton.ConvGRU(4, 3), 4)
    patch_raft(patched)
    with pytest.raises(RuntimeError, match=r"size mismatch for gru\.convz\.weight: copying a param with shape "
                                           r"\(4, 9, 3, 3\) from checkpoint, the shape in current model is \(4, 7"):
        patched.load_state_dict(Block(Princeton.ConvGRU(4, 5), 4).state_dict())
