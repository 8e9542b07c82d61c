"""Score decode directories in place (one process for many): each DIR holds ``ref``, ``hyp``,
``utt2lang``, ``decode.json`` and, for translation, ``tgt_lang``; each is scored with its task's
scorer (``partlib.scoring.decode_dir``) and the scoring outputs are written next to them.

    python -m partlib.bin.score_decode_dirs [--force] DIR [DIR ...]

A directory whose scores.json is newer than its hyp is skipped unless --force.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from partlib.common import PartError, get_logger
from partlib.scoring.decode_dir import score_decode_dir, write_outputs

log = get_logger("partlib.bin.score_decode_dirs")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--force", action="store_true", help="rescore directories that are up to date")
    p.add_argument("dirs", nargs="+", help="decode directories")
    args = p.parse_args(argv)
    failed = 0
    for d in map(Path, args.dirs):
        hyp, scores = d / "hyp", d / "scores.json"
        if not args.force and scores.is_file() and scores.stat().st_mtime >= hyp.stat().st_mtime:
            continue
        try:
            result, utts = score_decode_dir(d)
            write_outputs(d, result, utts)
            overall = result["sets"]["overall"]
            log.info("%s: %s %.2f", d, overall["primary"], overall["scores"][overall["primary"]]["value"] or 0.0)
        except PartError as e:
            log.error("%s", e)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
