"""PART training schedules: a YAML list of alignment stages, parsed and checked before any step runs.

A schedule file looks like::

    seed: 1
    defaults:                 # merged (recursively) into every stage
      optim: {lr: 1.0e-3, weight_decay: 0.01}
      scheduler: {type: cosine, warmup_steps: 50}
      batch: {max_frames: 20000, max_tokens: 6000}
    stages:
      - name: s1_enc_all
        max_steps: 400
        tasks:
          - {task: asr, weight: 1.0, data: ["train_*"]}
        trainable: {encoder: full, adapter: full, llm: frozen}
      - name: s2_joint_lora
        init_from: previous
        tasks:
          - {task: asr, weight: 1.0, data: ["train_*"]}
          - {task: s2tt, weight: 1.0, data: ["train_*"], tgt_langs: [en]}
        trainable: {encoder: full, adapter: full, llm: {lora: {r: 8, alpha: 16}}}
        activation:               # dynamic activation of LoRA layers inside the stage
          - {step: 0, layers: {top: 1}}
          - {step: 100, layers: all}

Every PART choice (tasks, mixture weights, what is trainable, when LoRA layers switch on) is a value
here; nothing in the trainer assumes a particular schedule.

The sections are typed (:class:`StageConfig` and the classes it holds; the trainable spec and the
layer-spec grammar are :mod:`partlib.models.schema`'s), with their defaults written once, here. A
schedule may start with ``base: <file>`` and state only what differs (stages merge by ``name``;
see :func:`partlib.config.merge`). Unknown keys, wrong types and out-of-range values anywhere are
errors naming the file and the key path (``stages[1].optim.lr_rate: unknown key (...)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from partlib import config, tasks
from partlib.common import ConfigError, PathLike
from partlib.config import Invalid
from partlib.data.batching import SpecAug
from partlib.data.examples import Patterns, TaskSpec
from partlib.models.schema import LayerSpec, Lora, Trainable, resolve_layers
from partlib.scoring import scorers
from partlib.train.optim import LRSchedule, Optim


@dataclass
class Batch:
    """Dynamic batches: limits on one *global* micro-batch, summed over all ranks.

    The padded log-mel frames (utterances × longest), padded LLM tokens (sequences × longest,
    counted by the prompt builder: :class:`partlib.models.prompt.PromptLengths`) and utterances
    of micro-batch ``m`` on all ranks together stay within these bounds; an optimizer step holds
    ``accum_grad`` such micro-batches. In memory, every rank draws the same global batch and takes
    its slice (the global batches are the same whatever the number of ranks; a rank whose slice is
    empty runs a weightless stand-in example, no part of the batch); streaming from
    shards, each rank's batch is cut to its share, ``bound // world_size``. The memory planner
    (:mod:`partlib.train.memory`) plans each GPU's part of a micro-batch at this budget.
    """

    max_frames: int = field(default=30000, metadata={"min": 1})
    max_tokens: int = field(default=8000, metadata={"min": 1})
    max_utts: int = field(default=256, metadata={"min": 1})


@dataclass
class Sampling:
    """Language sampling within a task: p ∝ n^(1/temperature); the shuffle buffer of streaming."""

    temperature: float = field(default=1.0, metadata={"gt": 0})
    # features=shards: utterances of one group a reader shuffles and buckets at a time
    window: int = field(default=2000, metadata={"min": 1})


@dataclass
class Dev:
    """Dev evaluation: which data, how often, which metric picks and averages checkpoints."""

    data: Patterns = field(default_factory=list)  # type: ignore[assignment]
    interval: int = field(default=0, metadata={"min": 0})  # 0: only at the end of the stage
    metric: str = "loss"  # loss or a task's dev metric (wer, bleu, accuracy): picks the best checkpoint
    max_utts: int = field(default=64, metadata={"min": 1})
    best_n: int = field(default=3, metadata={"min": 1})
    average_n: int = field(default=1, metadata={"min": 1})
    patience: int = field(default=0, metadata={"min": 0})  # early stop after this many evaluations without improvement

    def validate(self) -> None:
        if self.metric not in tasks.dev_metric_names():
            raise Invalid("metric", f"expected one of {' | '.join(tasks.dev_metric_names())}, got {self.metric!r}")
        if self.average_n > self.best_n:
            raise Invalid("average_n", f"averages the best {self.average_n} checkpoints but only best_n = "
                                       f"{self.best_n} are kept")


@dataclass
class Activation:
    """From ``step`` of the stage on, LoRA trains on ``layers`` (a layer spec)."""

    step: int = field(metadata={"min": 0})
    layers: LayerSpec  # type: ignore[valid-type]


@dataclass
class StageConfig:
    """One alignment stage: a task mixture, a trainable spec, an optimisation budget."""

    name: str
    tasks: List[TaskSpec]
    trainable: Trainable = field(default_factory=Trainable)
    init_from: Optional[str] = "previous"  # previous | a stage name | a model dir | null (the model config)
    max_steps: int = field(default=100, metadata={"min": 1})
    activation: List[Activation] = field(default_factory=list)  # dynamic activation of LoRA layers
    optim: Optim = field(default_factory=Optim)
    scheduler: LRSchedule = field(default_factory=LRSchedule)
    batch: Batch = field(default_factory=Batch)
    accum_grad: int = field(default=1, metadata={"min": 1})
    clip_grad: Optional[float] = field(default=1.0, metadata={"min": 0})  # 0 or null: no clipping
    specaug: Optional[SpecAug] = None
    sampling: Sampling = field(default_factory=Sampling)
    log_interval: int = field(default=10, metadata={"min": 1})
    save_interval: int = field(default=100, metadata={"min": 1})
    keep_last: int = field(default=3, metadata={"min": 1})
    # a non-finite loss or gradient skips the step; the stage fails at nan_patience skips in a row, or
    # when more than nan_max_fraction of the steps of any nan_window steps (the stage, if shorter) are
    # skipped
    nan_patience: int = field(default=5, metadata={"min": 1})
    nan_window: int = field(default=100, metadata={"min": 1})
    nan_max_fraction: float = field(default=0.05, metadata={"min": 0, "max": 1})
    dev: Dev = field(default_factory=Dev)

    def validate(self) -> None:
        if not self.name or "/" in self.name:
            raise Invalid("name", f"expected a name without '/', got {self.name!r}")
        if not self.tasks:
            raise Invalid("tasks", "required: at least one task")
        if self.activation and self.trainable.lora is None:
            raise Invalid("activation", "needs trainable.llm to be {lora: ...}")
        for spec in self.tasks:  # a task's scorer is known before anything trains (the registry is above tasks)
            task = tasks.get(spec.task)
            if task.scorer is not None:
                scorers.of_task(task)
        self.activation.sort(key=lambda a: a.step)

    @property
    def uses_lora(self) -> bool:
        """Whether the LLM trains through LoRA in this stage."""
        return self.trainable.lora is not None

    @property
    def lora(self) -> Optional[Lora]:
        """The stage's LoRA section (None without LoRA)."""
        return self.trainable.lora


@dataclass
class _ScheduleFile:
    """The top level of a schedule file; ``defaults`` holds StageConfig keys merged into every stage."""

    stages: List[Dict[str, Any]]
    seed: int = 1
    description: Optional[str] = None
    defaults: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Schedule:
    """A list of alignment stages trained one after the other."""

    seed: int
    stages: List[StageConfig]
    description: Optional[str] = None

    def stage_names(self) -> List[str]:
        return [s.name for s in self.stages]

    def to_dict(self) -> Dict[str, Any]:
        """The full, flattened schedule (defaults merged into every stage, every value stated)."""
        return config.to_dict(self)


def parse_schedule(cfg: Dict[str, Any], where: str = "schedule") -> Schedule:
    """Turn a schedule mapping into a checked :class:`Schedule` (raises :class:`ConfigError`)."""
    top = config.parse(_ScheduleFile, cfg, where)
    if not top.stages:
        raise ConfigError(f"{where}: stages: required: at least one stage")
    config.check_partial(StageConfig, top.defaults, where, "defaults")
    stages: List[StageConfig] = []
    for i, raw in enumerate(top.stages):
        path = f"stages[{i}]"
        config.check_partial(StageConfig, raw, where, path)  # errors at the stage's own key paths
        stage = config.parse(StageConfig, config.merge(top.defaults, raw), where, path)
        if stage.name in [s.name for s in stages]:
            raise ConfigError(f"{where}: {path}.name: {stage.name!r} is the name of an earlier stage")
        if i == 0 and stage.init_from == "previous":
            stage.init_from = None
        _check_init_from(stage, stages, where, path)
        stages.append(stage)
    return Schedule(seed=top.seed, stages=stages, description=top.description)


def _check_init_from(stage: StageConfig, earlier: List[StageConfig], where: str, path: str) -> None:
    """``init_from`` is null, ``previous``, an earlier stage or an existing model directory: a typo
    fails now, not after the stages before it have trained."""
    src = stage.init_from
    if src in (None, "previous") or src in [s.name for s in earlier]:
        return
    if not Path(src).is_dir():
        names = ", ".join(s.name for s in earlier) or "none"
        raise ConfigError(f"{where}: {path}.init_from: {src!r} is neither an earlier stage ({names}) "
                          f"nor a model directory")


def load_schedule(path: PathLike, overrides: Sequence[str] = (), merges: Sequence[PathLike] = ()) -> Schedule:
    """Load a schedule YAML file (``base:`` resolved), merge the ``merges`` files onto it in order
    (as ``base: [<path>, <merges>...]`` would), apply ``key.path=value`` overrides, check it."""
    cfg = config.load_file(path)
    for other in merges:
        cfg = config.merge(cfg, config.load_file(other))
    return parse_schedule(config.apply_overrides(cfg, overrides), where=str(path))


def active_layers_at(stage: StageConfig, step: int, num_layers: int) -> Optional[List[int]]:
    """LLM layers whose LoRA trains at ``step`` of the stage (None when the stage has no LoRA).

    Without an ``activation`` schedule, the LoRA ``layers`` option (default all) is active throughout.
    """
    if stage.lora is None:
        return None
    candidates = resolve_layers(stage.lora.layers, num_layers, f"stage {stage.name}: trainable.llm.lora.layers")
    if not stage.activation:
        return candidates
    current: List[int] = []
    for entry in stage.activation:
        if entry.step <= step:
            current = resolve_layers(entry.layers, num_layers, f"stage {stage.name}: activation")
    bad = set(current) - set(candidates)
    if bad:
        raise ConfigError(f"stage {stage.name}: activation names layers {sorted(bad)} outside lora.layers {candidates}")
    return current


def lora_layers_union(stage: StageConfig, num_layers: int) -> List[int]:
    """Every LLM layer whose LoRA trains at some step of the stage (the optimizer's LoRA set)."""
    if not stage.activation:
        return active_layers_at(stage, 0, num_layers) or []
    return sorted({l for a in stage.activation for l in active_layers_at(stage, a.step, num_layers) or []})


def apply_stage_trainable(model, stage: StageConfig) -> None:
    """Set what trains in ``stage`` on ``model``: its trainable spec, with every LoRA layer that is
    active at some step of the stage (the optimizer's set; the others wait with requires_grad=False)."""
    model.apply_trainable(stage.trainable)
    if stage.uses_lora:
        model.set_lora_active_layers(lora_layers_union(stage, model.num_llm_layers()))


def frozen_encoder_warnings(schedule: Schedule, model_cfg: Dict[str, Any]) -> Dict[str, str]:
    """``{stage: warning}`` for the stages that keep a pretrained Whisper encoder frozen, untouched by
    the stages before them, while feeding it variable-length input (``encoder.pad_to_30s: false``):
    a frozen Whisper's states then drift from its 30 s padded ones (egs/README.md, "Frozen encoders
    and variable length"). Stages after one that trained the encoder are not warned about."""
    enc = model_cfg.get("encoder", {})
    if not enc.get("path") or enc.get("pad_to_30s"):
        return {}
    out: Dict[str, str] = {}
    trained = False
    for stage in schedule.stages:
        if stage.init_from is None:
            trained = False
        if stage.trainable.encoder == "frozen" and not trained:
            out[stage.name] = (
                f"stage {stage.name}: the pretrained encoder stays frozen but gets variable-length input "
                f"(encoder.pad_to_30s: false); its states differ from the 30 s padded ones it was trained "
                f"on: train the encoder or set pad_to_30s: true (egs/README.md, 'Frozen encoders and "
                f"variable length')")
        trained = trained or stage.trainable.encoder != "frozen"
    return out
