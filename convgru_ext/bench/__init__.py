"""The benchmark: ``python -m convgru_ext bench`` (``make bench``) and the pytest-benchmark suite in ``benchmarks/``,
both driving one harness.  Modules: ``catalog`` (the named workloads, ``--scale``), ``cost`` (FLOPs, bytes, the
roofline), ``impls`` (the peers and ours), ``timing`` (samples, CUDA graphs, saved bytes, the measured ceilings),
``harness`` (one row: checked against the reference, then timed; the sweep; the results' schema), ``meta`` (where
it was measured), ``report`` (tables, results.json, results.md, plots, ``--compare``), ``plan`` (the static cost
model of the Triton launches), ``cli`` (the command line).

Status: the CPU path is tested (``tests/test_bench.py``, ``benchmarks/``); the GPU path (CUDA events, graph
capture, peak memory, the GPU ceilings, the default GPU sweep's time budget) has not been run on a GPU yet and is
unverified.
"""
