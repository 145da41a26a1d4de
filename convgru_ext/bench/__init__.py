"""The benchmark: ``python -m convgru_ext bench`` (``make bench``) and the pytest-benchmark suite in ``benchmarks/``.

Modules, top to bottom:

* ``catalog``: the named workloads (raft-cell, raft-sep, video, nowcast, stream, gru-1x1) and ``--scale``;
* ``cost``: the FLOP and byte formulas and the roofline (the only place they are defined);
* ``impls``: what runs side by side: the eager per-step peer most public code uses, the same under
  ``torch.compile``, ``torch.nn.GRU`` on the 1x1 anchor, that peer's model and our layer exported to
  onnxruntime (forward), and every usable ``convgru_ext`` backend;
* ``timing``: warm-up, rotated inputs, median and spread, CUDA graphs, the measured ceilings;
* ``check``: the workload's random data, and one call checked against the reference (``convgru_ext.testing``'s rule);
* ``results``: the schema of results.json (its rows, statuses, derived figures); ``meta``: where it was measured;
* ``sweep``: every row checked before it is timed; failures are caught and reported per row;
* ``report``: rich tables, results.json, results.md, PNG plots, ``--compare``;
* ``cli``: the command line.

Status: the CPU path is tested (``tests/test_bench.py``, ``benchmarks/``); the GPU path (CUDA
events, graph capture, peak memory, the GPU ceilings, the default GPU sweep's time budget) has not
been run on a GPU yet and is unverified.
"""
