"""The benchmark catalog as a pytest-benchmark suite: workload x implementation x device/dtype x pass, each case one
row of the benchmark's harness (``convgru_ext.bench.harness``, the one ``python -m convgru_ext bench`` drives).

Each case checks one call against the float64 reference (output and, for fwd+bwd, every gradient; the test fails
if it disagrees), then pytest-benchmark times it with ``benchmark.pedantic`` (the device synchronized inside the
timed function, inputs rotated between calls).  ``extra_info`` carries FLOPs, minimal bytes, TFLOP/s, % of the
roofline (ceilings measured in this session), the check's error and the first call's time.  GPU cases skip
without a GPU; implementations unavailable here skip with the reason.

    pytest benchmarks/ --benchmark-json=out.json                 # real sizes on a GPU
    pytest benchmarks/ -k "raft-cell and bfloat16" --bench-rounds 20
"""

from __future__ import annotations

import itertools

import pytest
import torch

from convgru_ext.bench.catalog import CATALOG
from convgru_ext.bench.harness import DTYPES, Settings, Sweep, derive
from convgru_ext.bench.impls import all_implementations
from convgru_ext.bench.timing import Timing, measure_ceilings, synchronize
from convgru_ext.testing import FUSED_BACKENDS

NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)")
TARGETS = [pytest.param(("cpu", "float32"), id="cpu-float32")] + [
    pytest.param(("cuda", d), id=f"cuda-{d}", marks=NO_GPU) for d in ("bfloat16", "float16", "float32")]
IMPLS = ("eager", "compiled", "nn.GRU", "reference", *FUSED_BACKENDS)
#: at the smoke scale (CI), the compiled peer runs on these workloads only: compiling costs ~5-10 s per
#: graph on a 2-core CPU; these two cover both of its code paths (one call, and a Python loop over T)
SMOKE_COMPILED = ("raft-cell", "video")


def _implementation(name: str):
    """The implementation named ``name`` (``compiled`` in its default mode); None for a backend not registered in
    this checkout."""
    return next((i for i in all_implementations() if i.name == name), None)


def _cases():
    for wl in CATALOG.values():
        for name in IMPLS:
            impl = _implementation(name)
            if impl is not None and not impl.applies_to(wl):
                continue
            for pass_ in wl.passes:
                yield pytest.param(wl.name, name, pass_, id=f"{wl.name}-{name}-{pass_}")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("workload,impl_name,pass_", list(_cases()))
def test_workload(benchmark, bench_config, session_cache, workload, impl_name, pass_, target):
    device, dtype = torch.device(target[0]), DTYPES[target[1]]
    impl = _implementation(impl_name)
    if impl is None:
        pytest.skip(f"backend {impl_name!r} is not registered in this checkout")
    if impl_name == "compiled" and bench_config.smoke and workload not in SMOKE_COMPILED:
        pytest.skip(f"smoke scale: the compiled peer runs on {SMOKE_COMPILED} only (compile time)")
    scale = bench_config.scale_for(device.type)
    wl = CATALOG[workload].scaled(scale)
    key = ("ceilings", target[0], target[1])
    if key not in session_cache:
        session_cache[key] = measure_ceilings(device, [dtype], quick=bench_config.smoke)
    ceilings = session_cache[key]
    # one harness per device for the session: it keeps the workload's data, input sets and reference results
    sweep = session_cache.setdefault(("sweep", target[0]), Sweep(Settings(device, [], [], [])))
    benchmark.group = f"{workload} {target[0]}-{target[1]} {pass_}"

    def timer(call):
        counter = itertools.count()

        def one_call():
            call(next(counter))
            synchronize(device)

        benchmark.pedantic(one_call, rounds=bench_config.rounds, warmup_rounds=bench_config.warmup_rounds,
                           iterations=1)
        return Timing(list(benchmark.stats.stats.data), 1) if benchmark.stats else None  # None: --benchmark-disable

    row = sweep.row(dtype, wl, pass_, impl, timer)
    if row["status"] == "skipped":
        pytest.skip(row["reason"])
    assert row["status"] == "ok", (f"{impl_name} on {workload} {target[1]} {pass_}: {row['status']}: {row['reason']}"
                                   + row.get("traceback", ""))
    derive({"rows": [row], "ceilings": ceilings})
    benchmark.extra_info.update(
        workload=workload, sizes=wl.sizes(), scale=scale, implementation=row["label"], device=target[0],
        dtype=target[1], flops=row["flops"], min_bytes=row["min_bytes"], **{"pass": pass_},
        max_rel_err=row["check"]["max_rel_err"], first_call_s=row["first_call_s"],
        ceiling_flops_per_s=ceilings["flops"][target[1]]["flops_per_s"],
        ceiling_bytes_per_s=ceilings["bandwidth"]["bytes_per_s"])
    if row["time"]:
        benchmark.extra_info.update(tflops=row["tflops"], roofline_pct=row["roofline_pct"], bound=row["bound"])
