"""The bucketed gradient all-reduce of the ``ddp`` strategy (two gloo processes): its sums equal
per-parameter sums of each rank's own gradients, whatever the buckets, dtypes and accumulation; a
parameter no rank touched keeps ``grad=None``; one only some ranks touched gets the others' zeros;
buckets are sent while backward runs."""
import os

import pytest
import torch
import torch.distributed as dist

from partlib.common import ConfigError
from partlib.train.distributed import GradReducer
from train_fixtures import spawn_ranks


def _params():
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (5, 3), (3, 3), (64, 64), (4,), (6,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    params.append(torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64)))  # a second dtype: own buckets
    params[5].requires_grad_(False)  # e.g. a LoRA layer not active yet
    return params


def _backward(params, rank: int, micro: int) -> None:
    """A graph that differs by rank and micro-batch: rank 1 never uses params[3] (a text-only batch
    and the encoder); params[6] is used by no rank; params[2] only in the first micro-batch."""
    gen = torch.Generator().manual_seed(100 * rank + micro)
    x = torch.randn(2, 7, generator=gen)
    h = torch.tanh(x @ params[0]) + params[1]
    if micro == 0:
        h = h + (h @ params[2]).sum()
    if rank == 0:
        h = h[:, :3] @ params[3]
    loss = h.pow(2).sum() + params[4].sin().sum() * (rank + 1) + (params[7].double() ** 2).sum()
    loss.backward()


def _worker(rank: int, port: int, out, bucket_mb: float) -> None:
    world = 2
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # reference: each rank's own accumulated gradients, summed over ranks parameter by parameter
        ref_params = _params()
        for micro in range(2):
            _backward(ref_params, rank, micro)
        local = [p.grad.clone() if p.grad is not None else None for p in ref_params]
        everyone = [None] * world
        dist.all_gather_object(everyone, local)
        expected = []
        for i in range(len(ref_params)):
            grads = [g[i] for g in everyone if g[i] is not None]
            expected.append(None if not grads else sum(grads[1:], grads[0].clone()))

        params = _params()
        reducer = GradReducer(params, bucket_mb)
        _backward(params, rank, 0)  # accumulates locally: not armed
        reducer.arm()
        _backward(params, rank, 1)
        sent_in_backward = reducer.launched
        reducer.finish()
        got = [p.grad for p in params]
        ok = all((e is None and g is None) or (e is not None and g is not None and torch.equal(e, g))
                 for e, g in zip(expected, got))
        out.put((rank, ok, [g is None for g in got], len(reducer.buckets), sent_in_backward))
        reducer.remove()
    finally:
        dist.destroy_process_group()



@pytest.mark.parametrize("bucket_mb", [1e-6, 25.0])  # a bucket per parameter; one per dtype
def test_bucketed_sums_equal_per_parameter_sums(bucket_mb):
    results = sorted(spawn_ranks(_worker, bucket_mb, timeout=60))
    for rank, ok, none, n_buckets, sent in results:
        assert ok, f"rank {rank}: bucketed sums differ from per-parameter sums"
        # params[5] frozen and params[6] unused everywhere: no gradient; params[3] (rank 0 only) has one
        assert none == [False, False, False, False, False, True, True, False]
        assert n_buckets == (8 if bucket_mb < 1 else 2)
    # small buckets: the ones whose parameters are all ready are sent during backward, in order
    if bucket_mb < 1:
        assert all(sent >= 1 for *_, sent in results)



def test_bucket_size_must_be_positive():
    with pytest.raises(ConfigError, match="bucket size"):
        GradReducer([torch.nn.Parameter(torch.zeros(2))], 0)
