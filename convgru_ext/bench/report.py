"""Presenting results: rich tables, results.json, results.md, PNG plots, and ``--compare``.

Rows are grouped by workload (catalog order), then dtype and pass; within a
group the fastest implementation comes first, and rows without a timing
(failed check, error, skipped) last.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

from .catalog import CATALOG
from .results import STATUSES, derive

PASS_ORDER = {"fwd": 0, "fwd+bwd": 1}
DTYPE_ORDER = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}


# ------------------------------------------------------------------------------------ formatting


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_num(value: Optional[float], fmt: str = ".3g", suffix: str = "") -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:{fmt}}{suffix}"


def fmt_pct(value: Optional[float]) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def fmt_flops(flops: float) -> str:
    for unit, div in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= div:
            return f"{flops / div:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def sort_rows(rows: list[dict]) -> list[dict]:
    workloads = {name: i for i, name in enumerate(CATALOG)}
    return sorted(rows, key=lambda r: (
        workloads.get(r["workload"], len(workloads)), r["workload"], DTYPE_ORDER.get(r["dtype"], 9), r["dtype"],
        PASS_ORDER.get(r["pass"], 9), r["time"] is None, STATUSES.index(r["status"]) if r["status"] in STATUSES
        else 9, r["time"]["median"] if r["time"] else 0.0, r["impl"]))


def notes(row: dict, markup: bool = True) -> str:
    """The last column: why a row has no figures, or what else to know about it."""
    def red(text):
        return f"[red]{text}[/]" if markup else f"**{text}**"

    if row["status"] == "failed check":
        return red("FAILED CHECK") + f": {row['reason']}"
    if row["status"] == "error":
        return red("ERROR") + f": {row['reason']}"
    if row["status"] == "skipped":
        return f"skipped: {row['reason']}"
    parts = []
    if row.get("compile_s") is not None:
        parts.append(f"compile {row['compile_s']:.1f} s (excluded)")
    if row.get("export_s") is not None:
        parts.append(f"export {row['export_s']:.1f} s (excluded)")
    if row.get("graph_error"):
        parts.append(f"graph capture failed: {row['graph_error']}")
    if row.get("graph_skipped"):
        parts.append(f"no CUDA graph: {row['graph_skipped']}")
    if row.get("bound"):
        parts.append(f"{row['bound']}-bound")
    return "; ".join(parts)


def columns(rows: list[dict]) -> list[str]:
    cols = ["implementation", "dtype", "pass", "median", "IQR", "speedup", "TFLOP/s", "% roofline"]
    if any(r.get("graph_time") for r in rows):
        cols.insert(5, "graph median")
    if any(r.get("peak_mem_extra_bytes") is not None for r in rows):
        cols.append("peak MiB")
    if any(r.get("saved_bytes") is not None for r in rows):
        cols.append("saved MiB")
    return cols + ["max rel err", "notes"]


def cells(row: dict, cols: list[str], markup: bool = True) -> list[str]:
    t = row.get("time") or {}
    speedup = row.get("speedup")
    vs = row.get("speedup_vs")
    values = {
        "implementation": row["label"],
        "dtype": row["dtype"],
        "pass": row["pass"],
        "median": fmt_time(t.get("median")),
        "IQR": fmt_pct(100 * t["spread"]) if t else "",
        "graph median": fmt_time((row.get("graph_time") or {}).get("median")),
        "speedup": "" if speedup is None else f"{speedup:.2f}x" + ("" if vs == "eager" else f" vs {vs}"),
        "TFLOP/s": fmt_num(row.get("tflops")),
        "% roofline": fmt_pct(row.get("roofline_pct")),
        "peak MiB": fmt_num(None if row.get("peak_mem_extra_bytes") is None
                            else row["peak_mem_extra_bytes"] / 2**20, ".4g"),
        "saved MiB": fmt_num(None if row.get("saved_bytes") is None else row["saved_bytes"] / 2**20, ".4g"),
        "max rel err": fmt_num((row.get("check") or {}).get("max_rel_err"), ".1e"),
        "notes": notes(row, markup),
    }
    return [values[c] for c in cols]


def versus_lines(results: dict, workload: str) -> list[str]:
    """One line per dtype and pass of ``workload``: our fastest non-experimental row against the fastest peer."""
    entries = [e for e in results.get("ours_vs_peers") or [] if e["workload"] == workload]
    entries.sort(key=lambda e: (DTYPE_ORDER.get(e["dtype"], 9), e["dtype"], PASS_ORDER.get(e["pass"], 9)))
    return [f"ours / fastest peer, {e['dtype']} {e['pass']}: {e['ratio']:.2f}x ({e['ours_label']} "
            f"{fmt_time(e['ours_median'])}; fastest peer {e['peer_label']} {fmt_time(e['peer_median'])})"
            for e in entries]


VERSUS_NOTE = ("ours / fastest peer: the fastest peer's median time (eager, compiled, nn.GRU, onnxruntime) over "
               "that of our fastest non-experimental backend; above 1, ours is faster")


# ---------------------------------------------------------------------------------------- header


def header_lines(results: dict) -> list[str]:
    """What was measured where: device, versions, scale, ceilings, what could not run."""
    m, s, c = results["meta"], results["settings"], results["ceilings"]
    lines = [f"date (UTC): {m.get('date_utc')}", f"device: {m.get('device')}"]
    if m.get("device_type") == "cuda":
        lines.append(f"driver {m.get('driver')}, sm_{str(m.get('sm', '')).replace('.', '')}, "
                     f"{m.get('sm_count')} SMs, cuDNN {m.get('cudnn')}, TF32 in convolutions: {m.get('tf32_conv')}")
    lines.append(f"torch {m.get('torch')} (CUDA {m.get('cuda_build')}), triton {m.get('triton')}, "
                 f"Python {m.get('python')}, convgru_ext {m.get('convgru_ext')}, "
                 f"{m.get('cpu_threads')} CPU threads")
    commit = m.get("git_commit") or "unknown"
    lines.append(f"git commit: {commit}{' (with uncommitted changes)' if m.get('git_dirty') else ''}")
    lines.append(f"scale: {m.get('scale')}" + (f" ({m['scale_note']})" if m.get("scale_note") else ""))
    lines.append(f"command: {m.get('command')}")
    ceil = ", ".join(f"{d} matmul {v['flops_per_s'] / 1e12:.3g} TFLOP/s (n={v['matmul_n']}"
                     + (f", TF32 {'on' if v['tf32'] else 'off'}" if "tf32" in v else "") + ")"
                     for d, v in c.get("flops", {}).items())
    bw = c.get("bandwidth", {})
    if bw:
        ceil += f"; copy {bw['bytes_per_s'] / 1e9:.3g} GB/s (read + write)"
    lines.append(f"ceilings measured in this run: {ceil}" + (f" ({c['error']})" if c.get("error") else ""))
    sets = s.get("input_sets") or "3 (CPU) or enough to fill the GPU's L2 twice (at least 3)"
    lines.append(f"timing: median of {s['repeats']} samples after warm-up, inputs rotated among {sets} random "
                 f"sets; {m.get('inputs', '')}; fwd runs under torch.no_grad, fwd+bwd computes the gradients of "
                 "x, h0 and every parameter")
    for name, reason in (m.get("backends") or {}).items():
        if reason:
            lines.append(f"backend {name} not run here: {reason}")
    if results.get("aborted"):
        lines.append(f"sweep cut short: {results['aborted']}")
    if results.get("partial"):
        lines.append("PARTIAL: the sweep did not finish")
    return lines


# ----------------------------------------------------------------------------------------- rich


def print_tables(results: dict, console) -> None:
    from rich.table import Table

    rows = sort_rows(results["rows"])
    cols = columns(rows)
    for name, wl in results["workloads"].items():
        mine = [r for r in rows if r["workload"] == name]
        if not mine:
            continue
        fwd = next((r["flops"] for r in mine if r["pass"] == "fwd"), None)
        title = f"[bold]{name}[/]: {wl['description']}\n{wl['sizes']}" + (
            f", {fmt_flops(fwd)} per forward call" if fwd else "")
        table = Table(*cols, title=title, title_justify="left", caption="\n".join(versus_lines(results, name))
                      or None, caption_justify="left")
        last = None
        for r in mine:
            group = (r["dtype"], r["pass"])
            if last is not None and group != last:
                table.add_section()
            last = group
            table.add_row(*cells(r, cols))
        console.print(table)
    print_plan(results, console)
    console.print("speedup: median time of the eager peer (or nn.GRU on gru-1x1) / this median; % roofline: "
                  "see convgru_ext/bench/cost.py; peak MiB: GPU memory one call allocates above its inputs; "
                  "saved MiB: what autograd saves for the backward (saved_tensors_hooks, every device); "
                  f"{VERSUS_NOTE}")


PLAN_COLUMNS = ("workload", "pass", "dtype", "launches/step", "host µs/launch", "replay host µs/step",
                "FLOPs/step", "min HBM/step", "L2/step", "CTAs", "waves", "tiles")


def plan_cells(p: dict) -> list[str]:
    """One row of the static cost model (``plan.py``)."""
    host, replay = p["host_us_per_launch"], p.get("replay_host_us_per_step")
    return [p["workload"], p["pass"], p["dtype"], str(p["launches_per_step"]),
            "-" if host is None else f"{host:.0f}", "-" if replay is None else f"{replay:.1f}",
            fmt_flops(p["flops_per_step"]),
            f"{p['min_hbm_bytes_per_step'] / 2**20:.1f} MiB", f"{p['l2_bytes_per_step'] / 2**20:.1f} MiB",
            str(p["ctas"]), f"{p['waves']:.1f}", " ".join(f"{k['kernel']}:{k['tile']}" for k in p["kernels"])]


def print_plan(results: dict, console) -> None:
    """The static cost model of the Triton launches, beside the measured tables (alone on the CPU)."""
    from rich.table import Table

    if not results.get("plan"):
        return
    table = Table(*PLAN_COLUMNS, title="[bold]Static cost model of the Triton kernels[/], one step "
                  "(convgru_ext/bench/plan.py; host µs measured on this machine, our loop only)",
                  title_justify="left")
    for p in results["plan"]:
        table.add_row(*plan_cells(p))
    console.print(table)


# ------------------------------------------------------------------------------------- markdown


def markdown(results: dict, plots: list[str]) -> str:
    rows = sort_rows(results["rows"])
    cols = columns(rows)
    out = ["# convgru-ext benchmark", ""]
    out += [f"- {line}" for line in header_lines(results)]
    out += ["", "Speedup: the eager peer's median time (nn.GRU's on gru-1x1) over this row's. TFLOP/s counts "
            "2·B·H·W·kh·kw·3C·(Cin+C) FLOPs per forward step and 3x that for forward+backward; % roofline is "
            "the time the measured ceilings allow (compute or bandwidth, minimal bytes) over the measured time "
            "(convgru_ext/bench/cost.py). max rel err: the worst norm-wise relative error of the output and "
            "(fwd+bwd) every gradient against the reference (run in float64, or in the row's dtype for float64 "
            "and exact float32); every row passed its dtype's tolerance unless it says FAILED CHECK. "
            f"{VERSUS_NOTE[0].upper()}{VERSUS_NOTE[1:]}.", ""]
    for name, wl in results["workloads"].items():
        mine = [r for r in rows if r["workload"] == name]
        if not mine:
            continue
        fwd = next((r["flops"] for r in mine if r["pass"] == "fwd"), None)
        out += [f"## {name}", "", f"{wl['description']}: {wl['sizes']}"
                + (f", {fmt_flops(fwd)} per forward call." if fwd else "."), ""]
        out.append("| " + " | ".join(cols) + " |")
        out.append("| " + " | ".join("---" for _ in cols) + " |")
        for r in mine:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r, cols, markup=False)) + " |")
        out.append("")
        versus = versus_lines(results, name)
        if versus:
            out += [f"- {line}" for line in versus] + [""]
    if results.get("plan"):
        out += ["## Static cost model of the Triton kernels, one step", "",
                "convgru_ext/bench/plan.py; host µs per launch measured on the benchmarking machine, our loop only.",
                "",
                "| " + " | ".join(PLAN_COLUMNS) + " |", "| " + " | ".join("---" for _ in PLAN_COLUMNS) + " |"]
        out += ["| " + " | ".join(plan_cells(p)) + " |" for p in results["plan"]] + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in plots] + [""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- files


def write_json(results: dict, path: str) -> None:
    derive(results)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(tmp, path)


def write_all(results: dict, out_dir: str, plots: bool = True) -> list[str]:
    """results.json, results.md and (``plots``) speedup.png and roofline.png in ``out_dir``; the paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    names = []
    if plots:
        for name, metric in (("speedup.png", "speedup"), ("roofline.png", "roofline_pct")):
            try:
                if plot_bars(results, metric, os.path.join(out_dir, name)):
                    names.append(name)
            except Exception as e:  # a plot must never cost the figures
                results.setdefault("plot_errors", []).append(f"{name}: {type(e).__name__}: {e}")
    write_json(results, os.path.join(out_dir, "results.json"))
    written.append(os.path.join(out_dir, "results.json"))
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(results, names))
    written.append(os.path.join(out_dir, "results.md"))
    return written + [os.path.join(out_dir, n) for n in names]


def plot_bars(results: dict, metric: str, path: str) -> bool:
    """Grouped horizontal bars of ``metric`` ("speedup" or "roofline_pct"): one panel per pass, one group
    per workload and dtype, one bar per implementation.  False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in sort_rows(results["rows"]) if r.get(metric) is not None]
    if metric == "speedup":
        rows = [r for r in rows if r["impl"] != r.get("speedup_vs")]
    if not rows:
        return False
    passes = sorted({r["pass"] for r in rows}, key=lambda p: PASS_ORDER.get(p, 9))
    every = [v["label"] for v in results.get("implementations", {}).values()]
    every += [r["label"] for r in results["rows"] if r["label"] not in every]
    color_of = {label: k for k, label in enumerate(every)}  # the same colour for an implementation in every plot
    impls = sorted({r["label"] for r in rows}, key=lambda label: color_of[label])
    groups = list(dict.fromkeys((r["workload"], r["dtype"]) for r in rows))
    colors = plt.get_cmap("tab10")
    height = 1.2 + len(groups) * (0.16 * len(impls) + 0.25)
    fig, axes = plt.subplots(1, len(passes), figsize=(6.5 * len(passes), height), squeeze=False, sharey=True)
    bar = 0.8 / len(impls)
    for ax, p in zip(axes[0], passes):
        for k, label in enumerate(impls):
            ys, xs = [], []
            for g, (wl, dt) in enumerate(groups):
                r = next((r for r in rows if (r["workload"], r["dtype"], r["pass"], r["label"]) == (wl, dt, p, label)),
                         None)
                if r is not None:
                    ys.append(g + (k - (len(impls) - 1) / 2) * bar)
                    xs.append(r[metric])
            if xs:
                ax.barh(ys, xs, height=bar, color=colors(color_of[label] % 10), label=label)
        ax.set_title(p)
        if metric == "speedup":
            ax.set_xscale("log")
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xlabel("speedup over the eager peer (nn.GRU on gru-1x1), log scale")
        else:
            ax.set_xlabel("% of the roofline (ceilings measured in this run)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(groups)))
    axes[0][0].set_yticklabels([f"{wl}\n{dt}" for wl, dt in groups], fontsize=8)
    axes[0][0].invert_yaxis()  # the axes share y: once
    m = results["meta"]
    fig.suptitle(f"convgru-ext bench: {m.get('device')}, {m.get('date_utc')}, scale {m.get('scale')}", fontsize=10)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------- compare


def compare_results(a: dict, b: dict, threshold: float) -> tuple[list[dict], list[str]]:
    """Rows matched by (workload, implementation, dtype, pass): B's median over A's, flagged.

    A row is a *regression* when B is slower than A by more than ``threshold``
    (0.1 = 10%), or when it had figures in A and none in B; *faster* when it is
    faster by more than ``threshold``.  Returns the rows and warnings (different
    devices or scales)."""
    def key(r):
        return (r["workload"], r["impl"], r["dtype"], r["pass"])

    ra, rb = {key(r): r for r in a["rows"]}, {key(r): r for r in b["rows"]}
    warnings = []
    for field in ("device", "scale"):
        va, vb = a["meta"].get(field), b["meta"].get(field)
        if va != vb:
            warnings.append(f"the two files differ in {field}: {va!r} vs {vb!r}; ratios compare unlike things")
    out = []
    for k in sorted(set(ra) | set(rb), key=lambda k: (list(CATALOG).index(k[0]) if k[0] in CATALOG else 99,) + k):
        x, y = ra.get(k), rb.get(k)
        entry = {"workload": k[0], "impl": k[1], "dtype": k[2], "pass": k[3], "a": None, "b": None,
                 "ratio": None, "graph_ratio": None, "flag": ""}
        if x is None or y is None:
            entry["flag"] = "only in A" if y is None else "only in B"
        else:
            ta, tb = (x.get("time") or {}).get("median"), (y.get("time") or {}).get("median")
            entry["a"], entry["b"] = ta, tb
            if ta and tb:
                entry["ratio"] = tb / ta
                if entry["ratio"] > 1 + threshold:
                    entry["flag"] = "regression"
                elif entry["ratio"] < 1 / (1 + threshold):
                    entry["flag"] = "faster"
                ga, gb = ((r.get("graph_time") or {}).get("median") for r in (x, y))
                if ga and gb:
                    entry["graph_ratio"] = gb / ga
            elif ta and not tb:
                entry["flag"] = f"regression: now {y['status']}" + (f" ({y['reason']})" if y.get("reason") else "")
            elif tb and not ta:
                entry["flag"] = f"fixed: was {x['status']}"
        out.append(entry)
    return out, warnings


def print_compare(entries: list[dict], warnings: list[str], a_path: str, b_path: str, a: dict, b: dict,
                  threshold: float, console) -> int:
    """Print the ratio table; return the number of regressions."""
    from rich.table import Table

    for label, path, r in (("A", a_path, a), ("B", b_path, b)):
        m = r["meta"]
        console.print(f"[bold]{label}[/]: {path}: {m.get('device')}, {m.get('date_utc')}, commit "
                      f"{(m.get('git_commit') or 'unknown')[:12]}, scale {m.get('scale')}")
    for w in warnings:
        console.print(f"[yellow]warning[/]: {w}")
    table = Table("workload", "implementation", "dtype", "pass", "A median", "B median", "B / A", "graph B / A",
                  "flag", title=f"B relative to A (regression: more than {threshold:.0%} slower)")
    regressions = 0
    for e in entries:
        flag = e["flag"]
        if flag.startswith("regression"):
            regressions += 1
            flag = f"[red]{flag}[/]"
        elif flag in ("faster",) or flag.startswith("fixed"):
            flag = f"[green]{flag}[/]"
        table.add_row(e["workload"], e["impl"], e["dtype"], e["pass"], fmt_time(e["a"]), fmt_time(e["b"]),
                      fmt_num(e["ratio"], ".3f"), fmt_num(e["graph_ratio"], ".3f"), flag)
    console.print(table)
    console.print(f"{regressions} regression(s)" if regressions else "no regressions")
    return regressions
