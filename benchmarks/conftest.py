"""The pytest-benchmark suite's configuration: its scale and round count, and shared per-session data.

Scale (``--bench-scale`` or ``CONVGRU_BENCH_SCALE``; a number or ``smoke``):

* asked for explicitly (``pytest benchmarks/ --benchmark-json=out.json``): GPU
  cases at the workloads' real sizes, CPU cases at the CLI's reduced default;
* collected as part of the whole test suite (plain ``pytest`` / ``make test``,
  which run the ``testpaths``): ``smoke``, one round, so that CI exercises every
  case (build, output check, timing, extra_info) in well under two minutes
  without pretending to measure anything.

Rounds: ``--bench-rounds`` or ``CONVGRU_BENCH_ROUNDS`` (default: 1 at the smoke
scale, else 10 on a GPU and 3 on a CPU), after one warm-up round.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from convgru_ext.bench.catalog import CPU_DEFAULT_SCALE, SMOKE_SCALE, parse_scale


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    scale: float  # GPU cases
    cpu_scale: float  # CPU cases
    rounds: int
    warmup_rounds: int
    why: str

    @property
    def smoke(self) -> bool:
        return self.scale <= SMOKE_SCALE

    def scale_for(self, device_type: str) -> float:
        return self.cpu_scale if device_type == "cpu" else self.scale


def pytest_addoption(parser):
    group = parser.getgroup("convgru-bench", "convgru-ext benchmark suite (benchmarks/)")
    group.addoption("--bench-scale", default=None,
                    help="workload scale for benchmarks/: a number or 'smoke' (env CONVGRU_BENCH_SCALE)")
    group.addoption("--bench-rounds", type=int, default=None,
                    help="timed rounds per benchmark (env CONVGRU_BENCH_ROUNDS)")


def _whole_suite(config) -> bool:
    """Whether pytest was run without paths (it collected the ``testpaths``)."""
    sources = getattr(pytest.Config, "ArgsSource", None)  # pytest >= 7.2
    if sources is not None:
        return config.args_source == sources.TESTPATHS
    return not any(not str(a).startswith("-") for a in config.invocation_params.args)


def _config(config) -> BenchConfig:
    text = config.getoption("--bench-scale") or os.environ.get("CONVGRU_BENCH_SCALE")
    if text:
        scale, why = parse_scale(text), "asked for"
        cpu_scale = scale
    elif _whole_suite(config):
        scale, why = SMOKE_SCALE, "smoke: collected with the whole test suite"
        cpu_scale = scale
    else:
        scale, cpu_scale = 1.0, CPU_DEFAULT_SCALE
        why = f"GPU cases at the workloads' real sizes, CPU cases at the CLI's reduced scale {CPU_DEFAULT_SCALE:g}"
    rounds = config.getoption("--bench-rounds") or int(os.environ.get("CONVGRU_BENCH_ROUNDS", 0))
    if not rounds:
        rounds = 1 if scale <= SMOKE_SCALE else (10 if torch.cuda.is_available() else 3)
    return BenchConfig(scale=scale, cpu_scale=cpu_scale, rounds=rounds, warmup_rounds=1, why=why)


def pytest_report_header(config):
    c = _config(config)
    return [f"convgru-ext benchmarks: {c.why}; {c.rounds} round(s)"]


@pytest.fixture(scope="session")
def bench_config(pytestconfig) -> BenchConfig:
    return _config(pytestconfig)


@pytest.fixture(scope="session")
def session_cache() -> dict:
    """Per-session data shared by the cases: the harness of each device (it keeps the workloads' data), the
    measured ceilings."""
    return {}


@pytest.fixture(scope="session", autouse=True)
def _smoke_single_thread(bench_config):
    """At the smoke scale nothing is measured, and on a loaded 2-core CI machine PyTorch's intra-op
    threads spin against each other (10x slower): run the smoke cases on one thread."""
    if not bench_config.smoke:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
