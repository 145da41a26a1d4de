"""DistributedDataParallel over two gloo processes gives the gradients of one process on the full batch."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from convgru_ext import ConvGRU
from helpers import REL_TOL, rel_err

WORLD = 2


def _model():
    torch.manual_seed(1234)
    return ConvGRU(3, 4, num_layers=2, dtype=torch.float64)


def _loss(model, x):
    out, h_n = model(x)
    return (out ** 2).mean() + h_n.mean()


def _worker(rank, init_file, x, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(_model())
        chunk = x.shape[1] // WORLD
        _loss(ddp, x[:, rank * chunk:(rank + 1) * chunk]).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in ddp.module.named_parameters()}, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_ddp_gloo_matches_single_process():
    x = torch.randn(3, 4, 3, 6, 6, dtype=torch.float64)
    single = _model()
    _loss(single, x).backward()
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "grads.pt")
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), x, result), nprocs=WORLD, join=True)
        grads = torch.load(result)
    for name, p in single.named_parameters():
        # each rank's loss is a mean over its half; DDP averages: the full-batch mean
        assert rel_err(grads[name], p.grad) < REL_TOL[torch.float64], name
