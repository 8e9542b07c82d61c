"""Fully sharded data parallel training (FSDP2, ``torch.distributed.fsdp.fully_shard``).

Each transformer layer of the speech encoder and of the LLM becomes its own FSDP unit, and the
root :class:`~partlib.models.speech_llm.SpeechLLM` holds the rest (convolutions, adapter,
embeddings, final norm, output head). Frozen base weights and LoRA factors may share a unit.

Gradients are *summed* over ranks (not averaged) so that the trainer divides them by the global
number of target tokens exactly as under ``ddp``. Checkpoints hold full (unsharded) tensors, so
a checkpoint does not depend on the number of processes, and export works on an unsharded copy.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Sequence

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

STRATEGIES = ("ddp", "fsdp")

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model, world_size: int, device: torch.device) -> None:
    """Shard ``model`` in place over all ranks, moving it to ``device`` unit by unit.

    Call after the set-up of trainable parameters (LoRA included); build the optimizer afterwards,
    from the new (sharded) parameters.
    """
    mesh = init_device_mesh(device.type, (world_size,))
    units = model.shard_units()
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
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


def full_model_state(model: torch.nn.Module, keep: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Full CPU copies of the named entries of the state dict (a collective: call on every rank).

    Gathers only ``keep`` (trainable parameters and buffers), not the frozen base weights.
    """
    wanted = set(keep)
    out = {}
    for name, value in model.state_dict().items():
        if name in wanted:
            value = value.full_tensor() if isinstance(value, DTensor) else value
            out[name] = value.detach().cpu()
    return out


def full_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Dict[str, Any]:
    """Full optimizer state keyed by parameter name, on CPU (a collective: call on every rank)."""
    return get_optimizer_state_dict(model, opt, options=_FULL)


def load_full_state(model: torch.nn.Module, opt: torch.optim.Optimizer, model_state: Dict[str, torch.Tensor],
                    opt_state: Dict[str, Any]) -> None:
    """Load full (unsharded) model entries and optimizer state into a sharded model on every rank."""
    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, opt, opt_state, options=opts)


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
