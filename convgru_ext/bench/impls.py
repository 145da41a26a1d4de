"""The implementations the benchmark runs side by side.  Peers: ``eager`` and ``compiled`` (:class:`PublicPeer`),
``nn.GRU`` (:class:`NNGRUPeer`), ``ort-naive`` and ``ort-ours`` (:class:`OnnxRuntimePeer`); ours (:class:`Ours`):
every backend of ``convgru_ext`` usable here, the ``reference`` included, and every fused backend's
``recompute=True`` mode, through the public functional API; backends marked experimental are labelled so.

Every implementation is built from the same parameters (ours: ``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh`` per cell), mapped so that it computes the same function, and says how the reference's parameter
gradients map onto its own parameters, so that the benchmark can check it before timing it.
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
from .catalog import PASSES, Workload

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
#: the default mode of the ``compiled`` peer
COMPILE_MODE = "max-autotune-no-cudagraphs"

Params = list[dict[str, Tensor]]  # one dict of PARAM_NAMES per cell of the workload


@dataclasses.dataclass
class Built:
    """An implementation ready to run one workload in one dtype: ``run(x, h0)`` takes ``wl.x_shape`` and
    ``wl.h_shape`` and returns ``wl.out_shape``; ``params``, its own leaf parameters, are named by ``param_names``;
    ``map_grads`` turns the reference's parameter gradients (shaped like :data:`Params`) into those expected for
    ``params``; ``export_s``: seconds spent exporting (the onnxruntime peers), excluded from the timings."""

    run: Callable[[Tensor, Tensor], Tensor]
    params: list[Tensor]
    param_names: list[str]
    map_grads: Callable[[Params], list[Tensor]]
    export_s: Optional[float] = None


class Implementation:
    """One row family of the benchmark's tables, with rows for the ``passes`` and the reset modes (``resets``) it
    computes; ``compile_mode``: the ``torch.compile`` mode its build compiles with, or None; ``no_graph``: why
    ``--cuda-graph`` does not capture its calls, or None when it does."""

    name: str = ""
    kind: str = "ours"  # "peer" or "ours"
    experimental: bool = False
    passes: tuple[str, ...] = PASSES
    resets: tuple[str, ...] = ("before", "after")
    compile_mode: Optional[str] = None
    no_graph: Optional[str] = None

    def label(self, device: torch.device) -> str:
        return self.name + (" (experimental)" if self.experimental else "")

    def applies_to(self, wl: Workload) -> bool:
        """Whether this implementation has a row for ``wl`` at all."""
        return wl.reset in self.resets

    def unavailable(self, wl: Workload, dtype: torch.dtype, device: torch.device) -> Optional[str]:
        """Why it cannot run ``wl`` in ``dtype`` on ``device`` here (the row says so), or None."""
        return None

    def build(self, wl: Workload, params: Params, train: bool) -> Built:
        """Ready to run ``wl`` with ``params`` (target dtype and device; copied, never modified); with ``train``
        its parameters require gradients."""
        raise NotImplementedError


class _Layer(nn.Module):
    """``(x, h0) -> out`` as ``wl.api`` calls it: the step (``cells`` in turn, each ``(x, h) -> h'``) once for
    ``cell`` and ``sep``, else per frame over T (every state stacked for ``sequence``, the last for ``stream``);
    with ``native``, a ``sequence`` is one ``convgru_sequence`` call of the first cell instead."""

    def __init__(self, cells: list[nn.Module], api: str, native: bool = False):
        super().__init__()
        self.cells, self.api, self.native, self.compiled = nn.ModuleList(cells), api, native, None

    def step(self, x: Tensor, h: Tensor) -> Tensor:
        for cell in self.cells:
            h = cell.forward(x, h)
        return h

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        step = self.compiled or self.step
        if self.api in ("cell", "sep"):
            return step(x, h)
        if self.native and self.api == "sequence":
            first = self.cells[0]
            return convgru_sequence(x, h, *first.tensors(), **first.kw)[0]
        states = []
        for t in range(x.shape[0]):
            h = step(x[t], h)
            states += [h] if self.api == "sequence" else []
        return torch.stack(states) if self.api == "sequence" else h

    def flat(self) -> tuple[list[Tensor], list[str]]:
        named = [(f"cell{i}.{n}", p) for i, c in enumerate(self.cells) for n, p in c.named_parameters()]
        return [p for _, p in named], [n for n, _ in named]

    @classmethod
    def ours(cls, wl: Workload, params: Params, **kw) -> _Layer:
        """Our layer of ``wl`` holding (a copy of) ``params``, calling the functional API with ``kw``."""
        kw = dict(dilation=wl.dilation, reset=wl.reset, **kw)
        return cls([_OurCell(p, kw) for p in params], wl.api, native=True)

    @classmethod
    def public(cls, wl: Workload, params: Params) -> _Layer:
        """The public-style model of ``wl`` (one cell, or RAFT's two for ``sep``) holding ``params``."""
        kw = {"device": params[0]["weight_hh"].device, "dtype": params[0]["weight_hh"].dtype}
        return cls([PublicConvGRUCell(wl.Cin, wl.C, k, wl.dilation, **kw).load(p) for k, p in zip(wl.cells, params)],
                   wl.api)


class _OurCell(nn.Module):
    """One cell's parameters (a copy), called through ``convgru_cell`` with ``kw``."""

    def __init__(self, p: dict[str, Tensor], kw: dict):
        super().__init__()
        for n in PARAM_NAMES:
            self.register_parameter(n, nn.Parameter(p[n].detach().clone()))
        self.kw = kw

    def tensors(self) -> tuple[Tensor, ...]:  # not parameters(): a walk of the module, microseconds per step
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return convgru_cell(x, h, *self.tensors(), **self.kw)


class Ours(Implementation):
    """A ``convgru_ext`` backend, through the public functional API; with ``recompute``, that backend's
    ``recompute=True`` mode (named ``<backend>+recompute``; only a forward+backward row tells it apart); with
    ``compile_mode``, our layer's whole call under ``torch.compile`` (``<backend>+compile``: ``fullgraph=True``,
    static shapes, compile time reported apart, as for the ``compiled`` peer)."""

    def __init__(self, backend: str, recompute: bool = False, compile_mode: Optional[str] = None):
        self.backend, self.recompute, self.compile_mode = backend, recompute, compile_mode
        self.name = backend + ("+recompute" if recompute else "") + ("+compile" if compile_mode else "")
        self.experimental = bool(getattr(backends.get(backend), "experimental", False))
        self.passes = PASSES[1:] if recompute else PASSES

    def unavailable(self, wl, dtype, device):
        backend = backends.get(self.backend)
        reason = backend.benchmark_reason() or backend.unavailable_reason()
        if reason:
            return reason
        why = (backend.why_not(Problem(T=wl.T, B=wl.B, Cin=wl.Cin, C=wl.C, H=wl.H, W=wl.W, kernel=kernel,
                                       dilation=wl.dilation, reset_after=wl.reset == "after", dtype=dtype,
                                       device=device)) for kernel in wl.cells)
        return "; ".join(dict.fromkeys(r for reasons in why for r in reasons)) or None

    def build(self, wl, params, train):
        layer = _Layer.ours(wl, params, backend=self.backend, recompute=self.recompute).requires_grad_(train)
        run = layer.forward
        if self.compile_mode is not None:
            torch._dynamo.reset()  # a fresh cache per build, as for the compiled peer
            run = torch.compile(layer.forward, mode=self.compile_mode, fullgraph=True, dynamic=False)
        return Built(run, *layer.flat(), lambda grads: [g[n] for g in grads for n in PARAM_NAMES])


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
        r, z = torch.split(torch.sigmoid(self.conv_gates(torch.cat([x, h], dim=1))), self.hidden, dim=1)
        n = torch.tanh(self.conv_can(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * n

    @torch.no_grad()
    def load(self, p: dict[str, Tensor]) -> PublicConvGRUCell:
        """Copy our cell parameters ``p`` in: the same function (``bias_ih + bias_hh`` feed one bias)."""
        for conv, part in ((self.conv_gates, slice(0, 2 * self.hidden)), (self.conv_can, slice(2 * self.hidden, None))):
            conv.weight.copy_(torch.cat([p["weight_ih"][part], p["weight_hh"][part]], dim=1))
            conv.bias.copy_(p["bias_ih"][part] + p["bias_hh"][part])
        return self

    @staticmethod
    def map_grads(g: dict[str, Tensor], C: int) -> list[Tensor]:
        """Our gradients ``g`` as gradients of (conv_gates.weight, .bias, conv_can.weight, .bias).  With the reset
        before the convolution both biases of a gate add to one pre-activation: the merged bias's is ``bias_ih``'s."""
        return [t for part in (slice(0, 2 * C), slice(2 * C, None))
                for t in (torch.cat([g["weight_ih"][part], g["weight_hh"][part]], dim=1), g["bias_ih"][part])]


class PublicPeer(Implementation):
    """``eager`` (``compile_mode=None``): :class:`PublicConvGRUCell`, the per-step ConvGRU most public code uses,
    autograd doing the backward, sequences looping over T in Python (``reset="before"`` only: no ``gru-1x1`` row).

    ``compiled``: the same under ``torch.compile`` (default mode :data:`COMPILE_MODE`, ``fullgraph=True``, static
    shapes).  The compiled function is the step (one cell, or RAFT's two); the time loop stays in Python, since
    compiling the unrolled sequence multiplies compile time by T.  Compile time is reported apart from the timings.
    """

    kind, resets = "peer", ("before",)  # public ConvGRU code computes the reset before the convolution

    def __init__(self, compile_mode: Optional[str] = None):
        self.compile_mode = compile_mode
        self.name = "eager" if compile_mode is None else "compiled"

    def label(self, device):
        return self.name if self.compile_mode is None else f"compiled ({self.compile_mode})"

    def build(self, wl, params, train):
        layer = _Layer.public(wl, params).requires_grad_(train)
        if self.compile_mode is not None:
            torch._dynamo.reset()  # a fresh cache per build: no recompile limit, no stale graphs
            layer.compiled = torch.compile(layer.step, mode=self.compile_mode, fullgraph=True, dynamic=False)
        return Built(layer.forward, *layer.flat(),
                     lambda grads: [t for g in grads for t in PublicConvGRUCell.map_grads(g, wl.C)])


class NNGRUPeer(Implementation):
    """``torch.nn.GRU`` (cuDNN on a GPU) where the workload reduces to it: 1x1 kernels on 1x1 pixels,
    ``reset="after"``, z weights negated (see ``tests/test_oracle.py``)."""

    kind, name = "peer", "nn.GRU"

    def label(self, device):
        return "nn.GRU (cuDNN)" if device.type == "cuda" else "nn.GRU"

    def applies_to(self, wl):
        return wl.api == "sequence" and wl.cells == [(1, 1)] and (wl.H, wl.W) == (1, 1) and wl.reset == "after"

    def build(self, wl, params, train):
        p, C = params[0], wl.C
        gru = nn.GRU(wl.Cin, C, device=p["weight_hh"].device, dtype=p["weight_hh"].dtype)
        sign = torch.ones(3 * C, dtype=p["weight_hh"].dtype, device=p["weight_hh"].device)
        sign[C: 2 * C] = -1  # nn.GRU's z weighs the old state, ours the candidate

        def mapped(g: dict[str, Tensor]) -> list[Tensor]:
            return [g["weight_ih"][:, :, 0, 0] * sign[:, None], g["weight_hh"][:, :, 0, 0] * sign[:, None],
                    g["bias_ih"] * sign, g["bias_hh"] * sign]

        with torch.no_grad():
            for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), mapped(p)):
                getattr(gru, name).copy_(value)
        gru.requires_grad_(train).flatten_parameters()

        def run(x, h):
            return gru(x.view(wl.T, wl.B, wl.Cin), h.view(1, wl.B, C))[0].view(wl.T, wl.B, C, 1, 1)

        return Built(run, list(gru.parameters()), [n for n, _ in gru.named_parameters()],
                     lambda grads: mapped(grads[0]))


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


class OnnxRuntimePeer(Implementation):
    """Forward rows only: ``ort-naive`` (``model="naive"``: the eager peer's model) or ``ort-ours`` (our layer
    through the public functional API with ``backend="auto"``: exporting, every call runs the ``reference``, so the
    graph is standard ONNX operators), exported once per build with ``torch.onnx.export(..., dynamo=True)`` (a
    sequence unrolled over its T steps) and run in an ``onnxruntime.InferenceSession`` with PyTorch's number of CPU
    threads, on the CPU provider, or on a GPU the CUDA provider.  The export is reported apart from the timings."""

    kind, passes = "peer", PASSES[:1]
    no_graph = "onnxruntime launches its own CUDA work, outside PyTorch's graph capture"

    def __init__(self, model: str):
        if model not in ("naive", "ours"):
            raise ValueError(f"`model` must be 'naive' or 'ours'; got {model!r}")
        self.model, self.name = model, f"ort-{model}"
        self.resets = PublicPeer.resets if model == "naive" else Implementation.resets

    def label(self, device):
        return f"onnxruntime({self.model})" + (" CUDA" if device.type == "cuda" else "")

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
        if dtype not in (torch.float32, torch.float16):  # no bfloat16 Conv, and no float64 one on the CPU
            return f"onnxruntime has no {str(dtype).removeprefix('torch.')} Conv here (float32 and float16 only)"
        return None

    def build(self, wl, params, train):
        import numpy as np
        import onnxruntime

        device, dtype = params[0]["weight_hh"].device, params[0]["weight_hh"].dtype
        module = _Layer.public(wl, params) if self.model == "naive" else _Layer.ours(wl, params, backend="auto")
        example = tuple(torch.zeros(s, dtype=dtype, device=device) for s in (wl.x_shape, wl.h_shape))
        started = time.perf_counter()
        with _quiet():
            program = torch.onnx.export(module.eval().requires_grad_(False), example, dynamo=True, verbose=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        index = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" \
            else None
        providers = ([("CUDAExecutionProvider", {"device_id": index})] if index is not None else []) + [
            "CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options, providers=providers)
        export_s = time.perf_counter() - started
        if index is not None and "CUDAExecutionProvider" not in session.get_providers():
            raise RuntimeError(f"onnxruntime's CUDA provider did not load (the session fell back to "
                               f"{session.get_providers()})")
        names, output = [i.name for i in session.get_inputs()], session.get_outputs()[0].name
        if len(names) != 2:
            raise RuntimeError(f"the exported graph takes {names}, not (x, h0)")
        binding = session.io_binding() if index is not None else None

        def run(x, h):
            x, h = x.detach().contiguous(), h.detach().contiguous()
            if binding is None:
                return torch.from_numpy(session.run([output], {names[0]: x.numpy(), names[1]: h.numpy()})[0])
            out = torch.empty(wl.out_shape, dtype=dtype, device=device)
            torch.cuda.current_stream(device).synchronize()  # x and h are written on PyTorch's stream
            for name, t in zip(names + [output], (x, h, out)):
                bind = binding.bind_output if t is out else binding.bind_input
                bind(name, "cuda", index, np.float16 if dtype == torch.float16 else np.float32, tuple(t.shape),
                     t.data_ptr())
            session.run_with_iobinding(binding)  # returns once the session's stream is done
            return out

        return Built(run, [], [], lambda grads: [], export_s=export_s)


def all_implementations(compile_mode: Optional[str] = COMPILE_MODE) -> list[Implementation]:
    """Every implementation, in the order their rows are run: peers, then every registered backend and every
    fused one's recompute mode, then the onnxruntime peers (an export each), then the compiled peer (the slowest
    to prepare) and every fused backend under ``torch.compile``, unless ``compile_mode`` is None."""
    names = backends.names()
    fused = [n for n in names if backends.get(n).fused]
    compiled = [PublicPeer(compile_mode), *(Ours(n, compile_mode=compile_mode) for n in fused)] \
        if compile_mode is not None else []
    return [PublicPeer(), NNGRUPeer(), *(Ours(n) for n in names), *(Ours(n, recompute=True) for n in fused),
            OnnxRuntimePeer("naive"), OnnxRuntimePeer("ours"), *compiled]
