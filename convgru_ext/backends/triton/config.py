"""The Triton backend's switches, in one object: read from the environment once, when this module is
imported, and changed (by tests, the cost model, ``make gpu-check``) only through :func:`configured`.

``ops.py`` and ``graphs.py`` read :data:`CONFIG` at each launch; nothing else holds a copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Optional


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


@dataclasses.dataclass
class Config:
    #: the 8-warp tiles where a grid fills a wave (CONVGRU_TRITON_8_WARPS=1; off until a GPU has run them)
    wide: bool = dataclasses.field(default_factory=lambda: _env("CONVGRU_TRITON_8_WARPS", "0") == "1")
    #: time up to 3 candidate tiles per launch key on first use (CONVGRU_TRITON_AUTOTUNE=1)
    autotune: bool = dataclasses.field(default_factory=lambda: _env("CONVGRU_TRITON_AUTOTUNE", "0") == "1")
    #: replay each loop as a CUDA graph (CONVGRU_TRITON_GRAPHS=0 runs every loop eagerly)
    graphs: bool = dataclasses.field(default_factory=lambda: _env("CONVGRU_TRITON_GRAPHS", "1") != "0")
    #: launch keys remembered at once (graphs held, or decided eager)
    max_graphs: int = 8
    #: the most a graph may hold (its static inputs and outputs), in bytes: a key beyond it stays eager
    max_graph_bytes: int = 256 * 2**20
    #: devices whose loops are captured (tests add "cpu", with ``graph=graphs.RerunGraph``)
    graph_devices: tuple[str, ...] = ("cuda",)
    #: what a loop is captured with; None: ``graphs.CudaGraph``
    graph: Optional[type] = None
    #: the tiles :func:`ops.tile_for` picks: the interpreter's (larger blocks, the default under
    #: TRITON_INTERPRET=1) or the GPU's (tests of the tile choice set False)
    interpreter_tiles: bool = dataclasses.field(default_factory=lambda: _env("TRITON_INTERPRET", "") == "1")
    #: every launch's tile (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps) instead of the choice (tests)
    tile: Optional[tuple[int, int, int, int, int]] = None
    #: kernel -> launchable kernel; None: ``ops.default_launcher``.  The cost model counts launches through
    #: a stub.
    launcher: Optional[Callable] = None


CONFIG = Config()


@contextlib.contextmanager
def configured(**changes) -> Iterator[Config]:
    """Run the block with the fields ``changes`` of :data:`CONFIG` set, then restore them."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"configured: unknown Triton switches {unknown}; known: {sorted(names)}")
    saved = {name: getattr(CONFIG, name) for name in changes}
    for name, value in changes.items():
        setattr(CONFIG, name, value)
    try:
        yield CONFIG
    finally:
        for name, value in saved.items():
            setattr(CONFIG, name, value)
