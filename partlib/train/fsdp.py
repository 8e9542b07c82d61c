"""Fully sharded data parallel training (FSDP2, ``torch.distributed.fsdp.fully_shard``).

Each transformer layer of the speech encoder and of the LLM becomes its own FSDP unit, and the
root :class:`~partlib.models.speech_llm.SpeechLLM` holds the rest (convolutions, adapter,
embeddings, final norm, output head). Frozen base weights and LoRA factors may share a unit.

Gradients are *summed* over ranks (not averaged) so that the trainer divides them by the global
number of target tokens exactly as under ``ddp``. With ``mixed_precision`` (the trainer's bf16
autocast on GPU, i.e. unless ``--no-amp``) each unit gathers its parameters in bf16 for forward and
backward and reduce-scatters bf16 gradients (float32 in stages with ``accum_grad`` > 1), while the sharded parameters the optimizer updates
(the master weights) keep their own dtype (float32 for what trains).

Checkpoints are sharded (``torch.distributed.checkpoint``: each rank writes its own shards of the
trainable parameters and optimizer state, no rank holds them whole; :mod:`partlib.train.checkpoint`
adds the checksums and the ``latest`` pointer) and resume with the same number of ranks; the
export reads the full trainable entries on one process and works on an unsharded copy.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from partlib.common import PathLike, file_sha256

STRATEGIES = ("ddp", "fsdp")


def shard(model, world_size: int, device: torch.device, mixed_precision: bool = False,
          accumulates: bool = False) -> None:
    """Shard ``model`` in place over all ranks, moving it to ``device`` unit by unit; with
    ``mixed_precision``, bf16 compute and gradient reduction over float32 master weights, or
    float32 reduction when the stage ``accumulates`` gradients over micro-batches (FSDP keeps the
    unsharded gradients in the reduction dtype between them: bf16 sums of summed-token losses
    would lose precision).

    Call after the set-up of trainable parameters (LoRA included); build the optimizer afterwards,
    from the new (sharded) parameters.
    """
    mesh = init_device_mesh(device.type, (world_size,))
    reduce = torch.float32 if accumulates else torch.bfloat16
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=reduce) if mixed_precision \
        else MixedPrecisionPolicy()
    units = model.shard_units()
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for unit in [*units, model]:  # per unit: these settings do not recurse
        # Sum instead of average: the trainer normalises by the global token count itself.
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients in this backward (True) or keep accumulating them locally."""
    if is_sharded(model):
        model.set_requires_gradient_sync(sync)


def grad_norm(params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
    """Total L2 norm of the gradients (plain or sharded), clipped to ``max_norm`` when > 0."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)


def _sharded_state(model: torch.nn.Module, opt: torch.optim.Optimizer, keep: Sequence[str]) -> Dict[str, Any]:
    """This rank's shards of the named model entries and of the optimizer state, keyed by name
    (the optimizer's state is created first if it has none yet)."""
    wanted = set(keep)
    model_state = {k: v for k, v in get_model_state_dict(model).items() if k in wanted}
    return {"model": model_state, "optimizer": get_optimizer_state_dict(model, opt)}


def save_sharded(model: torch.nn.Module, opt: torch.optim.Optimizer, keep: Sequence[str], path: PathLike) -> None:
    """Write the named model entries (trainable parameters and buffers, not the frozen base
    weights) and the optimizer state with ``torch.distributed.checkpoint`` into the directory
    ``path``: each rank writes its own shards, no rank gathers the full state (a collective)."""
    dcp.save(_sharded_state(model, opt, keep), checkpoint_id=str(path))


def own_shard_sums(path: PathLike, rank: int) -> Dict[str, str]:
    """SHA-256 of the files of a :func:`save_sharded` directory that this rank wrote (its
    ``__<rank>_*.distcp``; rank 0 also ``.metadata``), by file name: the ranks hash in parallel."""
    path = Path(path)
    mine = sorted(path.glob(f"__{rank}_*.distcp")) + ([path / ".metadata"] if rank == 0 else [])
    return {f.name: file_sha256(f) for f in mine}


def load_sharded(model: torch.nn.Module, opt: torch.optim.Optimizer, keep: Sequence[str], path: PathLike) -> None:
    """Load a :func:`save_sharded` directory into the sharded model and optimizer (a collective).

    The optimizer state is asked for exactly where the checkpoint has one: its template is made by
    a zero step over the parameters that require a gradient, so they are set to those for it (a
    LoRA layer switched on during the stage has a state; one not yet, none, as in a run that did
    not stop), then put back."""
    saved = {k[len("optimizer.state."):].rsplit(".", 1)[0]
             for k in dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
             if k.startswith("optimizer.state.")}
    trains = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in saved)
        state = _sharded_state(model, opt, keep)
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(trains[n])
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"], options=StateDictOptions(strict=False))
    set_optimizer_state_dict(model, opt, state["optimizer"])


def load_model_entries(path: PathLike) -> Dict[str, torch.Tensor]:
    """The full model entries of a :func:`save_sharded` directory as CPU tensors, read by one
    process without a process group (the export)."""
    reader = dcp.FileSystemReader(str(path))
    meta = reader.read_metadata().state_dict_metadata
    model = {k[len("model."):]: torch.empty(m.size, dtype=m.properties.dtype)
             for k, m in meta.items() if k.startswith("model.")}
    dcp.load({"model": model}, storage_reader=reader, no_dist=True)
    return model


@contextmanager
def unsharded_root(model: torch.nn.Module) -> Iterator[None]:
    """Keep the root unit's parameters gathered, e.g. for ``generate`` (which bypasses the root
    forward; the layers gather themselves in their own forward). Every rank must run the same calls."""
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()
