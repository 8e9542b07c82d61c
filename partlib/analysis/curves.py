"""Training curves of an experiment: loss and dev metrics against the step of the whole schedule.

Read from what training writes (``partlib.train.layout``): the resolved schedule in
``<exp>/config.yaml`` (stage order, ``max_steps``, LoRA ``activation`` steps) and the tensorboard
scalars of each stage in ``<exp>/tensorboard/<stage>/`` (``train/loss`` every ``log_interval``
steps, ``dev/loss`` and the dev metrics ``dev/wer``, ``dev/bleu``, ``dev/accuracy`` at every dev
evaluation and at each stage's end). Steps are made cumulative over the stages, so a PART schedule
and a one-stage baseline of the same budget share one axis.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from partlib.common import DataError, PathLike

DEV_METRICS = ("wer", "bleu", "accuracy")


def _scalars(event_dir: Path) -> Dict[str, List[List[float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # one INFO line per event file otherwise
    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out: Dict[str, Dict[int, float]] = {}
    for tag in acc.Tags().get("scalars", []):
        for e in acc.Scalars(tag):  # a resumed run rewrites steps: the last value of a step wins
            out.setdefault(tag, {})[int(e.step)] = float(e.value)
    return {tag: [[s, v] for s, v in sorted(points.items())] for tag, points in out.items()}


def training_curves(exp_dir: PathLike) -> Dict:
    """The curves of one experiment: ``{"exp", "total_steps", "stages": [{"name", "start", "end",
    "activations": [[global step, layers]], "train_loss": [[step, v]], "dev": {metric: [[step, v]]},
    "end": {metric: value at the stage's last dev evaluation}}]}`` with global (cumulative) steps."""
    exp = Path(exp_dir)
    cfg_path = exp / "config.yaml"
    if not cfg_path.is_file():
        raise DataError("no resolved config: the experiment has not been trained", cfg_path)
    try:
        stages_cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))["schedule"]["stages"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"not a resolved experiment config ({e!r})", cfg_path) from None
    stages, start = [], 0
    for s in stages_cfg:
        tb = exp / "tensorboard" / s["name"]
        scalars = _scalars(tb) if tb.is_dir() else {}
        shift = lambda pts: [[start + p[0], p[1]] for p in pts]  # noqa: E731
        dev = {k.split("/", 1)[1]: shift(v) for k, v in scalars.items() if k.startswith("dev/")}
        stages.append({
            "name": s["name"], "start": start, "end": start + int(s["max_steps"]),
            "activations": [[start + int(a["step"]), a["layers"]] for a in s.get("activation") or []],
            "train_loss": shift(scalars.get("train/loss", [])), "dev": dev,
            "end_dev": {k: v[-1][1] for k, v in dev.items() if v}})
        start += int(s["max_steps"])
    return {"exp": exp.name, "total_steps": start, "stages": stages}


def _layers(spec) -> str:
    if isinstance(spec, dict):
        return ", ".join(f"{k} {v}" for k, v in spec.items())
    return str(spec)


def plot_curves(curves: Dict, path: PathLike, title: Optional[str] = None) -> None:
    """One PNG: train and dev loss against the cumulative step, alignment-stage ends (dashed), LoRA
    activation steps (dotted, with the layers activated) and the dev WER / BLEU / accuracy at each
    stage's end written at the top of the stage."""
    from partlib.analysis.plots import _save  # first: it selects the Agg backend; the atomic PNG writer

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, st in enumerate(curves["stages"]):
        if st["train_loss"]:
            x, y = zip(*st["train_loss"])
            ax.plot(x, y, color="tab:blue", alpha=0.45, lw=1, label="train loss" if i == 0 else None)
        if st["dev"].get("loss"):
            x, y = zip(*st["dev"]["loss"])
            ax.plot(x, y, "o-", color="tab:red", ms=3, lw=1.5, label="dev loss" if i == 0 else None)
    ymax = ax.get_ylim()[1]
    for i, st in enumerate(curves["stages"]):
        ax.axvline(st["end"], color="0.3", ls="--", lw=0.8)
        ends = "\n".join(f"{m.upper()} {st['end_dev'][m]:.1f}" for m in DEV_METRICS if m in st["end_dev"])
        ax.text((st["start"] + st["end"]) / 2, ymax, f"{st['name']}\n{ends}", ha="center", va="top", fontsize=7)
        for j, (step, layers) in enumerate(st["activations"]):
            ax.axvline(step, color="tab:green", ls=":", lw=1.2,
                       label="LoRA activation" if not any(s["activations"] for s in curves["stages"][:i]) and j == 0
                       else None)
            ax.text(step, ymax * 0.6, f" LoRA: {_layers(layers)}", rotation=90, va="top", fontsize=6,
                    color="tab:green")
    ax.set_xlim(0, curves["total_steps"])
    ax.set_xlabel("step (cumulative over the alignment stages)")
    ax.set_ylabel("loss (per token)")
    ax.set_title(title or curves["exp"])
    ax.legend(loc="center right", fontsize=8)
    _save(fig, path)
