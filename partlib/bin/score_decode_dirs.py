"""Score decode directories in place (one process for many): each DIR holds ``ref``, ``hyp``,
``utt2lang``, ``decode.json`` and, for translation, ``tgt_lang``; each is scored with its task's
scorer (``partlib.scoring.decode_dir``) and the scoring outputs are written next to them.

    python -m partlib.bin.score_decode_dirs [--force] [--normalizer whisper] DIR [DIR ...]

A directory whose scores.json is newer than its hyp, and was scored with the same --normalizer, is
skipped unless --force.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from partlib.bin import add_normalizer_option
from partlib.common import PartError, get_logger
from partlib.scoring import normalize as norm
from partlib.scoring.decode_dir import recorded_normalizer, score_decode_dir, write_outputs
from partlib.scoring.scores import parse_scores

log = get_logger("partlib.bin.score_decode_dirs")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--force", action="store_true", help="rescore directories that are up to date")
    add_normalizer_option(p, norm.DEFAULT_SCHEME)
    p.add_argument("dirs", nargs="*", help="decode directories (none: only check the options)")
    args = p.parse_args(argv)
    failed = 0
    for d in map(Path, args.dirs):
        hyp, scores = d / "hyp", d / "scores.json"
        try:
            if (not args.force and scores.is_file() and scores.stat().st_mtime >= hyp.stat().st_mtime
                    and recorded_normalizer(d) in (None, args.normalizer)):
                continue
            result, utts = score_decode_dir(d, normalizer=args.normalizer)
            write_outputs(d, result, utts)
            overall = parse_scores(result, scores).overall
            log.info("%s: %s %.2f", d, overall.primary, overall.value() or 0.0)
        except PartError as e:
            log.error("%s", e)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
