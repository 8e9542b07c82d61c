"""Pretrain a Whisper-architecture encoder with character CTC on training speech (no pretrained
Whisper needed); the result loads like any Whisper checkpoint (``encoder: {path: OUT_DIR}``).
Rerunning a killed run resumes from its checkpoints (OUT_DIR.checkpoints); SIGTERM or SIGUSR1
stops it with a checkpoint and exit status 75.

    python -m partlib.bin.pretrain_encoder --arch conf/encoder_arch.json --train data/train_* \\
        --dev data/dev_* --config conf/encoder_pretrain.yaml [--steps 1000 ...] OUT_DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from partlib.bin import add_config_options, cli, config_from_args, positive_int
from partlib.common import get_logger
from partlib.train.encoder_pretrain import EncoderPretrainConfig, pretrain_encoder

logger = get_logger("partlib.bin.pretrain_encoder")


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, help="WhisperConfig JSON (encoder fields are used)")
    p.add_argument("--train", nargs="+", required=True, help="training data dirs")
    p.add_argument("--dev", nargs="*", default=[], help="dev data dirs (CER reported)")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("out_dir")
    add_config_options(p, EncoderPretrainConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(EncoderPretrainConfig, args)  # checked before any data is read
    if args.threads:
        torch.set_num_threads(args.threads)
    if (Path(args.out_dir) / "ctc_pretrain.json").is_file():
        logger.info("%s exists: encoder already pretrained", args.out_dir)
        return 0
    arch = json.loads(Path(args.arch).read_text())
    arch.pop("model_type", None)
    pretrain_encoder(arch, args.train, args.dev, args.out_dir, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
