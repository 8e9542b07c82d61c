"""Pretrain a Whisper-architecture encoder with character CTC on training speech (no pretrained
Whisper needed); the result loads like any Whisper checkpoint (``encoder: {path: OUT_DIR}``).

    python -m partlib.bin.pretrain_encoder --arch conf/encoder_arch.json --train data/train_* \\
        --dev data/dev_* --steps 1000 OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from partlib.bin import cli
from partlib.common import get_logger

logger = get_logger("partlib.bin.pretrain_encoder")


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="WhisperConfig JSON (encoder fields are used)")
    p.add_argument("--train", nargs="+", required=True, help="training data dirs")
    p.add_argument("--dev", nargs="*", default=[], help="dev data dirs (CER reported)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--max-frames", type=int, default=20000, help="padded frames per batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    import torch

    from partlib.train.encoder_pretrain import pretrain_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    if (Path(args.out_dir) / "ctc_pretrain.json").is_file():
        logger.info("%s exists: encoder already pretrained", args.out_dir)
        return 0
    arch = json.loads(Path(args.arch).read_text())
    arch.pop("model_type", None)
    pretrain_encoder(arch, args.train, args.dev, args.out_dir, steps=args.steps, lr=args.lr,
                     max_frames=args.max_frames, warmup=args.warmup, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
