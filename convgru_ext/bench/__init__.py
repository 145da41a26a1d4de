"""The benchmark: ``python -m convgru_ext bench`` (``cli.py``, ``make bench``) and the pytest-benchmark suite in
``benchmarks/``, both driving one harness (``harness.py``); the README's Layout names the other modules.

Status: the CPU path is tested (``tests/test_bench.py``, ``benchmarks/``); the GPU path (CUDA events, graph
capture, peak memory, the GPU ceilings, the default GPU sweep's time budget) has not been run on a GPU yet and is
unverified.
"""
