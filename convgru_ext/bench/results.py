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
            "compile_s": None, "export_s": None, "graph_skipped": None, "peak_mem_bytes": None,
            "peak_mem_extra_bytes": None, "saved_bytes": None, "input_sets": None}


def ours_vs_peers(rows: list[dict]) -> list[dict]:
    """Per (workload, dtype, pass) where both ran: the fastest peer's median over our fastest non-experimental
    implementation's (``ratio`` > 1: ours is faster), and which rows those were."""
    fastest: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        kind = row.get("kind")
        if not row.get("time") or kind not in ("ours", "peer") or (kind == "ours" and row.get("experimental")):
            continue
        best = fastest.setdefault((row["workload"], row["dtype"], row["pass"]), {})
        if kind not in best or row["time"]["median"] < best[kind]["time"]["median"]:
            best[kind] = row
    out = []
    for (workload, dtype, pass_), best in fastest.items():
        if "ours" in best and "peer" in best:
            ours, peer = best["ours"], best["peer"]
            out.append({"workload": workload, "dtype": dtype, "pass": pass_, "ratio": peer["time"]["median"]
                        / ours["time"]["median"], "ours": ours["impl"], "ours_label": ours["label"],
                        "ours_median": ours["time"]["median"], "peer": peer["impl"], "peer_label": peer["label"],
                        "peer_median": peer["time"]["median"]})
    return out


def derive(results: dict) -> None:
    """Fill in each row's derived figures: TFLOP/s, % of roofline, bound, speedup vs the eager peer; and
    ``results["ours_vs_peers"]`` (:func:`ours_vs_peers`)."""
    results["ours_vs_peers"] = ours_vs_peers(results["rows"])
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
