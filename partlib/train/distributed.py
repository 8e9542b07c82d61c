"""Process-group setup for ``torchrun`` or ``srun`` and the collective operations the trainer needs.

One command serves one CPU process, several CPU processes (gloo) and many GPUs across nodes
(nccl): ``torchrun --nproc_per_node=N -m partlib.bin.train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
a Slurm job step (``srun --ntasks-per-node=N python -m partlib.bin.train ...``, one task per GPU)
sets SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID, used when RANK is not set (MASTER_ADDR and
MASTER_PORT then come from the batch script: ``egs/README.md``). Under ``srun`` the processes
themselves receive Slurm's signals (:mod:`partlib.train.preemption`).
The gradient all-reduce here serves the ``ddp`` strategy; ``fsdp`` is in :mod:`partlib.train.fsdp`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Sequence

import torch
import torch.distributed as dist

from partlib.common import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init() -> DistContext:
    """Initialise the default process group from torchrun's or srun's environment (no-op for one
    process)."""
    env = os.environ
    if "RANK" not in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        names = (("RANK", "SLURM_PROCID"), ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS"), ("LOCAL_RANK", "SLURM_LOCALID"))
        missing = [k for _, k in names if k not in env] + [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise ConfigError(f"a Slurm step of {env['SLURM_STEP_NUM_TASKS']} tasks needs {' and '.join(missing)} set "
                              "(MASTER_ADDR and MASTER_PORT: the first node of the job and a free port; see "
                              "egs/multilingual/part1/README.md)")
        for key, slurm in names:
            env[key] = env[slurm]  # init_process_group's env:// reads them
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local = int(env.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and os.environ.get("PART_DEVICE", "") != "cpu"
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local, device)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (identity for one process)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks.

    A parameter that received no gradient on any rank keeps ``grad=None`` (so the optimizer skips
    it exactly as a single process would); where only some ranks have one, the others add zeros.
    """
    if not active():
        return
    trainable = [p for p in params if p.requires_grad]
    flags = torch.tensor([p.grad is not None for p in trainable], dtype=torch.float32,
                         device=trainable[0].device if trainable else "cpu")
    dist.all_reduce(flags)
    for p, f in zip(trainable, flags.tolist()):
        if f == 0:
            p.grad = None
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` for one process)."""
    if not active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()
