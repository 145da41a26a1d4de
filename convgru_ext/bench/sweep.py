"""The sweep: for each dtype x workload x pass x implementation, check it, then time it.

Order of a sweep: the ceilings first; then dtype by dtype (bfloat16 first on a
GPU, so that a sweep cut short by its time budget loses the least wanted
figures), workload by workload, pass by pass, implementation by
implementation.  For each row:

1. **check** (``check.py``): one call on input set 0 against the ``reference`` backend on the same values,
   comparing the output and, for ``fwd+bwd``, the gradients of ``x``, ``h0`` and every parameter, by the
   rule of ``convgru_ext.testing``: float64 and float32 against the reference run in that dtype, within
   1e-10 and 1e-5 (float32 on TF32 against the float64 reference, within a few TF32 roundoffs); float16
   and bfloat16 against the float64 reference, within ``3 * (the reference's own error in that dtype) +
   1e-3``.  An implementation that disagrees is reported as ``failed check`` and not timed.  The wall
   time of this first call is kept (``first_call_s``: compilation, autotuning, cuDNN heuristics);
2. **time**: see ``timing.py``; inputs rotate among ``input_sets`` random sets
   (on a GPU enough of them to fill its L2 cache twice, see ``input_sets_for``);
3. **memory** (GPU): ``torch.cuda.max_memory_allocated`` over one more call;
   ``peak_mem_extra_bytes`` is that peak minus what was allocated before the
   call (inputs, weights and the sweep's cached reference data), the figure the
   tables show;
4. **CUDA graph** (``cuda_graph``): the same calls captured and replayed (not an implementation
   whose ``no_graph`` says why not: the onnxruntime peers).

The time budget (``budget_s``, wall clock from the start): once spent, the
remaining rows are reported as skipped.  A compiled-peer row starts only if
there is time for a compile (twice the longest so far, at least 30 s) on top of
the share kept for every later row that does not compile (their average time so
far), so that compiling never crowds out the other implementations' figures.

Any exception in a row is caught and recorded (with its traceback) in that
row, and the sweep goes on; after a failure on a GPU the CUDA context is
probed, and if it is lost (a sticky error such as an illegal memory access)
the remaining rows are marked as not run, rather than reported as failures of
innocent implementations.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
import traceback
from collections.abc import Callable
from typing import Optional

import torch

from . import cost
from .catalog import Workload
from .check import Case, check_impl, reference_in_dtype
from .impls import Built, Implementation, PublicPeer
from .plan import model as plan_model
from .results import SCHEMA_VERSION, derive, dtype_name, new_row
from .timing import measure_ceilings, saved_bytes, synchronize, time_calls, time_graph


@dataclasses.dataclass
class Settings:
    """What one sweep runs, and how (the CLI's options; see ``cli.py``)."""

    device: torch.device
    workloads: list[Workload]
    dtypes: list[torch.dtype]
    impls: list[Implementation]
    passes: tuple[str, ...] = cost.PASSES
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
        return {"device": str(self.device), "workloads": [w.name for w in self.workloads],
                "dtypes": [dtype_name(d) for d in self.dtypes], "impls": [i.name for i in self.impls],
                "passes": list(self.passes), "repeats": self.repeats, "warmup": self.warmup,
                "min_warmup_s": self.min_warmup_s, "min_sample_s": self.min_sample_s,
                "input_sets": self.input_sets, "cuda_graph": self.cuda_graph, "budget_s": self.budget_s,
                "seed": self.seed, "quick": self.quick}


def input_sets_for(wl: Workload, dtype: torch.dtype, device: torch.device, cap: int = 32) -> int:
    """How many input sets to rotate: at least 3, and on a GPU enough that together they fill its L2
    cache twice over, so that no call finds its inputs still in cache from the previous one."""
    if device.type != "cuda":
        return 3
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
    one = (math.prod(wl.x_shape) + math.prod(wl.h_shape) + math.prod(wl.out_shape)) * \
        torch.empty(0, dtype=dtype).element_size()
    return max(3, min(cap, math.ceil(2 * l2 / max(one, 1))))


def _error_text(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:300]


def cuda_alive(device: torch.device) -> bool:
    """Whether the CUDA context still works (a sticky error such as an illegal access kills it)."""
    try:
        torch.ones(1, device=device).add_(1).item()
        torch.cuda.synchronize(device)
        return True
    except Exception:
        return False


class Sweep:
    """Runs the rows of :class:`Settings`; ``on_start(text)`` and ``on_row(row)`` report progress."""

    def __init__(self, settings: Settings, on_start: Callable[[str], None] = lambda text: None,
                 on_row: Callable[[dict], None] = lambda row: None,
                 on_checkpoint: Callable[[dict], None] = lambda results: None):
        self.s = settings
        self.on_start, self.on_row, self.on_checkpoint = on_start, on_row, on_checkpoint
        self.rows: list[dict] = []
        self.aborted: Optional[str] = None
        self.max_compile_s = 0.0
        self._plan: list = []
        self._row_seconds: list[float] = []  # how long each row that ran (not compiling) took
        self.results: dict = {}

    def plan(self) -> list[tuple[torch.dtype, Workload, str, Implementation]]:
        """Every row, in run order."""
        return [(dtype, wl, p, impl) for dtype in self.s.dtypes for wl in self.s.workloads
                for p in wl.passes if p in self.s.passes for impl in self.s.impls
                if impl.applies_to(wl) and impl.applies_to_pass(p)]

    def run(self, meta: Optional[dict] = None) -> dict:
        s = self.s
        start = time.perf_counter()
        self.deadline = None if s.budget_s is None else start + s.budget_s
        self.on_start("measuring the device's ceilings")
        try:
            ceilings = measure_ceilings(s.device, s.dtypes, quick=s.quick)
        except Exception as e:  # the figures are still worth having, without their roofline
            ceilings = {"flops": {}, "bandwidth": {}, "error": f"ceilings not measured: {_error_text(e)}"}
        self.results = {
            "schema": SCHEMA_VERSION, "meta": meta or {}, "settings": s.to_dict(), "ceilings": ceilings,
            "workloads": {wl.name: wl.to_dict() for wl in s.workloads},
            "implementations": {i.name: {"label": i.label(s.device), "kind": i.kind, "experimental": i.experimental}
                                for i in s.impls},
            "rows": self.rows,
            "plan": [row for dtype in s.dtypes for row in plan_model(s.workloads, dtype)],
        }
        cases: dict[str, Case] = {}
        plan = self._plan = self.plan()
        for dtype in s.dtypes:
            for wl in s.workloads:
                group = [(p, impl) for d, w, p, impl in plan if d is dtype and w is wl]
                if not group:
                    continue
                if wl.name not in cases and not self._stopped():
                    try:
                        cases[wl.name] = Case(wl, s.device, s.seed)
                    except Exception as e:  # e.g. out of memory at this scale
                        self._skip_group(dtype, wl, group, f"could not create the inputs: {_error_text(e)}")
                        continue
                self._run_group(dtype, wl, cases.get(wl.name), group)
                gc.collect()
                if s.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.on_checkpoint(self.results)
        self.results["elapsed_s"] = time.perf_counter() - start
        self.results["aborted"] = self.aborted
        derive(self.results)
        return self.results

    # ---- helpers

    def _stopped(self) -> Optional[str]:
        if self.aborted:
            return self.aborted
        if self.deadline is not None and time.perf_counter() > self.deadline:
            return f"time budget exhausted (--budget {self.s.budget_s:g} s)"
        return None

    def _no_time_to_compile(self) -> Optional[str]:
        """Why the compiled peer's next row should be skipped under the budget, or None.

        A compile may take twice the longest one so far (at least 30 s), and the
        rows still to come that do not compile keep their share of the budget
        (their average time so far, each), so that compiling never crowds out
        the figures of the other implementations."""
        left = self.deadline - time.perf_counter()
        need = max(30.0, 2 * self.max_compile_s)
        rest = sum(1 for *_, impl in self._plan[len(self.rows) + 1:] if not _compiles(impl))
        reserve = rest * (sum(self._row_seconds) / len(self._row_seconds) if self._row_seconds else 1.0)
        if left - reserve < need:
            return (f"time budget: {left:.0f} s left, {reserve:.0f} s of it kept for the {rest} rows to come; "
                    f"compiling may take {need:.0f} s")
        return None

    def _finish(self, row: dict) -> None:
        self.rows.append(row)
        self.on_row(row)

    def _skip_group(self, dtype, wl, group, reason: str) -> None:
        for p, impl in group:
            self._finish(dict(new_row(dtype, wl, p, impl, self.s.device), status="skipped", reason=reason))

    def _run_group(self, dtype, wl: Workload, case: Optional[Case], group) -> None:
        s = self.s
        sets = None
        baselines: dict[str, object] = {}
        for pass_, impl in group:
            row = new_row(dtype, wl, pass_, impl, s.device)
            self.on_start(f"{wl.name} {dtype_name(dtype)} {pass_} {impl.name}")
            stop = self._stopped()
            if stop is None and _compiles(impl) and self.deadline is not None:
                stop = self._no_time_to_compile()
            reason = stop or impl.unavailable(wl, dtype, s.device)
            if reason or case is None:
                self._finish(dict(row, status="skipped", reason=reason or "no inputs"))
                continue
            started = time.perf_counter()
            try:
                if sets is None:
                    n_sets = s.input_sets or input_sets_for(wl, dtype, s.device)
                    sets = case.input_sets(dtype, n_sets, train=not wl.inference_only)
                row["input_sets"] = len(sets)
                if pass_ not in baselines:
                    try:
                        baselines[pass_] = reference_in_dtype(case, dtype, pass_, sets)
                    except Exception as e:
                        baselines[pass_] = RuntimeError(f"the reference backend failed in {dtype_name(dtype)}, "
                                                        f"so nothing sets the tolerance: {_error_text(e)}")
                self._measure(row, wl, dtype, pass_, impl, case, sets, baselines[pass_])
            except Exception as e:
                row.update(status="error", reason=_error_text(e), traceback=traceback.format_exc()[-4000:])
                if s.device.type == "cuda" and not cuda_alive(s.device):
                    self.aborted = (f"not run: the CUDA context was lost after {impl.name} failed on "
                                    f"{wl.name} {dtype_name(dtype)} {pass_} ({row['reason']})")
            if not _compiles(impl):
                self._row_seconds.append(time.perf_counter() - started)
            self._finish(row)

    def _measure(self, row, wl, dtype, pass_, impl, case, sets, baseline) -> None:
        s, device = self.s, self.s.device
        if isinstance(baseline, Exception):
            raise baseline
        train = pass_ == "fwd+bwd"
        built, row["check"], row["first_call_s"] = check_impl(impl, case, dtype, pass_, sets, baseline)
        row["export_s"] = built.export_s
        if not row["check"]["passed"]:
            c = row["check"]
            row.update(status="failed check",
                       reason=f"{c['worst']}: relative error {c['worst_err']:.2e} > tolerance {c['worst_tol']:.1e}")
            return

        call = make_call(built, sets, train)
        timing = time_calls(call, device, repeats=s.repeats, warmup=s.warmup, min_warmup_s=s.min_warmup_s,
                            min_sample_s=s.min_sample_s)
        row["time"] = timing.to_dict()
        if train:
            row["saved_bytes"] = saved_bytes(lambda: call(0))
        if _compiles(impl):
            row["compile_s"] = max(0.0, row["first_call_s"] - timing.median)
            self.max_compile_s = max(self.max_compile_s, row["compile_s"])
        if device.type == "cuda":
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
                    graph = time_graph(call, len(sets), device, repeats=s.repeats, min_sample_s=s.min_sample_s)
                    row["graph_time"] = graph.to_dict()
                except Exception as e:
                    row["graph_error"] = _error_text(e)
                    if not cuda_alive(device):
                        raise


def _compiles(impl: Implementation) -> bool:
    return isinstance(impl, PublicPeer) and impl.compile_mode is not None


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
