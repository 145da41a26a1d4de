"""``python -m convgru_ext bench``: the command line of the benchmark.

Typical uses::

    python -m convgru_ext bench                         # the full sweep (GPU) or the reduced CPU sweep
    python -m convgru_ext bench --quick                 # bf16 only on a GPU, fewer samples
    python -m convgru_ext bench -w raft-cell --dtype bfloat16 --pass fwd --cuda-graph
    python -m convgru_ext bench --list                  # the catalog and the implementations
    python -m convgru_ext bench --compare A.json B.json # ratios between two runs, regressions flagged

Exit status: 1 when a row failed its check, one of our backends raised, or the
sweep was cut short by a lost CUDA context; else 0 (the files are written
either way).  With ``--compare``: 1 when a regression is flagged.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import traceback
from typing import Optional

import torch

from . import catalog, report
from .catalog import CATALOG, CPU_DEFAULT_SCALE, PASSES
from .harness import DTYPES, Settings, Sweep
from .impls import COMPILE_MODE, OnnxRuntimePeer, Ours, all_implementations
from .meta import collect_meta
from .report import Console, fmt_time

#: the default time budget of a GPU sweep, seconds: it shares a 10-minute command with the build and tests
GPU_BUDGET_S = 330.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m convgru_ext bench", description=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Workloads: " + ", ".join(CATALOG) + ". See convgru_ext/bench/*.py.")
    sel = p.add_argument_group("what to run")
    sel.add_argument("-w", "--workload", action="append", choices=list(CATALOG), help="repeatable; default: all")
    sel.add_argument("--dtype", action="append", choices=list(DTYPES),
                     help="repeatable; default: bfloat16, float16, float32 on a GPU (bfloat16 with --quick), "
                          "float32 on a CPU")
    sel.add_argument("--impl", action="append", metavar="NAME",
                     help="repeatable: eager, compiled, nn.GRU, ort-naive, ort-ours (onnxruntime), or a "
                          "backend name; default: all")
    sel.add_argument("--pass", dest="passes", action="append", choices=PASSES, help="repeatable; default: both")
    sel.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible, else cpu")
    sel.add_argument("--scale", help="shrink every workload's B*H*W by this factor, or 'smoke' "
                                     f"({catalog.SMOKE_SCALE}); default: 1 on a GPU, {CPU_DEFAULT_SCALE} on a CPU")
    sel.add_argument("--sizes", help="set sizes of every selected workload after scaling, e.g. "
                     "T=8,B=4,Cin=32,C=32,H=28,W=28 (names: " + ", ".join(catalog.SIZES) + ")")
    sel.add_argument("--no-compile", action="store_true", help="leave out the torch.compile peer")
    sel.add_argument("--compile-mode", default=COMPILE_MODE, help="torch.compile mode of the compiled peer "
                                                                  f"(default {COMPILE_MODE})")
    how = p.add_argument_group("how")
    how.add_argument("--repeats", type=int, help="timed samples per row (default 15 on a GPU, 5 on a CPU)")
    how.add_argument("--warmup", type=int, default=3, help="warm-up calls per row (at least; default 3)")
    how.add_argument("--input-sets", type=int, help="random input sets rotated between calls (default: 3 on a "
                                                      "CPU; on a GPU at least 3 and enough to fill its L2 twice)")
    how.add_argument("--cuda-graph", action="store_true", help="also capture the timed calls in a CUDA graph "
                                                               "and report both figures")
    how.add_argument("--quick", action="store_true", help="fewer samples and shorter warm-up; bf16 only on a GPU")
    how.add_argument("--budget", type=float, help="stop starting rows after this many seconds (the rest are "
                                                  f"reported as skipped); default {GPU_BUDGET_S:g} on a GPU, "
                                                  "none on a CPU; 0: none")
    how.add_argument("--threads", type=int, help="CPU threads for PyTorch (torch.set_num_threads); default: "
                                                   "PyTorch's choice")
    how.add_argument("--seed", type=int, default=0)
    out = p.add_argument_group("output")
    out.add_argument("--out", help="output folder (default benchmarks/results/<device>-<date>/)")
    out.add_argument("--no-plots", action="store_true")
    out.add_argument("--list", action="store_true", help="list the workloads and implementations, run nothing")
    out.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="a table of B/A ratios")
    out.add_argument("--threshold", type=float, default=0.10,
                     help="--compare: a slowdown beyond this fraction is a regression (default 0.10)")
    return p


def default_out_dir(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "device"
    return os.path.join("benchmarks", "results", f"{slug}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}")


def _list(console: Console, device: torch.device, scale: float) -> int:
    from .. import backends

    console.table(("workload", "API", f"sizes (scale {scale:g})", "forward FLOPs", "passes", "what"), [
        [wl.name, wl.api, wl.sizes(), report.fmt_flops(wl.flops("fwd")), ", ".join(wl.passes), wl.description]
        for wl in catalog.select(None, scale)], "workloads")
    rows = []
    for impl in all_implementations():
        status = ""
        if isinstance(impl, Ours):
            status = backends.available_backends()[impl.backend] or "usable here"
        elif isinstance(impl, OnnxRuntimePeer):
            status = impl.unavailable(None, torch.float32, device) or "usable here (float32, float16; forward only)"
        rows.append([impl.label(device), impl.name, impl.kind + (", experimental" if impl.experimental else ""),
                     status])
    console.table(("implementation", "--impl", "kind", "status"), rows, "implementations")
    return 0


def device_and_scale(args) -> tuple[torch.device, float, str]:
    """The device, the scale and a note on the scale (empty at the workloads' real sizes) of parsed ``args``."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda but no GPU is visible to torch")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.scale is not None:
        try:
            scale = catalog.parse_scale(args.scale)
        except ValueError as e:
            raise SystemExit(f"bench: {e}") from None
        note = "" if scale == 1 else f"scaled: B*H*W x {scale:g}, not the workloads' real sizes"
    elif device.type == "cuda":
        scale, note = 1.0, ""
    else:
        scale, note = CPU_DEFAULT_SCALE, ("no GPU here: CPU backends in float32 at a reduced default scale, B*H*W x "
                                          f"{CPU_DEFAULT_SCALE:g}; these are not the workloads' real sizes")
    if args.sizes:
        note = "; ".join(filter(None, [note, f"sizes set by --sizes {args.sizes} (see each workload's sizes)"]))
    return device, scale, note


def settings_from_args(args, device: torch.device, scale: float) -> Settings:
    gpu = device.type == "cuda"
    if args.dtype:
        dtypes = [DTYPES[d] for d in dict.fromkeys(args.dtype)]
    else:
        dtypes = ([torch.bfloat16] if args.quick else [torch.bfloat16, torch.float16, torch.float32]) if gpu else [
            torch.float32]
    impls = all_implementations(None if args.no_compile else args.compile_mode)
    if args.impl:
        known = {i.name for i in all_implementations()}
        unknown = [n for n in args.impl if n not in known]
        if unknown:
            raise SystemExit(f"bench: unknown --impl {unknown}; choose from {sorted(known)}")
        impls = [i for i in impls if i.name in args.impl]
    try:
        sizes = catalog.parse_sizes(args.sizes) if args.sizes else None
    except ValueError as e:
        raise SystemExit(f"bench: {e}") from None
    repeats = args.repeats or ((7 if args.quick else 15) if gpu else (3 if args.quick else 5))
    budget = args.budget if args.budget is not None else (GPU_BUDGET_S if gpu else 0)
    for name, value in (("repeats", repeats), ("warmup", args.warmup), ("input-sets", args.input_sets)):
        if value is not None and value < 1:
            raise SystemExit(f"bench: --{name} must be at least 1; got {value}")
    return Settings(
        device=device, workloads=catalog.select(args.workload, scale, sizes), dtypes=dtypes, impls=impls,
        passes=tuple(args.passes or PASSES), repeats=repeats, warmup=args.warmup,
        min_warmup_s=(0.05 if args.quick else 0.1) if gpu else 0.0,
        min_sample_s=(0.005 if args.quick else 0.01) if gpu else 0.02,
        input_sets=args.input_sets, cuda_graph=args.cuda_graph and gpu, budget_s=budget or None,
        seed=args.seed, quick=args.quick)


def plan(argv: list[str]) -> tuple[Settings, list]:
    """The settings and the rows (dtype, workload, pass, implementation) that ``bench argv`` runs."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args, *device_and_scale(args)[:2])
    return settings, Sweep(settings).plan()


def _progress(console: Console, sweep: Sweep):
    """Report ``sweep``'s rows: a live rich progress bar on a terminal (failures printed), else one line per row
    (a log, or without rich).  Returns the bar to start and stop, or None."""
    total, done = len(sweep.plan()), []
    bar = None
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console.rich, transient=True)
        task = bar.add_task("starting", total=total)
        sweep.on_start = lambda text: bar.update(task, description=text)

    def on_row(row: dict) -> None:
        done.append(row)
        what = f"{row['workload']} {row['dtype']} {row['pass']} {row['label']}"
        if bar is None:
            figure = fmt_time(row["time"]["median"]) if row.get("time") else f"{row['status']}: {row['reason']}"
            print(f"[{len(done)}/{total}] {what}: {figure}", flush=True)
            return
        bar.advance(task)
        if row["status"] in ("error", "failed check"):
            console.print(f"[red]{row['status']}[/]: {what}: {row['reason']}")

    sweep.on_row = on_row
    return bar


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    console = Console()
    if args.compare:
        return 1 if report.compare(*args.compare, args.threshold, console) else 0
    device, scale, scale_note = device_and_scale(args)
    if args.list:
        return _list(console, device, scale)
    settings = settings_from_args(args, device, scale)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"bench: --threads must be at least 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.init()
    meta = collect_meta(device, argv, scale, scale_note)
    out_dir = args.out or default_out_dir(device)

    console.rule("[bold]convgru-ext bench")
    for line in report.header_lines({"meta": meta, "settings": settings.to_dict(), "ceilings": {}}):
        if not line.startswith("ceilings"):
            console.print(line)
    if scale_note:
        console.print(f"[bold yellow]{scale_note}[/]")
    if args.cuda_graph and device.type != "cuda":
        console.print("--cuda-graph: ignored without a GPU")
    os.makedirs(out_dir, exist_ok=True)

    def checkpoint(results):
        results["partial"] = True
        report.write_json(results, os.path.join(out_dir, "results.json"))

    sweep = Sweep(settings, on_checkpoint=checkpoint)
    bar, interrupted = _progress(console, sweep), False
    try:
        bar and bar.start()
        results = sweep.run(meta)
    except KeyboardInterrupt:
        interrupted, results = True, sweep.results
        results["aborted"] = "interrupted (Ctrl-C)"
    except Exception as e:  # a bug of the sweep itself: keep what was measured
        results = sweep.results
        results.update(aborted=f"the sweep crashed: {type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        console.rich.print_exception() if console.rich else traceback.print_exc()
    finally:
        bar and bar.stop()
    if "rows" not in results:  # stopped before the first row
        return 130 if interrupted else 1
    results["partial"] = interrupted
    console.print(f"ceilings measured in this run: {report.ceilings_text(results['ceilings'])}")
    paths = report.write_all(results, out_dir, plots=not args.no_plots)
    report.print_tables(results, console)
    for error in results.get("plot_errors", []):
        console.print(f"[yellow]plot not written[/]: {error}")
    if results.get("aborted"):
        console.print(f"[bold red]{results['aborted']}[/]")
    console.print("wrote " + ", ".join(paths))
    if interrupted:
        return 130
    # A failed check is a failure whoever fails it (a peer that disagrees means the benchmark is wrong);
    # an error is one for our backends only (a peer may not support a dtype, as cuDNN's GRU in bfloat16).
    bad = [r for r in results["rows"] if r["status"] == "failed check" or (r["status"] == "error"
                                                                           and r["kind"] == "ours")]
    if bad:
        console.print(f"[red]{len(bad)} row(s) failed: " + ", ".join(
            f"{r['workload']} {r['dtype']} {r['pass']} {r['label']} ({r['status']})" for r in bad[:20]) + "[/]")
    return 1 if bad or results.get("aborted") else 0
