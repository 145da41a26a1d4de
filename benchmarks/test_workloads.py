"""The benchmark catalog as a pytest-benchmark suite: workload x implementation x device/dtype x pass.

Each case builds the implementation, checks one call against the float64
reference (output and, for fwd+bwd, every gradient; the test fails if it
disagrees), then times it with ``benchmark.pedantic`` (the device synchronized
inside the timed function, inputs rotated between calls).  ``extra_info``
carries FLOPs, minimal bytes, TFLOP/s, % of the roofline (ceilings measured in
this session), the check's error and the first call's time.  GPU cases skip
without a GPU; implementations unavailable here skip with the reason.

    pytest benchmarks/ --benchmark-json=out.json                 # real sizes on a GPU
    pytest benchmarks/ -k "raft-cell and bfloat16" --bench-rounds 20
"""

from __future__ import annotations

import itertools

import pytest
import torch

from convgru_ext import backends
from convgru_ext.bench import check as bench_check
from convgru_ext.bench import cost
from convgru_ext.bench.catalog import CATALOG
from convgru_ext.bench.impls import COMPILE_MODE, NNGRUPeer, Ours, PublicPeer
from convgru_ext.bench.results import DTYPES
from convgru_ext.bench.sweep import input_sets_for, make_call
from convgru_ext.bench.timing import measure_ceilings, synchronize
from convgru_ext.testing import FUSED_BACKENDS

NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch)")
TARGETS = [pytest.param(("cpu", "float32"), id="cpu-float32")] + [
    pytest.param(("cuda", d), id=f"cuda-{d}", marks=NO_GPU) for d in ("bfloat16", "float16", "float32")]
IMPLS = ("eager", "compiled", "nn.GRU", "reference", *FUSED_BACKENDS)
#: at the smoke scale (CI), the compiled peer runs on these workloads only: compiling costs ~5-10 s per
#: graph on a 2-core CPU; these two cover both of its code paths (one call, and a Python loop over T)
SMOKE_COMPILED = ("raft-cell", "video")


def _implementation(name: str):
    if name == "eager":
        return PublicPeer()
    if name == "compiled":
        return PublicPeer(COMPILE_MODE)
    if name == "nn.GRU":
        return NNGRUPeer()
    return Ours(name) if name in backends.names() else None


def _cases():
    for wl in CATALOG.values():
        for name in IMPLS:
            impl = _implementation(name)
            if impl is not None and not impl.applies_to(wl):
                continue
            for pass_ in wl.passes:
                yield pytest.param(wl.name, name, pass_, id=f"{wl.name}-{name}-{pass_}")


def _prepared(cache: dict, wl, device, dtype, pass_: str, quick: bool):
    """The workload's float64 data, input sets, reference-in-dtype baseline and the device's ceilings,
    cached for the cases of one workload (they run workload by workload)."""
    for key in [k for k in cache if k[0] == "workload" and k[1] != wl.name]:
        del cache[key]  # keep one workload's data at a time
    case_key = ("workload", wl.name, str(device))
    if case_key not in cache:
        cache[case_key] = {"case": bench_check.Case(wl, device, seed=0)}
    entry = cache[case_key]
    case = entry["case"]
    if ("sets", dtype) not in entry:
        entry[("sets", dtype)] = case.input_sets(dtype, input_sets_for(wl, dtype, device),
                                                 train=not wl.inference_only)
    sets = entry[("sets", dtype)]
    if ("baseline", dtype, pass_) not in entry:
        entry[("baseline", dtype, pass_)] = bench_check.reference_in_dtype(case, dtype, pass_, sets)
    ceil_key = ("ceilings", str(device), dtype)
    if ceil_key not in cache:
        cache[ceil_key] = measure_ceilings(device, [dtype], quick=quick)
    return case, sets, entry[("baseline", dtype, pass_)], cache[ceil_key]


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
    reason = impl.unavailable(wl, dtype, device)
    if reason:
        pytest.skip(reason)

    case, sets, baseline, ceilings = _prepared(session_cache, wl, device, dtype, pass_, bench_config.smoke)
    train = pass_ == "fwd+bwd"
    built, check, first_call_s = bench_check.check_impl(impl, case, dtype, pass_, sets, baseline)
    assert check["passed"], (f"{impl_name} disagrees with the float64 reference on {workload} {target[1]} {pass_}: "
                             f"{check['worst']}: relative error {check['worst_err']:.2e} > {check['worst_tol']:.1e}")

    call = make_call(built, sets, train)
    counter = itertools.count()

    def one_call():
        call(next(counter))
        synchronize(device)

    benchmark.group = f"{workload} {target[0]}-{target[1]} {pass_}"
    flops = cost.flops(wl, pass_)
    nbytes = cost.min_bytes(wl, pass_, torch.empty(0, dtype=dtype).element_size())
    benchmark.extra_info.update(
        workload=workload, sizes=wl.sizes(), scale=scale, implementation=impl.label(device),
        device=target[0], dtype=target[1], flops=flops, min_bytes=nbytes, **{"pass": pass_},
        max_rel_err=check["max_rel_err"], first_call_s=first_call_s,
        ceiling_flops_per_s=ceilings["flops"][target[1]]["flops_per_s"],
        ceiling_bytes_per_s=ceilings["bandwidth"]["bytes_per_s"])
    benchmark.pedantic(one_call, rounds=bench_config.rounds, warmup_rounds=bench_config.warmup_rounds,
                       iterations=1)
    if benchmark.stats:  # None or empty with --benchmark-disable
        median = benchmark.stats.stats.median
        t_roof, bound = cost.roofline(flops, nbytes, benchmark.extra_info["ceiling_flops_per_s"],
                                      benchmark.extra_info["ceiling_bytes_per_s"])
        benchmark.extra_info.update(tflops=flops / median / 1e12, roofline_pct=100 * t_roof / median, bound=bound)
