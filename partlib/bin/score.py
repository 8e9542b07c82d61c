"""Score hypotheses against references: WER/CER per language, or BLEU/chrF for translation.

Example: python -m partlib.bin.score --ref dump/test/text --hyp decode/hyp --utt2lang dump/test/utt2lang out/
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.common import PartError, get_logger
from partlib.scoring import report

log = get_logger("partlib.score")


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="Kaldi text file with references")
    p.add_argument("--hyp", required=True, help="Kaldi text file with hypotheses")
    lang = p.add_mutually_exclusive_group(required=True)
    lang.add_argument("--utt2lang", help="utterance -> (source) language")
    lang.add_argument("--lang", help="one (source) language for all utterances")
    p.add_argument("--metrics", default="auto",
                   help="auto (ASR: CER for languages without spaces, WER otherwise; translation: "
                        "BLEU and chrF) or a comma list of wer,cer,bleu,chrf")
    p.add_argument("--tgt-lang", help="target language: the hypotheses are translations")
    p.add_argument("--allow-missing", action="store_true",
                   help="score a missing hypothesis as empty (and ignore extra ones) instead of failing")
    p.add_argument("out_dir", help="output directory (scores.json, scores.md, *.trn, result.txt)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run the scorer; user errors print one line and return 1."""
    args = get_parser().parse_args(argv)
    try:
        inputs = report.load_inputs(args.ref, args.hyp, utt2lang=args.utt2lang, lang=args.lang,
                                    allow_missing=args.allow_missing)
        if inputs.missing or inputs.extra:
            log.warning("%d missing hypotheses scored as empty, %d extra ignored",
                        len(inputs.missing), len(inputs.extra))
        result, utts = report.score(inputs, metrics=args.metrics, tgt_lang=args.tgt_lang)
        report.write_outputs(args.out_dir, result, utts)
    except PartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(report.format_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
