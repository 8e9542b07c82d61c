"""The PART trainer: runs the alignment stages of a schedule one after the other.

For each stage: build the model (from the model config, the previous stage's exported model or a
model directory), set what is trainable, then optimise with a deterministic multi-task sampler,
gradient accumulation, clipping, a NaN/Inf guard, periodic dev evaluation, best-N checkpoints and
early stopping; finally export a ``from_pretrained`` model directory (``<exp>/<stage>/model``).

Loss normalisation: every rank back-propagates its *summed* token NLL; after all micro-batches of
a step the gradients are summed over ranks and divided by the global number of target tokens.
The update is therefore that of one process seeing the whole global batch, whatever the number of
processes or micro-batches. A rank whose slice of a small global batch is empty runs a stand-in
example with loss weight 0, so that every rank takes part in every collective.

Strategies (``--strategy``): ``ddp`` keeps a full replica per rank and all-reduces (sums) the
gradients in buckets while the last backward of a step runs (:class:`~partlib.train.distributed.GradReducer`,
``--bucket-mb``); ``fsdp`` shards parameters, gradients and optimizer state with FSDP2 ``fully_shard``
(one unit per encoder and LLM transformer layer plus the root; see :mod:`partlib.train.fsdp`),
with gradients summed by the reduce-scatter, in bf16 over float32 master weights on GPU. Under
``fsdp`` each rank writes its own shards of a checkpoint (``torch.distributed.checkpoint``; a
resume needs the same number of ranks), the export is written from an unsharded copy, and the dev
decode gathers the root unit while it generates (every rank decodes the whole dev subset; under
``ddp`` each decodes its share). With one process both strategies are the same. Launch::

    torchrun --nproc_per_node=8 -m partlib.bin.train --strategy fsdp --schedule ... --exp-dir ...
    # across nodes, one srun task per GPU from a Slurm batch script (#SBATCH --ntasks-per-node=8):
    export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) MASTER_PORT=29500
    exec utils/srun_requeue.sh python -m partlib.bin.train --strategy fsdp ...

Exact resume: a checkpoint holds the trainable parameters, the LoRA active set, optimizer,
scheduler, step and RNG states; the sampler is a pure function of the micro-batch index. Rerunning
the same command continues from the newest intact checkpoint (a damaged one is reported and the
previous one used: :mod:`partlib.train.checkpoint`) and reaches the same parameters as an
uninterrupted run. SIGTERM or SIGUSR1 stops training after the current step with a checkpoint
(:mod:`partlib.train.preemption`); for Slurm, launch one process per GPU with ``srun`` itself
(ranks from ``SLURM_PROCID``), so that the signals reach the training processes, and requeue on
the exit status (``utils/srun_requeue.sh``, as above): ``torchrun`` turns the status into its own.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib import config, tasks
from partlib.common import ConfigError, PartError, PathLike, Preempted, get_logger
from partlib.data.batching import MixtureSampler, collate, make_batches, padding_fraction
from partlib.data.datadir import DataDir
from partlib.data.examples import Example, build_examples, directions, resolve_data_dirs
from partlib.data.streaming import SpeechLengths, StreamPlan, serves, sources_of
from partlib.features.source import FeatureSource, check_feature_mode
from partlib.features.whisper_mel import FRAMES_PER_SECOND
from partlib.infer import control
from partlib.models import card
from partlib.models.prompt import PromptLengths
from partlib.train import distributed as dist_utils
from partlib.train import fsdp, layout, optim
from partlib.train.checkpoint import CheckpointManager, ckpt_name, rng_state, set_rng_state
from partlib.train.loader import BatchDataset, PromptTokens, StreamDataset
from partlib.train.preemption import StopRequest, ignore_stop_signals
from partlib.train.schedule import (Schedule, StageConfig, active_layers_at, apply_stage_trainable,
                                    frozen_encoder_warnings)

logger = get_logger("partlib.train")
_DEV_BATCH = 16  # dev examples per forward / generate batch
_RATE_SAMPLE = 50000  # training targets tokenised for the output-rate bound of info.json


class NonFiniteLossError(PartError):
    """Too many steps with a NaN/Inf loss or gradient: in a row, or in a window of steps."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def count_params(model: torch.nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def move_batch(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _next_batch(batches: Iterator[Dict[str, Any]]) -> Dict[str, Any]:
    """The loader's next batch. A DataLoader worker's error reaches here with the worker's traceback
    in its message: keep the user-facing message alone."""
    try:
        return next(batches)
    except PartError as e:
        text = str(e).strip()
        if "Original Traceback" not in text:
            raise
        raise PartError(text.splitlines()[-1].split(": ", 1)[-1]) from None


def _close_loader(batches: Iterator[Dict[str, Any]]) -> None:
    """Stop a DataLoader iterator's worker processes now. They ignore stop signals (those are the
    trainer's to handle), so a stage that ends in an error must not leave them to the interpreter's
    exit, which terminates them with a signal and would then wait for them forever."""
    shutdown = getattr(batches, "_shutdown_workers", None)  # multi-process iterators only
    if shutdown is not None:
        shutdown()  # asks them to stop, then gives up on one busy past its timeout: kill that one
        for worker in getattr(batches, "_workers", []):
            if worker.is_alive():
                worker.kill()
                worker.join()


def _add_file_log(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


# ---------------------------------------------------------------------------------------------
# data of one stage
# ---------------------------------------------------------------------------------------------
class StageData:
    """Training data (in memory, or streamed from shard exports with ``features="shards"``) and the
    dev set (always in memory) of one stage. ``world_size``: the ranks that share each micro-batch
    (streaming cuts each rank's batches to its share of ``stage.batch``)."""

    def __init__(self, stage: StageConfig, model, data_root: Optional[str], seed: int,
                 features: str, world_size: int = 1) -> None:
        self.stage = stage
        count_tokens = PromptLengths(model.prompt)
        self.dirs: List[DataDir] = []
        self.dir_index: Dict[Path, int] = {}
        weights: Dict[str, float] = {}
        for spec in stage.tasks:
            weights[spec.task] = weights.get(spec.task, 0.0) + spec.weight
        self.examples: List[Example] = []
        self.groups: Dict[Tuple[str, str], List[List[Example]]] = {}
        self.sampler: Optional[MixtureSampler] = None
        self.plan: Optional[StreamPlan] = None
        b = stage.batch
        if features == "shards":
            frames = torch.arange(b.max_frames + 1)
            table = model.adapter.output_lengths(model.encoder.output_lengths(frames))
            sources = sources_of(stage.tasks, [resolve_data_dirs(s.data, data_root) for s in stage.tasks])
            self.plan = StreamPlan(stage.tasks, sources, weights, stage.sampling.temperature, seed,
                                   stage.sampling.window, (b.max_frames, b.max_tokens, b.max_utts),
                                   count_tokens, SpeechLengths(table.numpy()), world_size)
        else:
            for spec in stage.tasks:
                exs = []
                for d in self._load_dirs(spec.data, data_root):
                    exs += build_examples(spec, [d], count_tokens, model.speech_embed_length,
                                          dir_offset=self.dir_index[d.path])
                by_lang: Dict[str, List[Example]] = {}
                for e in exs:
                    by_lang.setdefault(e.src_lang, []).append(e)
                for lang, lex in by_lang.items():
                    self.groups.setdefault((spec.task, lang), []).extend(
                        make_batches(lex, b.max_frames, b.max_tokens, b.max_utts))
                self.examples += exs
            self.sampler = MixtureSampler(self.groups, weights, stage.sampling.temperature, seed)
        self.dev_examples = self._dev_examples(model, data_root, count_tokens)
        self.features = FeatureSource(self.dirs, model.n_mels, features)  # after dev dirs joined self.dirs

    def describe(self) -> str:
        """One line on the training data for the log."""
        if self.plan is not None:
            n = sum(len(s.manifest["shards"]) for s in self.plan.sources)
            return (f"streaming {sum(self.plan.sizes.values())} examples in {len(self.plan.sizes)} groups from "
                    f"{n} shards of {len(self.plan.sources)} exports (window {self.plan.window} utterances)")
        pad_frames, pad_tokens = padding_fraction([b for g in self.groups.values() for b in g])
        return (f"{len(self.examples)} examples in {len(self.groups)} groups "
                f"({sum(len(g) for g in self.groups.values())} batches); padding: {100 * pad_frames:.1f}% frames, "
                f"{100 * pad_tokens:.1f}% tokens")

    def summary(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """``{task: {lang: {utterances, hours}}}`` of the training data (hours None for text tasks)."""
        if self.plan is not None:
            return self.plan.hours()
        out: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for e in self.examples:
            d = out.setdefault(e.task, {}).setdefault(e.src_lang, {"utterances": 0, "frames": 0})
            d["utterances"] += 1
            d["frames"] += e.num_frames
        for by_lang in out.values():
            for d in by_lang.values():  # log-mel frames are 10 ms
                frames = d.pop("frames")
                d["hours"] = round(frames / (3600 * FRAMES_PER_SECOND), 4) if frames else None
        return out

    def longest_s(self) -> float:
        """The longest training utterance in seconds."""
        if self.plan is not None:
            return self.plan.longest_s()
        return max((e.num_frames for e in self.examples), default=0) / FRAMES_PER_SECOND

    def speech_sample(self, n: int) -> List[Example]:
        """At most ``n`` speech examples spread over the training data (streaming: from the first
        window of every group as reader 0 of 1 reads it)."""
        exs = [e for e in (self.plan.first_windows() if self.plan is not None else self.examples) if e.num_frames]
        return exs[::max(1, math.ceil(len(exs) / n))]

    def directions(self) -> Dict[str, Dict[str, List[str]]]:
        """``{task: {source language: [target languages]}}`` of the cross-lingual tasks."""
        if self.plan is not None:
            found = {(spec.task, lang, t) for s in self.plan.sources for spec in [self.plan.specs[s.spec_index]]
                     if tasks.get(spec.task).cross_lingual for lang in s.manifest["languages"]
                     if serves(spec, lang) for t in directions(spec, lang, s.manifest["translations"])}
        else:
            found = {(e.task, e.src_lang, e.tgt_lang) for e in self.examples if tasks.get(e.task).cross_lingual}
        out: Dict[str, Dict[str, List[str]]] = {}
        for task, src, tgt in sorted(found):
            out.setdefault(task, {}).setdefault(src, []).append(tgt)
        return out

    def _load_dirs(self, patterns: Sequence[str], data_root: Optional[str]) -> List[DataDir]:
        out = []
        for p in resolve_data_dirs(patterns, data_root):
            if p not in self.dir_index:
                self.dir_index[p] = len(self.dirs)
                self.dirs.append(DataDir.load(p))
            out.append(self.dirs[self.dir_index[p]])
        return out

    def _dev_examples(self, model, data_root, count_tokens) -> List[Example]:
        dev = self.stage.dev
        if not dev.data:
            return []
        out: List[Example] = []
        for spec in self.stage.tasks:
            dirs = self._load_dirs(dev.data, data_root)
            exs: List[Example] = []
            for d in dirs:
                if tasks.get(spec.task).speech and not d.has_audio():
                    continue
                try:
                    exs += build_examples(spec, [d], count_tokens, model.speech_embed_length,
                                          dir_offset=self.dir_index[d.path])
                except ConfigError:
                    continue  # a dev dir that does not serve this task (e.g. no translations)
            # A fixed, evenly spaced subset per task: deterministic and language-balanced enough.
            exs.sort(key=lambda e: e.key)
            n = dev.max_utts
            if len(exs) > n:
                exs = [exs[int(i)] for i in np.linspace(0, len(exs) - 1, n)]
            out += exs
        return out


@dataclass
class _StageRun:
    """What one stage's training steps share: the model and its optimizer state, data, counters."""

    stage: StageConfig
    seed: int
    model: Any
    names: List[str]  # trainable parameter names (checkpointed)
    params: List[torch.nn.Parameter]
    data: StageData
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    ckpts: CheckpointManager
    writer: Any = None
    reducer: Optional[dist_utils.GradReducer] = None  # ddp over several ranks: bucketed gradient sum
    step: int = 0
    # nonfinite_recent: the skipped steps of the last ``nan_window`` steps (the budget's window)
    stats: Dict[str, Any] = field(default_factory=lambda: {"nonfinite_skipped": 0, "nonfinite_recent": [],
                                                           "evals_since_best": 0})
    consecutive_bad: int = 0
    saved_step: Optional[int] = None
    # streaming: {reader: {group: position after its last consumed batch}} of this rank's readers
    stream_state: Dict[int, Dict[int, Tuple[int, int, int]]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
class Trainer:
    """Runs a :class:`Schedule` into an experiment directory."""

    def __init__(self, schedule: Schedule, model_cfg: Dict[str, Any], exp_dir: PathLike,
                 data_root: Optional[str] = None, device: Optional[str] = None, num_workers: int = 0,
                 features: str = "auto", amp: bool = True, tensorboard: bool = True,
                 strategy: str = "ddp", bucket_mb: float = 25.0) -> None:
        if strategy not in fsdp.STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r} ({' | '.join(fsdp.STRATEGIES)})")
        self.schedule = schedule
        self.model_cfg = model_cfg
        self.exp_dir = Path(exp_dir)
        self.data_root = data_root
        self.ctx = dist_utils.init()
        self.device = torch.device(device) if device else self.ctx.device
        self.sharded = strategy == "fsdp" and self.ctx.world_size > 1  # one process: nothing to shard
        self.bucket_mb = bucket_mb
        self.num_workers = num_workers
        self.features = features
        check_feature_mode(features)  # before any model or data is loaded
        self.amp = amp and self.device.type == "cuda"
        self.tensorboard = tensorboard
        self.stop = StopRequest(self.device)
        self._checked = False

    # -- model construction -----------------------------------------------------------------
    def stage_dir(self, stage: StageConfig) -> Path:
        return layout.stage_dir(self.exp_dir, stage.name)

    def model_dir(self, stage: StageConfig) -> Path:
        return layout.model_dir(self.exp_dir, stage.name)

    def _init_model(self, index: int):
        from partlib.models.speech_llm import SpeechLLM

        stage = self.schedule.stages[index]
        src = stage.init_from
        if src is None:
            model = SpeechLLM.from_config(self.model_cfg)
        else:
            if src == "previous":
                path = self.model_dir(self.schedule.stages[index - 1])
            else:
                names = self.schedule.stage_names()
                path = self.model_dir(self.schedule.stages[names.index(src)]) if src in names else Path(src)
            if not layout.is_exported(path) and not (path / "config.yaml").is_file():
                raise ConfigError(f"stage {stage.name}: init_from {src!r} -> {path} is not an exported model")
            model = SpeechLLM.from_pretrained(path)
        return model

    def check(self) -> None:
        """Before any output is written: check that the pretrained models the model config names
        are there, validate every stage's LoRA layer ranges against the LLM's depth (read from the
        LLM's config: no weights are loaded for this); warn about frozen pretrained encoders fed
        variable-length input. Done once (:meth:`run` calls it when nobody did)."""
        if self._checked:
            return
        self._checked = True
        for warning in frozen_encoder_warnings(self.schedule, self.model_cfg).values():
            logger.warning("%s", warning)
        if self.schedule.stages[0].init_from is not None:
            return
        from partlib.models.llm import llm_config
        from partlib.models.pretrained import require
        from partlib.models.schema import model_config

        cfg = model_config(self.model_cfg)
        sec = cfg.llm
        for name, key in ((cfg.encoder.path, "encoder.path"), (sec.path, "llm.path"), (sec.tokenizer, "llm.tokenizer")):
            require(name, key)
        n = int(llm_config(sec.path, sec.arch).num_hidden_layers)
        for stage in self.schedule.stages:
            if stage.uses_lora:
                for step in [0] + [a.step for a in stage.activation]:
                    active_layers_at(stage, step, n)

    # -- one stage ------------------------------------------------------------------------
    def run(self) -> List[Path]:
        """Train every stage not yet exported; return the exported model directories. SIGTERM or
        SIGUSR1 ends it with :class:`Preempted` once a checkpoint (or a stage's export) is written."""
        self.check()
        out = []
        with self.stop:
            for i, stage in enumerate(self.schedule.stages):
                if layout.is_exported(self.model_dir(stage)):
                    logger.info("stage %s: exported model exists, skipping", stage.name)
                else:
                    if self.stop.agreed():  # received during the previous stage's export
                        raise Preempted(f"stopped by {self.stop.name} before stage {stage.name}; "
                                        "rerun the same command to continue")
                    self.train_stage(i)
                out.append(self.model_dir(stage))
        return out

    def _set_trainable(self, model, stage: StageConfig, step: int) -> None:
        layers = active_layers_at(stage, step, model.num_llm_layers())
        if layers is not None and list(layers) != list(model.lora_active_layers):
            model.set_lora_active_layers(layers)
            logger.info("stage %s step %d: LoRA active on LLM layers %s", stage.name, step, layers)

    def initial_model(self, index: int):
        """Stage ``index``'s initial model with every LoRA layer of the stage active, built after
        seeding torch with the stage seed: the same weights on every call (and every rank). A
        checkpoint of the stage loads into it (``load_state_dict(state["model"], strict=False)``)."""
        stage = self.schedule.stages[index]
        torch.manual_seed(self.schedule.seed * 1000 + index)
        model = self._init_model(index)
        # Every parameter that trains at some step of the stage goes into the optimizer; LoRA layers
        # outside the active set simply have requires_grad=False (no grad, no update) until activated.
        apply_stage_trainable(model, stage)
        return model

    def train_stage(self, index: int) -> Path:
        stage = self.schedule.stages[index]
        sdir = self.stage_dir(stage)
        sdir.mkdir(parents=True, exist_ok=True)
        handler = _add_file_log(sdir / "train.log") if self.ctx.is_main else None
        try:
            return self._train_stage(index, stage, sdir)
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()

    def _train_stage(self, index: int, stage: StageConfig, sdir: Path) -> Path:
        run = self._start(index, stage, sdir)
        self._resume(run)
        accum = stage.accum_grad
        start, end = run.step * accum, stage.max_steps * accum
        # the loader's own generator: seeding its workers must not draw from the restored global RNG
        common = dict(batch_size=None, num_workers=self.num_workers, collate_fn=lambda x: x,
                      pin_memory=self.device.type == "cuda", persistent_workers=False,
                      worker_init_fn=ignore_stop_signals,
                      prefetch_factor=2 if self.num_workers else None,
                      generator=torch.Generator().manual_seed(run.seed))
        model = run.model
        spans = model.adapter.output_lengths(model.encoder.output_lengths(torch.arange(model.encoder.max_frames + 1)))
        tokens = PromptTokens(model.prompt, SpeechLengths(spans.numpy()))
        if run.data.plan is not None:
            loader = torch.utils.data.DataLoader(
                StreamDataset(run.data.plan, model.n_mels, self.ctx.rank, self.ctx.world_size, self.num_workers,
                              start, end, run.stream_state, stage.specaug, run.seed, tokens), **common)
        else:
            loader = torch.utils.data.DataLoader(
                BatchDataset(run.data.sampler, run.data.features, self.ctx.rank, self.ctx.world_size,
                             stage.specaug, run.seed, tokens), sampler=range(start, end), **common)
        batches = iter(loader)
        from tqdm import tqdm

        bar = tqdm(total=stage.max_steps, initial=run.step, desc=stage.name, disable=not self.ctx.is_main,
                   mininterval=5.0, dynamic_ncols=True)
        run.model.train()
        t0, first = time.time(), run.step
        # a run resumed after the evaluation that stopped it early (and its checkpoint) stops again
        stopped_early = bool(stage.dev.patience) and run.stats["evals_since_best"] >= stage.dev.patience
        try:
            while run.step < stage.max_steps and not stopped_early:
                self._set_trainable(run.model, stage, run.step)
                loss, grad_norm, n_tokens = self._optimizer_step(run, batches)
                run.step += 1
                bar.update(1)
                if self.ctx.is_main and (run.step % stage.log_interval == 0 or run.step == stage.max_steps):
                    self._log_step(run, loss, grad_norm, n_tokens, (run.step - first) / max(1e-9, time.time() - t0))
                stopped_early = self._periodic(run)
                if self.stop.agreed() and not stopped_early:  # an early stop exports now instead
                    self._save(run)
                    dist_utils.barrier()
                    bar.close()
                    if run.writer is not None:
                        run.writer.close()
                    raise Preempted(f"stage {stage.name}: stopped by {self.stop.name} after step {run.step} with "
                                    f"checkpoint {run.ckpts.dir / ckpt_name(run.step)}; "
                                    "rerun the same command to resume")
        finally:
            _close_loader(batches)
        bar.close()
        if run.writer is not None:
            run.writer.close()
        if run.reducer is not None:
            run.reducer.remove()
        if run.stats["nonfinite_skipped"]:
            logger.warning("stage %s: %d steps skipped for non-finite loss/gradients", stage.name,
                           run.stats["nonfinite_skipped"])
            if run.step < stage.nan_window:  # a stage shorter than the window: its steps are the window
                self._check_nonfinite_budget(run, run.stats["nonfinite_skipped"], run.step)
        self._save(run)
        dist_utils.barrier()
        model = run.model
        if self.sharded and self.ctx.is_main:  # export from an unsharded copy, same build as above
            model = self.initial_model(index)
        return self.export(model, stage, run.ckpts, run.data)

    def _start(self, index: int, stage: StageConfig, sdir: Path) -> _StageRun:
        """The stage's model (on its device, sharded under FSDP), data, optimizer, LR schedule,
        checkpoint manager and TensorBoard writer, at step 0."""
        seed = self.schedule.seed * 1000 + index
        np.random.seed(seed % 2**32)
        model = self.initial_model(index)  # seeds torch with the same seed
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"stage {stage.name}: nothing is trainable")
        self._set_trainable(model, stage, 0)
        if self.sharded:
            # fully_shard moves each unit to the device as it shards it (no full copy on one device)
            # and replaces the parameters: collect them again, in the same order.
            fsdp.shard(model, self.ctx.world_size, self.device, mixed_precision=self.amp,
                       accumulates=stage.accum_grad > 1)
            wanted = set(names)
            params = [p for n, p in model.named_parameters() if n in wanted]
            logger.info("stage %s: FSDP, parameters sharded over %d ranks%s", stage.name, self.ctx.world_size,
                        ", bf16 compute and reduction over float32 master weights" if self.amp else "")
        else:
            model.to(self.device)
        trainable, total = count_params(model)
        logger.info("stage %s: %d / %d parameters trainable (%.2f%%) at step 0; optimizer holds %d tensors",
                    stage.name, trainable, total, 100.0 * trainable / total, len(params))
        data = StageData(stage, model, self.data_root, self.schedule.seed, self.features, self.ctx.world_size)
        logger.info("stage %s: %s", stage.name, data.describe())
        opt, sched = optim.build(params, stage.optim, stage.scheduler, stage.max_steps)
        ckpts = CheckpointManager(sdir / "checkpoints", stage.keep_last, stage.dev.best_n,
                                  tasks.higher_is_better(stage.dev.metric), writer=self.ctx.is_main)
        if self.ctx.is_main:
            ckpts.remove_stale()
        writer = None
        if self.tensorboard and self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.exp_dir / "tensorboard" / stage.name))
        reducer = None
        if not self.sharded and self.ctx.world_size > 1:
            reducer = dist_utils.GradReducer(params, self.bucket_mb)
        return _StageRun(stage, seed, model, names, params, data, opt, sched, ckpts, writer, reducer)

    def _resume(self, run: _StageRun) -> None:
        """Continue from the stage's newest checkpoint, if there is one (parameters, optimizer,
        LR schedule, step, counters, RNG states, LoRA active set)."""
        # rank 0 picks the newest intact checkpoint (moving damaged ones aside) and verifies it once;
        # all load that one and take rank 0's best-N list. Its failure is every rank's (the others
        # must not wait for it forever).
        picked, error, best = None, None, []
        if self.ctx.is_main:
            try:
                picked = run.ckpts.resumable()
                best = run.ckpts.best()
            except (PartError, OSError) as e:
                error = str(e)
        picked, error, best = dist_utils.all_gather_object((picked, error, best))[0]
        if error is not None:
            raise PartError(error)
        run.ckpts.set_best(best)
        latest = picked
        if latest is None:
            return
        state = run.ckpts.load(latest, verify=False)
        if bool(state.get("sharded", False)) != self.sharded:
            raise PartError(f"{latest}: written {'with' if state.get('sharded') else 'without'} FSDP "
                            f"sharding; resume with the same --strategy (fsdp needs WORLD_SIZE > 1)")
        if self.sharded:
            if not state.get("shards"):
                raise PartError(f"{latest}: an FSDP checkpoint of full tensors (an earlier version); remove "
                                f"{latest.parent} to start the stage afresh")
            if state["world_size"] != self.ctx.world_size:
                raise PartError(f"{latest}: its shards are of {state['world_size']} FSDP ranks; resume with "
                                f"WORLD_SIZE={state['world_size']} (now {self.ctx.world_size})")
            fsdp.load_sharded(run.model, run.opt, self._kept(run), run.ckpts.dir / state["shards"])
        else:
            missing = set(run.names) - set(state["model"])
            if missing:
                raise PartError(f"{latest}: checkpoint lacks trainable parameters {sorted(missing)[:5]}...")
            run.model.load_state_dict(state["model"], strict=False)
            run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        loader = state.get("loader")
        if (loader is not None) != (run.data.plan is not None):
            raise PartError(f"{latest}: written {'with' if loader is not None else 'without'} streaming from "
                            f"shards; resume with the same --features")
        if loader is not None:
            if list(loader["layout"]) != self._stream_layout():
                w, n = loader["layout"]
                raise PartError(f"{latest}: the streaming data order was laid out for {w} process(es) x {n} "
                                f"reader(s) each; resume with WORLD_SIZE={w} and --num-workers {n if n > 1 else 0} "
                                f"(now {self.ctx.world_size} x {self._stream_layout()[1]})")
            if loader.get("fingerprint") != run.data.plan.fingerprint():
                raise PartError(f"{latest}: the stage's streaming data changed since this checkpoint (its groups, "
                                f"sampling.window, batch bounds, seed or shard exports): the saved reader positions "
                                f"do not apply; restore them, or remove {latest.parent} to start the stage afresh")
            run.stream_state = {int(r): v for r, v in loader["streams"].items()
                                if int(r) // self._stream_layout()[1] == self.ctx.rank}
        run.step, run.stats = state["step"], {**run.stats, **state["stats"]}
        run.saved_step = run.step  # its checkpoint exists: the end of the stage need not write it again
        set_rng_state(state["rng"])
        self._set_trainable(run.model, run.stage, run.step)
        logger.info("stage %s: resumed from %s at step %d", run.stage.name, latest.name, run.step)

    def _optimizer_step(self, run: _StageRun, batches: Iterator[Dict[str, Any]]) -> Tuple[float, float, int]:
        """One update from the next ``accum_grad`` micro-batches of this rank: summed token NLL back-propagated per
        micro-batch, gradients summed over ranks and divided by the global token count, clipped;
        a non-finite loss or gradient skips the update (``nan_patience`` in a row is an error).
        More than ``nan_max_fraction`` of a window of ``nan_window`` steps skipped is an error too.
        Returns (loss per token, gradient norm, global target tokens)."""
        stage, model = run.stage, run.model
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        n_tokens = torch.zeros((), device=self.device, dtype=torch.float64)
        for micro in range(stage.accum_grad):
            batch = _next_batch(batches)
            if "stream_state" in batch:
                reader, gid, pos = batch.pop("stream_state")
                run.stream_state.setdefault(reader, {})[gid] = pos
            batch = move_batch(batch, self.device)
            # 0 for the stand-in example of a rank whose slice of the global batch is empty
            weight = float(batch.get("loss_weight", 1.0))
            last = micro == stage.accum_grad - 1
            fsdp.set_gradient_sync(model, last)
            if run.reducer is not None and last:  # reduce buckets as the last backward fills them
                run.reducer.arm()
            with torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext():
                out = model(batch)
            (out["loss_sum"] * weight).backward()
            if weight:
                loss_sum += out["loss_sum"].detach().double() * weight
                n_tokens += float(out["n_tokens"]) * weight
        dist_utils.all_reduce_(loss_sum)
        dist_utils.all_reduce_(n_tokens)
        if run.reducer is not None:  # (FSDP has summed, reduce-scattered, the gradients in backward)
            run.reducer.finish()
        active = [p for p in run.params if p.grad is not None]
        for p in active:
            p.grad.div_(float(n_tokens.clamp(min=1)))
        grad_norm = float(fsdp.grad_norm(active, stage.clip_grad or 0.0))
        loss = float(loss_sum / n_tokens.clamp(min=1))
        if math.isfinite(loss) and math.isfinite(grad_norm):
            run.consecutive_bad = 0
            run.opt.step()
        else:
            run.consecutive_bad += 1
            run.stats["nonfinite_skipped"] += 1
            recent = [s for s in run.stats["nonfinite_recent"] if s > run.step - stage.nan_window] + [run.step]
            run.stats["nonfinite_recent"] = recent
            logger.warning("stage %s step %d: non-finite loss/gradient (%s, %s): step skipped (%d in a row)",
                           stage.name, run.step, loss, grad_norm, run.consecutive_bad)
            if run.consecutive_bad >= stage.nan_patience:
                raise NonFiniteLossError(f"stage {stage.name}: {run.consecutive_bad} consecutive non-finite "
                                         f"steps at step {run.step}; lower the learning rate or check the data")
            self._check_nonfinite_budget(run, len(recent), min(stage.nan_window, stage.max_steps))
        run.opt.zero_grad(set_to_none=True)
        run.sched.step()
        return loss, grad_norm, int(n_tokens)

    @staticmethod
    def _check_nonfinite_budget(run: _StageRun, skipped: int, steps: int) -> None:
        """Fail the stage when more than ``nan_max_fraction`` of ``steps`` steps were skipped."""
        stage = run.stage
        if skipped > stage.nan_max_fraction * steps:
            raise NonFiniteLossError(
                f"stage {stage.name}: {skipped} step(s) skipped for a non-finite loss or gradient by step {run.step}, "
                f"more than nan_max_fraction = {stage.nan_max_fraction} of {steps} steps (nan_window, or the stage "
                f"if shorter); no model is exported: lower the learning rate or check the data")

    def _log_step(self, run: _StageRun, loss: float, grad_norm: float, n_tokens: int, rate: float) -> None:
        lr = run.sched.get_last_lr()[0]
        logger.info("stage %s step %d/%d: loss %.4f, grad-norm %.3f, lr %.3g, tokens %d, %.2f steps/s",
                    run.stage.name, run.step, run.stage.max_steps, loss, grad_norm, lr, n_tokens, rate)
        if run.writer is not None:
            run.writer.add_scalar("train/loss", loss, run.step)
            run.writer.add_scalar("train/grad_norm", grad_norm, run.step)
            run.writer.add_scalar("train/lr", lr, run.step)

    def _periodic(self, run: _StageRun) -> bool:
        """Dev evaluation every ``dev.interval`` steps and at the end, checkpoints every
        ``save_interval`` steps and after each evaluation; True when early stopping ends the stage."""
        stage, step = run.stage, run.step
        interval = stage.dev.interval
        evaluate = bool(run.data.dev_examples) and ((interval and step % interval == 0) or step == stage.max_steps)
        metric = self.evaluate(run.model, run.data, stage, step, run.writer) if evaluate else None
        if metric is not None:  # counted before the checkpoint, which carries the counter
            run.ckpts.record_metric(metric, step)
            best = run.ckpts.best()
            run.stats["evals_since_best"] = 0 if best and best[0][1] == step else run.stats["evals_since_best"] + 1
        if step % stage.save_interval == 0 or evaluate:
            self._save(run)
        if metric is None or not stage.dev.patience or run.stats["evals_since_best"] < stage.dev.patience:
            return False
        logger.info("stage %s: early stop at step %d (no dev improvement in %d evaluations)",
                    stage.name, step, stage.dev.patience)
        return True

    def _save(self, run: _StageRun) -> None:
        """A checkpoint of the current step (once per step: the last one may be asked for twice)."""
        if run.saved_step == run.step:
            return
        run.saved_step = run.step
        model = run.model
        keep = self._kept(run)
        shards = None
        if self.sharded:  # every rank writes its own shards (a collective)
            shards = run.ckpts.shards_tmp(run.step)
            if self.ctx.is_main:  # the shards of a save cut short
                shutil.rmtree(shards, ignore_errors=True)
            dist_utils.barrier()
            fsdp.save_sharded(model, run.opt, keep, shards)
            shard_sums: Dict[str, str] = {}
            for part in dist_utils.all_gather_object(fsdp.own_shard_sums(shards, self.ctx.rank)):
                shard_sums.update(part)
        loader = None
        if run.data.plan is not None:  # every rank's reader positions (a collective too)
            streams: Dict[int, Dict[int, Tuple[int, int, int]]] = {}
            for part in dist_utils.all_gather_object(run.stream_state):
                streams.update(part)
            loader = {"layout": self._stream_layout(), "fingerprint": run.data.plan.fingerprint(), "streams": streams}
        if not self.ctx.is_main:
            return
        state = {"sharded": True, "world_size": self.ctx.world_size} if self.sharded else {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in keep},
            "optimizer": run.opt.state_dict(),
            "sharded": False,
        }
        state.update({
            "scheduler": run.sched.state_dict(),
            "step": run.step,
            "stats": run.stats,
            "rng": rng_state(),
            "lora_active_layers": list(model.lora_active_layers),
            "loader": loader,
        })
        run.ckpts.save(run.step, state, shards, shard_sums if self.sharded else None)

    @staticmethod
    def _kept(run: _StageRun) -> List[str]:
        """The model entries a checkpoint holds: trainable parameters and the buffers."""
        return sorted(set(run.names) | {n for n, _ in run.model.named_buffers()})

    def _stream_layout(self) -> List[int]:
        """What the streaming data order depends on besides the seed: [world size, workers]."""
        return [self.ctx.world_size, max(1, self.num_workers)]

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, data: StageData, stage: StageConfig, step: int, writer=None) -> float:
        """Dev loss over the dev subset, and a greedy decode (the decoding path,
        :func:`partlib.infer.decode.generate_hyps`) of the tasks with a dev metric (WER for asr,
        BLEU for s2tt, accuracy for lid: ``partlib.tasks``), scored by :func:`quick_scores`.

        Under ``ddp`` each rank evaluates every W-th example and the loss sums and hypotheses are
        gathered, so every rank returns the metric of the whole dev subset. Under ``fsdp`` every
        rank evaluates all of it: each layer's forward is a collective, which needs the same calls
        (and generated lengths) on every rank.

        Returns the value of ``dev.metric`` (lower is better for loss/wer, higher for bleu/accuracy).
        """
        from partlib.infer.decode import generate_hyps
        from partlib.train.quick_eval import quick_scores

        model.eval()
        exs = data.dev_examples
        split = not self.sharded and self.ctx.world_size > 1
        tot_loss = tot_tok = 0.0
        by_kind: Dict[bool, List[Example]] = {}
        for e in exs[self.ctx.rank::self.ctx.world_size] if split else exs:
            by_kind.setdefault(tasks.get(e.task).speech, []).append(e)
        for speech, part in by_kind.items():
            for i in range(0, len(part), _DEV_BATCH):
                chunk = part[i:i + _DEV_BATCH]
                feats = data.features.load([(e.dir_index, e.utt) for e in chunk]) if speech else None
                out = model(move_batch(collate(chunk, feats), self.device))
                tot_loss += float(out["loss_sum"])
                tot_tok += float(out["n_tokens"])
        hyps: Dict[str, str] = {}
        with fsdp.unsharded_root(model):  # generate bypasses the root forward
            for part in by_kind.values():
                scored = [e for e in part if tasks.get(e.task).dev_metric]
                hyps.update(generate_hyps(model, scored, data.features, batch_size=_DEV_BATCH).hyps)
        model.train()
        if split:
            sums = dist_utils.all_reduce_(torch.tensor([tot_loss, tot_tok], dtype=torch.float64, device=self.device))
            tot_loss, tot_tok = float(sums[0]), float(sums[1])
            for part in dist_utils.all_gather_object(hyps):
                hyps.update(part)
        scores = quick_scores(exs, hyps)
        scores["loss"] = tot_loss / max(1.0, tot_tok)
        msg = ", ".join(f"{k} {v:.4g}" for k, v in sorted(scores.items()))
        if self.ctx.is_main:
            logger.info("stage %s step %d: dev %s", stage.name, step, msg)
        if writer is not None:
            for k, v in scores.items():
                writer.add_scalar(f"dev/{k}", v, step)
        metric = stage.dev.metric
        if metric not in scores:
            raise ConfigError(f"stage {stage.name}: dev.metric {metric!r} needs dev examples of the matching task")
        return float(scores[metric])

    # -- export -----------------------------------------------------------------------------
    def _provenance(self, stage: StageConfig, checkpoints: List[int], data: Optional[StageData],
                    tokenizer) -> Dict[str, Any]:
        """What an exported folder says about itself (``info.json``): code, stage, data, tasks, and what
        inference bounds by the training data (longest utterance, target tokens per second)."""
        from partlib.scoring.results import git_commit

        summary = data.summary() if data is not None else {}
        pairs = data.directions() if data is not None else {}
        speech = data.speech_sample(_RATE_SAMPLE) if data is not None else []
        n_target = [len(ids) for ids in tokenizer([e.target for e in speech], add_special_tokens=False)["input_ids"]]
        rates = control.target_rates([(e.task, e.tgt_lang, n, e.num_frames / FRAMES_PER_SECOND)
                                      for e, n in zip(speech, n_target)])
        return {
            "experiment": self.exp_dir.name, "stage": stage.name, "description": self.schedule.description,
            "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tasks": [{"task": t.task, "weight": t.weight} for t in stage.tasks],
            "languages": sorted({lang for by_lang in summary.values() for lang in by_lang}),
            "target_languages": sorted({t for by_src in pairs.values() for ts in by_src.values() for t in ts}),
            "data": summary, "directions": pairs,
            "longest_utterance_s": data.longest_s() if data is not None else 0.0,
            "target_rates": rates,
            "checkpoints": checkpoints, "averaged": len(checkpoints) > 1,
            "stage_config": config.to_dict(stage), "scores": {},
        }

    def export(self, model, stage: StageConfig, ckpts: CheckpointManager, data: Optional[StageData] = None) -> Path:
        """Write ``<stage>/model``, a self-contained folder (every weight inside, LoRA merged; model
        card and provenance: :mod:`partlib.models.card`): the best checkpoint, or the average of the
        best N (on merged weights), or the last checkpoint when there is no dev set."""
        out = self.model_dir(stage)
        if not self.ctx.is_main:
            dist_utils.barrier()
            return out
        best = ckpts.best()
        n_avg = stage.dev.average_n
        chosen = [s for _, s in best[:n_avg]] if best else [ckpts.steps()[-1]]

        def write(tmp: Path) -> None:
            if len(chosen) == 1:
                model.load_state_dict(ckpts.model_state(ckpts.dir / ckpt_name(chosen[0])), strict=False)
                model.save_pretrained(tmp, merge_lora=True, self_contained=True)
            else:
                from partlib.train.average import average_merged

                paths = [ckpts.dir / ckpt_name(s) for s in chosen]
                for path in paths:  # all of them before the averaging starts
                    ckpts.verify(path)
                average_merged(model, paths, tmp, lambda path: ckpts.model_state(path, verify=False))
            card.write(tmp, self._provenance(stage, chosen, data, model.tokenizer), model.config)

        layout.write_exported(out, write)
        logger.info("stage %s: exported %s from checkpoint(s) %s", stage.name, out, chosen)
        dist_utils.barrier()
        return out
