"""A whole time loop replayed as one CUDA graph, for the loops whose host time exceeds their GPU time.

A loop launches 1-2 kernels per step, and Triton's Python launch path costs tens of microseconds per
launch.  Where a step's GPU work takes longer than that, the launches hide behind the GPU and a graph
would only add its copies; where it takes less (small steps: streaming one frame at a time), the loop
is host-bound and a graph takes the launches off the host.  Which of the two a shape is depends on the
host as much as on the GPU, so :func:`run` measures the host side and takes the GPU side from the static
cost model (``model.py``), per *launch key* (the function, every tensor's shape, strides and dtype, the
device, the caller's stream and the loop's static arguments and configuration):

* the first call of a key runs eagerly (it compiles the kernels; nothing is captured while Triton
  compiles); the second runs eagerly too, and its host time (launches enqueued, the GPU not waited for)
  is measured against the model's GPU time of the call plus the graph's copies: a key whose host time is
  not the larger, or whose graph would hold more than ``CONFIG.max_graph_bytes`` (statics and outputs),
  stays eager for good;
* otherwise the third call captures the loop on static copies of its inputs, and every later call
  copies its inputs into those, replays, and returns *clones* of the static outputs, so that a result
  never aliases a later call's (the forward's outputs are saved for the backward); outputs no backward
  will read (``outputs_unread``: the gates of a call that needs no gradient) are returned uncloned, valid
  until the next call of the key;
* at most ``CONFIG.max_graphs`` keys are remembered (least recently used first out), so memory does not
  grow with the number of shapes seen; each graph holds its static inputs and its private pool;
* one lock covers a call's copy-in, replay and copy-out, and the key includes the caller's stream: calls
  of one shape from two threads, or on two streams, never share statics mid-call (the GPU would run one
  stream's copy-in while the other's replay still reads the statics);
* a capture runs with the tensors' device current, on a stream of that device (capturing on another
  device's stream records nothing), in ``thread_local`` mode (another thread's CUDA calls, a
  DataLoader's pin-memory thread's, do not break it), and outside ``inference_mode`` (statics that
  were inference tensors would refuse a later normal call's copy-in);
* it stands aside (eager loop) while torch.compile or torch.export traces, for tensor subclasses
  (fake tensors), inside a graph the caller is capturing, for inputs with gaps or overlaps in their
  strides, on the CPU, and with ``CONVGRU_TRITON_GRAPHS=0``; a capture that fails falls back to the
  eager loop for that key, with a warning.

Unverified on a GPU: the CPU tests run the rule, key, copy and clone logic with a stand-in graph that
re-runs the loop into the static outputs (``tests/test_triton.py``); ``tests/test_gpu_kernels.py`` holds
what only real graphs can show.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
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
_TIME = object()  # a key seen once: its next call is timed
_graphs: collections.OrderedDict[tuple, object] = collections.OrderedDict()
#: held from a key's lookup to its outputs' copies (and through a capture): see the module docstring
_lock = threading.RLock()


def clear() -> None:
    """Drop every held graph (and its memory)."""
    with _lock:
        _graphs.clear()


#: calls of a key that run eagerly before its capture (the first compiles, the second is timed)
EAGER_CALLS = 2
_unread_outputs = threading.local()


@contextlib.contextmanager
def outputs_unread(*positions: int):
    """Inside the block, this thread's calls return the outputs at ``positions`` uncloned from a replay
    (their values are not read after the call: no backward will run)."""
    saved = getattr(_unread_outputs, "positions", ())
    _unread_outputs.positions = positions
    try:
        yield
    finally:
        _unread_outputs.positions = saved


class Eager:
    """A key decided against a graph, and why."""

    def __init__(self, reason: str):
        self.reason = reason


def eager_reasons() -> list[str]:
    """Why each remembered key that stays eager does (the rule of the module docstring)."""
    return [v.reason for v in _graphs.values() if isinstance(v, Eager)]


def held() -> int:
    """How many launch keys hold a captured graph."""
    return sum(1 for v in _graphs.values() if isinstance(v, tuple))


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
        unread: tuple[int, ...] = (), gpu_us: Optional[Callable[[], float]] = None):
    """``fn(*tensors, *args)``, through a captured graph of it where that pays (see the module docstring).

    ``args`` and ``config`` (whatever else decides the launches, such as the math mode) are part of the
    key; ``fn`` must return a tuple of tensors (or Nones) and allocate every tensor it writes.
    ``unread``: the positions of tensors whose contents ``fn`` does not read (only their shape, dtype
    and device): they are not copied in.  ``gpu_us``: the cost model's GPU microseconds of the call
    (None: 0, a graph pays wherever the host takes any time).
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
            _remember(key, _TIME)
        elif entry is None or isinstance(entry, tuple):
            with _on(device):
                return _replay(key, entry, fn, tensors, args, unread, device)
    if entry is not _TIME:
        return fn(*tensors, *args)
    start = time.perf_counter()
    outputs = fn(*tensors, *args)
    host_us = 1e6 * (time.perf_counter() - start)
    with _lock:
        _remember(key, _verdict(host_us, 0.0 if gpu_us is None else gpu_us(), tensors, unread, outputs))
    return outputs


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _verdict(host_us: float, gpu_us: float, tensors, unread, outputs):
    """None (capture at the next call) or :class:`Eager`: the rule of the module docstring."""
    from .model import BYTES_PER_S

    held = _bytes(tensors) + _bytes(outputs)
    if held > CONFIG.max_graph_bytes:
        return Eager(f"its graph would hold {held / 2**20:.0f} MiB (max_graph_bytes: "
                     f"{CONFIG.max_graph_bytes / 2**20:.0f} MiB)")
    copied = _bytes(t for i, t in enumerate(tensors) if i not in unread) + _bytes(outputs)
    copy_us = 1e6 * 2 * copied / BYTES_PER_S  # each copy reads and writes
    if host_us <= gpu_us + copy_us:
        return Eager(f"GPU-bound: host {host_us:.0f} us <= GPU {gpu_us:.0f} us + copies {copy_us:.0f} us "
                     "(the cost model)")
    return None


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
    uncloned = getattr(_unread_outputs, "positions", ())
    return tuple(o if o is None or i in uncloned else o.clone() for i, o in enumerate(graph.outputs))


def _remember(key: tuple, value) -> None:
    _graphs[key] = value
    _graphs.move_to_end(key)
    while len(_graphs) > CONFIG.max_graphs:
        _graphs.popitem(last=False)
