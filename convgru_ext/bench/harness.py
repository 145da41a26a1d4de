"""The one harness: every row, whether ``python -m convgru_ext bench`` (``cli.py``) or the pytest-benchmark suite
(``benchmarks/``) drives it, runs through :meth:`Sweep.row`; the results' schema and derived figures live here too.

A sweep (:meth:`Sweep.run`) measures the ceilings first, then goes dtype by dtype (bfloat16 first on a GPU, so that
a sweep cut short by its time budget loses the least wanted figures), workload by workload, pass by pass,
implementation by implementation.  Each row (:meth:`Sweep._measure`):

1. **check**: one call on input set 0 against the ``reference`` backend on the same values (the output and, for
   ``fwd+bwd``, the gradients of ``x``, ``h0`` and every parameter) by the tolerance rule of
   ``convgru_ext.testing.reference_errors``; an implementation that disagrees is reported as ``failed check`` and
   not timed.  The wall time of this first call is kept (``first_call_s``: compilation, autotuning);
2. **time**: by the caller's timer (the CLI: ``timing.time_calls``; the suite: pytest-benchmark's rounds), inputs
   rotated among random sets (:func:`input_sets_for`); for ``fwd+bwd``, the bytes autograd saves for the backward;
3. **memory** (GPU): ``peak_mem_extra_bytes``, the peak of one more call minus what was allocated before it;
4. **CUDA graph** (``cuda_graph``): the same calls captured and replayed, unless ``Implementation.no_graph``.

The time budget (``budget_s``, wall clock from the start): once spent, the remaining rows are skipped; a row that
compiles starts only with time for a compile left over the share kept for the later rows that do not
(:meth:`Sweep._no_time_to_compile`).  An exception in a row is recorded (with its traceback) in that row and the
sweep goes on; after a failure on a GPU the CUDA context is probed, and if it is lost (a sticky error such as an
illegal memory access) the remaining rows are marked as not run rather than reported as failures of innocent
implementations.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import math
import time
import traceback
from collections.abc import Callable
from typing import Optional

import torch

from .._tf32 import conv_allows_tf32, matmul_allows_tf32
from ..testing import random_params, random_tensor, reference_errors
from .catalog import PASSES, Workload, roofline
from .impls import PARAM_NAMES, Built, Implementation, Ours, Params
from .timing import Timing, measure_ceilings, replay_host_us_per_step, saved_bytes, synchronize, time_calls, time_graph

SCHEMA_VERSION = 1
DTYPES = {name: getattr(torch, name) for name in ("bfloat16", "float16", "float32", "float64")}
STATUSES = ("ok", "failed check", "error", "skipped")
Timer = Callable[[Callable[[int], object]], Optional[Timing]]  # times call(i); None: nothing measured


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def error_text(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:300]


@dataclasses.dataclass
class Settings:
    """What one sweep runs, and how (the CLI's options; see ``cli.py``)."""

    device: torch.device
    workloads: list[Workload]
    dtypes: list[torch.dtype]
    impls: list[Implementation]
    passes: tuple[str, ...] = PASSES
    repeats: int = 15
    warmup: int = 3
    min_warmup_s: float = 0.1
    min_sample_s: float = 0.01
    input_sets: Optional[int] = None  # None: enough to overflow the GPU's L2 twice (see input_sets_for), 3 on CPU
    cuda_graph: bool = False
    budget_s: Optional[float] = None
    seed: int = 0
    quick: bool = False

    def to_dict(self) -> dict:
        return dict({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, device=str(self.device),
                    workloads=[w.name for w in self.workloads], dtypes=[dtype_name(d) for d in self.dtypes],
                    impls=[i.name for i in self.impls], passes=list(self.passes))


class WorkloadData:
    """One workload's float64 data on the device: parameters, input set 0 and its output gradient, and the
    reference's results in float64 (computed once per pass, shared by every dtype)."""

    def __init__(self, wl: Workload, device: torch.device, seed: int):
        self.wl, self.gen = wl, torch.Generator(device=device).manual_seed(seed)
        self.params: Params = [random_params(wl.Cin, wl.C, kernel, self.gen) for kernel in wl.cells]
        self.shapes = (wl.x_shape, wl.h_shape, wl.out_shape)
        self.set0 = tuple(random_tensor(s, self.gen) for s in self.shapes)  # x, h0, grad_out
        self._reference: dict[str, dict] = {}

    def params_as(self, dtype: torch.dtype) -> Params:
        return [{n: t.to(dtype) for n, t in p.items()} for p in self.params]

    def input_sets(self, dtype: torch.dtype, n: int, train: bool) -> list[tuple[torch.Tensor, ...]]:
        """``n`` sets ``(x, h0, grad_out)`` in ``dtype``: set 0 is the checked one, the others fresh."""
        fresh = (tuple(random_tensor(s, self.gen) for s in self.shapes) for _ in range(n - 1))  # one at a time
        return [(x.to(dtype, copy=True).requires_grad_(train), h.to(dtype, copy=True).requires_grad_(train),
                 g.to(dtype)) for x, h, g in itertools.chain([self.set0], fresh)]

    def reference(self, pass_: str, dtype: torch.dtype = torch.float64) -> dict:
        """The reference backend run in ``dtype`` on input set 0, ``{"built": ..., "slots": ...}`` (kept in
        float64)."""
        if dtype == torch.float64 and pass_ in self._reference:
            return self._reference[pass_]
        train = pass_ == "fwd+bwd"
        built = Ours("reference").build(self.wl, self.params_as(dtype), train)
        result = {"built": built, "slots": run_once(built, *self.input_sets(dtype, 1, train)[0], train)}
        if dtype == torch.float64:
            self._reference[pass_] = result
        return result


def run_once(built: Built, x, h0, grad_out, train: bool) -> dict[str, torch.Tensor]:
    """One call: ``{"output": ...}`` and, with ``train``, ``grad_x``, ``grad_h0`` and ``grad_<param>``."""
    if not train:
        with torch.no_grad():
            return {"output": built.run(x.detach(), h0.detach())}
    out = built.run(x, h0)
    grads = torch.autograd.grad(out, [x, h0, *built.params], grad_out)
    return {"output": out.detach(), "grad_x": grads[0], "grad_h0": grads[1],
            **{f"grad_{n}": g for n, g in zip(built.param_names, grads[2:])}}


def _slots_for(built: Built, reference: dict) -> dict[str, torch.Tensor]:
    """A reference's results in ``built``'s terms (its parameters' gradients mapped)."""
    slots = {k: v for k, v in reference["slots"].items() if k in ("output", "grad_x", "grad_h0")}
    if "grad_x" in slots:
        flat = [reference["slots"][f"grad_{n}"] for n in reference["built"].param_names]
        grads = [dict(zip(PARAM_NAMES, flat[i: i + 4])) for i in range(0, len(flat), 4)]
        slots.update({f"grad_{n}": g for n, g in zip(built.param_names, built.map_grads(grads))})
    return slots


def compare(got: dict, want: dict, in_dtype: dict, dtype: torch.dtype, tf32: bool = False) -> dict:
    """Per slot, (relative error, tolerance) by ``testing.reference_errors`` (``want``: the float64 reference,
    ``in_dtype``: the reference run in ``dtype``; a slot missing or of another shape fails), and a summary."""
    same = [k for k, w in want.items() if k in got and got[k].shape == w.shape]
    errors = dict.fromkeys(want, (math.inf, 0.0))
    errors.update(reference_errors(*({k: d[k] for k in same} for d in (got, want, in_dtype)), dtype, tf32))
    worst = max(errors, key=lambda k: errors[k][0] / errors[k][1] if errors[k][1] > 0 else math.inf)
    return {"passed": all(e <= t for e, t in errors.values()),  # NaN fails
            "max_rel_err": max(e for e, _ in errors.values()), "worst": worst, "worst_err": errors[worst][0],
            "worst_tol": errors[worst][1], "errors": {k: {"err": e, "tol": t} for k, (e, t) in errors.items()}}


def input_sets_for(wl: Workload, dtype: torch.dtype, device: torch.device, cap: int = 32) -> int:
    """How many input sets to rotate: at least 3, and on a GPU enough that together they fill its L2 cache twice
    over, so that no call finds its inputs still in cache from the previous one."""
    if device.type != "cuda":
        return 3
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
    one = sum(math.prod(s) for s in (wl.x_shape, wl.h_shape, wl.out_shape)) * torch.empty(0, dtype=dtype).element_size()
    return max(3, min(cap, math.ceil(2 * l2 / max(one, 1))))


def make_call(built: Built, sets, train: bool) -> Callable[[int], object]:
    """``call(i)``: one call on input set ``i % len(sets)`` (forward under no_grad, or forward and backward)."""
    if not train:
        fwd_sets = [(x.detach(), h.detach()) for x, h, _ in sets]

        def call(i):
            with torch.no_grad():
                return built.run(*fwd_sets[i % len(fwd_sets)])
        return call
    leaves = [(x, h, g, [x, h, *built.params]) for x, h, g in sets]

    def call(i):
        x, h, g, inputs = leaves[i % len(leaves)]
        return torch.autograd.grad(built.run(x, h), inputs, g)
    return call


def derive(results: dict) -> None:
    """Fill in each row's derived figures (TFLOP/s, % of roofline, bound, speedup vs the eager peer) and
    ``results["ours_vs_peers"]``: per (workload, dtype, pass) where both ran, the fastest peer's median over our
    fastest non-experimental implementation's (``ratio`` > 1: ours is faster), and which rows those were."""
    ceilings = results.get("ceilings") or {}
    bw = (ceilings.get("bandwidth") or {}).get("bytes_per_s")
    groups: dict[tuple, dict[str, dict]] = {}
    for row in results["rows"]:
        groups.setdefault((row["workload"], row["dtype"], row["pass"]), {})[row["impl"]] = row
    results["ours_vs_peers"] = []
    for (workload, dtype, pass_), group in groups.items():
        timed = {n: r for n, r in group.items() if r["time"]}
        baseline = next((timed[n] for n in ("eager", "nn.GRU") if n in timed), None)
        for row in group.values():
            row.update(tflops=None, roofline_pct=None, bound=None, speedup=None, speedup_vs=None)
        for row in timed.values():
            t, peak = row["time"]["median"], (ceilings.get("flops") or {}).get(row["dtype"], {}).get("flops_per_s")
            row["tflops"] = row["flops"] / t / 1e12
            if peak and bw:
                t_roof, row["bound"] = roofline(row["flops"], row["min_bytes"], peak, bw)
                row["roofline_pct"] = 100 * t_roof / t
            if baseline is not None:
                row.update(speedup=baseline["time"]["median"] / t, speedup_vs=baseline["impl"])
        mine = [r for r in timed.values() if r["kind"] == "ours" and not r["experimental"]]
        peers = [r for r in timed.values() if r["kind"] == "peer"]
        if mine and peers:
            ours, peer = (min(rows, key=lambda r: r["time"]["median"]) for rows in (mine, peers))
            results["ours_vs_peers"].append({
                "workload": workload, "dtype": dtype, "pass": pass_,
                "ratio": peer["time"]["median"] / ours["time"]["median"],
                "ours": ours["impl"], "ours_label": ours["label"], "ours_median": ours["time"]["median"],
                "peer": peer["impl"], "peer_label": peer["label"], "peer_median": peer["time"]["median"]})


def triton_model(workloads: list[Workload], dtype: torch.dtype) -> list[dict]:
    """The Triton backend's static cost model of one step of each workload (``backends/triton/model.py``'s
    ``workload_steps``) with the replay host time measured on a GPU (``timing.replay_host_us_per_step``), or
    nothing where Triton is not installed."""
    try:
        from ..backends.triton import model
    except Exception:  # noqa: BLE001 -- Triton not installed (or not importable): no model
        return []
    replay = replay_host_us_per_step(dtype)
    return [dict(row, replay_host_us_per_step=replay) for row in model.workload_steps(workloads, dtype)]


def cuda_alive(device: torch.device) -> bool:
    """Whether the CUDA context still works (a sticky error such as an illegal access kills it)."""
    try:
        torch.ones(1, device=device).add_(1).item()
        torch.cuda.synchronize(device)
        return True
    except Exception:
        return False


class Sweep:
    """Runs the rows of :class:`Settings`; ``on_start(text)``, ``on_row(row)`` and ``on_checkpoint(results)``
    (after each workload and dtype) report progress."""

    def __init__(self, settings: Settings, on_start: Callable[[str], None] = lambda text: None,
                 on_row: Callable[[dict], None] = lambda row: None,
                 on_checkpoint: Callable[[dict], None] = lambda results: None):
        self.s, self.on_start, self.on_row, self.on_checkpoint = settings, on_start, on_row, on_checkpoint
        self.rows: list[dict] = []
        self.results: dict = {}
        self.aborted: Optional[str] = None
        self.deadline: Optional[float] = None
        self.max_compile_s = 0.0
        self._row_seconds: list[float] = []  # how long each row that ran (not compiling) took
        self._data: dict[str, object] = {}  # workload name: its WorkloadData, or why it could not be made
        self._group: tuple = (None, None, {})  # (workload name, dtype), its input sets, its references per pass
        self._plan = self.plan()

    def plan(self) -> list[tuple[torch.dtype, Workload, str, Implementation]]:
        """Every row, in run order."""
        return [(dtype, wl, p, impl) for dtype in self.s.dtypes for wl in self.s.workloads
                for p in wl.passes if p in self.s.passes for impl in self.s.impls
                if impl.applies_to(wl) and p in impl.passes]

    def run(self, meta: Optional[dict] = None) -> dict:
        s, start = self.s, time.perf_counter()
        self.deadline = None if s.budget_s is None else start + s.budget_s
        self.on_start("measuring the device's ceilings")
        try:
            ceilings = measure_ceilings(s.device, s.dtypes, quick=s.quick)
        except Exception as e:  # the figures are still worth having, without their roofline
            ceilings = {"flops": {}, "bandwidth": {}, "error": f"ceilings not measured: {error_text(e)}"}
        self.results = {
            "schema": SCHEMA_VERSION, "meta": meta or {}, "settings": s.to_dict(), "ceilings": ceilings,
            "workloads": {wl.name: wl.to_dict() for wl in s.workloads},
            "implementations": {i.name: {"label": i.label(s.device), "kind": i.kind, "experimental": i.experimental}
                                for i in s.impls},
            "rows": self.rows, "plan": [row for dtype in s.dtypes for row in triton_model(s.workloads, dtype)]}
        for _, group in itertools.groupby(self._plan, key=lambda r: r[:2]):
            for row in group:
                self.row(*row)
            self._group = (None, None, {})
            gc.collect()
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
            self.on_checkpoint(self.results)
        self.results.update(elapsed_s=time.perf_counter() - start, aborted=self.aborted)
        derive(self.results)
        return self.results

    def row(self, dtype: torch.dtype, wl: Workload, pass_: str, impl: Implementation,
            timer: Optional[Timer] = None) -> dict:
        """One row, checked, then timed by ``timer`` (default: ``time_calls`` with the settings'); errors are
        caught into the row.  Appended to ``rows`` and reported to ``on_row``."""
        s = self.s
        row = {"workload": wl.name, "impl": impl.name, "label": impl.label(s.device), "kind": impl.kind,
               "experimental": impl.experimental, "dtype": dtype_name(dtype), "pass": pass_, "status": "ok",
               "reason": None, "flops": wl.flops(pass_),
               "min_bytes": wl.min_bytes(pass_, torch.empty(0, dtype=dtype).element_size()),
               **dict.fromkeys(("check", "time", "graph_time", "graph_error", "first_call_s", "compile_s", "export_s",
                                "graph_skipped", "peak_mem_bytes", "peak_mem_extra_bytes", "saved_bytes",
                                "input_sets"))}
        self.on_start(f"{wl.name} {dtype_name(dtype)} {pass_} {impl.name}")
        compiles = impl.compile_mode is not None
        reason = self._stopped() or (self._no_time_to_compile() if compiles and self.deadline else None)
        reason = reason or impl.unavailable(wl, dtype, s.device)
        if not reason and wl.name not in self._data:
            try:
                self._data[wl.name] = WorkloadData(wl, s.device, s.seed)
            except Exception as e:  # e.g. out of memory at this scale
                self._data[wl.name] = f"could not create the inputs: {error_text(e)}"
        data = self._data.get(wl.name)
        if reason or isinstance(data, str):
            row.update(status="skipped", reason=reason or data)
        else:
            started = time.perf_counter()
            try:
                self._measure(row, data, dtype, pass_, impl, timer)
            except Exception as e:
                row.update(status="error", reason=error_text(e), traceback=traceback.format_exc()[-4000:])
                if s.device.type == "cuda" and not cuda_alive(s.device):
                    self.aborted = (f"not run: the CUDA context was lost after {impl.name} failed on "
                                    f"{wl.name} {dtype_name(dtype)} {pass_} ({row['reason']})")
            if not compiles:
                self._row_seconds.append(time.perf_counter() - started)
        self.rows.append(row)
        self.on_row(row)
        return row

    def _stopped(self) -> Optional[str]:
        if self.aborted or self.deadline is None or time.perf_counter() <= self.deadline:
            return self.aborted
        return f"time budget exhausted (--budget {self.s.budget_s:g} s)"

    def _no_time_to_compile(self) -> Optional[str]:
        """Why the next row that compiles should be skipped under the budget, or None: it needs twice the longest
        compile so far (at least 30 s) on top of the average time so far of every later row that does not compile."""
        left = self.deadline - time.perf_counter()
        need = max(30.0, 2 * self.max_compile_s)
        rest = sum(1 for *_, impl in self._plan[len(self.rows) + 1:] if impl.compile_mode is None)
        reserve = rest * (sum(self._row_seconds) / len(self._row_seconds) if self._row_seconds else 1.0)
        if left - reserve < need:
            return (f"time budget: {left:.0f} s left, {reserve:.0f} s of it kept for the {rest} rows to come; "
                    f"compiling may take {need:.0f} s")
        return None

    def _inputs(self, data: WorkloadData, dtype: torch.dtype, pass_: str):
        """The input sets of (workload, dtype) and the reference run in ``dtype`` for ``pass_`` (kept per group)."""
        wl, s = data.wl, self.s
        if self._group[0] != (wl.name, dtype):
            n_sets = s.input_sets or input_sets_for(wl, dtype, s.device)
            self._group = ((wl.name, dtype), data.input_sets(dtype, n_sets, train="fwd+bwd" in wl.passes), {})
        _, sets, references = self._group
        if pass_ not in references:
            try:
                references[pass_] = data.reference(pass_, dtype)
            except Exception as e:
                references[pass_] = RuntimeError(f"the reference backend failed in {dtype_name(dtype)}, so nothing "
                                                 f"sets the tolerance: {error_text(e)}")
        if isinstance(references[pass_], Exception):
            raise references[pass_]
        return sets, references[pass_]

    def _measure(self, row, data: WorkloadData, dtype, pass_, impl, timer) -> None:
        s, device, train = self.s, self.s.device, pass_ == "fwd+bwd"
        sets, in_dtype = self._inputs(data, dtype, pass_)
        row["input_sets"] = len(sets)
        built = impl.build(data.wl, data.params_as(dtype), train)
        row["export_s"] = built.export_s
        want, in_dtype = _slots_for(built, data.reference(pass_)), _slots_for(built, in_dtype)
        tf32 = device.type == "cuda" and dtype == torch.float32 and (conv_allows_tf32() or matmul_allows_tf32())
        synchronize(device)
        t0 = time.perf_counter()
        got = run_once(built, *sets[0], train)
        synchronize(device)
        row["first_call_s"] = time.perf_counter() - t0
        c = row["check"] = compare(got, want, in_dtype, dtype, tf32)
        if not c["passed"]:
            row.update(status="failed check",
                       reason=f"{c['worst']}: relative error {c['worst_err']:.2e} > tolerance {c['worst_tol']:.1e}")
            return
        call = make_call(built, sets, train)
        if timer is None:
            timing = time_calls(call, device, repeats=s.repeats, warmup=s.warmup, min_warmup_s=s.min_warmup_s,
                                min_sample_s=s.min_sample_s)
        else:
            timing = timer(call)
        row["time"] = timing and timing.to_dict()
        if train:
            row["saved_bytes"] = saved_bytes(lambda: call(0))
        if impl.compile_mode is not None and timing:
            row["compile_s"] = max(0.0, row["first_call_s"] - timing.median)
            self.max_compile_s = max(self.max_compile_s, row["compile_s"])
        if device.type != "cuda":
            return
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call(0)
        synchronize(device)
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device)
        row["peak_mem_extra_bytes"] = row["peak_mem_bytes"] - before
        if s.cuda_graph and impl.no_graph:
            row["graph_skipped"] = impl.no_graph
        elif s.cuda_graph:
            try:
                row["graph_time"] = time_graph(call, len(sets), device, repeats=s.repeats,
                                               min_sample_s=s.min_sample_s).to_dict()
            except Exception as e:
                row["graph_error"] = error_text(e)
                if not cuda_alive(device):
                    raise
