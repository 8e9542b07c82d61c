"""Train a PART schedule (all its alignment stages; each resumable).

Example::

    python -m partlib.bin.train --schedule conf/schedule_part.yaml --model-config conf/model.yaml \\
        --data-root data --exp-dir exp/part_seed1 --seed 1 --set stages.0.max_steps=200

Multi-process (CPU gloo or GPUs, one node or many)::

    torchrun --nproc_per_node=8 -m partlib.bin.train ...   (see egs/multilingual/part1/README.md)

Rerunning the same command after a crash resumes from the newest checkpoint of the unfinished stage;
finished stages (``<exp>/<stage>/model/done``) are skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from partlib.bin import add_training_options, cli, nonnegative_int, number, positive_int
from partlib.common import atomic_write, get_logger
from partlib.features.source import FEATURE_MODES
from partlib.models.schema import load_model_config
from partlib.train.schedule import load_schedule

logger = get_logger("partlib.bin.train")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", required=True, help="schedule YAML (alignment stages)")
    p.add_argument("--model-config", required=True, help="model YAML (encoder/adapter/llm/prompt)")
    p.add_argument("--exp-dir", required=True, help="experiment directory (outputs, checkpoints, logs)")
    p.add_argument("--data-root", default=None, help="directory that relative data-dir patterns are under")
    p.add_argument("--seed", type=int, default=None, help="overrides the schedule's seed")
    add_training_options(p)
    p.add_argument("--features", choices=FEATURE_MODES, default="auto",
                   help="dumped: require feats.scp; on_the_fly: compute log-mel from audio; auto: feats.scp if present")
    p.add_argument("--num-workers", type=nonnegative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on GPU")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads on CPU")
    p.add_argument("--bucket-mb", type=number(float, 0, strict=True), default=25.0,
                   help="ddp: MiB of gradients per all-reduce bucket (reduced while backward runs)")
    return p


@cli
def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    # Both configs are checked in full before any model or data is loaded: a typo fails at once.
    seed = [f"seed={args.seed}"] if args.seed is not None else []
    schedule = load_schedule(args.schedule, [*args.overrides, *seed])
    model_cfg = load_model_config(args.model_config, args.model_overrides)
    import torch

    from partlib.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    # Relative model paths in the model YAML are relative to the working directory (the recipe).
    exp = Path(args.exp_dir)
    trainer = Trainer(schedule, model_cfg, exp, data_root=args.data_root, device=args.device,
                      num_workers=args.num_workers, features=args.features, amp=not args.no_amp,
                      tensorboard=not args.no_tensorboard, strategy=args.strategy,
                      bucket_mb=args.bucket_mb)
    with trainer.stop:  # a stop signal from here on ends the run after its first step, with a checkpoint
        trainer.check()  # missing model dirs fail before the exp dir's config.yaml is replaced
        exp.mkdir(parents=True, exist_ok=True)
        # the full, flattened configs: every default stated, base files and stage defaults merged in
        resolved = {"schedule": schedule.to_dict(), "model": model_cfg,
                    "args": {k: v for k, v in vars(args).items() if k not in ("overrides", "model_overrides")}}
        atomic_write(exp / "config.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
        for d in trainer.run():
            logger.info("exported: %s", d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
