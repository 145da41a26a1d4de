"""The named workloads of the benchmark (:data:`CATALOG`) and what one call of each costs: the only place the FLOP
and byte counts and the roofline are defined.

Each workload exercises one public API (``Workload.api``): ``cell``, one ``convgru_cell`` call (RAFT's update
block: ``x`` changes every call, nothing can be hoisted); ``sep``, RAFT's ``SepConvGRU`` (a 1xk cell, then a kx1
cell); ``sequence``, one ``convgru_sequence`` call; ``stream``, ``convgru_cell`` once per arriving frame under
``torch.no_grad`` (latency-bound: launch overhead dominates).  ``gru-1x1`` (1x1 kernel, 1x1 pixels,
``reset="after"``) *is* ``torch.nn.GRU``: a sanity anchor, with cuDNN's GRU as its peer.

``--scale s`` multiplies each workload's number of pixels in a batch, B*H*W, by about ``s``: spatial workloads
scale H and W by sqrt(s) (rounded, at least 1) and keep B, T and the channels, so the GEMMs' channel dimensions
and the number of recurrent steps stay representative; the 1x1-pixel anchor scales B.

FLOPs (:func:`forward_flops_per_step`) count multiply and add apart and ignore the elementwise gate math, the same
for both reset modes; forward+backward counts 3x the forward (the backward as twice the forward: data and weight
gradients).  A call runs T cell steps of each of its cells (T = 1 for ``cell`` and ``sep``).

Minimal bytes (:meth:`Workload.min_bytes`): the compulsory memory traffic of one call of the API in isolation, in
the benchmarked dtype, every intermediate (gates, the input projection, the states between steps) assumed to stay
on chip; a lower bound no real implementation reaches.  The forward reads x, h0, the weights and biases and writes
the states it returns; the backward reads the output gradient, x, h0, the states and the weights again and writes
dx, dh0 and the weight and bias gradients (``stream`` is T calls of one step, ``sep`` two calls).

The roofline (:func:`roofline`): ``t_roof = max(FLOPs / peak FLOP/s, bytes / peak bytes/s)``, ``% of roofline =
100 * t_roof / measured time``, with the ceilings measured in the same run (``timing.measure_ceilings``).
"""

from __future__ import annotations

import dataclasses
import math

#: the scale of ``--scale smoke``: every workload shrinks to a few pixels (CI, tests)
SMOKE_SCALE = 0.001
#: the default scale on a machine without a GPU
CPU_DEFAULT_SCALE = 0.01
PASSES = ("fwd", "fwd+bwd")
#: the sizes ``--sizes`` may set
SIZES = ("T", "B", "Cin", "C", "H", "W")


def forward_flops_per_step(B: int, H: int, W: int, kh: int, kw: int, Cin: int, C: int) -> int:
    """2 * B * H * W * kh * kw * 3C * (Cin + C): the convolutions of one forward cell step."""
    return 2 * B * H * W * kh * kw * 3 * C * (Cin + C)


def roofline(flop_count: float, byte_count: float, peak_flops: float, peak_bytes_per_s: float) -> tuple[float, str]:
    """``(t_roof, bound)``: the least time both ceilings allow, and which one binds ("compute" or "memory")."""
    t_compute, t_memory = flop_count / peak_flops, byte_count / peak_bytes_per_s
    return (t_compute, "compute") if t_compute >= t_memory else (t_memory, "memory")


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmarked call.  ``T`` is the sequence length (1 for ``cell`` and ``sep``); ``dilation``: every cell's."""

    name: str
    api: str  # "cell", "sep", "sequence" or "stream"
    T: int
    B: int
    Cin: int
    C: int
    H: int
    W: int
    kernel: tuple[int, int] = (3, 3)
    dilation: tuple[int, int] = (1, 1)
    reset: str = "before"
    description: str = ""
    scale: float = 1.0

    @property
    def passes(self) -> tuple[str, ...]:
        """Only the forward, under ``torch.no_grad``, for ``stream``; both passes otherwise."""
        return PASSES[:1] if self.api == "stream" else PASSES

    @property
    def cells(self) -> list[tuple[int, int]]:
        """The kernel of each cell one call runs, in order: one cell, or two for ``sep``."""
        kh, kw = self.kernel
        return [(1, kw), (kw, 1)] if self.api == "sep" else [(kh, kw)]

    @property
    def x_shape(self) -> tuple[int, ...]:
        """``x``: (B, Cin, H, W) for ``cell``/``sep``, (T, B, Cin, H, W) otherwise."""
        return (*((self.T,) if self.api in ("sequence", "stream") else ()), self.B, self.Cin, self.H, self.W)

    @property
    def h_shape(self) -> tuple[int, ...]:
        return (self.B, self.C, self.H, self.W)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """What one call returns: every state (T, B, C, H, W) for ``sequence``, else the last state."""
        return (self.T, *self.h_shape) if self.api == "sequence" else self.h_shape

    def sizes(self) -> str:
        """A short human-readable summary: ``T=16 B=16 Cin=64 C=64 56x56 k=3x3``."""
        k = "+".join(f"{kh}x{kw}" for kh, kw in self.cells)
        t = f"T={self.T} " if self.api in ("sequence", "stream") else ""
        d = "" if self.dilation == (1, 1) else " dilation={}x{}".format(*self.dilation)
        r = "" if self.reset == "before" else f" reset={self.reset}"
        return f"{t}B={self.B} Cin={self.Cin} C={self.C} {self.H}x{self.W} k={k}{d}{r}"

    def scaled(self, scale: float) -> Workload:
        """This workload with B*H*W multiplied by about ``scale`` (see the module docstring)."""
        if not scale > 0:
            raise ValueError(f"`scale` must be positive; got {scale!r}")
        if scale == 1:
            return self
        if self.H == 1 and self.W == 1:
            return dataclasses.replace(self, B=max(1, round(self.B * scale)), scale=scale)
        f = math.sqrt(scale)
        return dataclasses.replace(self, H=max(1, round(self.H * f)), W=max(1, round(self.W * f)), scale=scale)

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), kernel=list(self.kernel), sizes=self.sizes(), passes=list(self.passes))

    def flops(self, pass_: str) -> int:
        """FLOPs of one call in ``pass_`` ("fwd" or "fwd+bwd")."""
        fwd = sum(self.T * forward_flops_per_step(self.B, self.H, self.W, kh, kw, self.Cin, self.C)
                  for kh, kw in self.cells)
        return fwd * {"fwd": 1, "fwd+bwd": 3}[_checked(pass_)]

    def min_bytes(self, pass_: str, element_size: int) -> int:
        """Minimal bytes of one call in ``pass_`` with ``element_size``-byte elements."""
        calls, T = (self.T, 1) if self.api == "stream" else (1, self.T)  # a stream: T calls of one step each
        x, h, out = (n * self.B * self.H * self.W for n in (T * self.Cin, self.C, T * self.C))
        weights = [3 * self.C * (self.Cin + self.C) * kh * kw + 6 * self.C for kh, kw in self.cells]
        fwd = sum(x + h + w + out for w in weights)
        bwd = sum(out + x + h + out + w + x + h + w for w in weights)  # read grad_out, x, h0, states, w; write grads
        return calls * (fwd + (bwd if _checked(pass_) == "fwd+bwd" else 0)) * element_size


def _checked(pass_: str) -> str:
    if pass_ not in PASSES:
        raise ValueError(f"`pass` must be one of {PASSES}; got {pass_!r}")
    return pass_


CATALOG: dict[str, Workload] = {w.name: w for w in (
    Workload("raft-cell", "cell", T=1, B=8, Cin=256, C=128, H=46, W=62,
             description="one ConvGRU cell step of RAFT's update block; x changes every call"),
    Workload("raft-sep", "sep", T=1, B=8, Cin=256, C=128, H=46, W=62, kernel=(5, 5),
             description="RAFT's separable update: a 1x5 cell, then a 5x1 cell"),
    Workload("video", "sequence", T=16, B=16, Cin=64, C=64, H=56, W=56,
             description="a video clip through one ConvGRU layer"),
    Workload("nowcast", "sequence", T=20, B=4, Cin=64, C=64, H=128, W=128,
             description="precipitation nowcasting: 20 radar frames"),
    Workload("stream", "stream", T=32, B=1, Cin=32, C=32, H=64, W=64,
             description="streaming inference: one cell call per arriving frame, under torch.no_grad"),
    Workload("gru-1x1", "sequence", T=32, B=64, Cin=256, C=256, H=1, W=1, kernel=(1, 1), reset="after",
             description="sanity anchor: 1x1 kernel on 1x1 pixels, reset='after', exactly torch.nn.GRU"),
)}


def parse_scale(text: str) -> float:
    """``--scale``'s value: a positive number, or ``smoke`` (:data:`SMOKE_SCALE`)."""
    if text == "smoke":
        return SMOKE_SCALE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(f"`--scale` must be a positive number or 'smoke'; got {text!r}")
    return value


def parse_sizes(text: str) -> dict[str, int]:
    """``--sizes``' value, e.g. ``T=8,B=4,H=28,W=28``: positive sizes (of :data:`SIZES`) replacing a workload's."""
    sizes = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in SIZES or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"`--sizes` must be NAME=positive int items, comma-separated, NAME one of {SIZES}; "
                             f"got {item!r}")
        sizes[name.strip()] = int(value)
    return sizes


def select(names: list[str] | None, scale: float = 1.0, sizes: dict[str, int] | None = None) -> list[Workload]:
    """The named workloads (all, in catalog order, if ``names`` is empty), scaled, then given ``sizes``."""
    names = list(CATALOG) if not names else names
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; the catalog has {list(CATALOG)}")
    return [dataclasses.replace(CATALOG[n].scaled(scale), **(sizes or {})) for n in dict.fromkeys(names)]
