"""Predict the peak GPU memory of every stage of a schedule before training (no weights needed).

    python -m partlib.bin.plan --model-config conf/model.yaml --schedule conf/schedule_part.yaml \\
        [--schedule conf/schedule_joint_lora.yaml ...] [--merge conf/paper_scale.yaml] \\
        [--gpus 1 8] [--gpu-mem 80] [--strategy ddp|fsdp] [--dtype bf16|fp32] [--grad-ckpt on|off] \\
        [--utt-seconds 10] [--format text|markdown|json|table] [--check] [--output FILE]

The model is built on the meta device from architecture configs: a ``path`` that is a local
checkpoint directory gives its config.json, a hub id the bundled config of that model
(``partlib/models/configs``). For each stage: parameters (total, trainable) per module; memory per
GPU split into weights, gradients, optimizer state, activations, the loss's gradients and the
optimizer's temporaries (``partlib.train.memory.Plan`` says how they add up), with and without
gradient checkpointing, at the stage's batch budget (global ``max_frames`` /
``max_tokens`` / ``max_utts``, split over the GPUs); whether it fits in ``--gpu-mem`` GiB; the
largest ``max_frames`` that fits. ``--grad-ckpt`` picks the setting that ``fits`` and ``--check``
judge (default: the model config's ``gradient_checkpointing``). ``--check`` exits with status 1
and a message naming the stage when one does not fit. Several ``--schedule`` files and several
``--gpus`` counts are planned in one run; ``--merge`` files are merged onto every schedule as a
recipe's ``base: [<schedule>, <file>]`` does (e.g. the paper-scale batches of TEMPLATE's
``conf/paper_scale.yaml``). ``--format table``: one row per stage, the peak of every GPU count side
by side (the tables of egs/README.md). Method and validation: ``partlib.train.memory``,
``bench/memory_plan.py``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

from partlib.bin import add_training_options, cli, positive_float, positive_int
from partlib.common import ConfigError, atomic_write, get_logger

logger = get_logger("partlib.bin.plan")
MEMORY_KEYS = ("weights", "grads", "optimizer", "activations", "loss_grads", "step_temps", "held_grads", "peak")


def _trainable(stage) -> str:
    t = stage.trainable
    llm = "LoRA" if stage.lora is not None else t.llm
    enc = t.encoder if isinstance(t.encoder, str) else f"top {t.encoder.top_k}"
    return f"encoder {enc}, adapter {t.adapter}, llm {llm}"


def _schedule_name(path: Path) -> str:
    """``conf/schedule_part.yaml`` -> ``part``: the name the recipes' --schedules use."""
    return path.stem[len("schedule_"):] if path.stem.startswith("schedule_") else path.stem


def plan_schedule(model_cfg: dict, schedule, setup, utt_seconds: float, gpu_bytes: float,
                  grad_ckpt: Optional[bool], probes: Optional[Dict] = None) -> List[Dict]:
    """One record per stage: its :class:`~partlib.train.memory.StagePlan`, the setting judged
    (``grad_ckpt`` or the model config's), warnings, the GPU count. ``probes``: see
    ``memory.plan_stage`` (kept across schedules: each starts from a fresh model, without LoRA, as
    its training does)."""
    from partlib.train import memory
    from partlib.train.schedule import frozen_encoder_warnings

    model = memory.meta_model(model_cfg)
    judged = "on" if memory.checkpointed_parts(model_cfg, grad_ckpt) else "off"
    warnings = frozen_encoder_warnings(schedule, model_cfg)
    return [{"stage": stage, "plan": memory.plan_stage(model, stage, setup, gpu_bytes, utt_seconds, probes),
             "judged": judged, "warning": warnings.get(stage.name), "gpus": setup.gpus}
            for stage in schedule.stages]


def _row(rec: Dict, name: str, gpu_bytes: float) -> Dict:
    from partlib.train.memory import GIB

    p = rec["plan"].plans[name]
    return {**{k: getattr(p, k) / GIB for k in MEMORY_KEYS}, "fits": p.fits(gpu_bytes),
            "max_frames": rec["plan"].max_frames[name], "batch": p.shape.describe()}


def _setup_line(setup, gpu_mem: float) -> str:
    return (f"{setup.gpus} GPU(s) x {gpu_mem:g} GiB, {setup.strategy}, "
            f"{'bf16 autocast' if setup.device == 'cuda' else 'float32'}; memory per GPU in GiB")


def render_text(records: List[Dict], setups: List, gpu_mem: float) -> str:
    from partlib.train.memory import fmt_params

    gpu_bytes = gpu_mem * 2 ** 30
    out: List[str] = []
    for setup in setups:
        out.append(("\n" if out else "") + _setup_line(setup, gpu_mem))
        schedule = None
        for rec in (r for r in records if r["gpus"] == setup.gpus):
            if len({r["path"] for r in records}) > 1 and rec["path"] != schedule:
                schedule = rec["path"]
                out.append(f"\n== schedule {schedule}")
            stage, params = rec["stage"], rec["plan"].plans["off"].params
            shapes = {name: p.shape for name, p in rec["plan"].plans.items()}
            out.append(f"\nstage {stage.name} ({_trainable(stage)}); largest batch per GPU: {shapes['off'].describe()}"
                       + ("" if shapes["on"] == shapes["off"] else f" (with checkpointing: {shapes['on'].describe()})"))
            out.append(f"  {'parameters':<12}{'total':>10}{'trainable':>11}")
            for part in params.total:
                out.append(f"  {part:<12}{fmt_params(params.total[part]):>10}{fmt_params(params.trainable[part]):>11}")
            out.append(f"  {'checkpointing':<15}" + "".join(f"{k:>12}" for k in MEMORY_KEYS)
                       + f"{'fits':>6}{'max_frames':>13}")
            for name in ("on", "off"):
                r = _row(rec, name, gpu_bytes)
                mark = " *" if name == rec["judged"] else ""
                out.append(f"  {name + mark:<15}" + "".join(f"{r[k]:>12.1f}" for k in MEMORY_KEYS)
                           + f"{('yes' if r['fits'] else 'NO'):>6}{r['max_frames']:>13}")
            if rec["warning"]:
                out.append(f"  warning: {rec['warning']}")
    out.append("\n* the setting of the model config (or --grad-ckpt); peak = weights + optimizer + "
               "max(held_grads + activations + loss_grads, grads + step_temps), held_grads: the gradients of "
               "earlier micro-batches (accum_grad > 1; unsharded under FSDP); "
               "max_frames: the largest global batch budget that fits (max_tokens and max_utts scaled alike)")
    return "\n".join(out)


def render_markdown(records: List[Dict], gpu_mem: float) -> str:
    gpu_bytes = gpu_mem * 2 ** 30
    head = ("| schedule | GPUs | stage | trainable | checkpointing | largest batch per GPU | weights | grads | "
            "optimizer | activations | loss grads | step temps | held grads | peak | fits | largest max_frames |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for rec in records:
        for name in ("on", "off"):
            r = _row(rec, name, gpu_bytes)
            lines.append(f"| {rec['schedule']} | {rec['gpus']} | {rec['stage'].name} | {_trainable(rec['stage'])} | "
                         f"{name} | {r['batch']} | " + " | ".join(f"{r[k]:.1f}" for k in MEMORY_KEYS)
                         + f" | {'yes' if r['fits'] else '**no**'} | {r['max_frames']} |")
    return "\n".join(lines)


def render_table(records: List[Dict], setups: List, gpu_mem: float) -> str:
    """One row per stage; per GPU count the peak with checkpointing on / off (bold: over
    ``gpu_mem``), whether the judged setting fits, and its largest global max_frames."""
    gpu_bytes = gpu_mem * 2 ** 30
    names = {s.gpus: f"{s.gpus} GPU" + ("" if s.gpus == 1 else f"s ({s.strategy})") for s in setups}
    head = "| schedule | stage | trains | " + " | ".join(
        f"{names[s.gpus]}: peak GiB, ckpt on / off | fits | largest max_frames" for s in setups) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by_key = {(r["path"], r["stage"].name, r["gpus"]): r for r in records}
    first = setups[0].gpus
    for rec in (r for r in records if r["gpus"] == first):
        cells = [rec["schedule"], rec["stage"].name, _trainable(rec["stage"])]
        for s in setups:
            other = by_key[(rec["path"], rec["stage"].name, s.gpus)]
            rows = {name: _row(other, name, gpu_bytes) for name in ("on", "off")}
            peaks = " / ".join(f"{r['peak']:.1f}" if r["fits"] else f"**{r['peak']:.1f}**" for r in rows.values())
            judged = rows[other["judged"]]
            cells += [peaks, "yes" if judged["fits"] else "**no**", f"{judged['max_frames']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_json(records: List[Dict], gpu_mem: float) -> str:
    gpu_bytes = gpu_mem * 2 ** 30
    out = []
    for rec in records:
        p = rec["plan"].plans["off"].params
        out.append({"schedule": rec["schedule"], "gpus": rec["gpus"], "stage": rec["stage"].name,
                    "trainable": _trainable(rec["stage"]),
                    "parameters": {k: {"total": p.total[k], "trainable": p.trainable[k]} for k in p.total},
                    "judged": rec["judged"], "warning": rec["warning"],
                    "checkpointing": {name: _row(rec, name, gpu_bytes) for name in ("on", "off")}})
    return json.dumps(out, indent=1)


@cli
def main(argv: Optional[List[str]] = None) -> int:
    from partlib.models.schema import load_model_config
    from partlib.train import memory
    from partlib.train.schedule import load_schedule

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", type=Path, required=True)
    p.add_argument("--schedule", type=Path, action="append", required=True,
                   help="a schedule to plan; repeatable (each is planned in turn)")
    p.add_argument("--merge", type=Path, action="append", default=[], metavar="FILE",
                   help="a config merged onto every schedule, as a recipe's base: [<schedule>, FILE] "
                        "(e.g. TEMPLATE's conf/paper_scale.yaml); repeatable")
    p.add_argument("--gpus", type=positive_int, nargs="+", default=[1],
                   help="GPUs the global batch is split over; several counts are planned side by side")
    p.add_argument("--gpu-mem", type=positive_float, default=80.0, help="memory per GPU, GiB")
    p.add_argument("--dtype", choices=("bf16", "fp32"), help="compute: bf16 autocast (the trainer on GPU; "
                   "default unless llm.autocast is false) or float32 (LLM weights in float32 too)")
    p.add_argument("--grad-ckpt", choices=("on", "off"), help="the setting judged (default: the model config's)")
    p.add_argument("--utt-seconds", type=positive_float, default=10.0, help="utterance duration of the speech batches")
    p.add_argument("--format", choices=("text", "markdown", "json", "table"), default="text",
                   help="table: one markdown row per stage, the GPU counts side by side")
    p.add_argument("--check", action="store_true", help="exit 1 when a stage does not fit")
    p.add_argument("--output", type=Path, help="write the report here (atomically) instead of stdout")
    add_training_options(p)
    p.set_defaults(strategy=None)  # unless given: the strategy of --train-args (default ddp, as training)
    p.add_argument("--train-args", default="", metavar="ARGS",
                   help="options of a partlib.bin.train command: its --set, --model-set and --strategy "
                        "apply (before this command's own), the others are ignored")
    args = p.parse_args(argv)
    shared = argparse.ArgumentParser(add_help=False)
    add_training_options(shared)
    train, _ = shared.parse_known_args(shlex.split(args.train_args))
    args.overrides = [*train.overrides, *args.overrides]
    args.model_overrides = [*train.model_overrides, *args.model_overrides]
    args.strategy = args.strategy or train.strategy
    model_cfg = load_model_config(args.model_config, args.model_overrides)
    schedules = [(path, load_schedule(path, args.overrides, args.merge)) for path in args.schedule]
    amp = model_cfg["llm"].get("autocast", True) if args.dtype is None else args.dtype == "bf16"
    if args.dtype == "fp32":
        model_cfg["llm"]["dtype"] = "float32"
    setups = [memory.Setup(gpus=g, strategy=args.strategy, device="cuda" if amp else "cpu")
              for g in dict.fromkeys(args.gpus)]
    grad_ckpt = None if args.grad_ckpt is None else args.grad_ckpt == "on"
    gpu_bytes = args.gpu_mem * 2 ** 30
    probes: Dict = {}  # one probe per trainable state and sequence shape, whatever the schedule and GPU count
    records = []
    for setup in setups:
        for path, schedule in schedules:
            for rec in plan_schedule(model_cfg, schedule, setup, args.utt_seconds, gpu_bytes, grad_ckpt, probes):
                records.append({**rec, "path": path, "schedule": _schedule_name(path)})
    report = {"text": lambda: render_text(records, setups, args.gpu_mem),
              "markdown": lambda: render_markdown(records, args.gpu_mem),
              "json": lambda: render_json(records, args.gpu_mem),
              "table": lambda: render_table(records, setups, args.gpu_mem)}[args.format]()
    if args.output:
        atomic_write(args.output, report + "\n")
    else:
        print(report)
    for rec in records:
        if rec["warning"] and rec["gpus"] == setups[0].gpus:
            logger.warning("%s", rec["warning"])
    if args.check:
        for rec in records:
            r = _row(rec, rec["judged"], gpu_bytes)
            if not r["fits"]:
                raise ConfigError(
                    f"{rec['path']}: stage {rec['stage'].name} needs {r['peak']:.1f} GiB per GPU "
                    f"(predicted; gradient checkpointing {rec['judged']}) but {rec['gpus']} GPU(s) have "
                    f"{args.gpu_mem:g} GiB: set batch.max_frames <= {r['max_frames']} (and raise accum_grad "
                    f"to keep the batch), use more GPUs or --strategy fsdp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
