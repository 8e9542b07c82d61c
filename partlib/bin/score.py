"""Score hypotheses against references: WER/CER per language, or BLEU/chrF for translation.

Example: python -m partlib.bin.score --ref dump/test/text --hyp decode/hyp --utt2lang dump/test/utt2lang out/
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.bin import add_normalizer_option, cli
from partlib.common import get_logger
from partlib.scoring import normalize, wer_bleu

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
                   help="auto (ASR: CER for zh, ja, ko, yue and other languages without spaces, WER "
                        "otherwise; translation: BLEU and chrF) or a comma list of wer,cer,bleu,chrf")
    p.add_argument("--tgt-lang", help="target language: the hypotheses are translations")
    add_normalizer_option(p, normalize.DEFAULT_SCHEME)
    p.add_argument("--allow-missing", action="store_true",
                   help="score a missing hypothesis as empty (and ignore extra ones) instead of failing")
    p.add_argument("out_dir", help="output directory (scores.json, scores.md, *.trn, result.txt)")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Run the scorer."""
    args = get_parser().parse_args(argv)
    inputs = wer_bleu.load_inputs(args.ref, args.hyp, utt2lang=args.utt2lang, lang=args.lang,
                                allow_missing=args.allow_missing)
    if inputs.missing or inputs.extra:
        log.warning("%d missing hypotheses scored as empty, %d extra ignored",
                    len(inputs.missing), len(inputs.extra))
    result, utts = wer_bleu.score(inputs, metrics=args.metrics, tgt_lang=args.tgt_lang, normalizer=args.normalizer)
    wer_bleu.write_outputs(args.out_dir, result, utts)
    sys.stdout.write(wer_bleu.format_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
