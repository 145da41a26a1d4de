"""The implementations the benchmark runs side by side: peers and ours.

Peers:

* ``eager``: the per-step ConvGRU that most public code uses (:class:`PublicConvGRUCell`):
  a convolution over ``cat([x, h])`` for r and z, ``split``, one over
  ``cat([x, r*h])`` for n, elementwise, autograd does the backward; sequences
  loop over T in Python.  It computes ``reset="before"`` only, so it has no
  row for the ``gru-1x1`` anchor;
* ``compiled``: the same cell under ``torch.compile`` (default mode
  ``max-autotune-no-cudagraphs``, ``fullgraph=True``, static shapes).  The
  compiled function is the cell (or RAFT's two-cell update); the time loop
  stays in Python, since compiling the unrolled sequence multiplies compile time
  by T.  Compile time is excluded from the timings and reported separately;
* ``nn.GRU``: ``torch.nn.GRU`` (cuDNN on a GPU) where the workload reduces to it
  (1x1 kernels on 1x1 pixels, ``reset="after"``, z weights negated: see
  ``tests/test_oracle.py``);
* ``ort-naive`` and ``ort-ours`` (forward rows only): the eager peer's model, and our layer through the public
  functional API (``backend="auto"``: while exporting, every call runs the ``reference`` backend, so the graph
  is standard ONNX operators), each exported once per row with ``torch.onnx.export(..., dynamo=True)`` (a
  sequence unrolled over its T steps) and run in an ``onnxruntime.InferenceSession`` with PyTorch's number of
  CPU threads, on the CPU provider, or on a GPU the CUDA provider (skipped, with the reason, where it is not
  installed).  The export is excluded from the timings and reported separately.

Ours: every backend of ``convgru_ext`` usable here, called through the public
functional API (``convgru_cell`` / ``convgru_sequence``), the ``reference``
included; backends marked experimental are labelled so.

Every implementation is built from the same parameters (ours: ``weight_ih``,
``weight_hh``, ``bias_ih``, ``bias_hh`` per cell), mapped so that it computes
the same function, and says how the reference's parameter gradients map onto
its own parameters, so that the benchmark can check it before timing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import time
import warnings
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn

from .. import backends
from .._contract import Problem, same_padding
from ..functional import convgru_cell, convgru_sequence
from .catalog import Workload

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
#: the default mode of the ``compiled`` peer
COMPILE_MODE = "max-autotune-no-cudagraphs"

Params = list[dict[str, Tensor]]  # one dict of PARAM_NAMES per cell of the workload


@dataclasses.dataclass
class Built:
    """An implementation ready to run one workload in one dtype.

    ``run(x, h0)`` takes ``x`` (``wl.x_shape``) and ``h0`` (``wl.h_shape``) and
    returns ``wl.out_shape``; ``params`` are its own leaf parameters, named by
    ``param_names``; ``map_grads`` turns the reference's parameter gradients
    (shaped like :data:`Params`) into the gradients expected for ``params``;
    ``export_s``: the seconds building it spent exporting (the onnxruntime peers), excluded from the timings.
    """

    run: Callable[[Tensor, Tensor], Tensor]
    params: list[Tensor]
    param_names: list[str]
    map_grads: Callable[[Params], list[Tensor]]
    export_s: Optional[float] = None


class Implementation:
    """One row family of the benchmark's tables."""

    name: str = ""
    kind: str = "ours"  # "peer" or "ours"
    experimental: bool = False
    #: why ``--cuda-graph`` does not capture its calls, or None when it does
    no_graph: Optional[str] = None

    def label(self, device: torch.device) -> str:
        return self.name + (" (experimental)" if self.experimental else "")

    def applies_to(self, wl: Workload) -> bool:
        """Whether this implementation has a row for ``wl`` at all."""
        return True

    def applies_to_pass(self, pass_: str) -> bool:
        """Whether this implementation has a row for ``pass_`` ("fwd" or "fwd+bwd")."""
        return True

    def unavailable(self, wl: Workload, dtype: torch.dtype, device: torch.device) -> Optional[str]:
        """Why it cannot run ``wl`` in ``dtype`` on ``device`` here (the row says so), or None."""
        return None

    def build(self, wl: Workload, params: Params, train: bool) -> Built:
        """Ready to run ``wl`` with ``params`` (in the target dtype and device; copied, never modified).

        With ``train`` its parameters require gradients."""
        raise NotImplementedError


def _leaf(t: Tensor, train: bool) -> Tensor:
    return t.detach().clone().requires_grad_(train)


def _flat(params: Params) -> tuple[list[Tensor], list[str]]:
    tensors = [p[n] for p in params for n in PARAM_NAMES]
    names = [f"cell{i}.{n}" for i, p in enumerate(params) for n in PARAM_NAMES]
    return tensors, names


def _sequence_loop(step: Callable[[Tensor, Tensor], Tensor], x: Tensor, h: Tensor, keep: bool) -> Tensor:
    """Run ``step`` over ``x``'s T frames from ``h``: every state stacked (``keep``), else the last."""
    states = []
    for t in range(x.shape[0]):
        h = step(x[t], h)
        if keep:
            states.append(h)
    return torch.stack(states) if keep else h


# --------------------------------------------------------------------------------------------- ours


class Ours(Implementation):
    """A ``convgru_ext`` backend, through the public functional API; with ``recompute``, that backend's
    ``recompute=True`` mode (named ``<backend>+recompute``; only a forward+backward row tells it apart)."""

    kind = "ours"

    def __init__(self, backend: str, recompute: bool = False):
        self.backend, self.recompute = backend, recompute
        self.name = backend + ("+recompute" if recompute else "")
        self.experimental = bool(getattr(backends.get(backend), "experimental", False))

    def applies_to_pass(self, pass_):
        return pass_ == "fwd+bwd" or not self.recompute

    def unavailable(self, wl, dtype, device):
        backend = backends.get(self.backend)
        reason = backend.benchmark_reason() or backend.unavailable_reason()
        if reason:
            return reason
        reasons = []
        for kernel in wl.cells:
            problem = Problem(T=wl.T, B=wl.B, Cin=wl.Cin, C=wl.C, H=wl.H, W=wl.W, kernel=kernel,
                              dilation=wl.dilation, reset_after=wl.reset == "after", dtype=dtype, device=device)
            reasons += [r for r in backend.why_not(problem) if r not in reasons]
        return "; ".join(reasons) or None

    def build(self, wl, params, train):
        cells = [{n: _leaf(p[n], train) for n in PARAM_NAMES} for p in params]
        kw = {"dilation": wl.dilation, "reset": wl.reset, "backend": self.backend, "recompute": self.recompute}

        def cell(c, x, h):
            return convgru_cell(x, h, *(c[n] for n in PARAM_NAMES), **kw)

        if wl.api == "cell":
            def run(x, h):
                return cell(cells[0], x, h)
        elif wl.api == "sep":
            def run(x, h):
                return cell(cells[1], x, cell(cells[0], x, h))
        elif wl.api == "stream":
            def run(x, h):
                return _sequence_loop(lambda xt, ht: cell(cells[0], xt, ht), x, h, keep=False)
        else:
            def run(x, h):
                return convgru_sequence(x, h, *(cells[0][n] for n in PARAM_NAMES), **kw)[0]
        tensors, names = _flat(cells)
        return Built(run, tensors, names, lambda grads: _flat(grads)[0])


# -------------------------------------------------------------------------------------------- peers


class PublicConvGRUCell(nn.Module):
    """The ConvGRU cell as most public code writes it (``reset="before"``, z weighs the candidate)::

        r, z = split(sigmoid(conv_gates(cat([x, h]))))        conv_gates: Cin + C -> 2C
        n    = tanh(conv_can(cat([x, r * h])))                  conv_can:   Cin + C -> C
        h'   = (1 - z) * h + z * n

    ``x`` (B, Cin, H, W), ``h`` (B, C, H, W) -> ``h'`` (B, C, H, W); both convolutions 'same'-padded at ``dilation``.
    """

    def __init__(self, Cin: int, C: int, kernel: tuple[int, int], dilation=(1, 1), device=None, dtype=None):
        super().__init__()
        self.hidden = C
        kw = {"padding": same_padding(kernel, dilation), "dilation": dilation, "device": device, "dtype": dtype}
        self.conv_gates = nn.Conv2d(Cin + C, 2 * C, kernel, **kw)
        self.conv_can = nn.Conv2d(Cin + C, C, kernel, **kw)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        gates = torch.sigmoid(self.conv_gates(torch.cat([x, h], dim=1)))
        r, z = torch.split(gates, self.hidden, dim=1)
        n = torch.tanh(self.conv_can(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * n

    @torch.no_grad()
    def load(self, p: dict[str, Tensor]) -> None:
        """Copy our cell parameters ``p`` in: the same function (``bias_ih + bias_hh`` feed one bias)."""
        C = self.hidden
        self.conv_gates.weight.copy_(torch.cat([p["weight_ih"][: 2 * C], p["weight_hh"][: 2 * C]], dim=1))
        self.conv_gates.bias.copy_(p["bias_ih"][: 2 * C] + p["bias_hh"][: 2 * C])
        self.conv_can.weight.copy_(torch.cat([p["weight_ih"][2 * C:], p["weight_hh"][2 * C:]], dim=1))
        self.conv_can.bias.copy_(p["bias_ih"][2 * C:] + p["bias_hh"][2 * C:])

    @staticmethod
    def map_grads(g: dict[str, Tensor], C: int) -> list[Tensor]:
        """Our gradients ``g`` as gradients of (conv_gates.weight, .bias, conv_can.weight, .bias).

        With the reset before the convolution, both biases of a gate add to the
        same pre-activation, so the merged bias's gradient is ``grad bias_ih``."""
        return [torch.cat([g["weight_ih"][: 2 * C], g["weight_hh"][: 2 * C]], dim=1), g["bias_ih"][: 2 * C],
                torch.cat([g["weight_ih"][2 * C:], g["weight_hh"][2 * C:]], dim=1), g["bias_ih"][2 * C:]]


class PublicSepConvGRU(nn.Module):
    """RAFT's separable update with public-style cells: ``vertical(x, horizontal(x, h))``."""

    def __init__(self, Cin: int, C: int, kernels: list[tuple[int, int]], dilation=(1, 1), device=None, dtype=None):
        super().__init__()
        self.horizontal = PublicConvGRUCell(Cin, C, kernels[0], dilation, device, dtype)
        self.vertical = PublicConvGRUCell(Cin, C, kernels[1], dilation, device, dtype)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return self.vertical(x, self.horizontal(x, h))


def public_model(wl: Workload, params: Params) -> tuple[nn.Module, list[PublicConvGRUCell]]:
    """The public-style model of ``wl`` (one cell, or RAFT's two for ``sep``) holding ``params``, and its cells."""
    ref = params[0]["weight_hh"]
    kw = {"device": ref.device, "dtype": ref.dtype}
    if wl.api == "sep":
        module = PublicSepConvGRU(wl.Cin, wl.C, wl.cells, wl.dilation, **kw)
        cells = [module.horizontal, module.vertical]
    else:
        module = PublicConvGRUCell(wl.Cin, wl.C, wl.cells[0], wl.dilation, **kw)
        cells = [module]
    for cell, p in zip(cells, params):
        cell.load(p)
    return module, cells


class PublicPeer(Implementation):
    """``eager`` (``compile_mode=None``) or ``compiled``: :class:`PublicConvGRUCell` per step."""

    kind = "peer"

    def __init__(self, compile_mode: Optional[str] = None):
        self.compile_mode = compile_mode
        self.name = "eager" if compile_mode is None else "compiled"

    def label(self, device):
        return self.name if self.compile_mode is None else f"compiled ({self.compile_mode})"

    def applies_to(self, wl):
        return wl.reset == "before"  # public ConvGRU code computes the reset before the convolution

    def build(self, wl, params, train):
        module, cells = public_model(wl, params)
        module.requires_grad_(train)
        step = module
        if self.compile_mode is not None:
            torch._dynamo.reset()  # a fresh cache per build: no recompile limit, no stale graphs
            step = torch.compile(module, mode=self.compile_mode, fullgraph=True, dynamic=False)

        if wl.api in ("cell", "sep"):
            run = step
        else:
            def run(x, h):
                return _sequence_loop(step, x, h, keep=wl.api == "sequence")
        names = [f"cell{i}.{n}" for i, c in enumerate(cells) for n, _ in c.named_parameters()]
        tensors = [p for c in cells for p in c.parameters()]

        def map_grads(grads: Params) -> list[Tensor]:
            return [t for g in grads for t in PublicConvGRUCell.map_grads(g, wl.C)]

        return Built(run, tensors, names, map_grads)


class NNGRUPeer(Implementation):
    """``torch.nn.GRU`` on the 1x1-pixel, 1x1-kernel, reset-after anchor (cuDNN on a GPU)."""

    kind = "peer"
    name = "nn.GRU"

    def label(self, device):
        return "nn.GRU (cuDNN)" if device.type == "cuda" else "nn.GRU"

    def applies_to(self, wl):
        return wl.api == "sequence" and wl.cells == [(1, 1)] and (wl.H, wl.W) == (1, 1) and wl.reset == "after"

    @staticmethod
    def _sign(C: int, like: Tensor) -> Tensor:
        """+1 on the r and n blocks, -1 on z: nn.GRU's z weighs the old state, ours the candidate."""
        sign = torch.ones(3 * C, dtype=like.dtype, device=like.device)
        sign[C: 2 * C] = -1
        return sign

    def build(self, wl, params, train):
        p = params[0]
        C = wl.C
        gru = nn.GRU(wl.Cin, C, device=p["weight_hh"].device, dtype=p["weight_hh"].dtype)
        sign = self._sign(C, p["weight_hh"])

        def mapped(g: dict[str, Tensor]) -> list[Tensor]:
            return [g["weight_ih"][:, :, 0, 0] * sign[:, None], g["weight_hh"][:, :, 0, 0] * sign[:, None],
                    g["bias_ih"] * sign, g["bias_hh"] * sign]

        with torch.no_grad():
            for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), mapped(p)):
                getattr(gru, name).copy_(value)
        gru.requires_grad_(train)
        gru.flatten_parameters()
        T, B = wl.T, wl.B

        def run(x, h):
            out, _ = gru(x.view(T, B, wl.Cin), h.view(1, B, C))
            return out.view(T, B, C, 1, 1)

        return Built(run, list(gru.parameters()), [n for n, _ in gru.named_parameters()],
                     lambda grads: mapped(grads[0]))


class _Stepped(nn.Module):
    """``model`` (a cell step ``(x, h) -> h'``) called as ``wl.api`` calls it: once (``cell``, ``sep``), or over
    T frames (every state stacked for ``sequence``, the last for ``stream``)."""

    def __init__(self, model: nn.Module, api: str):
        super().__init__()
        self.model, self.api = model, api

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        if self.api in ("cell", "sep"):
            return self.model(x, h)
        return _sequence_loop(self.model, x, h, keep=self.api == "sequence")


class _OurCell(nn.Module):
    """One cell's parameters, for export: ``convgru_cell`` with ``backend="auto"`` (the reference, exporting)."""

    def __init__(self, p: dict[str, Tensor], wl: Workload):
        super().__init__()
        for n in PARAM_NAMES:
            setattr(self, n, nn.Parameter(p[n].detach().clone(), requires_grad=False))
        self.kw = {"dilation": wl.dilation, "reset": wl.reset, "backend": "auto"}

    def tensors(self) -> list[Tensor]:
        return [getattr(self, n) for n in PARAM_NAMES]

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return convgru_cell(x, h, *self.tensors(), **self.kw)


class _OurModel(nn.Module):
    """Our layer on ``wl`` as a module ``(x, h0) -> out``, through the public functional API, for export."""

    def __init__(self, wl: Workload, params: Params):
        super().__init__()
        self.api = wl.api
        self.cells = nn.ModuleList(_OurCell(p, wl) for p in params)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        first = self.cells[0]
        if self.api == "cell":
            return first(x, h)
        if self.api == "sep":
            return self.cells[1](x, first(x, h))
        if self.api == "stream":
            return _sequence_loop(first, x, h, keep=False)
        return convgru_sequence(x, h, *first.tensors(), **first.kw)[0]


@contextlib.contextmanager
def _quiet():
    """The exporter's progress, advice and optimizer warnings, once per row: not printed."""
    logger = logging.getLogger("onnxscript")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


#: the dtypes the onnxruntime peers run: onnxruntime has no bfloat16 Conv, and no float64 one on the CPU
ORT_DTYPES = (torch.float32, torch.float16)


class OnnxRuntimePeer(Implementation):
    """``ort-naive`` (``model="naive"``: the eager peer's model) or ``ort-ours`` (``model="ours"``: our layer),
    exported to ONNX once per build and run by onnxruntime; forward rows only."""

    kind = "peer"
    no_graph = "onnxruntime launches its own CUDA work, outside PyTorch's graph capture"

    def __init__(self, model: str):
        if model not in ("naive", "ours"):
            raise ValueError(f"`model` must be 'naive' or 'ours'; got {model!r}")
        self.model = model
        self.name = f"ort-{model}"

    def label(self, device):
        return f"onnxruntime({self.model})" + (" CUDA" if device.type == "cuda" else "")

    def applies_to(self, wl):
        return self.model == "ours" or wl.reset == "before"  # the naive model computes the reset before only

    def applies_to_pass(self, pass_):
        return pass_ == "fwd"

    @staticmethod
    def missing() -> Optional[str]:
        """Why onnxruntime cannot run here at all (a package not installed), or None."""
        for module, why in (("onnxruntime", ""), ("onnx", ""),
                            ("onnxscript", " (torch.onnx.export(dynamo=True) needs it)")):
            try:
                __import__(module)
            except ImportError:
                return f"{module} is not installed{why}"
        return None

    def unavailable(self, wl, dtype, device):
        reason = self.missing()
        if reason:
            return reason
        import onnxruntime

        if device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime's CUDA provider is not installed here"
        if dtype not in ORT_DTYPES:
            return f"onnxruntime has no {str(dtype).removeprefix('torch.')} Conv here (float32 and float16 only)"
        return None

    def build(self, wl, params, train):
        import numpy as np
        import onnxruntime

        ref = params[0]["weight_hh"]
        device, dtype = ref.device, ref.dtype
        if self.model == "naive":
            module = _Stepped(public_model(wl, params)[0], wl.api)
        else:
            module = _OurModel(wl, params)
        module.eval().requires_grad_(False)
        example = (torch.zeros(wl.x_shape, dtype=dtype, device=device), torch.zeros(wl.h_shape, dtype=dtype,
                                                                                     device=device))
        started = time.perf_counter()
        with _quiet():
            program = torch.onnx.export(module, example, dynamo=True, verbose=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                               providers=providers)
        export_s = time.perf_counter() - started
        if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise RuntimeError("onnxruntime's CUDA provider did not load (the session fell back to "
                               f"{session.get_providers()})")
        names = [i.name for i in session.get_inputs()]
        output = session.get_outputs()[0].name
        if len(names) != 2:
            raise RuntimeError(f"the exported graph takes {names}, not (x, h0)")

        if device.type == "cpu":
            def run(x, h):
                feeds = {names[0]: x.detach().contiguous().numpy(), names[1]: h.detach().contiguous().numpy()}
                return torch.from_numpy(session.run([output], feeds)[0])
        else:
            binding = session.io_binding()
            element = np.float16 if dtype == torch.float16 else np.float32

            def run(x, h):
                x, h = x.detach().contiguous(), h.detach().contiguous()
                out = torch.empty(wl.out_shape, dtype=dtype, device=device)
                torch.cuda.current_stream(device).synchronize()  # x and h are written on PyTorch's stream
                for name, t in zip(names + [output], (x, h, out)):
                    bind = binding.bind_output if t is out else binding.bind_input
                    bind(name, "cuda", index, element, tuple(t.shape), t.data_ptr())
                session.run_with_iobinding(binding)  # returns once the session's stream is done
                return out

        return Built(run, [], [], lambda grads: [], export_s=export_s)


def all_implementations(compile_mode: Optional[str] = COMPILE_MODE) -> list[Implementation]:
    """Every implementation, in the order their rows are run: peers, then every registered backend and every
    fused one's recompute mode, then the onnxruntime peers (an export each), then the compiled peer (the slowest
    to prepare) unless ``compile_mode`` is None."""
    impls: list[Implementation] = [PublicPeer(), NNGRUPeer()]
    impls += [Ours(name) for name in backends.names()]
    impls += [Ours(name, recompute=True) for name in backends.names() if backends.get(name).fused]
    impls += [OnnxRuntimePeer("naive"), OnnxRuntimePeer("ours")]
    if compile_mode is not None:
        impls.append(PublicPeer(compile_mode))
    return impls

