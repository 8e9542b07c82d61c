"""Pretrain the recipe's tiny Qwen2 LLM on training text (monolingual LM + text translation, ChatML).

    python -m partlib.bin.pretrain_lm --tokenizer exp/tokenizer --data data/text_train_* \\
        --dev data/text_dev_* --check-heldout data/text_dev_* data/text_test_* \\
        [--config conf/pretrain_lm.yaml] [--steps 800 --hidden 256 ...] exp/llm

Fails (exit 1) before training when a held-out sentence occurs in the training text. Options on
the command line override the YAML config; the resolved config is saved with the model. Rerunning
a killed run resumes from its checkpoints (OUT_DIR.checkpoints); SIGTERM or SIGUSR1 stops it with a
checkpoint and exit status 75.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from partlib.bin import add_config_options, cli, config_from_args, nonnegative_int
from partlib.common import get_logger
from partlib.train.lm_pretrain import LMPretrainConfig, pretrain

log = get_logger("partlib.pretrain_lm")


@cli
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="where the model and tokenizer are saved")
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer dir (train_tokenizer output)")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="training text data dirs")
    p.add_argument("--dev", type=Path, nargs="*", default=[], help="dev text data dirs (metrics in the log)")
    p.add_argument("--check-heldout", type=Path, nargs="*", default=[],
                   help="dev/test data dirs whose sentences must not occur in the training text")
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: torch's default)")
    add_config_options(p, LMPretrainConfig)
    args = p.parse_args(argv)
    cfg = config_from_args(LMPretrainConfig, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    pretrain(args.tokenizer, args.data, args.out_dir, cfg, heldout_dirs=args.check_heldout,
             dev_dirs=args.dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
