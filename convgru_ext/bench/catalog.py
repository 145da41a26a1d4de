"""The named workloads of the benchmark (:data:`CATALOG`), each exercising one public API (``Workload.api``):
``cell``, one ``convgru_cell`` call (RAFT's update block: ``x`` changes every call, nothing can be hoisted);
``sep``, RAFT's ``SepConvGRU`` (a 1xk cell, then a kx1 cell); ``sequence``, one ``convgru_sequence`` call;
``stream``, ``convgru_cell`` once per arriving frame under ``torch.no_grad`` (latency-bound: launch overhead
dominates).  ``gru-1x1`` (1x1 kernel, 1x1 pixels, ``reset="after"``) *is* ``torch.nn.GRU``: a sanity anchor,
with cuDNN's GRU as its peer.

``--scale s`` multiplies each workload's number of pixels in a batch, B*H*W, by about ``s``: spatial workloads
scale H and W by sqrt(s) (rounded, at least 1) and keep B, T and the channels, so the GEMMs' channel dimensions
and the number of recurrent steps stay representative; the 1x1-pixel anchor scales B.
"""

from __future__ import annotations

import dataclasses
import math

#: the scale of ``--scale smoke``: every workload shrinks to a few pixels (CI, tests)
SMOKE_SCALE = 0.001
#: the default scale on a machine without a GPU
CPU_DEFAULT_SCALE = 0.01


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
    def inference_only(self) -> bool:
        """Only the forward pass, under ``torch.no_grad`` (``stream``)."""
        return self.api == "stream"

    @property
    def passes(self) -> tuple[str, ...]:
        return ("fwd",) if self.inference_only else ("fwd", "fwd+bwd")

    @property
    def cells(self) -> list[tuple[int, int]]:
        """The kernel of each cell one call runs, in order: one cell, or two for ``sep``."""
        kh, kw = self.kernel
        return [(1, kw), (kw, 1)] if self.api == "sep" else [(kh, kw)]

    @property
    def steps(self) -> int:
        """Cell steps per call: T for sequences and streams, 1 for ``cell`` and ``sep`` (per cell)."""
        return self.T

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


#: the sizes ``--sizes`` may set
SIZES = ("T", "B", "Cin", "C", "H", "W")


def parse_sizes(text: str) -> dict[str, int]:
    """``--sizes``' value, e.g. ``T=8,B=4,H=28,W=28``: positive sizes (of :data:`SIZES`) replacing a workload's."""
    sizes = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in SIZES or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"`--sizes` must be NAME=positive int items, comma-separated, NAME one of {SIZES}; "
                             f"got {item!r}")
        sizes[name] = int(value)
    return sizes


def select(names: list[str] | None, scale: float = 1.0, sizes: dict[str, int] | None = None) -> list[Workload]:
    """The named workloads (all, in catalog order, if ``names`` is empty), scaled, then given ``sizes``."""
    names = list(CATALOG) if not names else names
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; the catalog has {list(CATALOG)}")
    return [dataclasses.replace(CATALOG[n].scaled(scale), **(sizes or {})) for n in dict.fromkeys(names)]
