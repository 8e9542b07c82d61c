"""PART training schedules: a YAML list of alignment stages, parsed and checked before any step runs.

A schedule file looks like::

    seed: 1
    defaults:                 # merged (recursively) into every stage
      optim: {lr: 1.0e-3, weight_decay: 0.01}
      scheduler: {type: cosine, warmup_steps: 50}
      batch: {max_frames: 20000, max_tokens: 6000}
    stages:
      - name: stage1_within
        max_steps: 400
        tasks:
          - {task: asr, weight: 1.0, data: ["train_*"]}
        trainable: {encoder: full, adapter: full, llm: frozen}
      - name: stage2_cross
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
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from partlib import tasks
from partlib.common import ConfigError, PathLike
from partlib.data.examples import TaskSpec

MODULES = ("encoder", "adapter", "llm")

STAGE_DEFAULTS: Dict[str, Any] = {
    "init_from": "previous",
    "max_steps": 100,
    "activation": [],
    "optim": {"type": "adamw", "lr": 1.0e-3, "weight_decay": 0.01, "betas": [0.9, 0.98], "eps": 1.0e-8},
    "scheduler": {"type": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.0},
    "batch": {"max_frames": 30000, "max_tokens": 8000, "max_utts": 256},
    "accum_grad": 1,
    "clip_grad": 1.0,
    "specaug": None,
    "sampling": {"temperature": 1.0},
    "log_interval": 10,
    "save_interval": 100,
    "keep_last": 3,
    "nan_patience": 5,
    "dev": {
        "data": [],
        "interval": 0,  # 0: only at the end of the stage
        "metric": "loss",  # loss or a task's dev metric (wer, bleu, accuracy): picks the best checkpoint
        "max_utts": 64,
        "best_n": 3,
        "average_n": 1,
        "patience": 0,  # early stopping after this many dev evaluations without improvement; 0: off
    },
}


@dataclass
class StageConfig:
    """One alignment stage: a task mixture, a trainable spec, an optimisation budget."""

    name: str
    init_from: Optional[str]
    max_steps: int
    tasks: List[TaskSpec]
    trainable: Dict[str, Any]
    activation: List[Dict[str, Any]]
    optim: Dict[str, Any]
    scheduler: Dict[str, Any]
    batch: Dict[str, Any]
    accum_grad: int
    clip_grad: float
    specaug: Optional[Dict[str, Any]]
    sampling: Dict[str, Any]
    log_interval: int
    save_interval: int
    keep_last: int
    nan_patience: int
    dev: Dict[str, Any]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def uses_lora(self) -> bool:
        llm = self.trainable.get("llm", "frozen")
        return isinstance(llm, dict) and "lora" in llm


@dataclass
class Schedule:
    """A list of alignment stages trained one after the other."""

    seed: int
    stages: List[StageConfig]
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    def stage_names(self) -> List[str]:
        return [s.name for s in self.stages]


def deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_by_path(cfg: Dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``cfg['a']['b'][0]['c'] = value`` from ``'a.b.0.c'`` (list indices are integers)."""
    keys = dotted.split(".")
    node: Any = cfg
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            try:
                idx = int(key)
                node[idx]
            except (ValueError, IndexError):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a valid list index") from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(f"override {dotted!r}: cannot descend into a {type(node).__name__}")


def apply_overrides(cfg: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``key.path=value`` strings (values parsed as YAML) to a config dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, value = item.split("=", 1)
        set_by_path(cfg, key.strip(), yaml.safe_load(value))
    return cfg


def load_yaml(path: PathLike) -> Dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return cfg


def _check_trainable(spec: Any, where: str) -> Dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: 'trainable' must be a mapping of {list(MODULES)}")
    unknown = set(spec) - set(MODULES)
    if unknown:
        raise ConfigError(f"{where}: trainable names unknown module(s) {sorted(unknown)}; known: {list(MODULES)}")
    enc = spec.get("encoder", "frozen")
    if not (enc in ("frozen", "full") or (isinstance(enc, dict) and set(enc) == {"top_k"} and int(enc["top_k"]) >= 0)):
        raise ConfigError(f"{where}: trainable.encoder must be frozen | full | {{top_k: N}}, got {enc!r}")
    if spec.get("adapter", "full") not in ("frozen", "full"):
        raise ConfigError(f"{where}: trainable.adapter must be frozen | full, got {spec.get('adapter')!r}")
    llm = spec.get("llm", "frozen")
    if not (llm in ("frozen", "full") or (isinstance(llm, dict) and set(llm) == {"lora"})):
        raise ConfigError(f"{where}: trainable.llm must be frozen | full | {{lora: {{...}}}}, got {llm!r}")
    if isinstance(llm, dict):
        lora = llm["lora"] or {}
        allowed = {"r", "alpha", "dropout", "target_modules", "layers"}
        if set(lora) - allowed:
            raise ConfigError(f"{where}: unknown LoRA option(s) {sorted(set(lora) - allowed)}; known: {sorted(allowed)}")
    return {"encoder": enc, "adapter": spec.get("adapter", "full"), "llm": llm}


def _check_task(t: Any, where: str) -> TaskSpec:
    if not isinstance(t, dict) or "task" not in t:
        raise ConfigError(f"{where}: each task needs at least 'task' and 'data'")
    try:
        task = tasks.get(t["task"])
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    unknown = set(t) - {"task", "weight", "data", "langs", "tgt_langs", "directions"}
    if unknown:
        raise ConfigError(f"{where}: unknown task option(s) {sorted(unknown)}")
    data = t.get("data")
    if isinstance(data, str):
        data = [data]
    if not data:
        raise ConfigError(f"{where}: task {t['task']!r} has no 'data'")
    weight = float(t.get("weight", 1.0))
    if weight <= 0:
        raise ConfigError(f"{where}: task weight must be positive, got {weight}")
    if not task.cross_lingual and (t.get("tgt_langs") or t.get("directions")):
        raise ConfigError(f"{where}: task {t['task']!r} is within-language; tgt_langs/directions do not apply")
    return TaskSpec(
        task=t["task"], weight=weight, data=list(data), langs=t.get("langs"),
        tgt_langs=t.get("tgt_langs"), directions=t.get("directions"),
    )


def parse_schedule(cfg: Dict[str, Any], where: str = "schedule") -> Schedule:
    """Turn a schedule mapping into a checked :class:`Schedule` (raises :class:`ConfigError`)."""
    unknown = set(cfg) - {"seed", "defaults", "stages", "description"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)}")
    stages_raw = cfg.get("stages")
    if not stages_raw:
        raise ConfigError(f"{where}: no stages")
    defaults = deep_merge(STAGE_DEFAULTS, cfg.get("defaults") or {})
    stages: List[StageConfig] = []
    names = set()
    for i, raw in enumerate(stages_raw):
        s = deep_merge(defaults, raw)
        w = f"{where}: stage {i} ({s.get('name', '?')})"
        known = set(STAGE_DEFAULTS) | {"name", "tasks", "trainable"}
        if set(s) - known:
            raise ConfigError(f"{w}: unknown key(s) {sorted(set(s) - known)}")
        name = s.get("name")
        if not name or not isinstance(name, str) or "/" in name or name in names:
            raise ConfigError(f"{w}: every stage needs a unique 'name' without '/'")
        names.add(name)
        specs = [_check_task(t, w) for t in (s.get("tasks") or [])]
        if not specs:
            raise ConfigError(f"{w}: no tasks")
        trainable = _check_trainable(s.get("trainable", {}), w)
        init_from = s.get("init_from")
        if i == 0 and init_from == "previous":
            init_from = None
        max_steps = int(s["max_steps"])
        if max_steps <= 0:
            raise ConfigError(f"{w}: max_steps must be positive")
        activation = sorted(s.get("activation") or [], key=lambda a: int(a.get("step", 0)))
        for a in activation:
            if set(a) != {"step", "layers"}:
                raise ConfigError(f"{w}: each activation entry is {{step: N, layers: ...}}, got {a!r}")
        if activation and not isinstance(trainable["llm"], dict):
            raise ConfigError(f"{w}: 'activation' needs trainable.llm to be {{lora: ...}}")
        if int(s["accum_grad"]) < 1:
            raise ConfigError(f"{w}: accum_grad must be >= 1")
        if s["dev"]["metric"] not in tasks.dev_metric_names():
            raise ConfigError(f"{w}: dev.metric must be {' | '.join(tasks.dev_metric_names())}")
        if s["scheduler"].get("type", "cosine") not in ("cosine", "linear", "constant"):
            raise ConfigError(f"{w}: scheduler.type must be cosine | linear | constant")
        stages.append(
            StageConfig(
                name=name, init_from=init_from, max_steps=max_steps, tasks=specs, trainable=trainable,
                activation=activation, optim=s["optim"], scheduler=s["scheduler"], batch=s["batch"],
                accum_grad=int(s["accum_grad"]), clip_grad=float(s["clip_grad"] or 0.0),
                specaug=s.get("specaug"), sampling=s["sampling"], log_interval=int(s["log_interval"]),
                save_interval=int(s["save_interval"]), keep_last=int(s["keep_last"]),
                nan_patience=int(s["nan_patience"]), dev=s["dev"], raw=s,
            )
        )
    return Schedule(seed=int(cfg.get("seed", 1)), stages=stages, raw=cfg)


def load_schedule(path: PathLike, overrides: Sequence[str] = ()) -> Schedule:
    """Load, override (``key.path=value``) and check a schedule YAML file."""
    cfg = apply_overrides(load_yaml(path), overrides)
    return parse_schedule(cfg, where=str(path))


def resolve_layers(spec: Union[str, int, List[int], Dict[str, int], None], num_layers: int, where: str) -> List[int]:
    """Resolve a layer spec to sorted indices: ``all``, ``[0, -1]`` (negative = from the top),
    ``{top: N}``, ``{bottom: N}`` or ``{top_frac: F}`` (the top ``round(F·L)`` of L layers, ≥ 1).
    Out-of-range indices raise :class:`ConfigError`."""
    if spec is None or spec == "all":
        return list(range(num_layers))
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in ("top", "bottom", "top_frac"):
            raise ConfigError(f"{where}: layer spec must be all | [indices] | {{top: N}} | {{bottom: N}} | "
                              f"{{top_frac: F}}, got {spec!r}")
        kind, n = next(iter(spec.items()))
        if kind == "top_frac":  # a fraction of the LLM's layers, at least one: size-independent presets
            if not 0 < float(n) <= 1:
                raise ConfigError(f"{where}: top_frac must be in (0, 1], got {n!r}")
            kind, n = "top", max(1, round(float(n) * num_layers))
        n = int(n)
        if not 0 <= n <= num_layers:
            raise ConfigError(f"{where}: {kind}: {n} is out of range for an LLM with {num_layers} layers")
        return list(range(num_layers - n, num_layers)) if kind == "top" else list(range(n))
    if isinstance(spec, int):
        spec = [spec]
    if not isinstance(spec, list):
        raise ConfigError(f"{where}: layer spec must be all | [indices] | {{top: N}}, got {spec!r}")
    out = set()
    for idx in spec:
        i = int(idx)
        if not -num_layers <= i < num_layers:
            raise ConfigError(f"{where}: LoRA layer index {i} is out of range for an LLM with {num_layers} layers")
        out.add(i % num_layers)
    return sorted(out)


def active_layers_at(stage: StageConfig, step: int, num_layers: int) -> Optional[List[int]]:
    """LLM layers whose LoRA trains at ``step`` of the stage (None when the stage has no LoRA).

    Without an ``activation`` schedule, the LoRA ``layers`` option (default all) is active throughout.
    """
    if not stage.uses_lora:
        return None
    lora = stage.trainable["llm"]["lora"] or {}
    candidates = resolve_layers(lora.get("layers", "all"), num_layers, f"stage {stage.name}: lora.layers")
    if not stage.activation:
        return candidates
    current: List[int] = []
    for entry in stage.activation:
        if int(entry["step"]) <= step:
            current = resolve_layers(entry["layers"], num_layers, f"stage {stage.name}: activation")
    bad = set(current) - set(candidates)
    if bad:
        raise ConfigError(f"stage {stage.name}: activation names layers {sorted(bad)} outside lora.layers {candidates}")
    return current


def lora_layers_union(stage: StageConfig, num_layers: int) -> List[int]:
    """Every LLM layer whose LoRA trains at some step of the stage (the optimizer's LoRA set)."""
    if not stage.activation:
        return active_layers_at(stage, 0, num_layers) or []
    return sorted({l for a in stage.activation for l in active_layers_at(stage, int(a["step"]), num_layers) or []})
