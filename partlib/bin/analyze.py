"""Representation analysis of one or more SpeechLLM checkpoints on parallel multilingual data.

Example (compare PART stages and a baseline on the same utterances):

    python -m partlib.bin.analyze \\
        --model-dir stage1=exp/part/stage1_align/export --model-dir stage3=exp/part/stage3/export \\
        --model-dir frozen=exp/baseline_frozen/export \\
        --data-dir data/test_de --data-dir data/test_en \\
        --points mel,encoder,adapter,llm:0,llm:-1 --max-utts 300 exp/part/analysis

Writes OUT_DIR/metrics.json, OUT_DIR/analysis.md and OUT_DIR/plots/*.png; extracted vectors are
cached in OUT_DIR/cache (or --cache-dir) and reused on re-runs. Metrics: docs/analysis.md.

A model directory exported by a training stage (its info.json holds the stage's config) also gets
the cosine similarity of loss gradients between (task, language) groups, over what that stage
trains (--gradsim-utts examples per group; 0 turns it off).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from partlib import config
from partlib.analysis.extract import parse_points
from partlib.analysis.gradsim import StageProbe
from partlib.analysis.report import run_analysis
from partlib.bin import cli, number, positive_int
from partlib.common import ConfigError, get_logger
from partlib.models import card
from partlib.train.schedule import StageConfig, apply_stage_trainable


def _model_arg(text: str) -> Tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


def stage_probe(model_dir: str) -> Optional[StageProbe]:
    """The stage that exported ``model_dir``, from its info.json (None for a model no stage made)."""
    info = card.read_info(model_dir)
    if "stage_config" not in info:
        return None
    stage = config.parse(StageConfig, info["stage_config"], str(Path(model_dir) / card.INFO), "stage_config")
    return StageProbe(stage.name, stage.tasks, lambda model: apply_stage_trainable(model, stage))


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m partlib.bin.analyze", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", action="append", type=_model_arg, required=True, metavar="NAME=DIR",
                   help="a model directory (SpeechLLM.save_pretrained) and its name in tables; repeat "
                        "to compare models (CKA against the previous and the first one)")
    p.add_argument("--data-dir", action="append", required=True, metavar="DIR",
                   help="Kaldi data dir with utt2lang, utt2spk and, for parallel measures, utt2sent; "
                        "repeat to pool several dirs (e.g. one per language)")
    p.add_argument("--points", default="mel,encoder,adapter,llm:0,llm:-1",
                   help="representation points: mel, encoder, adapter, llm:K (hidden state K; 0 = "
                        "input embeddings, -1 = last layer); mel is always added (default: %(default)s)")
    p.add_argument("--max-utts", type=positive_int, default=None,
                   help="at most this many utterances per data dir (whole parallel sentences first)")
    p.add_argument("--n-folds", type=number(int, 2), default=3,
                   help="speaker folds and sentence folds of the language-ID probe (default: %(default)s)")
    p.add_argument("--projections", default="pca,tsne",
                   help="2-D projections to plot, comma-separated from pca,tsne; empty for none")
    p.add_argument("--batch-size", type=positive_int, default=8, help="utterances per forward pass")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--cache-dir", default=None, help="where extracted vectors are cached (default OUT_DIR/cache)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of folds, label shuffling, projections and the gradient probe sample")
    p.add_argument("--gradsim-utts", type=number(int, 0), default=8,
                   help="gradient similarity: examples per (task, language) group of each stage model's "
                        "tasks, drawn from the data dirs; 0 turns it off (default: %(default)s)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Run the analysis."""
    args = build_parser().parse_args(argv)
    log = get_logger("partlib.bin.analyze")
    projections = [m for m in args.projections.split(",") if m]
    bad = [m for m in projections if m not in ("pca", "tsne")]
    if bad:
        raise ConfigError(f"unknown projection(s) {bad}: use pca and/or tsne")
    run_analysis(args.model_dir, args.data_dir, args.out_dir, parse_points(args.points),
                 max_utts=args.max_utts, n_folds=args.n_folds, seed=args.seed,
                 batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir,
                 projections=projections, gradsim_utts=args.gradsim_utts,
                 stages={name: stage_probe(d) for name, d in args.model_dir} if args.gradsim_utts else None)
    log.info("wrote %s/analysis.md", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
