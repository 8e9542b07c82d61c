"""Representation analysis of one or more SpeechLLM checkpoints on parallel multilingual data.

Example (compare PART stages and a baseline on the same utterances):

    python -m partlib.bin.analyze \\
        --model-dir stage1=exp/part/stage1_align/export --model-dir stage3=exp/part/stage3/export \\
        --model-dir frozen=exp/baseline_frozen/export \\
        --data-dir data/test_de --data-dir data/test_en \\
        --points mel,encoder,adapter,llm:0,llm:-1 --max-utts 300 exp/part/analysis

Writes OUT_DIR/metrics.json, OUT_DIR/analysis.md and OUT_DIR/plots/*.png; extracted vectors are
cached in OUT_DIR/cache (or --cache-dir) and reused on re-runs. Metrics: docs/analysis.md.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Tuple

from partlib.analysis.extract import parse_points
from partlib.analysis.report import run_analysis
from partlib.bin import cli
from partlib.common import ConfigError, get_logger


def _model_arg(text: str) -> Tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


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
    p.add_argument("--max-utts", type=int, default=None,
                   help="at most this many utterances per data dir (whole parallel sentences first)")
    p.add_argument("--n-folds", type=int, default=3,
                   help="speaker folds and sentence folds of the language-ID probe (default: %(default)s)")
    p.add_argument("--projections", default="pca,tsne",
                   help="2-D projections to plot, comma-separated from pca,tsne; empty for none")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per forward pass")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--cache-dir", default=None, help="where extracted vectors are cached (default OUT_DIR/cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, label shuffling and projections")
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
    if args.n_folds < 2:
        raise ConfigError("--n-folds must be at least 2")
    run_analysis(args.model_dir, args.data_dir, args.out_dir, parse_points(args.points),
                 max_utts=args.max_utts, n_folds=args.n_folds, seed=args.seed,
                 batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir,
                 projections=projections)
    log.info("wrote %s/analysis.md", args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
