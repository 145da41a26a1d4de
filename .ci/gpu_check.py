"""``make gpu-check``: every verdict a lent GPU can give, in one call of at most 8 minutes.

A lent GPU (the device tool: an H200, 15 minutes of device time per issue, start and idle included)
must return a verdict on every kernel in a single call.  The steps run in order of value; each has a
time budget, is stopped (SIGINT, then SIGKILL) when it overruns, and is skipped with the reason when
too little of the run's deadline is left for it.  After every step ``summary.md`` is rewritten and the
logs repacked into ``$OUT``, so a run killed from outside still returns what it measured.

====================  ======  ===========================================================================
step                  budget  what
====================  ======  ===========================================================================
info                  30 s    versions, the GPU, which backends run here
build                 150 s   the CUDA extension for sm_90 only (ptxas report in the log); runs while
                              ``precompile`` does
precompile            150 s   every Triton specialisation (``Backend.jit``) that ``check``, ``sanitize``
                              and ``bench`` launch, and the ``compiled`` peer's graphs, compiled by running those calls
                              once in parallel worker processes that share one Triton and Inductor cache
check                 90 s    ``python -m convgru_ext check``: every backend, bf16/fp16/fp32/fp32+TF32/
                              fp64, reset before/after, sequence and cell, a real shape and one with
                              partial tiles and dilation, every output and gradient vs the reference
tests                 120 s   every test case marked ``gpu`` (``pytest -m gpu``), in parallel (xdist)
bench                 120 s   the benchmark core: video, nowcast, raft-cell, raft-sep, stream in bf16,
                              fwd and fwd+bwd, eager / torch.compile / torch / triton / cuda
sanitize              75 s    compute-sanitizer: memcheck and racecheck of every CUDA kernel, memcheck of
                              a Triton forward+backward (``tests/sanitize.py``)
catalog               rest    the full benchmark catalog with Triton autotuning, if 60 s are left
====================  ======  ===========================================================================

Without autotuning (every step but ``catalog``), each Triton launch uses the tile that
``triton.ops.tile_for`` picks for its shape, so the precompile's compiles are exactly the ones the
later steps use.  The tests compile what only they launch inside their own parallel workers.

Environment:

* ``OUT``: where the files go (default ``benchmarks/results/gpu-check-<UTC stamp>``): ``summary.md``,
  ``logs.tar.gz`` (every step's log, ``check.json``, the tests' JUnit report), ``bench/`` (what
  ``bench`` writes: results.json, results.md, speedup.png, roofline.png) and ``catalog.tar.gz``;
  at most 8 files, as the device tool returns;
* ``GPU_CHECK_DRY_RUN=1``: the same steps on a machine without a GPU (CI): Triton through its
  interpreter, tiny shapes, the GPU-only steps (build, sanitize, catalog) reported as skipped;
* ``GPU_CHECK_STEPS``: only these steps (space-separated names), e.g. for a second call;
* ``GPU_CHECK_DEADLINE``: seconds the whole run may take (default 470, under 8 minutes);
* ``JOBS``: parallel processes (default: every core).

Exit status: 0 when every step that ran passed, 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRY_RUN = os.environ.get("GPU_CHECK_DRY_RUN", "").strip() not in ("", "0")
PY = sys.executable
JOBS = int(os.environ.get("JOBS") or os.cpu_count() or 2)
DEADLINE_S = float(os.environ.get("GPU_CHECK_DEADLINE", "470"))
#: seconds between SIGINT (a step writes what it has) and SIGKILL
GRACE_S = 15
#: the dry run's budgets are this many times the GPU's: a 2-core CI machine interprets Triton, and shares its
#: cores (the step that needed 30 s alone took over 90 s beside other work)
DRY_RUN_SLACK = 2

#: the benchmark core (the bench step, and the rows the precompile step runs once)
BENCH_CORE = ["-w", "video", "-w", "nowcast", "-w", "raft-cell", "-w", "raft-sep", "-w", "stream",
              "--impl", "eager", "--impl", "compiled", "--impl", "torch", "--impl", "triton", "--impl", "cuda"]
BENCH_CORE += (["--device", "cpu", "--scale", "smoke", "--dtype", "float32", "--repeats", "1", "--warmup", "1",
                "--no-compile"] if DRY_RUN else ["--dtype", "bfloat16"])


@dataclasses.dataclass
class Step:
    name: str
    budget_s: float
    min_s: float  # skipped when less of the deadline is left
    run: Callable[[Step, Run], Optional[str]]  # returns a one-line result (or raises StepFailed)
    gpu_only: bool = False
    background: bool = False  # started, then waited for by the next step that needs it
    status: str = "not run"
    seconds: Optional[float] = None
    result: str = ""


class StepFailed(Exception):
    pass


class Run:
    """The run's deadline, folders and files."""

    def __init__(self, out: str):
        self.start = time.monotonic()
        self.out = out
        self.work = tempfile.mkdtemp(prefix="gpu-check-")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        os.makedirs(out, exist_ok=True)
        self.env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        PYTHONUNBUFFERED="1", CONVGRU_TRITON_AUTOTUNE="0", CONVGRU_CUDA_JIT="0",
                        TRITON_CACHE_DIR=os.path.join(self.work, "triton-cache"),
                        TORCHINDUCTOR_CACHE_DIR=os.path.join(self.work, "inductor-cache"))
        if DRY_RUN:
            self.env.update(TRITON_INTERPRET="1")
        self.background: dict[str, tuple] = {}  # name: (process, start, budget, log)

    def left(self) -> float:
        return DEADLINE_S - (time.monotonic() - self.start)

    def log(self, name: str) -> str:
        return os.path.join(self.logs, f"{name}.log")

    def start_command(self, name: str, cmd: list[str], env: Optional[dict] = None):
        """Start ``cmd`` in its own process group, its output appended to the step's log: (process, log)."""
        log = open(self.log(name), "a")
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True), log

    def command(self, name: str, cmd: list[str], budget_s: float, env: Optional[dict] = None) -> int:
        """Run ``cmd`` with its output in the step's log; stop it at ``budget_s``. Returns its exit status."""
        proc, log = self.start_command(name, cmd, env)
        return self.wait(proc, log, budget_s)

    def wait(self, proc: subprocess.Popen, log, budget_s: float) -> int:
        try:
            return proc.wait(timeout=max(1.0, budget_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # Python steps write what they have on KeyboardInterrupt
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise StepFailed(f"stopped at its budget ({budget_s:.0f} s)") from None
        finally:
            log.close()

    def tail(self, name: str, lines: int = 1) -> str:
        try:
            with open(self.log(name), errors="replace") as f:
                kept = [line.rstrip() for line in f if line.strip()]
        except OSError:
            return ""
        return " / ".join(kept[-lines:])


# ---------------------------------------------------------------------------------------------- steps


def step_info(step: Step, run: Run) -> str:
    with open(run.log("info"), "w") as f:
        for cmd in (["nvidia-smi"], ["git", "log", "-1", "--format=commit %H %cd"]):
            try:
                f.write(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=20).stdout)
            except (OSError, subprocess.TimeoutExpired) as e:
                f.write(f"{cmd[0]}: {e}\n")
    if run.command("info", [PY, "-m", "convgru_ext", "info"], step.budget_s) != 0:
        raise StepFailed("`python -m convgru_ext info` failed")
    return _versions()


def step_build(step: Step, run: Run) -> None:
    env = dict(run.env, TORCH_CUDA_ARCH_LIST="9.0", MAX_JOBS=str(max(2, JOBS // 2)), CONVGRU_FORCE_CUDA="1",
               CONVGRU_PTXAS_VERBOSE="1")
    proc, log = run.start_command("build", [PY, "setup.py", "build_ext", "--inplace"], env)
    run.background["build"] = (proc, time.monotonic(), step.budget_s, log)


def wait_build(run: Run, steps: dict[str, Step]) -> None:
    """Wait for the background build (the steps after the precompile use the extension)."""
    if "build" not in run.background:
        return
    proc, started, budget_s, log = run.background.pop("build")
    step = steps["build"]
    try:
        rc = run.wait(proc, log, min(started + budget_s - time.monotonic(), run.left()))
        step.status = "ok" if rc == 0 else "failed"
        step.result = "the CUDA extension for sm_90" if rc == 0 else f"exit {rc}: {run.tail('build')}"
    except StepFailed as e:
        step.status, step.result = "failed", str(e)
    step.seconds = time.monotonic() - started


def step_precompile(step: Step, run: Run) -> str:
    workers = max(1, JOBS - 4) if not DRY_RUN else min(2, JOBS)
    env = dict(run.env, TORCHINDUCTOR_COMPILE_THREADS="1")
    rc = run.command("precompile", [PY, __file__, "--precompile", str(workers)], step.budget_s, env)
    summary = run.tail("precompile")
    if rc != 0:
        raise StepFailed(summary or f"exit {rc}")
    return summary


def step_check(step: Step, run: Run) -> str:
    rc = run.command("check", [PY, "-m", "convgru_ext", "check", "--json", os.path.join(run.logs, "check.json")],
                     step.budget_s)
    summary = run.tail("check")
    if rc != 0:
        raise StepFailed(summary or f"exit {rc}")
    return summary


def step_tests(step: Step, run: Run) -> str:
    cmd = [PY, "-m", "pytest", "tests", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider",
           "--junitxml", os.path.join(run.logs, "tests.xml")]
    if _importable("xdist"):
        cmd += ["-n", str(max(1, JOBS - 2) if not DRY_RUN else 2)]
    rc = run.command("tests", cmd, step.budget_s)
    summary = run.tail("tests")
    if rc != 0:
        raise StepFailed(summary or f"exit {rc}")
    return summary


def step_bench(step: Step, run: Run) -> str:
    out = os.path.join(run.out, "bench")
    cmd = [PY, "-m", "convgru_ext", "bench", "--out", out, "--budget", f"{max(10.0, step.budget_s - 20):.0f}",
           *BENCH_CORE]
    rc = run.command("bench", cmd, step.budget_s)
    missing = [f for f in ("results.json", "results.md") if not os.path.exists(os.path.join(out, f))]
    if rc != 0 or missing:
        raise StepFailed(f"exit {rc}" + (f", missing {missing}" if missing else "") + f": {run.tail('bench')}")
    return _bench_summary(os.path.join(out, "results.json"))


def step_sanitize(step: Step, run: Run) -> str:
    rc = run.command("sanitize", [PY, "tests/sanitize.py"], step.budget_s)
    with open(run.log("sanitize"), errors="replace") as f:
        table = [line for line in f if line.startswith("| ") and "---" not in line]
    summary = "; ".join(" ".join(cell.strip() for cell in line.strip("|\n").split("|")[:3]) for line in table[1:])
    if rc != 0:
        raise StepFailed(summary or f"exit {rc}: {run.tail('sanitize')}")
    return summary


def step_catalog(step: Step, run: Run) -> str:
    out = os.path.join(run.work, "catalog")
    env = dict(run.env, CONVGRU_TRITON_AUTOTUNE="1")
    budget = min(step.budget_s, run.left() - 10)
    rc = run.command("catalog", [PY, "-m", "convgru_ext", "bench", "--out", out, "--budget",
                                 f"{max(10.0, budget - 25):.0f}"], budget, env)
    if os.path.isdir(out):
        with tarfile.open(os.path.join(run.out, "catalog.tar.gz"), "w:gz") as tar:
            tar.add(out, arcname="catalog")
    if rc != 0:
        raise StepFailed(f"exit {rc}: {run.tail('catalog')}")
    return _bench_summary(os.path.join(out, "results.json"))


STEPS = [
    Step("info", 30, 5, step_info),
    Step("build", 150, 60, step_build, gpu_only=True, background=True),
    Step("precompile", 150, 30, step_precompile),
    Step("check", 90, 20, step_check),
    Step("tests", 120, 30, step_tests),
    Step("bench", 120, 40, step_bench),
    Step("sanitize", 75, 30, step_sanitize, gpu_only=True),
    Step("catalog", 10_000, 60, step_catalog, gpu_only=True),
]


# ------------------------------------------------------------------------------------- the precompile


def precompile_jobs() -> list[tuple[str, int]]:
    """What the precompile step runs once: ("check", i) for the i-th row of ``check``'s plan whose backend
    compiles kernels at its first call (``Backend.jit``: Triton; the sanitize step's Triton rows are among
    them), ("bench", i) for the i-th row of the benchmark core that compiles (those backends, the
    ``compiled`` peer)."""
    jobs = [("check", i) for i, _ in enumerate(_jit_checks())]
    jobs += [("bench", i) for i, row in enumerate(_bench_rows()) if row is not None]
    return jobs


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _jit_backends() -> list[str]:
    """The backends that compile kernels at their first call and can run in this process."""
    return [name for name, why_not in _jit_unavailable().items() if why_not is None]


def _jit_unavailable() -> dict[str, Optional[str]]:
    """Every backend that compiles kernels at its first call, mapped to why it cannot run here (or None)."""
    from convgru_ext import backends

    return {name: why_not for name, why_not in backends.available_backends().items() if backends.get(name).jit}


def _jit_checks() -> list:
    from convgru_ext.testing import check_plan

    return check_plan(_jit_backends(), [_device()])


def _bench_rows() -> list:
    """The benchmark core's rows, None where they compile nothing or cannot run here."""
    from convgru_ext.bench.cli import plan
    from convgru_ext.bench.impls import Ours, PublicPeer

    settings, rows = plan(BENCH_CORE)
    jit = _jit_backends()
    kept = []
    for dtype, wl, pass_, impl in rows:
        compiles = (isinstance(impl, Ours) and impl.backend in jit) or (
            isinstance(impl, PublicPeer) and impl.compile_mode is not None)
        usable = compiles and impl.unavailable(wl, dtype, settings.device) is None
        kept.append((settings, dtype, wl, pass_, impl) if usable else None)
    return kept


def run_job(job: tuple[str, int]) -> tuple[str, float, Optional[str]]:
    """One precompile job in a worker process: (what, seconds, error or None)."""
    import torch

    from convgru_ext.testing import exact_float32

    kind, index = job
    start = time.monotonic()
    try:
        with exact_float32():
            if kind == "check":
                from convgru_ext.testing import run_check

                check = _jit_checks()[index]
                what = check.label
                run_check(check, torch.Generator().manual_seed(index))
            else:
                from convgru_ext.bench.harness import WorkloadData, run_once

                settings, dtype, wl, pass_, impl = _bench_rows()[index]
                what = f"bench {wl.name} {str(dtype).removeprefix('torch.')} {pass_} {impl.name}"
                train = pass_ == "fwd+bwd"
                data = WorkloadData(wl, settings.device, settings.seed)
                built = impl.build(wl, data.params_as(dtype), train)
                run_once(built, *data.input_sets(dtype, 1, train)[0], train)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return what, time.monotonic() - start, None
    except Exception as e:  # reported, and the step fails; the later steps say more
        return f"{kind} {index}", time.monotonic() - start, f"{type(e).__name__}: {str(e)[:300]}"


def precompile(workers: int) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    jobs = precompile_jobs()
    for name, why_not in _jit_unavailable().items():
        if why_not is not None:  # its calls in check, tests and bench are skipped with this reason too
            print(f"precompile: nothing for backend {name!r}: {why_not}", flush=True)
    print(f"precompile: {len(jobs)} calls in {workers} worker processes", flush=True)
    failed = 0
    start = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            what, seconds, error = future.result()
            failed += error is not None
            print(f"[{done}/{len(jobs)}] {seconds:6.1f} s {what}" + (f" FAILED {error}" if error else ""), flush=True)
    unusable = [name for name, why_not in _jit_unavailable().items() if why_not is not None]
    print(f"precompile: {len(jobs) - failed} of {len(jobs)} calls ran, {failed} failed, "
          f"in {time.monotonic() - start:.0f} s" + (f"; not usable here: {', '.join(unusable)} (reason above)"
                                                      if unusable else ""), flush=True)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- report


def _importable(module: str) -> bool:
    return subprocess.run([PY, "-c", f"import {module}"], capture_output=True).returncode == 0


def _versions() -> str:
    code = ("import torch, platform; v = [f'python {platform.python_version()}', f'torch {torch.__version__}', "
            "f'CUDA {torch.version.cuda}']\ntry:\n import triton; v.append(f'triton {triton.__version__}')\n"
            "except ImportError: v.append('no triton')\n"
            "v.append(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')\nprint(', '.join(v))")
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-200:]


def _bench_summary(path: str) -> str:
    try:
        with open(path) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError):
        return "no results.json"
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + " rows"


def write_summary(run: Run, steps: list[Step]) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [f"# gpu-check {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}", "",
             f"commit: {commit or 'unknown'}" + (" (dry run: no GPU, Triton interpreted, tiny shapes)" if DRY_RUN
                                                else ""),
             f"elapsed: {time.monotonic() - run.start:.0f} s of a {DEADLINE_S:.0f} s deadline", "",
             "| step | status | seconds | budget | result |", "| --- | --- | --- | --- | --- |"]
    for s in steps:
        secs = "" if s.seconds is None else f"{s.seconds:.0f}"
        budget = "rest" if s.budget_s >= 10_000 else f"{s.budget_s * (DRY_RUN_SLACK if DRY_RUN else 1):.0f}"
        lines.append(f"| {s.name} | {s.status} | {secs} | {budget} | {s.result.replace('|', '/')} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(run.out, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(run.logs, "summary.json"), "w") as f:
        json.dump([{"step": s.name, "status": s.status, "seconds": s.seconds, "budget_s": s.budget_s,
                    "result": s.result} for s in steps], f, indent=1)
    with tarfile.open(os.path.join(run.out, "logs.tar.gz"), "w:gz") as tar:
        tar.add(run.logs, arcname="logs")


def main() -> int:
    if sys.argv[1:2] == ["--precompile"]:
        sys.path.insert(0, ROOT)
        return precompile(int(sys.argv[2]))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run = Run(os.environ.get("OUT") or os.path.join(ROOT, "benchmarks", "results", f"gpu-check-{stamp}"))
    wanted = os.environ.get("GPU_CHECK_STEPS", "").split() or [s.name for s in STEPS]
    unknown = set(wanted) - {s.name for s in STEPS}
    if unknown:
        print(f"gpu-check: unknown step(s) {sorted(unknown)}; the steps are {[s.name for s in STEPS]}")
        return 2
    steps = {s.name: s for s in STEPS}
    for step in STEPS:
        if step.name != "build" and step.name != "precompile":
            wait_build(run, steps)
        if step.name not in wanted:
            step.status = "skipped: not in GPU_CHECK_STEPS"
        elif step.gpu_only and DRY_RUN:
            step.status = "skipped: dry run"
        elif run.left() < step.min_s:
            step.status = f"skipped: time budget spent ({run.left():.0f} s left, needs {step.min_s:.0f})"
        else:
            budget = min(step.budget_s * (DRY_RUN_SLACK if DRY_RUN else 1), run.left())
            print(f"=== {step.name} (budget {budget:.0f} s)", flush=True)
            started = time.monotonic()
            try:
                step.result = step.run(dataclasses.replace(step, budget_s=budget), run) or ""
                step.status = "running" if step.background else "ok"
            except StepFailed as e:
                step.status, step.result = "failed", str(e)
            except Exception as e:  # a bug of this script: the step fails, the run goes on
                step.status, step.result = "failed", f"gpu-check: {type(e).__name__}: {e}"
            if not step.background:
                step.seconds = time.monotonic() - started
            print(f"=== {step.name}: {step.status} after {step.seconds:.0f} s: {step.result}", flush=True)
        write_summary(run, STEPS)
    wait_build(run, steps)
    write_summary(run, STEPS)
    with open(os.path.join(run.out, "summary.md")) as f:
        print(f.read())
    failed = [s.name for s in STEPS if s.status == "failed"]
    if DRY_RUN:  # the dry run must produce what a GPU run returns, so that the script cannot rot unseen
        files = ["summary.md", "logs.tar.gz", "bench/results.json", "bench/results.md"]
        failed += [f"missing {f}" for f in files if not os.path.exists(os.path.join(run.out, f))]
    verdict = "FAILED: " + ", ".join(failed) if failed else "every step that ran passed"
    print(f"gpu-check: {verdict}; files in {run.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
