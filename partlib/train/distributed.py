"""Process-group setup for ``torchrun`` or ``srun`` and the collective operations the trainer needs.

One command serves one CPU process, several CPU processes (gloo) and many GPUs across nodes
(nccl): ``torchrun --nproc_per_node=N -m partlib.bin.train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
a Slurm job step (``srun --ntasks-per-node=N python -m partlib.bin.train ...``, one task per GPU)
sets SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID, used when RANK is not set (MASTER_ADDR and
MASTER_PORT then come from the batch script: ``egs/README.md``). Under ``srun`` the processes
themselves receive Slurm's signals (:mod:`partlib.train.preemption`).
The bucketed gradient all-reduce here (:class:`GradReducer`) serves the ``ddp`` strategy; ``fsdp`` is in :mod:`partlib.train.fsdp`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

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


class GradReducer:
    """Sums the gradients of ``params`` over ranks in buckets, overlapping the reduction with backward.

    Parameters are grouped, in reverse order (roughly the order backward produces their gradients),
    into buckets of about ``bucket_mb`` MiB per dtype and device. When :meth:`arm` was called before a
    backward, a post-accumulate-grad hook marks each parameter ready; a bucket whose trainable
    parameters are all ready is copied into one flat buffer and all-reduced asynchronously while
    backward goes on. Buckets are launched strictly in index order on every rank (a ready bucket
    waits for the ones before it), so the collectives pair up across ranks even when ranks see
    different tasks (a text-only batch gives the encoder no gradient). :meth:`finish` launches the
    rest and waits.

    Each bucket carries one flag per parameter (1 where this rank has a gradient). A parameter
    that received no gradient on any rank keeps ``grad=None`` (the optimizer skips it exactly as a
    single process would); where only some ranks have one, the others add zeros. Parameters that do
    not require a gradient at :meth:`arm` (LoRA layers not active yet: the same on every rank) are
    left out, and hooked once they train: this is what lets LoRA layers switch on mid-stage, which
    stock DDP does not tolerate. After :meth:`finish` each gradient is a view into its bucket's
    buffer (no copy back).
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], bucket_mb: float = 25.0) -> None:
        if bucket_mb <= 0:
            raise ConfigError(f"gradient bucket size must be > 0 MiB (got {bucket_mb})")
        self.buckets: List[List[torch.nn.Parameter]] = []
        limit = bucket_mb * 2**20
        filling: Dict[Tuple[torch.dtype, torch.device], List[torch.nn.Parameter]] = {}
        size: Dict[Tuple[torch.dtype, torch.device], int] = {}
        for p in reversed(list(params)):
            key = (p.dtype, p.device)
            filling.setdefault(key, []).append(p)
            size[key] = size.get(key, 0) + p.numel() * p.element_size()
            if size[key] >= limit:
                self.buckets.append(filling.pop(key))
                size[key] = 0
        self.buckets.extend(b for b in filling.values() if b)
        self._where = {id(p): b for b, bucket in enumerate(self.buckets) for p in bucket}
        self._hooks: Dict[int, Any] = {}
        self._armed = False
        self._ready = [0] * len(self.buckets)
        self._needed = [0] * len(self.buckets)
        self._seen: set = set()
        self._next = 0
        self._work: List[Tuple[int, torch.Tensor, Any]] = []

    def arm(self) -> None:
        """Reduce during the next backward (the last micro-batch of a step)."""
        for bucket in self.buckets:
            for p in bucket:  # a hook needs requires_grad: hook a parameter once it first trains
                if p.requires_grad and id(p) not in self._hooks:
                    self._hooks[id(p)] = p.register_post_accumulate_grad_hook(self._on_grad)
        self._armed = True
        self._ready = [0] * len(self.buckets)
        self._needed = [sum(p.requires_grad for p in bucket) for bucket in self.buckets]
        self._seen = set()
        self._next = 0
        self._work = []
        self._launch_ready()

    @property
    def launched(self) -> int:
        """How many buckets of the armed backward have been launched (or skipped) so far."""
        return self._next

    def _on_grad(self, p: torch.nn.Parameter) -> None:
        if not self._armed:
            return
        b = self._where[id(p)]
        if id(p) in self._seen:  # a second accumulation in one backward (a parameter shared across
            if b < self._next:   # reentrant checkpoint segments): too late once its bucket is sent
                raise RuntimeError(f"a gradient of a parameter of shape {tuple(p.shape)} was accumulated after "
                                   "its bucket was reduced; use non-reentrant activation checkpointing")
            return
        self._seen.add(id(p))
        self._ready[b] += 1
        self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and self._ready[self._next] == self._needed[self._next]:
            self._launch(self._next)

    def _launch(self, b: int) -> None:
        self._next = b + 1
        if not self._needed[b]:  # nothing in it trains now, on any rank: nothing to send
            return
        bucket = self.buckets[b]
        n = sum(p.numel() for p in bucket)
        buf = torch.zeros(n + len(bucket), dtype=bucket[0].dtype, device=bucket[0].device)
        offset = 0
        for i, p in enumerate(bucket):
            if p.grad is not None:
                buf[offset:offset + p.numel()].copy_(p.grad.reshape(-1))
                buf[n + i] = 1
            offset += p.numel()
        self._work.append((b, buf, dist.all_reduce(buf, async_op=True)))

    def finish(self) -> None:
        """Launch the buckets not yet launched, wait for all and set the summed gradients."""
        while self._next < len(self.buckets):
            self._launch(self._next)
        self._armed = False
        for _, _, work in self._work:
            work.wait()
        if self._work:  # every bucket's flags in one transfer to the host
            flags = torch.cat([buf[buf.numel() - len(self.buckets[b]):] for b, buf, _ in self._work]).tolist()
        at = 0
        for b, buf, _ in self._work:
            offset = 0
            for p in self.buckets[b]:
                p.grad = buf[offset:offset + p.numel()].view_as(p) if flags[at] > 0 else None
                offset += p.numel()
                at += 1
        self._work = []

    def remove(self) -> None:
        """Remove the hooks (the end of a stage)."""
        for h in self._hooks.values():
            h.remove()
        self._hooks = {}


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
