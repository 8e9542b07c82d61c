"""Prepare Kaldi data dirs from the paper's corpora (called by the recipes' ``local/data.sh``).

Subcommands::

    commonvoice   CV15_ROOT OUT --locales "de zh-CN" [--splits ...] [--allow-missing]
    fleurs        FLEURS_ROOT OUT --locales "de_de cmn_hans_cn" [--dump-dir D] [--allow-missing]
    fleurs-pairs  SRC_DIR TGT_DIR OUT_DIR          (text-only pairs by FLoRes sentence id)
    wenetspeech   WENET_ROOT OUT --train-subset S|M|L [--allow-missing]
    wenet-dump    SRC_DIR OUT_DIR DUMP_DIR          (each segment's audio once, into an ark)
    covost2       COVOST_ROOT CV4_ROOT OUT --directions "de_en en_de" [--allow-missing]
    decontaminate --train DIR ... --eval DIR ... [--report F]

Each prints one ``<data dir>: kept=N ...`` line per data dir it wrote.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.bin import cli
from partlib.data.corpora import commonvoice, contamination, covost2, fleurs, wenetspeech


def _bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def _words(v: str) -> List[str]:
    return v.replace(",", " ").split()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one subcommand per corpus step)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def corpus(name: str, *roots: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name)
        for r in roots:
            s.add_argument(r)
        s.add_argument("out", help="folder that receives the data dirs (e.g. data)")
        s.add_argument("--allow-missing", type=_bool, default=False,
                       help="skip (and count) clips listed but absent on disk instead of failing")
        return s

    s = corpus("commonvoice", "root")
    s.add_argument("--locales", type=_words, required=True, help='e.g. "de en zh-CN"')
    s.add_argument("--splits", type=_words, default=list(commonvoice.SPLITS))
    s.add_argument("--prefix", default="cv15")
    s = corpus("fleurs", "root")
    s.add_argument("--locales", type=_words, required=True, help='e.g. "de_de cmn_hans_cn"')
    s.add_argument("--splits", type=_words, default=list(fleurs.SPLITS))
    s.add_argument("--dump-dir", default=None, help="where audio/<split>.tar.gz archives are extracted")
    s = corpus("wenetspeech", "root")
    s.add_argument("--train-subset", default="S", choices=wenetspeech.TRAIN_SUBSETS)
    s.add_argument("--eval-subsets", type=_words, default=list(wenetspeech.EVAL_SUBSETS))
    s = corpus("covost2", "covost_root", "cv4_root")
    s.add_argument("--directions", type=_words, default=list(covost2.DIRECTIONS),
                   help='e.g. "de_en zh-CN_en en_de" (default: all 36)')
    s = sub.add_parser("fleurs-pairs")
    s.add_argument("src_dir"), s.add_argument("tgt_dir"), s.add_argument("out_dir")
    s = sub.add_parser("wenet-dump")
    s.add_argument("src_dir"), s.add_argument("out_dir"), s.add_argument("dump_dir")
    s = sub.add_parser("decontaminate")
    s.add_argument("--train", nargs="+", required=True)
    s.add_argument("--eval", nargs="+", required=True)
    s.add_argument("--report", default=None, help="JSON file with the removal counts")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Run one preparation step; user errors print one line and exit 1."""
    a = build_parser().parse_args(argv)
    counts = {}
    if a.cmd == "commonvoice":
        counts = commonvoice.prepare_commonvoice(a.root, a.out, a.locales, a.splits, a.allow_missing, a.prefix)
    elif a.cmd == "fleurs":
        counts = fleurs.prepare_fleurs(a.root, a.out, a.locales, a.splits, a.allow_missing, a.dump_dir)
    elif a.cmd == "wenetspeech":
        counts = wenetspeech.prepare_wenetspeech(a.root, a.out, a.train_subset, a.eval_subsets,
                                                 a.allow_missing)
    elif a.cmd == "covost2":
        counts = covost2.prepare_covost2(a.covost_root, a.cv4_root, a.out, a.directions, a.allow_missing)
    elif a.cmd == "fleurs-pairs":
        print(f"{a.out_dir}: kept={fleurs.text_pairs(a.src_dir, a.tgt_dir, a.out_dir)}")
    elif a.cmd == "wenet-dump":
        print(f"{a.out_dir}: kept={wenetspeech.dump_segments(a.src_dir, a.out_dir, a.dump_dir)}")
    elif a.cmd == "decontaminate":
        for name, c in contamination.decontaminate_all(a.train, a.eval, a.report).items():
            print(f"{name}: kept={c['kept']}, removed_clip={c['clip']}, removed_sentence={c['sentence']}")
    for name, c in counts.items():
        print(f"{name}: {c.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
