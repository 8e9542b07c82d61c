"""FSDP's mixed-precision policy (2 gloo processes on CPU): with it, forward and backward run in
bf16 while the sharded parameters and their gradients, which the optimizer sees, stay float32;
the gradients differ from the float32 run's by bf16 rounding only."""
import os

import torch
import torch.distributed as dist

from train_fixtures import spawn_ranks


class _Model(torch.nn.Module):
    """Two sharding units and a root, like SpeechLLM.shard_units()."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(2))
        self.head = torch.nn.Linear(16, 1)

    def shard_units(self):
        return list(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(x)


def _worker(rank: int, port: int, out) -> None:
    from partlib.train import fsdp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x = torch.randn(4, 16, generator=torch.Generator().manual_seed(rank))
        result = {}
        for mixed in (False, True):
            model = _Model()
            fsdp.shard(model, 2, torch.device("cpu"), mixed_precision=mixed)
            y = model(x)
            y.float().sum().backward()
            grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
            result[mixed] = (str(y.dtype), sorted({str(p.dtype) for p in model.parameters()}),
                             sorted({str(g.dtype) for g in grads.values()}), grads)
        # plain Python across the queue (tensors would travel as shared memory of an exiting process)
        (g32, gmp) = result[False][3], result[True][3]
        close = {n: bool(torch.allclose(g32[n], gmp[n], rtol=0.05, atol=0.05)) for n in g32}
        differ = any(not torch.equal(g32[n], gmp[n]) for n in g32)
        out.put((rank, {k: v[:3] for k, v in result.items()}, close, differ))
    finally:
        dist.destroy_process_group()


def test_bf16_compute_and_reduction_over_float32_master_weights():
    results = spawn_ranks(_worker)
    for _, result, close, differ in results:
        (y32, params32, grads32), (ymp, params_mp, grads_mp) = result[False], result[True]
        assert y32 == "torch.float32" and ymp == "torch.bfloat16"  # computed in bf16
        assert params32 == params_mp == grads32 == grads_mp == ["torch.float32"]  # master weights and grads
        assert all(close.values()), close
        assert differ  # bf16 rounding shows
