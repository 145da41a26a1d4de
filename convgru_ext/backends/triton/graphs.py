"""A whole time loop replayed as one CUDA graph: the host cost of a step's launches paid once per shape.

A loop launches 1-2 kernels per step, and Triton's Python launch path costs tens of microseconds
per launch, about as long as a step's GPU work at the benchmark's shapes.  :func:`run` captures a
loop once per *launch key* (the function, every tensor's shape, strides and dtype, the device and
the loop's static arguments and configuration) and replays it afterwards:

* the first call of a key runs eagerly (it compiles the kernels; nothing is captured while Triton
  compiles), the second captures the loop on static copies of its inputs, and every later call
  copies its inputs into those, replays, and returns *clones* of the static outputs, so that a
  result never aliases a later call's (the forward's outputs are saved for the backward);
* at most ``CONFIG.max_graphs`` keys are held (least recently used first out), so memory does not grow
  with the number of shapes seen; each holds its static inputs and its private pool;
* a key includes the caller's stream, and one lock covers a call's copy-in, replay and copy-out: calls
  of one shape from two threads, or on two streams, never share statics mid-call (the GPU would run
  one stream's copy-in while the other's replay still reads the statics);
* a capture runs with the tensors' device current, on a stream of that device (capturing on another
  device's stream records nothing), in ``thread_local`` mode (another thread's CUDA calls, a
  DataLoader's pin-memory thread's, do not break it), and outside ``inference_mode`` (statics that
  were inference tensors would refuse a later normal call's copy-in);
* it stands aside (eager loop) while torch.compile or torch.export traces, for tensor subclasses
  (fake tensors), inside a graph the caller is capturing, for inputs with gaps or overlaps in their
  strides, on the CPU, and with ``CONVGRU_TRITON_GRAPHS=0``; a capture that fails falls back to the
  eager loop for that key, with a warning.

The copies are the price: per call, the inputs in and the outputs out, once each (one launch per
tensor instead of 1-2 per step).  Unverified on a GPU: the CPU tests run the key, copy and clone
logic with a stand-in graph that re-runs the loop into the static outputs (``tests/test_triton.py``).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import warnings
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from .config import CONFIG


class CudaGraph:
    """``torch.cuda.CUDAGraph`` behind the two calls :func:`run` makes: captured with ``device`` current, on a
    stream of ``device``, in ``thread_local`` mode; replayed (by :func:`run`, with ``device`` current) on the
    caller's stream."""

    def __init__(self, fn: Callable[[], tuple], device: torch.device):
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), torch.cuda.graph(self.graph, stream=torch.cuda.Stream(device),
                                                         capture_error_mode="thread_local"):
            self.outputs = fn()

    def replay(self) -> None:
        self.graph.replay()


class RerunGraph:
    """A stand-in for tests without a GPU: "replay" re-runs the loop on the static inputs and writes
    its results into the static outputs, as a replayed graph writes its captured buffers."""

    def __init__(self, fn: Callable[[], tuple], device: torch.device):
        self.fn = fn
        self.outputs = fn()

    def replay(self) -> None:
        for static, fresh in zip(self.outputs, self.fn()):
            if static is not None:
                static.copy_(fresh)


_FAILED = object()  # a key whose capture failed: eager from then on
_graphs: collections.OrderedDict[tuple, object] = collections.OrderedDict()
#: held from a key's lookup to its outputs' copies (and through a capture): see the module docstring
_lock = threading.RLock()


def clear() -> None:
    """Drop every held graph (and its memory)."""
    with _lock:
        _graphs.clear()


def held() -> int:
    """How many launch keys hold a captured graph."""
    return sum(1 for v in _graphs.values() if v is not None and v is not _FAILED)


def _why_eager(tensors: tuple[Optional[Tensor], ...]) -> Optional[str]:
    present = [t for t in tensors if t is not None]
    if not CONFIG.graphs:
        return "CONVGRU_TRITON_GRAPHS=0"
    if present[0].device.type not in CONFIG.graph_devices:
        return f"tensors on {present[0].device}"
    if torch.compiler.is_compiling():
        return "torch.compile is tracing"
    if any(type(t) is not Tensor for t in present):
        return "a tensor subclass"
    if present[0].device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return "the caller is capturing a graph"
    if any(torch.empty_like(t).stride() != t.stride() for t in present):
        return "an input with gaps or overlaps in its strides"
    return None


def _spec(t: Optional[Tensor]):
    return None if t is None else (tuple(t.shape), t.stride(), t.dtype)


def run(fn: Callable, tensors: tuple[Optional[Tensor], ...], args: tuple, config: tuple,
        unread: tuple[int, ...] = ()):
    """``fn(*tensors, *args)``, through a captured graph of it where possible (see the module docstring).

    ``args`` and ``config`` (whatever else decides the launches, such as the math mode) are part of the
    key; ``fn`` must return a tuple of tensors (or Nones) and allocate every tensor it writes.
    ``unread``: the positions of tensors whose contents ``fn`` does not read (only their shape, dtype
    and device): they are not copied in.
    """
    if _why_eager(tensors) is not None:
        return fn(*tensors, *args)
    device = next(t.device for t in tensors if t is not None)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    key = (fn.__module__, fn.__qualname__, str(device), stream, repr(args), config,
           tuple(_spec(t) for t in tensors))
    with _lock:
        entry = _graphs.get(key, _FIRST)
        if entry is _FIRST:  # first sight: eager, which compiles every kernel the capture will launch
            _remember(key, None)
        elif entry is not _FAILED:
            with _on(device):
                return _replay(key, entry, fn, tensors, args, unread, device)
    return fn(*tensors, *args)


_FIRST = object()  # a key not seen yet


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _replay(key, entry, fn, tensors, args, unread, device):
    """Capture (``entry`` None) or replay the graph of ``key``: under :data:`_lock`, with ``device`` current."""
    if entry is None:
        # outside inference_mode: the statics and the captured outputs are normal tensors, which any later
        # call may copy into (a copy into them under inference_mode is allowed, the other way round is not)
        with torch.inference_mode(False):
            # unread inputs' statics hold NaN, so that a loop that did read them would show it
            statics = tuple(None if t is None else torch.full_like(t, float("nan")) if i in unread else t.clone()
                            for i, t in enumerate(tensors))
            try:
                graph = (CONFIG.graph or CudaGraph)(lambda: fn(*statics, *args), device)
            except Exception as error:  # noqa: BLE001 -- the eager loop is always correct; say why once
                warnings.warn(f"convgru_ext: capturing the Triton time loop as a CUDA graph failed "
                              f"({type(error).__name__}: {error}); this shape runs eagerly", RuntimeWarning,
                              stacklevel=4)
                _remember(key, _FAILED)
                return fn(*tensors, *args)
        entry = (statics, graph)
        _remember(key, entry)
    _graphs.move_to_end(key)
    statics, graph = entry
    for i, (static, t) in enumerate(zip(statics, tensors)):
        if t is not None and i not in unread:
            static.copy_(t)
    graph.replay()
    return tuple(None if o is None else o.clone() for o in graph.outputs)


def _remember(key: tuple, value) -> None:
    _graphs[key] = value
    _graphs.move_to_end(key)
    while len(_graphs) > CONFIG.max_graphs:
        _graphs.popitem(last=False)
