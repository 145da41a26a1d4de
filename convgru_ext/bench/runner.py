"""The sweep: for each dtype x workload x pass x implementation, check it, then time it.

Order of a sweep: the ceilings first; then dtype by dtype (bfloat16 first on a
GPU, so that a sweep cut short by its time budget loses the least wanted
figures), workload by workload, pass by pass, implementation by
implementation.  For each row:

1. **check**: one call on input set 0 against the float64 reference (the
   ``reference`` backend in float64 on the same values), comparing the output
   and, for ``fwd+bwd``, the gradients of ``x``, ``h0`` and every parameter.
   The tolerance of each compared tensor is tied to the dtype:
   ``3 * (error of the reference backend run in this dtype) + slack`` with
   slack 1e-10 (float64), 1e-5 (float32), 1e-3 (float16, bfloat16); the rule of
   ``convgru_ext.testing``.  An implementation that disagrees is reported as
   ``failed check`` and not timed.  The wall time of this first call is kept
   (``first_call_s``: compilation, autotuning, cuDNN heuristics);
2. **time**: see ``timing.py``; inputs rotate among ``input_sets`` random sets
   (on a GPU enough of them to fill its L2 cache twice, see ``input_sets_for``);
3. **memory** (GPU): ``torch.cuda.max_memory_allocated`` over one more call;
   ``peak_mem_extra_bytes`` is that peak minus what was allocated before the
   call (inputs, weights and the sweep's cached reference data), the figure the
   tables show;
4. **CUDA graph** (``cuda_graph``): the same calls captured and replayed.

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

The GPU path of this module has not been run on a GPU yet: unverified.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Optional

import torch

from .. import backends
from .._tf32 import conv_allows_tf32, matmul_allows_tf32
from ..testing import LOWP_FACTOR, LOWP_SLACK, rel_err
from . import cost
from .catalog import Workload
from .impls import PARAM_NAMES, Built, Implementation, Ours, Params, PublicPeer
from .timing import measure_ceilings, synchronize, time_calls, time_graph

SCHEMA_VERSION = 1
#: the tolerance's additive slack per dtype (see the module docstring)
SLACK = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: LOWP_SLACK, torch.bfloat16: LOWP_SLACK}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
STATUSES = ("ok", "failed check", "error", "skipped")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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


# ----------------------------------------------------------------------------------------- data


class Case:
    """One workload's float64 data on the device: parameters, input set 0 and its output gradient,
    and the reference results (computed once per pass, shared by every dtype)."""

    def __init__(self, wl: Workload, device: torch.device, seed: int):
        self.wl = wl
        gen = torch.Generator(device=device).manual_seed(seed)

        def rand(*shape, scale=1.0):
            return torch.randn(*shape, generator=gen, device=device, dtype=torch.float64) * scale

        self.params: Params = []
        for kh, kw in wl.cells:  # scaled like the modules' init, so that the gates do not saturate
            self.params.append({
                "weight_ih": rand(3 * wl.C, wl.Cin, kh, kw, scale=(wl.Cin * kh * kw) ** -0.5),
                "weight_hh": rand(3 * wl.C, wl.C, kh, kw, scale=(wl.C * kh * kw) ** -0.5),
                "bias_ih": rand(3 * wl.C, scale=0.5),
                "bias_hh": rand(3 * wl.C, scale=0.5),
            })
        self.gen = gen
        self.x, self.h0, self.grad_out = rand(*wl.x_shape), rand(*wl.h_shape), rand(*wl.out_shape)
        self._reference: dict[str, dict] = {}

    def params_as(self, dtype: torch.dtype) -> Params:
        return [{n: t.to(dtype) for n, t in p.items()} for p in self.params]

    def input_sets(self, dtype: torch.dtype, n: int, train: bool) -> list[tuple[torch.Tensor, ...]]:
        """``n`` sets ``(x, h0, grad_out)`` in ``dtype``: set 0 is the checked one, the others fresh."""
        wl, dev = self.wl, self.x.device

        def leaf(t):
            return t.detach().to(dtype, copy=True).requires_grad_(train)

        sets = [(leaf(self.x), leaf(self.h0), self.grad_out.to(dtype))]
        for _ in range(n - 1):
            sets.append(tuple(leaf(torch.randn(*s, generator=self.gen, device=dev, dtype=torch.float64))
                              for s in (wl.x_shape, wl.h_shape))
                        + (torch.randn(*wl.out_shape, generator=self.gen, device=dev, dtype=dtype),))
        return sets

    def reference(self, pass_: str) -> dict:
        """The float64 reference for ``pass_``: ``{"slots": {...}, "param_grads": Params or None}``."""
        if pass_ not in self._reference:
            built = Ours("reference").build(self.wl, self.params, train=pass_ == "fwd+bwd")
            train = pass_ == "fwd+bwd"
            x, h0 = (t.detach().clone().requires_grad_(train) for t in (self.x, self.h0))
            g = self.grad_out
            slots = run_once(built, x, h0, g, train)
            param_grads = None
            if train:
                flat = [slots[f"grad_{n}"] for n in built.param_names]
                param_grads = [dict(zip(PARAM_NAMES, flat[i: i + 4])) for i in range(0, len(flat), 4)]
            self._reference[pass_] = {"slots": slots, "param_grads": param_grads}
        return self._reference[pass_]


def run_once(built: Built, x, h0, grad_out, train: bool) -> dict[str, torch.Tensor]:
    """One call: ``{"output": ...}`` and, with ``train``, ``grad_x``, ``grad_h0`` and ``grad_<param>``."""
    if not train:
        with torch.no_grad():
            return {"output": built.run(x.detach(), h0.detach())}
    out = built.run(x, h0)
    grads = torch.autograd.grad(out, [x, h0, *built.params], grad_out)
    slots = {"output": out.detach(), "grad_x": grads[0], "grad_h0": grads[1]}
    slots.update({f"grad_{n}": g for n, g in zip(built.param_names, grads[2:])})
    return slots


def expected_slots(built: Built, reference: dict) -> dict[str, torch.Tensor]:
    """The reference's results in ``built``'s terms (its parameters' gradients mapped)."""
    slots = {k: v for k, v in reference["slots"].items() if not k.startswith("grad_cell")}
    if reference["param_grads"] is not None:
        slots.update({f"grad_{n}": g for n, g in zip(built.param_names, built.map_grads(reference["param_grads"]))})
    return slots


def compare(got: dict, want: dict, baseline: dict, dtype: torch.dtype) -> dict:
    """Per slot, the relative error against ``want`` and its tolerance from ``baseline`` (the reference
    backend run in ``dtype``); the summary says whether every slot passed."""
    errors = {}
    for name, w in want.items():
        g = got.get(name)
        if g is None or g.numel() != w.numel():
            errors[name] = (math.inf, 0.0)
            continue
        tol = LOWP_FACTOR * rel_err(baseline[name].reshape(-1), w.reshape(-1)) + SLACK[dtype]
        errors[name] = (rel_err(g.reshape(-1), w.reshape(-1)), tol)
    worst = max(errors, key=lambda k: errors[k][0] / errors[k][1] if errors[k][1] > 0 else math.inf)
    passed = all(e <= t for e, t in errors.values())  # NaN fails
    return {"passed": passed, "max_rel_err": max(e for e, _ in errors.values()), "worst": worst,
            "worst_err": errors[worst][0], "worst_tol": errors[worst][1],
            "errors": {k: {"err": e, "tol": t} for k, (e, t) in errors.items()}}


def reference_in_dtype(case: Case, dtype: torch.dtype, pass_: str, sets) -> dict:
    """The reference backend run in ``dtype`` on input set 0: its error sets every tolerance."""
    train = pass_ == "fwd+bwd"
    built = Ours("reference").build(case.wl, case.params_as(dtype), train)
    x, h0, g = sets[0]
    return {"built": built, "slots": run_once(built, x, h0, g, train)}


def check_impl(impl: Implementation, case: Case, dtype: torch.dtype, pass_: str, sets,
               baseline: dict) -> tuple[Built, dict, float]:
    """Build ``impl`` and compare one call on input set 0 with the float64 reference.

    Returns ``(built, check, first_call_s)``: ``check`` as :func:`compare` gives it; ``first_call_s`` is
    the wall time of that first call (compilation and autotuning included)."""
    device = sets[0][0].device
    train = pass_ == "fwd+bwd"
    built = impl.build(case.wl, case.params_as(dtype), train)
    want = expected_slots(built, case.reference(pass_))
    eager = {k: v for k, v in baseline["slots"].items() if k in ("output", "grad_x", "grad_h0")}
    if train:  # the baseline's parameter gradients, mapped like the reference's
        flat = [baseline["slots"][f"grad_{n}"] for n in baseline["built"].param_names]
        grads = [dict(zip(PARAM_NAMES, flat[i: i + 4])) for i in range(0, len(flat), 4)]
        eager.update({f"grad_{n}": g for n, g in zip(built.param_names, built.map_grads(grads))})
    x, h0, g = sets[0]
    synchronize(device)
    t0 = time.perf_counter()
    got = run_once(built, x, h0, g, train)
    synchronize(device)
    first_call_s = time.perf_counter() - t0
    return built, compare(got, want, eager, dtype), first_call_s


# ---------------------------------------------------------------------------------------- sweep


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
                for p in wl.passes if p in self.s.passes for impl in self.s.impls if impl.applies_to(wl)]

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

    def _new_row(self, dtype, wl: Workload, pass_: str, impl: Implementation) -> dict:
        return {"workload": wl.name, "impl": impl.name, "label": impl.label(self.s.device), "kind": impl.kind,
                "experimental": impl.experimental, "dtype": dtype_name(dtype), "pass": pass_,
                "status": "ok", "reason": None, "flops": cost.flops(wl, pass_),
                "min_bytes": cost.min_bytes(wl, pass_, torch.empty(0, dtype=dtype).element_size()),
                "check": None, "time": None, "graph_time": None, "graph_error": None, "first_call_s": None,
                "compile_s": None, "peak_mem_bytes": None, "peak_mem_extra_bytes": None, "input_sets": None}

    def _finish(self, row: dict) -> None:
        self.rows.append(row)
        self.on_row(row)

    def _skip_group(self, dtype, wl, group, reason: str) -> None:
        for p, impl in group:
            row = self._new_row(dtype, wl, p, impl)
            row.update(status="skipped", reason=reason)
            self._finish(row)

    def _run_group(self, dtype, wl: Workload, case: Optional[Case], group) -> None:
        s = self.s
        sets = None
        baselines: dict[str, object] = {}
        for pass_, impl in group:
            row = self._new_row(dtype, wl, pass_, impl)
            self.on_start(f"{wl.name} {dtype_name(dtype)} {pass_} {impl.name}")
            stop = self._stopped()
            if stop is None and _compiles(impl) and self.deadline is not None:
                stop = self._no_time_to_compile()
            reason = stop or impl.unavailable(wl, dtype, s.device)
            if reason or case is None:
                row.update(status="skipped", reason=reason or "no inputs")
                self._finish(row)
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
        if not row["check"]["passed"]:
            c = row["check"]
            row.update(status="failed check",
                       reason=f"{c['worst']}: relative error {c['worst_err']:.2e} > tolerance {c['worst_tol']:.1e}")
            return

        call = make_call(built, sets, train)
        timing = time_calls(call, device, repeats=s.repeats, warmup=s.warmup, min_warmup_s=s.min_warmup_s,
                            min_sample_s=s.min_sample_s)
        row["time"] = timing.to_dict()
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
            if s.cuda_graph:
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


# -------------------------------------------------------------------------------------- results


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


def _git(*args: str) -> Optional[str]:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except Exception:
        return None


def collect_meta(device: torch.device, argv: list[str], scale: float, scale_note: str) -> dict:
    """Where and how the figures were measured."""
    import convgru_ext

    try:
        import triton
        triton_version = triton.__version__
    except Exception as e:
        triton_version = f"not importable ({type(e).__name__})"
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m convgru_ext bench " + " ".join(argv),
        "git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None,
        "convgru_ext": convgru_ext.__version__, "python": platform.python_version(),
        "torch": torch.__version__, "cuda_build": torch.version.cuda, "triton": triton_version,
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_threads": torch.get_num_threads(),
        "device_type": device.type, "scale": scale, "scale_note": scale_note,
        "backends": backends.available_backends(),
        "inputs": "contiguous NCHW tensors, as most user code passes them",
        # whether float32 convolutions and matmuls may use TF32 (on a GPU; the CPU has none)
        "tf32_conv": conv_allows_tf32(), "tf32_matmul": matmul_allows_tf32(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        meta.update(device=p.name, sm=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                    gpu_memory_bytes=p.total_memory, driver=_driver(), cudnn=torch.backends.cudnn.version(),
                    cudnn_benchmark=bool(torch.backends.cudnn.benchmark))
    else:
        meta.update(device=f"CPU: {meta['cpu']}")
    meta["argv"] = list(sys.argv)
    return meta
