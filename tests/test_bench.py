"""The benchmark on CPU at a tiny scale: files and metadata, formulas, --compare, failure handling.

The figures themselves are not checked (this machine is shared and noisy); what is checked is
that the command produces honest, complete output, and that it refuses to time an implementation
that computes something else.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from convgru_ext.bench import catalog
from convgru_ext.bench.catalog import CATALOG, Workload
from convgru_ext.bench.cli import main as bench_main
from convgru_ext.bench.harness import Settings, Sweep, derive
from convgru_ext.bench.impls import Built, Implementation, OnnxRuntimePeer, Ours, PublicPeer
from convgru_ext.bench.timing import time_calls
from convgru_ext.testing import REL_TOL

META_KEYS = ("date_utc", "device", "torch", "triton", "cuda_build", "git_commit", "scale", "command", "python")


@pytest.fixture(autouse=True)
def _one_thread():
    """Nothing here is a measurement; one thread keeps a loaded 2-core machine from thrashing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(name: str) -> Workload:
    return CATALOG[name].scaled(catalog.SMOKE_SCALE)


def _sweep(impls, workloads=("raft-cell",), passes=("fwd", "fwd+bwd")) -> dict:
    workloads = [_tiny(w) if isinstance(w, str) else w for w in workloads]  # names, or Workloads
    settings = Settings(device=torch.device("cpu"), workloads=workloads,
                        dtypes=[torch.float32], impls=impls, passes=passes, repeats=2, warmup=1,
                        min_warmup_s=0.0, min_sample_s=0.0, input_sets=2)
    return Sweep(settings).run({})


def _rows(results, impl):
    return {r["pass"]: r for r in results["rows"] if r["impl"] == impl}


# ------------------------------------------------------------------------------------- formulas


def test_flops_and_bytes_by_hand():
    wl = Workload("t", "cell", T=1, B=2, Cin=3, C=4, H=5, W=6, kernel=(3, 3))
    # 2 * B * H * W * kh * kw * 3C * (Cin + C) = 2 * 2 * 5 * 6 * 9 * 12 * 7
    assert wl.flops("fwd") == 90720
    assert wl.flops("fwd+bwd") == 3 * 90720
    seq = Workload("s", "sequence", T=4, B=2, Cin=3, C=4, H=5, W=6)
    assert seq.flops("fwd") == 4 * 90720
    sep = Workload("p", "sep", T=1, B=2, Cin=3, C=4, H=5, W=6, kernel=(3, 3))  # a 1x3 cell, then a 3x1 cell
    assert sep.flops("fwd") == 2 * (2 * 2 * 5 * 6 * 3 * 12 * 7)
    # forward bytes: x (2*3*5*6=180) + h (2*4*30=240) + weights (12*7*9 + 24 = 780) + out (240), float32
    assert wl.min_bytes("fwd", 4) == 4 * (180 + 240 + 780 + 240)
    # backward adds: grad_out, x, h0, states, weights read; dx, dh0, dweights written
    assert wl.min_bytes("fwd+bwd", 2) == 2 * (1440 + 240 + 180 + 240 + 240 + 780 + 180 + 240 + 780)
    stream = Workload("st", "stream", T=3, B=2, Cin=3, C=4, H=5, W=6)
    assert stream.min_bytes("fwd", 4) == 3 * wl.min_bytes("fwd", 4)  # T separate one-step calls
    assert catalog.roofline(100, 10, peak_flops=10, peak_bytes_per_s=1) == (10, "compute")
    assert catalog.roofline(100, 50, peak_flops=10, peak_bytes_per_s=1) == (50, "memory")
    for bad in (wl.flops, lambda p: wl.min_bytes(p, 4)):
        with pytest.raises(ValueError, match="pass"):
            bad("bwd")


def test_catalog_and_scale():
    assert list(CATALOG) == ["raft-cell", "raft-sep", "video", "nowcast", "stream", "gru-1x1"]
    raft = CATALOG["raft-cell"]
    assert (raft.B, raft.Cin, raft.C, raft.H, raft.W, raft.kernel) == (8, 256, 128, 46, 62, (3, 3))
    assert CATALOG["raft-sep"].cells == [(1, 5), (5, 1)]
    assert CATALOG["stream"].passes == ("fwd",)
    small = CATALOG["nowcast"].scaled(0.01)
    assert (small.T, small.B, small.C, small.H, small.W) == (20, 4, 64, 13, 13)
    assert CATALOG["gru-1x1"].scaled(0.5).B == 32
    assert catalog.parse_scale("smoke") == catalog.SMOKE_SCALE
    for bad in ("0", "-1", "inf", "big"):
        with pytest.raises(ValueError, match="--scale"):
            catalog.parse_scale(bad)
    with pytest.raises(ValueError, match="unknown workload"):
        catalog.select(["raft"])


def test_sizes_replace_a_workloads_sizes_after_scaling():
    sizes = catalog.parse_sizes("T=8,B=4,Cin=32,C=32,H=28,W=28")
    video = catalog.select(["video"], 0.01, sizes)[0]
    assert (video.T, video.B, video.Cin, video.C, video.H, video.W) == (8, 4, 32, 32, 28, 28)
    assert catalog.select(["stream"], 0.01, {"H": 5})[0].W == CATALOG["stream"].scaled(0.01).W
    for bad in ("T=0", "X=3", "T=", "T=two", "T=1;B=2"):
        with pytest.raises(ValueError, match="--sizes"):
            catalog.parse_sizes(bad)


def test_time_calls_rotates_inputs_and_reports_every_sample():
    seen = []
    timing = time_calls(seen.append, torch.device("cpu"), repeats=4, warmup=2, min_warmup_s=0.0,
                        min_sample_s=0.0)
    assert len(timing.samples) == 4 and all(s > 0 for s in timing.samples)
    assert seen == list(range(len(seen)))  # consecutive calls get consecutive input indices
    assert timing.to_dict()["median"] == timing.median


# ------------------------------------------------------------------------------------------ CLI


def test_cli_writes_results_with_metadata(tmp_path, capsys, monkeypatch):
    # an export costs seconds per row here: the onnxruntime peers have tests of their own
    monkeypatch.setattr(OnnxRuntimePeer, "unavailable", lambda self, wl, dtype, device: "not in this test")
    out = tmp_path / "run"
    rc = bench_main(["--scale", "smoke", "-w", "raft-cell", "-w", "gru-1x1", "--no-compile", "--repeats", "2",
                     "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "raft-cell" in printed and "gru-1x1" in printed
    for name in ("results.json", "results.md", "speedup.png", "roofline.png"):
        assert (out / name).is_file(), name
    for name in ("speedup.png", "roofline.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert all(results["meta"].get(k) is not None for k in META_KEYS), results["meta"]
    assert results["meta"]["scale"] == catalog.SMOKE_SCALE and not results["partial"]
    assert results["ceilings"]["flops"]["float32"]["flops_per_s"] > 0
    assert results["ceilings"]["bandwidth"]["bytes_per_s"] > 0
    impls = {(r["workload"], r["impl"]) for r in results["rows"]}
    assert {("raft-cell", "eager"), ("raft-cell", "reference"), ("raft-cell", "torch"),
            ("gru-1x1", "nn.GRU"), ("gru-1x1", "torch")} <= impls
    assert ("gru-1x1", "eager") not in impls  # the public peer computes reset="before" only
    for r in results["rows"]:
        if r["status"] == "skipped":  # a backend registered but unusable here (e.g. cuda without a GPU)
            assert r["impl"] not in ("eager", "reference", "torch", "nn.GRU") and r["reason"], r
            continue
        assert r["status"] == "ok", r
        assert r["check"]["passed"] and r["check"]["max_rel_err"] < 1e-4
        assert r["time"]["median"] > 0 and len(r["time"]["samples"]) == 2
        assert r["tflops"] > 0 and r["roofline_pct"] > 0 and r["speedup"] > 0
        if r["pass"] == "fwd+bwd":  # every gradient was compared
            assert {"output", "grad_x", "grad_h0"} <= set(r["check"]["errors"])
            assert sum(k.startswith("grad_") for k in r["check"]["errors"]) >= 6
    baseline = {r["workload"]: r["speedup_vs"] for r in results["rows"] if r["status"] == "ok"}
    assert baseline == {"raft-cell": "eager", "gru-1x1": "nn.GRU"}
    md = (out / "results.md").read_text()
    assert results["meta"]["git_commit"] in md or results["meta"]["git_commit"] == "unknown"
    assert "## raft-cell" in md and "| eager |" in md and "![speedup](speedup.png)" in md
    assert results["meta"]["device"] in md and f"scale: {catalog.SMOKE_SCALE}" in md


def test_cli_without_rich_and_matplotlib_prints_plain_tables_and_says_why_no_plots(tmp_path, capsys, monkeypatch):
    """rich and matplotlib are the ``bench`` extra: without them, plain-text tables and the files without plots."""
    for module in ("rich", "rich.console", "rich.table", "rich.progress", "matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    out = tmp_path / "run"
    rc = bench_main(["--scale", "smoke", "-w", "gru-1x1", "--impl", "nn.GRU", "--impl", "torch", "--repeats", "1",
                     "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "[bold]" not in printed and "[/]" not in printed  # no rich markup left in plain text
    assert "implementation" in printed and "nn.GRU" in printed and "ours / fastest peer, float32 fwd" in printed
    assert "plot not written" in printed and "matplotlib is not installed" in printed
    assert (out / "results.json").is_file() and (out / "results.md").is_file()
    assert not (out / "speedup.png").exists() and not (out / "roofline.png").exists()
    assert "Plots" not in (out / "results.md").read_text()
    assert bench_main(["--list"]) == 0
    assert "raft-cell" in capsys.readouterr().out
    results = str(out / "results.json")
    assert bench_main(["--compare", results, results]) == 0
    assert "no regressions" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the reduced default scale applies without a GPU")
def test_cli_says_when_it_runs_reduced_on_cpu(tmp_path, capsys):
    rc = bench_main(["-w", "stream", "--impl", "eager", "--repeats", "1", "--no-plots", "--out", str(tmp_path)])
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["scale"] == catalog.CPU_DEFAULT_SCALE
    assert "reduced default scale" in results["meta"]["scale_note"]
    assert "reduced default scale" in capsys.readouterr().out
    assert "reduced default scale" in (tmp_path / "results.md").read_text()


def _result_file(path, median_by_impl: dict, device="cpu", status_by_impl=None):
    status_by_impl = status_by_impl or {}
    rows = [{"workload": "raft-cell", "impl": impl, "dtype": "float32", "pass": "fwd",
             "status": status_by_impl.get(impl, "ok"), "reason": None if impl not in status_by_impl else "boom",
             "time": None if impl in status_by_impl else {"median": m}} for impl, m in median_by_impl.items()]
    path.write_text(json.dumps({"meta": {"device": device, "scale": 1.0, "date_utc": "x", "git_commit": "abc"},
                                "rows": rows}))
    return str(path)


def test_compare_flags_regressions(tmp_path, capsys):
    a = _result_file(tmp_path / "a.json", {"eager": 1.0, "torch": 0.5, "reference": 2.0})
    same = _result_file(tmp_path / "same.json", {"eager": 1.02, "torch": 0.49, "reference": 2.0})
    assert bench_main(["--compare", a, same]) == 0
    assert "no regressions" in capsys.readouterr().out

    slower = _result_file(tmp_path / "b.json", {"eager": 1.0, "torch": 0.8, "reference": 1.0})
    assert bench_main(["--compare", a, slower]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "1.600" in out and "faster" in out

    broken = _result_file(tmp_path / "c.json", {"eager": 1.0, "torch": 0.5, "reference": 2.0},
                          status_by_impl={"torch": "failed check"}, device="other")
    assert bench_main(["--compare", a, broken]) == 1
    out = capsys.readouterr().out
    assert "now failed check" in out and "differ in device" in out


# -------------------------------------------------------------------------- onnxruntime peers


def _needs_onnxruntime():
    reason = OnnxRuntimePeer.missing()
    if reason:
        pytest.skip(reason)


@pytest.mark.slow  # the first export of a process takes seconds more than the others
def test_onnxruntime_peers_run_forward_rows_that_pass_the_check():
    """Both exports of a sequence, and ours of a stream at reset "after" (which the naive model does not compute):
    forward rows only, checked against the reference, the export excluded from the timings."""
    _needs_onnxruntime()
    workloads = [Workload("seq", "sequence", T=2, B=1, Cin=3, C=4, H=3, W=2),
                 Workload("after", "stream", T=2, B=1, Cin=3, C=4, H=2, W=2, reset="after")]
    results = _sweep([PublicPeer(), Ours("torch"), OnnxRuntimePeer("naive"), OnnxRuntimePeer("ours")], workloads)
    ort = {(r["workload"], r["impl"], r["pass"]): r for r in results["rows"] if r["impl"].startswith("ort-")}
    assert sorted(ort) == [("after", "ort-ours", "fwd"), ("seq", "ort-naive", "fwd"), ("seq", "ort-ours", "fwd")]
    for r in ort.values():
        assert r["status"] == "ok", r
        assert r["kind"] == "peer" and r["label"] == f"onnxruntime({r['impl'][4:]})"
        assert r["check"]["passed"] and r["check"]["max_rel_err"] < 1e-5 and r["time"]["median"] > 0
        assert r["export_s"] > 0 and r["first_call_s"] < r["export_s"]  # the export happened in the build
    # ours / fastest peer, per workload and pass where both ran; the onnxruntime rows count as peers
    versus = {(e["workload"], e["pass"]): e for e in results["ours_vs_peers"]}
    assert set(versus) == {("seq", "fwd"), ("seq", "fwd+bwd"), ("after", "fwd")}
    for (workload, pass_), e in versus.items():
        peers = [r for r in results["rows"] if (r["workload"], r["pass"], r["kind"]) == (workload, pass_, "peer")]
        fastest = min(peers, key=lambda r: r["time"]["median"])
        assert e["ours"] == "torch" and e["peer"] == fastest["impl"]
        assert e["ratio"] == pytest.approx(fastest["time"]["median"] / e["ours_median"])
    assert versus["after", "fwd"]["peer"] == "ort-ours"  # the only peer of a reset-after stream


def test_onnxruntime_peers_export_raft_sep_and_match_its_reference():
    """RAFT's two cells, both exports, one call each against the reference (the harness's check, without timing)."""
    _needs_onnxruntime()
    wl = Workload("sep", "sep", T=1, B=1, Cin=3, C=4, H=3, W=3)
    sweep = Sweep(Settings(device=torch.device("cpu"), workloads=[], dtypes=[], impls=[]))
    for model in ("naive", "ours"):
        row = sweep.row(torch.float32, wl, "fwd", OnnxRuntimePeer(model), timer=lambda call: None)
        assert row["status"] == "ok" and row["time"] is None and row["export_s"] > 0, row
        assert row["check"]["passed"] and row["check"]["max_rel_err"] < 1e-5, (model, row["check"])


def test_onnxruntime_peers_say_why_they_cannot_run(monkeypatch):
    wl = _tiny("stream")
    naive, ours = OnnxRuntimePeer("naive"), OnnxRuntimePeer("ours")
    assert naive.passes == ours.passes == ("fwd",)
    assert not naive.applies_to(_tiny("gru-1x1")) and ours.applies_to(_tiny("gru-1x1"))
    assert "Conv" in ours.unavailable(wl, torch.float64, torch.device("cpu"))
    assert "Conv" in ours.unavailable(wl, torch.bfloat16, torch.device("cpu"))
    if OnnxRuntimePeer.missing() is None:
        import onnxruntime

        assert ours.unavailable(wl, torch.float32, torch.device("cpu")) is None
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
        assert ours.unavailable(wl, torch.float32, torch.device("cuda")) == (
            "onnxruntime's CUDA provider is not installed here")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert naive.unavailable(wl, torch.float32, torch.device("cpu")) == "onnxruntime is not installed"


def test_ours_vs_peers_takes_our_fastest_non_experimental_row_and_the_fastest_peer():
    def row(impl, kind, median, experimental=False, pass_="fwd"):
        return {"workload": "w", "dtype": "float32", "pass": pass_, "impl": impl, "label": impl, "kind": kind,
                "experimental": experimental, "time": None if median is None else {"median": median}, "flops": 1}

    rows = [row("eager", "peer", 4.0), row("ort-naive", "peer", 2.0), row("ort-ours", "peer", None),
            row("torch", "ours", 1.0), row("triton", "ours", 0.1, experimental=True), row("reference", "ours", 3.0),
            row("eager", "peer", 1.0, pass_="fwd+bwd")]  # no row of ours: no ratio
    results = {"rows": rows}
    derive(results)
    assert results["ours_vs_peers"] == [{"workload": "w", "dtype": "float32", "pass": "fwd", "ratio": 2.0,
                                         "ours": "torch", "ours_label": "torch", "ours_median": 1.0,
                                         "peer": "ort-naive", "peer_label": "ort-naive", "peer_median": 2.0}]


def test_cli_runs_the_onnxruntime_peers_and_reports_ours_against_the_fastest_peer(tmp_path, capsys):
    _needs_onnxruntime()
    rc = bench_main(["--device", "cpu", "--scale", "smoke", "-w", "raft-cell", "--impl", "eager", "--impl", "torch",
                     "--impl", "ort-naive", "--pass", "fwd", "--repeats", "1", "--warmup", "1", "--no-plots",
                     "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["impl"]: r["status"] for r in results["rows"]} == {"eager": "ok", "torch": "ok", "ort-naive": "ok"}
    [e] = results["ours_vs_peers"]
    assert e["ours"] == "torch" and e["peer"] in ("eager", "ort-naive")
    line = f"ours / fastest peer, float32 fwd: {e['ratio']:.2f}x (torch "
    assert line in printed and f"- {line}" in (tmp_path / "results.md").read_text()
    assert "onnxruntime(naive)" in printed and "export" in printed and "Skipping constant folding" not in printed


# ----------------------------------------------------------------------------- honesty checks


class _Raises(Implementation):
    name, kind = "raises", "ours"

    def build(self, wl, params, train):
        raise RuntimeError("kernel exploded")


class _OffByATenthPercent(Implementation):
    """The right function, 0.1% off: far below what a plot would show, far above float32 rounding."""

    name, kind = "wrong", "ours"

    def build(self, wl, params, train):
        inner = Ours("reference").build(wl, params, train)
        return Built(lambda x, h: inner.run(x, h) * 1.001, inner.params, inner.param_names, inner.map_grads)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return g * 1.01


class _WrongGradient(Implementation):
    """Right forward, gradients 1% off."""

    name, kind = "wronggrad", "ours"

    def build(self, wl, params, train):
        inner = Ours("torch").build(wl, params, train)
        return Built(lambda x, h: _ScaleGrad.apply(inner.run(x, h)), inner.params, inner.param_names,
                     inner.map_grads)


def test_an_implementation_that_raises_is_reported_not_fatal():
    results = _sweep([PublicPeer(), _Raises(), Ours("torch")])
    raised = _rows(results, "raises")
    assert {p: r["status"] for p, r in raised.items()} == {"fwd": "error", "fwd+bwd": "error"}
    assert "kernel exploded" in raised["fwd"]["reason"] and "Traceback" in raised["fwd"]["traceback"]
    assert raised["fwd"]["time"] is None
    for impl in ("eager", "torch"):  # the sweep went on
        assert all(r["status"] == "ok" and r["time"] for r in _rows(results, impl).values())


def test_a_wrong_implementation_fails_its_check_and_is_not_timed():
    results = _sweep([PublicPeer(), _OffByATenthPercent(), _WrongGradient()])
    wrong = _rows(results, "wrong")
    for r in wrong.values():
        assert r["status"] == "failed check" and r["time"] is None and r["speedup"] is None
        assert math.isclose(r["check"]["errors"]["output"]["err"], 1e-3, rel_tol=1e-2)
    grad = _rows(results, "wronggrad")
    assert grad["fwd"]["status"] == "ok"  # the forward is right
    assert grad["fwd+bwd"]["status"] == "failed check" and grad["fwd+bwd"]["time"] is None
    assert grad["fwd+bwd"]["check"]["worst"].startswith("grad_")
    assert math.isclose(grad["fwd+bwd"]["check"]["max_rel_err"], 0.01, rel_tol=1e-2)
    assert all(r["status"] == "ok" for r in _rows(results, "eager").values())


def test_a_dilated_workload_passes_the_check():
    """At dilation 2 the eager peer (its padding follows the dilation) and ours compute the reference's function."""
    for api in ("sequence", "sep"):
        wl = Workload("dilated", api, T=2 if api == "sequence" else 1, B=2, Cin=3, C=4, H=9, W=8, dilation=(2, 2))
        assert "dilation=2x2" in wl.sizes()
        results = _sweep([PublicPeer(), Ours("torch")], workloads=[wl])
        assert sorted((r["impl"], r["pass"], r["status"]) for r in results["rows"]) == [
            ("eager", "fwd", "ok"), ("eager", "fwd+bwd", "ok"), ("torch", "fwd", "ok"), ("torch", "fwd+bwd", "ok")]
        # the suite's rule: float32 within REL_TOL of the reference run in float32
        assert {e["tol"] for r in results["rows"] for e in r["check"]["errors"].values()} == {REL_TOL[torch.float32]}


def test_the_time_budget_skips_rows_and_says_why():
    from convgru_ext.bench.impls import COMPILE_MODE

    def sweep(budget):
        settings = Settings(device=torch.device("cpu"), workloads=[_tiny("raft-cell")], dtypes=[torch.float32],
                            impls=[PublicPeer(), PublicPeer(COMPILE_MODE)], passes=("fwd",), repeats=1,
                            warmup=1, min_warmup_s=0.0, min_sample_s=0.0, input_sets=2, budget_s=budget)
        return Sweep(settings).run({})

    spent = sweep(1e-9)
    assert [r["status"] for r in spent["rows"]] == ["skipped", "skipped"]
    assert all("time budget exhausted" in r["reason"] for r in spent["rows"])
    # 25 s left at most: never enough to start a compile (allowed at least 30 s), whatever else runs
    compiled = _rows(sweep(25.0), "compiled")["fwd"]
    assert compiled["status"] == "skipped" and "compiling may take" in compiled["reason"]


def test_a_crash_of_the_sweep_keeps_what_was_measured(tmp_path, monkeypatch):
    from convgru_ext.bench import harness as sweep

    calls = []

    def flaky_derive(results):  # fails once, at the end of the sweep; the writers' own call succeeds
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in the sweep")
        return real_derive(results)

    real_derive = sweep.derive
    monkeypatch.setattr(sweep, "derive", flaky_derive)
    rc = bench_main(["--scale", "smoke", "-w", "gru-1x1", "--impl", "torch", "--pass", "fwd", "--no-plots",
                     "--repeats", "1", "--out", str(tmp_path)])
    assert rc == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert "the sweep crashed" in results["aborted"] and "bug in the sweep" in results["traceback"]
    assert [r["status"] for r in results["rows"]] == ["ok"] and results["rows"][0]["time"]


def test_static_cost_model_of_the_triton_launches():
    """``model.workload_steps``: launches per step per reset mode, FLOPs of a cell step equal to catalog.py's (the
    kernels convolve x and h there), waves = CTAs / SMs, and a host time per launch measured here."""
    pytest.importorskip("triton")
    from convgru_ext.backends.triton import model, ops
    from convgru_ext.bench.catalog import CATALOG, forward_flops_per_step

    rows = {(r["workload"], r["pass"]): r for r in model.workload_steps(list(CATALOG.values()), torch.bfloat16)}
    assert rows, "no model"
    cell = CATALOG["raft-cell"]
    assert rows["raft-cell", "fwd"]["flops_per_step"] == forward_flops_per_step(
        cell.B, cell.H, cell.W, 3, 3, cell.Cin, cell.C)
    assert rows["raft-cell", "fwd"]["launches_per_step"] == 2 and rows["raft-cell", "fwd+bwd"]["launches_per_step"] == 4
    assert rows["gru-1x1", "fwd"]["launches_per_step"] == 1  # reset "after"
    video = rows["video", "fwd"]
    assert video["l2_bytes_per_step"] > video["min_hbm_bytes_per_step"] > 0
    # the eager peer's step does the same convolutions; a sequence's projection adds x's to the step kernels'
    for wl in CATALOG.values():
        for kh, kw in wl.cells:
            flops = forward_flops_per_step(wl.B, wl.H, wl.W, kh, kw, wl.Cin, wl.C)
            assert sum(f for _, f, _ in model.eager_launches(wl, (kh, kw))) == flops
    assert 0 < video["projection_us_per_step"] < video["gpu_us_per_step"]
    assert rows["raft-cell", "fwd"]["projection_us_per_step"] == 0  # a cell convolves x in its step kernels
    assert video["eager_us_per_step"] > 0 and rows["gru-1x1", "fwd"]["eager_us_per_step"] is None  # reset "after"
    assert rows["video", "fwd+bwd"]["eager_us_per_step"] is None  # a forward estimate only
    for r in rows.values():
        assert r["host_us_per_launch"] > 0
        for k in r["kernels"]:
            assert k["waves"] == pytest.approx(k["ctas"] / ops.sm_count())
