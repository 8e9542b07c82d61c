"""Export a trained stage as a self-contained model folder, with its dev/test scores in the card.

    python -m partlib.bin.export exp/part_seed1/s4_text OUT_DIR [--keep-lora]

SRC is a stage directory (``exp/<tag>/<stage>``) or its ``model/``. OUT_DIR holds every weight the
model needs (encoder, adapter, LLM, tokenizer with its chat template; safetensors only), its
prompt templates in ``config.yaml``, ``info.json`` (commit, stage config, tasks, languages, hours
of data per language, the scores of every scored decode dir of the stage) and a ``README.md``
model card; it names no path outside itself. LoRA is merged into the LLM unless ``--keep-lora``,
which rebuilds the stage's model from its exported checkpoint and keeps the adapters separate
(peft format): run it from the directory the training ran in (the recipe), as the experiment's
``config.yaml`` names its pretrained models relative to it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from partlib import tasks
from partlib.bin import cli
from partlib.common import ConfigError, DataError, get_logger
from partlib.scoring.scores import read_scores_if_any
from partlib.train import layout

logger = get_logger("partlib.bin.export")


def stage_scores(stage_dir: Path) -> Dict[str, Dict[str, Any]]:
    """``{decode dir name: {metric, value, utterances}}`` of the scored decodes of a stage."""
    out = {}
    for d in sorted(stage_dir.glob("decode_*")):
        scores = read_scores_if_any(d) if tasks.parse_decode_dir(d.name) is not None else None
        if scores is not None:
            overall = scores.overall
            out[d.name] = {"metric": overall.primary, "value": overall.value(), "utterances": overall.num_utts}
    return out


def _with_lora(exp: Path, stage: str, checkpoints: List[int]):
    """The stage's model rebuilt from its exported checkpoint, LoRA adapters kept separate."""
    from partlib.train.checkpoint import CheckpointManager
    from partlib.train.schedule import parse_schedule
    from partlib.train.trainer import Trainer

    if len(checkpoints) != 1:
        raise ConfigError(f"{exp / stage}: the export averages checkpoints {checkpoints} on merged weights; "
                          f"--keep-lora needs a single checkpoint")
    cfg_path = exp / layout.CONFIG
    if not cfg_path.is_file():
        raise DataError("no resolved experiment config: --keep-lora rebuilds the stage from it", cfg_path)
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    schedule = parse_schedule(cfg["schedule"], str(cfg_path))
    trainer = Trainer(schedule, cfg["model"], exp, tensorboard=False)
    model = trainer.initial_model(schedule.stage_names().index(stage))
    if model.lora_config is None:
        raise ConfigError(f"{exp / stage}: the stage trains no LoRA; export it without --keep-lora")
    ckpt = exp / stage / "checkpoints" / f"ckpt-{checkpoints[0]:06d}.pt"
    if not ckpt.is_file():
        raise DataError("the exported checkpoint is gone (pruned or deleted): --keep-lora needs it", ckpt)
    model.load_state_dict(CheckpointManager(ckpt.parent).model_state(ckpt), strict=False)
    return model


@cli
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="exp/<tag>/<stage> or its model/ directory")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--keep-lora", action="store_true", help="keep the LoRA adapters separate (peft format)")
    args = p.parse_args(argv)
    model_dir = (args.src / "model" if (args.src / "model").is_dir() else args.src).resolve()
    if not layout.is_exported(model_dir):
        raise DataError("not an exported stage model (no 'done' marker)", model_dir)
    out = args.out_dir.resolve()
    if out == model_dir or out in model_dir.parents:
        raise ConfigError(f"{args.out_dir}: the output would replace the model it exports (or a folder holding it)")
    if out.exists() and not layout.is_exported(out):
        raise ConfigError(f"{args.out_dir}: exists and is not an exported model folder; not overwritten")
    in_stage = model_dir.name == "model"  # exp/<tag>/<stage>/model: the stage's decodes are its siblings
    from partlib.models import card
    from partlib.models.speech_llm import SpeechLLM

    info = card.read_info(model_dir)
    stage_dir = model_dir.parent
    if args.keep_lora:
        if not in_stage:
            raise ConfigError(f"{args.src}: --keep-lora rebuilds a stage from its checkpoint: give exp/<tag>/<stage>")
        model = _with_lora(stage_dir.parent, stage_dir.name, info.get("checkpoints", []))
    else:
        model = SpeechLLM.from_pretrained(model_dir)
    if in_stage:
        info["scores"] = stage_scores(stage_dir)
    info["lora"] = "separate" if args.keep_lora else "merged"

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, merge_lora=not args.keep_lora, self_contained=True)
        card.write(tmp, info, model.config)

    layout.write_exported(out, write)
    logger.info("exported %s -> %s (%d scored decodes, LoRA %s)", model_dir, out, len(info.get("scores", {})),
                info["lora"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
