"""Adopt Lhotse Shar shards that lhotse wrote as a training set for streaming (``--features shards``).

Usage:
    python -m partlib.bin.adopt_shar [--language CODE] LHOTSE_SHAR_DIR DATA_DIR

LHOTSE_SHAR_DIR holds cuts.NNNNNN.jsonl.gz and recording.NNNNNN.tar as ``CutSet.to_shar`` or
``lhotse shar export`` wrote them (icefall, NeMo). Every cut is checked (one supervision with text
and language, single channel, audio in the tar); DATA_DIR/shar gets the manifest and the mapped cut
metadata, while the audio stays in LHOTSE_SHAR_DIR, read from there in training. Name DATA_DIR (or
its name under --data-root) in a schedule's ``data`` and train with ``--features shards``.
See partlib.data.lhotse_shar for the mapping.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.bin import cli
from partlib.data.lhotse_shar import adopt


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m partlib.bin.adopt_shar",
                                description="Adopt a lhotse-written Shar dir for streaming training.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--language", default=None, help="language (code or English name) of the cuts whose "
                   "supervision has none; default: such a cut is an error")
    p.add_argument("lhotse_dir", help="a lhotse Shar dir (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar)")
    p.add_argument("data_dir", help="the training set to create: DATA_DIR/shar gets the manifest and cut metadata")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    adopt(args.lhotse_dir, args.data_dir, args.language)
    return 0


if __name__ == "__main__":
    sys.exit(main())
