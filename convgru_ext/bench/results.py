"""The results' schema: its version, the rows' statuses and dtype names, the shape of one row (:func:`new_row`)
and the figures derived from the measured ones (:func:`derive`).  How the rows are filled: see ``sweep.py``."""

from __future__ import annotations

import torch

from . import cost
from .catalog import Workload
from .impls import Implementation

SCHEMA_VERSION = 1
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
STATUSES = ("ok", "failed check", "error", "skipped")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def new_row(dtype: torch.dtype, wl: Workload, pass_: str, impl: Implementation, device: torch.device) -> dict:
    """One row of the results, before it runs: its key, its cost, and every measured figure None."""
    return {"workload": wl.name, "impl": impl.name, "label": impl.label(device), "kind": impl.kind,
            "experimental": impl.experimental, "dtype": dtype_name(dtype), "pass": pass_,
            "status": "ok", "reason": None, "flops": cost.flops(wl, pass_),
            "min_bytes": cost.min_bytes(wl, pass_, torch.empty(0, dtype=dtype).element_size()),
            "check": None, "time": None, "graph_time": None, "graph_error": None, "first_call_s": None,
            "compile_s": None, "peak_mem_bytes": None, "peak_mem_extra_bytes": None, "saved_bytes": None,
            "input_sets": None}


def derive(results: dict) -> None:
    """Fill in each row's derived figures: TFLOP/s, % of roofline, bound, speedup vs the eager peer."""
    ceilings = results.get("ceilings") or {}
    bw = (ceilings.get("bandwidth") or {}).get("bytes_per_s")
    by_group: dict[tuple, dict[str, dict]] = {}
    for row in results["rows"]:
        by_group.setdefault((row["workload"], row["dtype"], row["pass"]), {})[row["impl"]] = row
    for group in by_group.values():
        baseline = next((group[n] for n in ("eager", "nn.GRU") if n in group and group[n]["time"]), None)
        for row in group.values():
            row.update(tflops=None, roofline_pct=None, bound=None, speedup=None, speedup_vs=None)
            if not row["time"]:
                continue
            t = row["time"]["median"]
            peak = (ceilings.get("flops") or {}).get(row["dtype"], {}).get("flops_per_s")
            row["tflops"] = row["flops"] / t / 1e12
            if peak and bw:
                t_roof, row["bound"] = cost.roofline(row["flops"], row["min_bytes"], peak, bw)
                row["roofline_pct"] = 100 * t_roof / t
            if baseline is not None:
                row["speedup"] = baseline["time"]["median"] / t
                row["speedup_vs"] = baseline["impl"]
