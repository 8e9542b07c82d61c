"""Optimizers and learning-rate schedules, one builder for every training loop of the project
(the PART trainer, LM pretraining, encoder pretraining); their config sections are typed here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Literal, Tuple

import torch


@dataclass
class Optim:
    """The optimizer; biases and norms (1-d parameters) never get weight decay."""

    type: Literal["adamw", "sgd"] = "adamw"
    lr: float = field(default=1.0e-3, metadata={"min": 0})
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    betas: Tuple[float, float] = (0.9, 0.98)
    eps: float = field(default=1.0e-8, metadata={"gt": 0})
    momentum: float = field(default=0.0, metadata={"min": 0})  # sgd


@dataclass
class LRSchedule:
    """Learning rate: linear warmup, then cosine / linear decay to ``min_lr_ratio`` x lr, or constant."""

    type: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = field(default=0, metadata={"min": 0})
    min_lr_ratio: float = field(default=0.0, metadata={"min": 0, "max": 1})


def lr_lambda(sched: LRSchedule, max_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier of ``sched`` at each step of a ``max_steps`` run."""
    warmup, floor = sched.warmup_steps, sched.min_lr_ratio

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if sched.type == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if sched.type == "cosine" else 1.0 - progress
        return floor + (1 - floor) * decay

    return f


def build_optimizer(params: List[torch.nn.Parameter], optim: Optim) -> torch.optim.Optimizer:
    """AdamW or SGD over ``params``: weight decay on matrices, none on biases and norms."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optim.type == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps)
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)


def build(params: List[torch.nn.Parameter], optim: Optim, sched: LRSchedule,
          max_steps: int) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over ``params`` and its learning-rate schedule over ``max_steps`` steps."""
    opt = build_optimizer(params, optim)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(sched, max_steps))
