"""Presenting results: tables (rich's where installed, else plain text), results.json, results.md, PNG plots
(where matplotlib is installed), and ``--compare``.  rich and matplotlib are the ``bench`` extra.

Rows are grouped by workload (catalog order), then dtype and pass; within a group the fastest implementation comes
first, and rows without a timing (failed check, error, skipped) last.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Optional

from .catalog import CATALOG, PASSES
from .harness import DTYPES, STATUSES, derive

#: where passes, dtypes and workloads go in tables, plots and comparisons (unknown ones last)
RANK = {name: i for i, name in enumerate((*PASSES, *DTYPES, *CATALOG))}
_MARKUP = re.compile(r"\[/?(?:bold|red|green|yellow| )*\]")
VERSUS_NOTE = ("ours / fastest peer: the fastest peer's median time (eager, compiled, nn.GRU, onnxruntime) over "
               "that of our fastest non-experimental backend; above 1, ours is faster")


class Console:
    """rich's console where rich is installed; else plain text: markup dropped, tables as aligned columns."""

    def __init__(self, width: int = 200):
        try:
            from rich.console import Console as RichConsole
        except ImportError:
            self.rich = None
        else:  # logs get full-width tables
            self.rich = RichConsole(width=None if sys.stdout.isatty() else width)
        self.is_terminal = bool(self.rich and self.rich.is_terminal)

    def print(self, text: str = "") -> None:
        if self.rich:
            self.rich.print(text, highlight=False)
        else:
            print(_MARKUP.sub("", text), flush=True)

    def rule(self, text: str) -> None:
        self.rich.rule(text) if self.rich else self.print(f"==== {text} ====")

    def table(self, cols, rows: list[list[str]], title: str = "", caption: str = "", sections=()) -> None:
        """``rows`` under ``cols``; a line between sections (the row indices in ``sections`` start one)."""
        if not self.rich:
            return self.print("\n".join([title, *text_table(cols, rows, sections)] + ([caption] if caption else [])))
        from rich.table import Table

        table = Table(*cols, title=title or None, title_justify="left", caption=caption or None,
                      caption_justify="left")
        for i, row in enumerate(rows):
            if i in sections:
                table.add_section()
            table.add_row(*row)
        self.rich.print(table)


def text_table(cols, rows: list[list[str]], sections=(), markdown: bool = False) -> list[str]:
    """The lines of ``rows`` under ``cols``: aligned plain text with a rule before each row index in ``sections``,
    or a markdown table."""
    if markdown:
        cells = [list(cols), ["---"] * len(cols), *([c.replace("|", "\\|") for c in row] for row in rows)]
        return ["| " + " | ".join(row) + " |" for row in cells]
    rows = [[_MARKUP.sub("", c) for c in row] for row in rows]
    widths = [max(len(c) for c in column) for column in zip(cols, *rows)]
    line = "  ".join("-" * w for w in widths)
    return ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), line] + [
        ("" if i not in sections else line + "\n") + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
        for i, row in enumerate(rows)]


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    limit, k, unit = next(u for u in ((1e-3, 1e6, "µs"), (1, 1e3, "ms"), (math.inf, 1, "s")) if seconds < u[0])
    return f"{seconds * k:.3g} {unit}"


def fmt_num(value: Optional[float], fmt: str = ".3g", scale: float = 1) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value * scale:{fmt}}"


def fmt_pct(value: Optional[float]) -> str:
    return fmt_num(value, ".0f" if value is not None and value >= 10 else ".2g") + ("%" if fmt_num(value) else "")


def fmt_flops(flops: float) -> str:
    unit, div = next(((u, d) for u, d in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)) if flops >= d), ("FLOP", 1))
    return f"{flops / div:.3g} {unit}"


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (
        RANK.get(r["workload"], 99), r["workload"], RANK.get(r["dtype"], 99), r["dtype"], RANK.get(r["pass"], 99),
        r["time"] is None, STATUSES.index(r["status"]) if r["status"] in STATUSES else 9,
        r["time"]["median"] if r["time"] else 0.0, r["impl"]))


def notes(row: dict, markup: bool = True) -> str:
    """The last column: why a row has no figures, or what else to know about it."""
    if row["status"] in ("failed check", "error"):
        return ("[red]{}[/]" if markup else "**{}**").format(row["status"].upper()) + f": {row['reason']}"
    if row["status"] == "skipped":
        return f"skipped: {row['reason']}"
    parts = [f"compile {row['compile_s']:.1f} s (excluded)" if row.get("compile_s") is not None else "",
             f"export {row['export_s']:.1f} s (excluded)" if row.get("export_s") is not None else "",
             f"graph capture failed: {row['graph_error']}" if row.get("graph_error") else "",
             f"no CUDA graph: {row['graph_skipped']}" if row.get("graph_skipped") else "",
             f"{row['bound']}-bound" if row.get("bound") else ""]
    return "; ".join(p for p in parts if p)


def _speedup(row: dict, markup: bool) -> str:
    vs = row.get("speedup_vs")
    return "" if row.get("speedup") is None else f"{row['speedup']:.2f}x" + ("" if vs == "eager" else f" vs {vs}")


#: the workload tables' columns: the name, a row's cell (``markup``: rich's, else markdown's), and the row key
#: that some row must have set for the column to be shown (None: always)
COLUMNS = (
    ("implementation", lambda r, markup: r["label"], None), ("dtype", lambda r, markup: r["dtype"], None),
    ("pass", lambda r, markup: r["pass"], None),
    ("median", lambda r, markup: fmt_time((r.get("time") or {}).get("median")), None),
    ("IQR", lambda r, markup: fmt_pct(100 * r["time"]["spread"]) if r.get("time") else "", None),
    ("graph median", lambda r, markup: fmt_time((r.get("graph_time") or {}).get("median")), "graph_time"),
    ("speedup", _speedup, None), ("TFLOP/s", lambda r, markup: fmt_num(r.get("tflops")), None),
    ("% roofline", lambda r, markup: fmt_pct(r.get("roofline_pct")), None),
    ("peak MiB", lambda r, markup: fmt_num(r.get("peak_mem_extra_bytes"), ".4g", 2**-20), "peak_mem_extra_bytes"),
    ("saved MiB", lambda r, markup: fmt_num(r.get("saved_bytes"), ".4g", 2**-20), "saved_bytes"),
    ("max rel err", lambda r, markup: fmt_num((r.get("check") or {}).get("max_rel_err"), ".1e"), None),
    ("notes", notes, None))
PLAN_NOTE = ("convgru_ext/backends/triton/model.py: host µs measured on this machine, our loop only; GPU µs "
             "estimated from the H200's data sheet, never measured (the estimate charges our L2 traffic, the bounds "
             "compulsory bytes)")
PLAN_COLUMNS = ("workload", "pass", "dtype", "launches/step", "host µs/launch", "replay host µs/step",
                "FLOPs/step", "min HBM/step", "L2/step", "est. GPU µs/step", "bound µs/step", "+ projection µs",
                "eager bound µs",
                "CTAs", "waves", "tiles")


def plan_cells(p: dict) -> list[str]:
    """One row of the static cost model (``backends/triton/model.py``'s ``workload_steps``)."""
    host, replay = p["host_us_per_launch"], p.get("replay_host_us_per_step")
    return [p["workload"], p["pass"], p["dtype"], str(p["launches_per_step"]),
            "-" if host is None else f"{host:.0f}", "-" if replay is None else f"{replay:.1f}",
            fmt_flops(p["flops_per_step"]), f"{p['min_hbm_bytes_per_step'] / 2**20:.1f} MiB",
            f"{p['l2_bytes_per_step'] / 2**20:.1f} MiB",
            *(fmt_num(p.get(k)) or "-" for k in ("gpu_us_per_step", "bound_us_per_step", "projection_us_per_step",
                                             "eager_us_per_step")),
            str(p["ctas"]), f"{p['waves']:.1f}",
            " ".join(f"{k['kernel']}:{k['tile']}" for k in p["kernels"])]


def header_lines(results: dict) -> list[str]:
    """What was measured where: device, versions, scale, ceilings, what could not run."""
    m, s, c = results["meta"], results["settings"], results["ceilings"]
    lines = [f"date (UTC): {m.get('date_utc')}", f"device: {m.get('device')}"]
    if m.get("device_type") == "cuda":
        lines.append(f"driver {m.get('driver')}, sm_{str(m.get('sm', '')).replace('.', '')}, "
                     f"{m.get('sm_count')} SMs, cuDNN {m.get('cudnn')}, TF32 in convolutions: {m.get('tf32_conv')}")
    sets = s.get("input_sets") or "3 (CPU) or enough to fill the GPU's L2 twice (at least 3)"
    lines += [f"torch {m.get('torch')} (CUDA {m.get('cuda_build')}), triton {m.get('triton')}, Python "
              f"{m.get('python')}, convgru_ext {m.get('convgru_ext')}, {m.get('cpu_threads')} CPU threads",
              f"git commit: {m.get('git_commit') or 'unknown'}"
              f"{' (with uncommitted changes)' if m.get('git_dirty') else ''}",
              f"scale: {m.get('scale')}" + (f" ({m['scale_note']})" if m.get("scale_note") else ""),
              f"command: {m.get('command')}", f"ceilings measured in this run: {ceilings_text(c, detail=True)}",
              f"timing: median of {s['repeats']} samples after warm-up, inputs rotated among {sets} random sets; "
              f"{m.get('inputs', '')}; fwd runs under torch.no_grad, fwd+bwd computes the gradients of x, h0 and "
              "every parameter"]
    lines += [f"backend {name} not run here: {reason}" for name, reason in (m.get("backends") or {}).items() if reason]
    lines += [f"sweep cut short: {results['aborted']}"] if results.get("aborted") else []
    return lines + (["PARTIAL: the sweep did not finish"] if results.get("partial") else [])


def ceilings_text(c: dict, detail: bool = False) -> str:
    """The measured ceilings in one line (``detail``: matrix sizes and TF32 too)."""
    flops = ", ".join(f"{d} {'matmul ' if detail else ''}{v['flops_per_s'] / 1e12:.3g} TFLOP/s" + (
        f" (n={v['matmul_n']}" + (f", TF32 {'on' if v['tf32'] else 'off'}" if "tf32" in v else "") + ")"
        if detail else "") for d, v in c.get("flops", {}).items())
    bw = c.get("bandwidth")
    text = flops + ((";" if detail else ",") + f" copy {bw['bytes_per_s'] / 1e9:.3g} GB/s" + (
        " (read + write)" if detail else "") if bw else "")
    return text + ((f" ({c['error']})" if detail else f" [red]{c['error']}[/]") if c.get("error") else "")


def _workload_tables(results: dict, markup: bool):
    """Per workload with rows: its name, description, sizes, columns, cells, section starts and "versus" lines."""
    rows = sort_rows(results["rows"])
    cols = [(c, cell) for c, cell, key in COLUMNS if key is None or any(r.get(key) is not None for r in rows)]
    for name, wl in results["workloads"].items():
        mine = [r for r in rows if r["workload"] == name]
        if not mine:
            continue
        fwd = next((r["flops"] for r in mine if r["pass"] == "fwd"), None)
        sizes = wl["sizes"] + (f", {fmt_flops(fwd)} per forward call" if fwd else "")
        sections = {i for i in range(1, len(mine)) if (mine[i]["dtype"], mine[i]["pass"]) != (
            mine[i - 1]["dtype"], mine[i - 1]["pass"])}
        versus = sorted((e for e in results.get("ours_vs_peers") or [] if e["workload"] == name),
                        key=lambda e: (RANK.get(e["dtype"], 99), e["dtype"], RANK.get(e["pass"], 99)))
        versus = [f"ours / fastest peer, {e['dtype']} {e['pass']}: {e['ratio']:.2f}x ({e['ours_label']} "
                  f"{fmt_time(e['ours_median'])}; fastest peer {e['peer_label']} {fmt_time(e['peer_median'])})"
                  for e in versus]
        cells = [[cell(r, markup) for _, cell in cols] for r in mine]
        yield name, wl["description"], sizes, [c for c, _ in cols], cells, sections, versus


def print_tables(results: dict, console: Console) -> None:
    for name, description, sizes, cols, rows, sections, versus in _workload_tables(results, markup=True):
        console.table(cols, rows, f"[bold]{name}[/]: {description}\n{sizes}", "\n".join(versus), sections)
    if results.get("plan"):
        console.table(PLAN_COLUMNS, [plan_cells(p) for p in results["plan"]], "[bold]Static cost model of the "
                      f"Triton kernels[/], one step ({PLAN_NOTE})")
    console.print("speedup: median time of the eager peer (or nn.GRU on gru-1x1) / this median; % roofline: "
                  "see convgru_ext/bench/catalog.py; peak MiB: GPU memory one call allocates above its inputs; "
                  "saved MiB: what autograd saves for the backward (saved_tensors_hooks, every device); "
                  f"{VERSUS_NOTE}")


def markdown(results: dict, plots: list[str]) -> str:
    out = ["# convgru-ext benchmark", ""] + [f"- {line}" for line in header_lines(results)]
    out += ["", "Speedup: the eager peer's median time (nn.GRU's on gru-1x1) over this row's. TFLOP/s counts "
            "2·B·H·W·kh·kw·3C·(Cin+C) FLOPs per forward step and 3x that for forward+backward; % roofline is "
            "the time the measured ceilings allow (compute or bandwidth, minimal bytes) over the measured time "
            "(convgru_ext/bench/catalog.py). max rel err: the worst norm-wise relative error of the output and "
            "(fwd+bwd) every gradient against the reference (run in float64, or in the row's dtype for float64 "
            "and exact float32); every row passed its dtype's tolerance unless it says FAILED CHECK. "
            f"{VERSUS_NOTE[0].upper()}{VERSUS_NOTE[1:]}.", ""]
    for name, description, sizes, cols, rows, _, versus in _workload_tables(results, markup=False):
        out += [f"## {name}", "", f"{description}: {sizes}.", "", *text_table(cols, rows, markdown=True), ""]
        out += [f"- {line}" for line in versus] + [""] if versus else []
    if results.get("plan"):
        out += ["## Static cost model of the Triton kernels, one step", "", f"{PLAN_NOTE}.", "",
                *text_table(PLAN_COLUMNS, [plan_cells(p) for p in results["plan"]], markdown=True), ""]
    if plots:
        out += ["## Plots", ""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in plots] + [""]
    return "\n".join(out)


def write_json(results: dict, path: str) -> None:
    derive(results)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def write_all(results: dict, out_dir: str, plots: bool = True) -> list[str]:
    """results.json, results.md and (``plots``, with matplotlib) speedup.png and roofline.png in ``out_dir``; the
    paths.  A plot not written says why in ``results["plot_errors"]``."""
    os.makedirs(out_dir, exist_ok=True)
    names = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if plots:
            results.setdefault("plot_errors", []).append(
                "speedup.png, roofline.png: matplotlib is not installed (pip install 'convgru-ext[bench]')")
        plots = False
    for name, metric in (("speedup.png", "speedup"), ("roofline.png", "roofline_pct")) if plots else ():
        try:
            if plot_bars(results, metric, os.path.join(out_dir, name)):
                names.append(name)
        except Exception as e:  # a plot must never cost the figures
            results.setdefault("plot_errors", []).append(f"{name}: {type(e).__name__}: {e}")
    write_json(results, os.path.join(out_dir, "results.json"))
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(results, names))
    return [os.path.join(out_dir, n) for n in ("results.json", "results.md", *names)]


def plot_bars(results: dict, metric: str, path: str) -> bool:
    """Grouped horizontal bars of ``metric`` ("speedup" or "roofline_pct"): one panel per pass, one group per
    workload and dtype, one bar per implementation.  False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in sort_rows(results["rows"]) if r.get(metric) is not None
            and (metric != "speedup" or r["impl"] != r.get("speedup_vs"))]
    if not rows:
        return False
    passes = sorted({r["pass"] for r in rows}, key=lambda p: RANK.get(p, 99))
    every = [v["label"] for v in results.get("implementations", {}).values()]
    every += [r["label"] for r in results["rows"] if r["label"] not in every]
    color_of = {label: k for k, label in enumerate(every)}  # the same colour for an implementation in every plot
    impls = sorted({r["label"] for r in rows}, key=lambda label: color_of[label])
    groups = list(dict.fromkeys((r["workload"], r["dtype"]) for r in rows))
    by_key = {(r["workload"], r["dtype"], r["pass"], r["label"]): r[metric] for r in rows}
    fig, axes = plt.subplots(1, len(passes), figsize=(6.5 * len(passes), 1.2 + len(groups) * (0.16 * len(impls)
                             + 0.25)), squeeze=False, sharey=True)
    bar = 0.8 / len(impls)
    for ax, p in zip(axes[0], passes):
        for k, label in enumerate(impls):
            bars = [(g + (k - (len(impls) - 1) / 2) * bar, by_key[wl, dt, p, label])
                    for g, (wl, dt) in enumerate(groups) if (wl, dt, p, label) in by_key]
            if bars:
                ax.barh(*zip(*bars), height=bar, color=plt.get_cmap("tab10")(color_of[label] % 10), label=label)
        ax.set_title(p)
        if metric == "speedup":
            ax.set_xscale("log")
            ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("speedup over the eager peer (nn.GRU on gru-1x1), log scale" if metric == "speedup"
                      else "% of the roofline (ceilings measured in this run)")
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


def compare(a_path: str, b_path: str, threshold: float, console: Console) -> int:
    """Print B's rows against A's, matched by (workload, implementation, dtype, pass): B's median over A's, flagged
    *regression* when B is slower by more than ``threshold`` (0.1 = 10%) or has no figures where A had, *faster*
    when faster by more than ``threshold``; warn where the files differ in device or scale.  Returns the number of
    regressions."""
    runs = []
    for path in (a_path, b_path):
        with open(path) as f:
            runs.append(json.load(f))
    for label, path, run in zip("AB", (a_path, b_path), runs):
        m = run["meta"]
        console.print(f"[bold]{label}[/]: {path}: {m.get('device')}, {m.get('date_utc')}, commit "
                      f"{(m.get('git_commit') or 'unknown')[:12]}, scale {m.get('scale')}")
    for f in ("device", "scale"):
        if runs[0]["meta"].get(f) != runs[1]["meta"].get(f):
            console.print(f"[yellow]warning[/]: the two files differ in {f}: {runs[0]['meta'].get(f)!r} vs "
                          f"{runs[1]['meta'].get(f)!r}; ratios compare unlike things")
    ra, rb = ({(r["workload"], r["impl"], r["dtype"], r["pass"]): r for r in run["rows"]} for run in runs)
    rows, regressions = [], 0
    for k in sorted(set(ra) | set(rb), key=lambda k: (RANK[k[0]] if k[0] in CATALOG else 99,) + k):
        x, y = ra.get(k), rb.get(k)
        ta = tb = ga = gb = None
        if x is None or y is None:
            flag = "only in A" if y is None else "only in B"
        else:
            (ta, ga), (tb, gb) = [[(r.get(f) or {}).get("median") for f in ("time", "graph_time")] for r in (x, y)]
            if ta and tb:
                flag = "regression" if tb / ta > 1 + threshold else "faster" if tb / ta < 1 / (1 + threshold) else ""
            elif ta:
                flag = f"regression: now {y['status']}" + (f" ({y['reason']})" if y.get("reason") else "")
            else:
                flag = f"fixed: was {x['status']}" if tb else ""
        regressions += flag.startswith("regression")
        color = "red" if flag.startswith("regression") else "green" if flag.startswith(("faster", "fixed")) else ""
        rows.append([*k, fmt_time(ta), fmt_time(tb), fmt_num(tb / ta if ta and tb else None, ".3f"),
                     fmt_num(gb / ga if ta and tb and ga and gb else None, ".3f"),
                     f"[{color}]{flag}[/]" if color else flag])
    console.table(("workload", "implementation", "dtype", "pass", "A median", "B median", "B / A", "graph B / A",
                   "flag"), rows, f"B relative to A (regression: more than {threshold:.0%} slower)")
    console.print(f"{regressions} regression(s)" if regressions else "no regressions")
    return regressions
