"""The PART trainer: runs the alignment stages of a schedule one after the other.

For each stage: build the model (from the model config, the previous stage's exported model or a
model directory), set what is trainable, then optimise with a deterministic multi-task sampler,
gradient accumulation, clipping, a NaN/Inf guard, periodic dev evaluation, best-N checkpoints and
early stopping; finally export a ``from_pretrained`` model directory (``<exp>/<stage>/model``).
A stage is an objective of the training engine (:mod:`partlib.train.engine`: steps, checkpoints,
resume, preemption, the non-finite guard); its data is :mod:`partlib.train.stage_data`, its dev
evaluation :mod:`partlib.train.dev_eval`.

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
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from partlib import config
from partlib.common import ConfigError, PartError, PathLike, Preempted, get_logger
from partlib.data.streaming import SpeechLengths
from partlib.features.source import check_feature_mode
from partlib.features.whisper_mel import FRAMES_PER_SECOND
from partlib.infer import control
from partlib.models import card
from partlib.train import dev_eval
from partlib.train import distributed as dist_utils
from partlib.train import fsdp, layout, optim
from partlib.train.checkpoint import CheckpointManager, ckpt_name
from partlib.train.engine import Engine, Loss, Objective
from partlib.train.loader import PromptTokens, move_batch
from partlib.train.preemption import StopRequest, ignore_stop_signals
from partlib.train.schedule import (Schedule, StageConfig, active_layers_at, apply_stage_trainable,
                                    frozen_encoder_warnings)
from partlib.train.stage_data import StageData, make_stage_data

logger = get_logger("partlib.train")
_RATE_SAMPLE = 50000  # training targets tokenised for the output-rate bound of info.json


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def count_params(model: torch.nn.Module) -> Tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


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
# one stage as the engine's objective
# ---------------------------------------------------------------------------------------------
class _Stage(Objective):
    """One alignment stage of the schedule: the SpeechLLM's summed target-token NLL on the stage's
    task mixture, LoRA layers switched on by the activation schedule, dev evaluation with best-N
    and early stopping, streaming reader positions in the checkpoint."""

    def __init__(self, trainer: "Trainer", stage: StageConfig, seed: int, model, names: List[str],
                 params: List[torch.nn.Parameter], data: StageData, ckpts: CheckpointManager, writer=None) -> None:
        self.trainer, self.stage, self.steps, self.seed = trainer, stage, stage, seed
        self.name = f"stage {stage.name}"
        self.model, self.names, self.params, self.data = model, names, params, data
        self.ckpts, self.writer = ckpts, writer
        # streaming: {reader: {group: position after its last consumed batch}} of this rank's readers
        self.stream_state: Dict[int, Dict[int, Tuple[int, int, int]]] = {}

    def batches(self, start: int) -> Iterator[Dict[str, Any]]:
        t, model = self.trainer, self.model
        spans = model.adapter.output_lengths(model.encoder.output_lengths(torch.arange(model.encoder.max_frames + 1)))
        tokens = PromptTokens(model.prompt, SpeechLengths(spans.numpy()))
        dataset, sampler = self.data.dataset(t.ctx.rank, t.ctx.world_size, t.num_workers, start,
                                             self.stage.max_steps * self.stage.accum_grad, self.stream_state,
                                             self.stage.specaug, self.seed, tokens)
        # the loader's own generator: seeding its workers must not draw from the restored global RNG
        loader = torch.utils.data.DataLoader(
            dataset, sampler=sampler, batch_size=None, num_workers=t.num_workers, collate_fn=lambda x: x,
            pin_memory=t.device.type == "cuda", persistent_workers=False, worker_init_fn=ignore_stop_signals,
            prefetch_factor=2 if t.num_workers else None, generator=torch.Generator().manual_seed(self.seed))
        return iter(loader)

    def loss(self, batch: Dict[str, Any]) -> Loss:
        if "stream_state" in batch:
            reader, gid, pos = batch.pop("stream_state")
            self.stream_state.setdefault(reader, {})[gid] = pos
        batch = move_batch(batch, self.trainer.device)
        out = self.model(batch)
        # weight 0 for the stand-in example of a rank whose slice of the global batch is empty
        return Loss(out["loss_sum"], float(out["n_tokens"]), float(batch.get("loss_weight", 1.0)))

    def begin_step(self, step: int) -> None:
        self.trainer._set_trainable(self.model, self.stage, step)

    def after_step(self, step: int, loss: float, stats: Dict[str, Any]) -> bool:
        t = self.trainer
        metric = dev_eval.maybe_evaluate(self.model, self.data, self.stage, step, t.ctx, t.device, t.sharded,
                                         self.ckpts, stats, self.writer)
        if metric is not None and dev_eval.patience_exhausted(self.stage, stats):
            logger.info("stage %s: early stop at step %d (no dev improvement in %d evaluations)",
                        self.stage.name, step, self.stage.dev.patience)
        return metric is not None

    def stopped_early(self, stats: Dict[str, Any]) -> bool:
        return dev_eval.patience_exhausted(self.stage, stats)

    def log_step(self, step: int, loss: float, grad_norm: float, units: int, lr: float, rate: float) -> None:
        logger.info("stage %s step %d/%d: loss %.4f, grad-norm %.3f, lr %.3g, tokens %d, %.2f steps/s",
                    self.stage.name, step, self.stage.max_steps, loss, grad_norm, lr, units, rate)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/grad_norm", grad_norm, step)
            self.writer.add_scalar("train/lr", lr, step)

    def state_dict(self) -> Dict[str, Any]:
        loader = None
        if self.data.streaming:  # every rank's reader positions (a collective)
            streams: Dict[int, Dict[int, Tuple[int, int, int]]] = {}
            for part in dist_utils.all_gather_object(self.stream_state):
                streams.update(part)
            loader = {"layout": self.trainer._stream_layout(), "fingerprint": self.data.fingerprint(),
                      "streams": streams}
        return {"lora_active_layers": list(self.model.lora_active_layers), "loader": loader}

    def load_state_dict(self, state: Dict[str, Any], path) -> None:
        t = self.trainer
        loader = state.get("loader")
        if (loader is not None) != self.data.streaming:
            raise PartError(f"{path}: written {'with' if loader is not None else 'without'} streaming from "
                            f"shards; resume with the same --features")
        if loader is not None:
            if list(loader["layout"]) != t._stream_layout():
                w, n = loader["layout"]
                raise PartError(f"{path}: the streaming data order was laid out for {w} process(es) x {n} "
                                f"reader(s) each; resume with WORLD_SIZE={w} and --num-workers {n if n > 1 else 0} "
                                f"(now {t.ctx.world_size} x {t._stream_layout()[1]})")
            if loader.get("fingerprint") != self.data.fingerprint():
                raise PartError(f"{path}: the stage's streaming data changed since this checkpoint (its groups, "
                                f"sampling.window, batch bounds, seed or shard exports): the saved reader positions "
                                f"do not apply; restore them, or remove {path.parent} to start the stage afresh")
            self.stream_state = {int(r): v for r, v in loader["streams"].items()
                                 if int(r) // t._stream_layout()[1] == t.ctx.rank}
        t._set_trainable(self.model, self.stage, state["step"])

    def close(self, batches: Iterator[Dict[str, Any]]) -> None:
        _close_loader(batches)


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
        engine = self._start(index, stage, sdir)
        objective = engine.objective
        try:
            engine.run()
        finally:
            if objective.writer is not None:
                objective.writer.close()
        model = objective.model
        if self.sharded and self.ctx.is_main:  # export from an unsharded copy, same build as above
            model = self.initial_model(index)
        return self.export(model, stage, engine.ckpts, objective.data)

    def _start(self, index: int, stage: StageConfig, sdir: Path) -> Engine:
        """The stage's model (on its device, sharded under FSDP), data, optimizer, LR schedule,
        checkpoint manager and TensorBoard writer, at step 0, in the engine."""
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
        data = make_stage_data(stage, model, self.data_root, self.schedule.seed, self.features, self.ctx.world_size)
        logger.info("stage %s: %s", stage.name, data.describe())
        opt, sched = optim.build(params, stage.optim, stage.scheduler, stage.max_steps)
        ckpts = CheckpointManager(sdir / "checkpoints", stage.keep_last, stage.dev.best_n,
                                  dev_eval.higher_is_better(stage.dev.metric), writer=self.ctx.is_main)
        if self.ctx.is_main:
            ckpts.remove_stale()
        writer = None
        if self.tensorboard and self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.exp_dir / "tensorboard" / stage.name))
        reducer = None
        if not self.sharded and self.ctx.world_size > 1:
            reducer = dist_utils.GradReducer(params, self.bucket_mb)
        objective = _Stage(self, stage, seed, model, names, params, data, ckpts, writer)
        return Engine(objective, opt, sched, ckpts, self.stop, self.ctx, self.device, self.sharded, reducer,
                      self.amp, progress=self.ctx.is_main)

    def _stream_layout(self) -> List[int]:
        """What the streaming data order depends on besides the seed: [world size, workers]."""
        return [self.ctx.world_size, max(1, self.num_workers)]

    # -- export -----------------------------------------------------------------------------
    def _provenance(self, stage: StageConfig, checkpoints: List[int], data: Optional[StageData],
                    tokenizer) -> Dict[str, Any]:
        """What an exported folder says about itself (``info.json``): code, stage, data, tasks, and what
        inference bounds by the training data (longest utterance, target tokens per second)."""
        from partlib.provenance import git_commit

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
