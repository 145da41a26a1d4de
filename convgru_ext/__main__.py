"""``python -m convgru_ext info | check | bench``.

* ``info``: versions, devices, and which backends run here (and why not);
* ``check``: every usable backend against the reference on this machine's
  devices (outputs and all gradients, float64 gradcheck), a table of relative
  errors, and a non-zero exit status on any failure;
* ``bench``: the benchmark (see ``python -m convgru_ext bench --help``).
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)  # logs get full-width tables


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def info(_args) -> int:
    from rich.table import Table

    import convgru_ext
    from convgru_ext import backends

    console = _console()
    versions = {"convgru_ext": convgru_ext.__version__, "python": platform.python_version(),
                "torch": torch.__version__, "CUDA (torch build)": str(torch.version.cuda)}
    try:
        import triton
        versions["triton"] = triton.__version__
    except ImportError as e:
        versions["triton"] = f"not importable ({e})"
    if torch.cuda.is_available():
        versions["cuDNN"] = str(torch.backends.cudnn.version())
    for k, v in versions.items():
        console.print(f"[bold]{k}[/]: {v}")
    console.print(f"[bold]CPU[/]: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            console.print(f"[bold]cuda:{i}[/]: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                          f"{p.total_memory / 2**30:.0f} GiB")
    else:
        console.print("[bold]GPU[/]: none visible to torch")
    table = Table("backend", "status", "auto picks it", "why not / notes", title="backends")
    for name, reason in backends.available_backends().items():
        b = backends.get(name)
        status = "usable" if reason is None else "unavailable"
        if b.experimental and reason is None:
            status = "usable (experimental)"
        auto = "no" if b.experimental or name not in backends.AUTO_ORDER or reason else "where fastest"
        table.add_row(name, status, auto, reason or ("not yet verified on a GPU" if b.experimental else ""))
    console.print(table)
    from convgru_ext.backends.torch_fallback import NATIVE
    loops = (f"C++ (convgru_ext._cpu, gate math {torch.ops.convgru_ext._cpu_gate_isa()})" if NATIVE.error is None
             else f"Python: {NATIVE.error}")
    console.print(f"[bold]torch backend's CPU loops (float32)[/]: {loops}")
    return 0


def check(args) -> int:
    from convgru_ext.testing import exact_float32

    with exact_float32():  # the float32 tolerance assumes no TF32 (the TF32 rows allow it themselves)
        return _check(args)


def _check(args) -> int:
    import json

    from rich.table import Table

    from convgru_ext import backends
    from convgru_ext.testing import check_plan, run_check, unusable_reason

    console = _console()
    gen = torch.Generator().manual_seed(args.seed)
    table = Table("backend", "device", "precision", "shape", "T", "reset", "max rel. error", "tolerance", "result",
                  title="parity with the reference (outputs, final state, every gradient)")
    rows: list[dict] = []
    names = args.backend or [n for n in backends.names() if backends.get(n).fused]
    devices = args.device or _devices()
    interrupted = False
    try:
        for check in check_plan(names, devices):
            row = {"backend": check.backend, "device": check.device, "precision": check.precision,
                   "shape": check.shape, "T": check.case.T, "reset": check.case.reset}
            cells = [check.backend, check.device, check.precision, check.shape, str(check.case.T), check.case.reset]
            reason = unusable_reason(check.backend, check.device, check.dtype)
            if reason:
                if not any(r.get("skipped") == reason and r["backend"] == check.backend for r in rows):
                    table.add_row(*cells[:3], "", "", "", "", "", f"skipped: {reason}")
                rows.append(dict(row, status="skipped", skipped=reason))
                continue
            try:
                errs = run_check(check, gen)
            except Exception as e:  # a crash is a failure, reported in the table
                rows.append(dict(row, status="error", error=f"{type(e).__name__}: {e}"))
                table.add_row(*cells, "", "", f"[red]ERROR[/] {type(e).__name__}: {e}")
                continue
            worst = max(errs, key=lambda k: errs[k][0] / errs[k][1])
            ok = all(e <= t for e, t in errs.values())  # NaN fails
            rows.append(dict(row, status="ok" if ok else "failed", worst=worst, error=errs[worst][0],
                             tolerance=errs[worst][1], errors={k: list(v) for k, v in errs.items()}))
            table.add_row(*cells, f"{errs[worst][0]:.2e} ({worst})", f"{errs[worst][1]:.1e}",
                          "[green]ok[/]" if ok else "[red]FAIL[/]")
        for name in names:
            for device in devices:
                if unusable_reason(name, device, torch.float64):
                    continue
                ok = _gradcheck(name, device)
                rows.append({"backend": name, "device": device, "precision": "float64", "shape": "gradcheck",
                             "status": "ok" if ok else "failed"})
                table.add_row(name, device, "float64", "gradcheck", "2", "both", "", "",
                              "[green]ok[/]" if ok else "[red]FAIL[/]")
    except KeyboardInterrupt:  # stopped from outside (a time budget): report what was checked
        interrupted = True
    console.print(table)
    failures = sum(r["status"] in ("failed", "error") for r in rows)
    passed = sum(r["status"] == "ok" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    summary = f"{passed} passed, {failures} failed, {skipped} skipped" + (" (interrupted)" if interrupted else "")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "summary": summary, "interrupted": interrupted}, f, indent=1)
    ok = not failures and not interrupted
    console.print(f"[green]all checks passed[/]: {summary}" if ok else f"[red]check failed[/]: {summary}")
    return 130 if interrupted else (1 if failures else 0)


def _gradcheck(backend: str, device: str) -> bool:
    from convgru_ext import convgru_sequence
    from convgru_ext.testing import Case, make_inputs

    case = Case(T=2, B=1, Cin=2, C=2, H=3, W=4, dilation=(1, 2))
    inputs = make_inputs(case, torch.float64, device, torch.Generator().manual_seed(0))
    # A backend that does not run at speed here (Triton's CPU interpreter) would take many minutes for the
    # full Jacobian (one forward per input element): check random projections of it instead (fast mode).
    from convgru_ext import backends

    fast = backends.get(backend).benchmark_reason() is not None
    return all(
        torch.autograd.gradcheck(
            lambda *a, r=reset: convgru_sequence(*a, dilation=case.dilation, reset=r, backend=backend),
            tuple(inputs.values()), eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False, fast_mode=fast)
        for reset in ("before", "after"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convgru_ext", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, backends")
    p = sub.add_parser("check", help="parity and gradcheck of every usable backend against the reference")
    p.add_argument("--backend", action="append", help="only this backend (repeatable)")
    p.add_argument("--device", action="append", choices=["cpu", "cuda"], help="only this device (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write every row (errors per output and gradient) here")
    sub.add_parser("bench", help="the benchmark; `bench --help` for its options", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from convgru_ext.bench.cli import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return {"info": info, "check": check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
