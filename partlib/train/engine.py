"""The one training engine: optimizer steps, the non-finite guard, checkpoints, exact resume and
preemption, for anything that trains — an :class:`Objective` (a model, the loss of a micro-batch,
the micro-batches and the objective's own resumable state). The SpeechLLM stages of a schedule
(:mod:`partlib.train.trainer`), encoder CTC pretraining (:mod:`partlib.train.encoder_pretrain`)
and LM pretraining (:mod:`partlib.train.lm_pretrain`) are its objectives.

One optimizer step: ``accum_grad`` micro-batches, each loss back-propagated as the objective
returns it (a sum over its ``units``, e.g. target tokens, or a mean with one unit); the gradients
summed over ranks and divided by the global number of units, clipped to ``clip_grad``. A
non-finite loss or gradient skips the update; ``nan_patience`` skips in a row, or more than
``nan_max_fraction`` of any ``nan_window`` steps, fail with :class:`NonFiniteLossError`.

A checkpoint (:mod:`partlib.train.checkpoint`) holds the trainable parameters and buffers, optimizer,
LR schedule, step, counters, the Python/numpy/torch RNG states and the objective's state, so that
rerunning a killed run continues from its newest intact checkpoint and reaches the parameters of
an uninterrupted one. SIGTERM or SIGUSR1 (:mod:`partlib.train.preemption`) ends the run after the
current step with a checkpoint and :class:`~partlib.common.Preempted`.
"""
from __future__ import annotations

import math
import shutil
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import torch

from partlib.common import PartError, Preempted, get_logger
from partlib.train import distributed as dist_utils
from partlib.train import fsdp
from partlib.train.checkpoint import CheckpointManager, ckpt_name, rng_state, set_rng_state
from partlib.train.distributed import DistContext
from partlib.train.preemption import StopRequest
from partlib.train.schedule import StageConfig

logger = get_logger("partlib.train")


class NonFiniteLossError(PartError):
    """Too many steps with a NaN/Inf loss or gradient: in a row, or in a window of steps."""


@dataclass(frozen=True)
class Steps:
    """How an objective is stepped (a schedule's :class:`StageConfig` has the same fields; the
    non-finite guard's defaults are the stages')."""

    max_steps: int
    log_interval: int
    save_interval: int
    accum_grad: int = 1
    clip_grad: Optional[float] = 1.0
    nan_patience: int = StageConfig.nan_patience
    nan_window: int = StageConfig.nan_window
    nan_max_fraction: float = StageConfig.nan_max_fraction


class Loss(NamedTuple):
    """One micro-batch's loss as the engine back-propagates it: ``value * weight``; ``value`` sums
    the loss over ``units`` (target tokens; 1 for a loss that is already a mean). ``weight`` 0 marks
    a stand-in micro-batch that only takes part in the collectives."""

    value: torch.Tensor
    units: float = 1.0
    weight: float = 1.0


class Objective(ABC):
    """What the engine trains. ``name`` opens its log lines and errors (``stage s1``)."""

    name: str
    steps: Steps  # or a StageConfig
    model: torch.nn.Module
    names: List[str]  # trainable parameter names, in model order (checkpointed)
    params: List[torch.nn.Parameter]  # the optimizer's parameters, in model order

    @abstractmethod
    def batches(self, start: int) -> Iterator[Any]:
        """The micro-batches from micro-batch index ``start`` (= step × accum_grad) on."""

    @abstractmethod
    def loss(self, batch: Any) -> Loss:
        """The forward pass of one micro-batch."""

    def state_dict(self) -> Dict[str, Any]:
        """The objective's own state, saved in every checkpoint (top-level keys beside the engine's;
        on every rank: it may be a collective)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any], path) -> None:
        """Restore :meth:`state_dict` from the checkpoint ``path`` (the whole checkpoint ``state``)."""

    def begin_step(self, step: int) -> None:
        """Before the step that starts after ``step`` steps (e.g. switch LoRA layers on)."""

    def after_step(self, step: int, loss: float, stats: Dict[str, Any]) -> bool:
        """After ``step`` steps with the step's loss per unit; True when a checkpoint is due now
        (besides ``save_interval``), e.g. after a dev evaluation. ``stats`` is checkpointed."""
        return False

    def stopped_early(self, stats: Dict[str, Any]) -> bool:
        """Whether training ends before ``max_steps`` (early stopping)."""
        return False

    def log_step(self, step: int, loss: float, grad_norm: float, units: int, lr: float, rate: float) -> None:
        """The log line of a step (every ``log_interval`` steps and the last, on rank 0)."""
        logger.info("%s step %d/%d: loss %.4f, grad-norm %.3f, lr %.3g, %.2f steps/s",
                    self.name, step, self.steps.max_steps, loss, grad_norm, lr, rate)

    def close(self, batches: Iterator[Any]) -> None:
        """Release what :meth:`batches` started (loader workers), also after an error."""


def next_batch(batches: Iterator[Any]) -> Any:
    """The loader's next batch. A DataLoader worker's error reaches here with the worker's traceback
    in its message: keep the user-facing message alone."""
    try:
        return next(batches)
    except PartError as e:
        text = str(e).strip()
        if "Original Traceback" not in text:
            raise
        raise PartError(text.splitlines()[-1].split(": ", 1)[-1]) from None


@dataclass
class Engine:
    """Trains an :class:`Objective` with an optimizer and LR schedule into checkpoints."""

    objective: Objective
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ckpts: CheckpointManager
    stop: StopRequest
    ctx: DistContext = field(default_factory=lambda: DistContext(0, 1, 0, torch.device("cpu")))
    device: torch.device = torch.device("cpu")
    sharded: bool = False  # FSDP: every rank writes its own shards of a checkpoint
    reducer: Optional[dist_utils.GradReducer] = None  # ddp over several ranks: bucketed gradient sum
    amp: bool = False  # bf16 autocast of the forward (CUDA)
    progress: bool = False  # a progress bar
    step: int = 0
    # nonfinite_recent: the skipped steps of the last ``nan_window`` steps (the budget's window)
    stats: Dict[str, Any] = field(default_factory=lambda: {"nonfinite_skipped": 0, "nonfinite_recent": []})
    consecutive_bad: int = 0
    saved_step: Optional[int] = None

    def run(self) -> None:
        """Resume from the newest intact checkpoint, train to ``max_steps`` (or an early stop) and
        write the last step's checkpoint. A stop signal ends it with :class:`Preempted` after a
        checkpoint."""
        o, spec = self.objective, self.objective.steps
        self.resume()
        batches = o.batches(self.step * spec.accum_grad)
        from tqdm import tqdm

        bar = tqdm(total=spec.max_steps, initial=self.step, desc=o.name, disable=not self.progress,
                   mininterval=5.0, dynamic_ncols=True)
        o.model.train()
        t0, first = time.time(), self.step
        # a run resumed after the evaluation that stopped it early (and its checkpoint) stops again
        stopped = o.stopped_early(self.stats)
        try:
            while self.step < spec.max_steps and not stopped:
                o.begin_step(self.step)
                loss, grad_norm, units = self._optimizer_step(batches)
                self.step += 1
                bar.update(1)
                if self.ctx.is_main and (self.step % spec.log_interval == 0 or self.step == spec.max_steps):
                    o.log_step(self.step, loss, grad_norm, units, self.sched.get_last_lr()[0],
                               (self.step - first) / max(1e-9, time.time() - t0))
                if o.after_step(self.step, loss, self.stats) or self.step % spec.save_interval == 0:
                    self.save()
                stopped = o.stopped_early(self.stats)
                if self.stop.agreed() and not stopped:  # an early stop ends the run now instead
                    self.save()
                    dist_utils.barrier()
                    raise Preempted(f"{o.name}: stopped by {self.stop.name} after step {self.step} with "
                                    f"checkpoint {self.ckpts.dir / ckpt_name(self.step)}; "
                                    "rerun the same command to resume")
        finally:
            bar.close()
            o.close(batches)
        if self.reducer is not None:
            self.reducer.remove()
        if self.stats["nonfinite_skipped"]:
            logger.warning("%s: %d steps skipped for non-finite loss/gradients", o.name,
                           self.stats["nonfinite_skipped"])
            if self.step < spec.nan_window:  # a run shorter than the window: its steps are the window
                self._check_nonfinite_budget(self.stats["nonfinite_skipped"], self.step)
        self.save()
        dist_utils.barrier()

    # -- one step -----------------------------------------------------------------------------
    def _optimizer_step(self, batches: Iterator[Any]) -> Tuple[float, float, int]:
        """One update from the next ``accum_grad`` micro-batches of this rank. Returns (loss per
        unit, gradient norm, global units)."""
        o, spec = self.objective, self.objective.steps
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        n_units = torch.zeros((), device=self.device, dtype=torch.float64)
        for micro in range(spec.accum_grad):
            batch = next_batch(batches)
            last = micro == spec.accum_grad - 1
            fsdp.set_gradient_sync(o.model, last)
            if self.reducer is not None and last:  # reduce buckets as the last backward fills them
                self.reducer.arm()
            with torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext():
                out = o.loss(batch)
            (out.value * out.weight).backward()
            if out.weight:
                loss_sum += out.value.detach().double() * out.weight
                n_units += float(out.units) * out.weight
        dist_utils.all_reduce_(loss_sum)
        dist_utils.all_reduce_(n_units)
        if self.reducer is not None:  # (FSDP has summed, reduce-scattered, the gradients in backward)
            self.reducer.finish()
        active = [p for p in o.params if p.grad is not None]
        for p in active:
            p.grad.div_(float(n_units.clamp(min=1)))
        grad_norm = float(fsdp.grad_norm(active, spec.clip_grad or 0.0))
        loss = float(loss_sum / n_units.clamp(min=1))
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive_bad = 0
            self.opt.step()
        else:
            self._skip(loss, grad_norm)
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        return loss, grad_norm, int(n_units)

    def _skip(self, loss: float, grad_norm: float) -> None:
        """A non-finite step: counted, and an error past ``nan_patience`` in a row or the budget."""
        o, spec = self.objective, self.objective.steps
        self.consecutive_bad += 1
        self.stats["nonfinite_skipped"] += 1
        recent = [s for s in self.stats["nonfinite_recent"] if s > self.step - spec.nan_window] + [self.step]
        self.stats["nonfinite_recent"] = recent
        logger.warning("%s step %d: non-finite loss/gradient (%s, %s): step skipped (%d in a row)",
                       o.name, self.step, loss, grad_norm, self.consecutive_bad)
        if self.consecutive_bad >= spec.nan_patience:
            raise NonFiniteLossError(f"{o.name}: {self.consecutive_bad} consecutive non-finite "
                                     f"steps at step {self.step}; lower the learning rate or check the data")
        self._check_nonfinite_budget(len(recent), min(spec.nan_window, spec.max_steps))

    def _check_nonfinite_budget(self, skipped: int, steps: int) -> None:
        """Fail when more than ``nan_max_fraction`` of ``steps`` steps were skipped."""
        o, spec = self.objective, self.objective.steps
        if skipped > spec.nan_max_fraction * steps:
            raise NonFiniteLossError(
                f"{o.name}: {skipped} step(s) skipped for a non-finite loss or gradient by step {self.step}, "
                f"more than nan_max_fraction = {spec.nan_max_fraction} of {steps} steps (nan_window, or the "
                f"run if shorter); no model is exported: lower the learning rate or check the data")

    # -- checkpoints --------------------------------------------------------------------------
    def kept(self) -> List[str]:
        """The model entries a checkpoint holds: trainable parameters and the buffers."""
        o = self.objective
        return sorted(set(o.names) | {n for n, _ in o.model.named_buffers()})

    def save(self) -> None:
        """A checkpoint of the current step (once per step: the last one may be asked for twice)."""
        if self.saved_step == self.step:
            return
        self.saved_step = self.step
        o = self.objective
        keep = self.kept()
        shards, shard_sums = None, None
        if self.sharded:  # every rank writes its own shards (a collective)
            shards = self.ckpts.shards_tmp(self.step)
            if self.ctx.is_main:  # the shards of a save cut short
                shutil.rmtree(shards, ignore_errors=True)
            dist_utils.barrier()
            fsdp.save_sharded(o.model, self.opt, keep, shards)
            shard_sums = {}
            for part in dist_utils.all_gather_object(fsdp.own_shard_sums(shards, self.ctx.rank)):
                shard_sums.update(part)
        extra = o.state_dict()  # on every rank: it may be a collective
        if not self.ctx.is_main:
            return
        state = {"sharded": True, "world_size": self.ctx.world_size} if self.sharded else {
            "model": {k: v.detach().cpu() for k, v in o.model.state_dict().items() if k in keep},
            "optimizer": self.opt.state_dict(),
            "sharded": False,
        }
        state.update({"scheduler": self.sched.state_dict(), "step": self.step, "stats": self.stats,
                      "rng": rng_state(), **extra})
        self.ckpts.save(self.step, state, shards, shard_sums)

    def resume(self) -> None:
        """Continue from the newest checkpoint, if there is one (parameters, optimizer, LR schedule,
        step, counters, RNG states, the objective's state)."""
        # rank 0 picks the newest intact checkpoint (moving damaged ones aside) and verifies it once;
        # all load that one and take rank 0's best-N list. Its failure is every rank's (the others
        # must not wait for it forever).
        o = self.objective
        picked, error, best = None, None, []
        if self.ctx.is_main:
            try:
                picked = self.ckpts.resumable()
                best = self.ckpts.best()
            except (PartError, OSError) as e:
                error = str(e)
        picked, error, best = dist_utils.all_gather_object((picked, error, best))[0]
        if error is not None:
            raise PartError(error)
        self.ckpts.set_best(best)
        latest = picked
        if latest is None:
            return
        state = self.ckpts.load(latest, verify=False)
        if bool(state.get("sharded", False)) != self.sharded:
            raise PartError(f"{latest}: written {'with' if state.get('sharded') else 'without'} FSDP "
                            f"sharding; resume with the same --strategy (fsdp needs WORLD_SIZE > 1)")
        if self.sharded:
            if not state.get("shards"):
                raise PartError(f"{latest}: an FSDP checkpoint of full tensors (an earlier version); remove "
                                f"{latest.parent} to start afresh")
            if state["world_size"] != self.ctx.world_size:
                raise PartError(f"{latest}: its shards are of {state['world_size']} FSDP ranks; resume with "
                                f"WORLD_SIZE={state['world_size']} (now {self.ctx.world_size})")
            fsdp.load_sharded(o.model, self.opt, self.kept(), self.ckpts.dir / state["shards"])
        else:
            missing = set(o.names) - set(state["model"])
            if missing:
                raise PartError(f"{latest}: checkpoint lacks trainable parameters {sorted(missing)[:5]}...")
            o.model.load_state_dict(state["model"], strict=False)
            self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        o.load_state_dict(state, latest)
        self.step, self.stats = state["step"], {**self.stats, **state["stats"]}
        self.saved_step = self.step  # its checkpoint exists: the end of the run need not write it again
        set_rng_state(state["rng"])
        logger.info("%s: resumed from %s at step %d", o.name, latest.name, self.step)


def train_in_process(objective: Objective, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                     ckpt_dir: Path) -> None:
    """Train ``objective`` in this one process, on the CPU, with its checkpoints in ``ckpt_dir``:
    rerunning after a kill resumes from the newest intact one there; SIGTERM or SIGUSR1 ends it
    after the current step with a checkpoint and :class:`~partlib.common.Preempted`."""
    ckpts = CheckpointManager(ckpt_dir, keep_last=2)
    ckpts.remove_stale()
    with StopRequest(torch.device("cpu")) as stop:
        Engine(objective, opt, sched, ckpts, stop).run()


def check_same_run(saved: Dict[str, Any], now: Dict[str, Any], path: Path,
                   reporting: AbstractSet[str] = frozenset()) -> None:
    """Refuse to resume from the checkpoint ``path`` of a run with other options or data: its
    parameters and data order belong to that run. The ``reporting`` options change only what is
    logged, evaluated or checkpointed, not the trained weights, and may differ."""
    changed = sorted(k for k in set(saved) | set(now) if k not in reporting and saved.get(k) != now.get(k))
    if changed:
        raise PartError(f"{path}: written by a run with other {', '.join(changed)} ({saved.get(changed[0])!r}, now "
                        f"{now.get(changed[0])!r}); rerun with those, or remove {path.parent} to start afresh")
