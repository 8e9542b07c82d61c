"""Export a Kaldi data dir to Lhotse Shar shards for streaming training.

Usage:
    python -m partlib.bin.export_shards [--shard-utts N] [--shard-mb MB] [--nj N] [--cmd utils/run.pl] \\
        [--out-dir DIR] DATA_DIR

Writes DATA_DIR/shar (or --out-dir): shards/ (Lhotse Shar: cuts.NNNNNN.jsonl.gz and
recording.NNNNNN.tar, FLAC 16 kHz or the original bytes of short compressed clips), done/ (one
completion record per shard, with checksums) and manifest.json, written last. Re-running keeps the
complete shards and writes the missing ones; a changed data dir or changed bounds re-export.
See partlib.data.shards for the format.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.bin import cli, positive_float, positive_int
from partlib.data.shards import ExportOptions, export, export_job


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m partlib.bin.export_shards",
                                description="Export a data dir to Lhotse Shar shards.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = ExportOptions()
    p.add_argument("--shard-utts", type=positive_int, default=d.shard_utts, help="utterances per shard (at most, "
                   "but a recording is never split)")
    p.add_argument("--shard-mb", type=positive_float, default=d.shard_mb,
                   help="estimated megabytes per shard (at most)")
    p.add_argument("--nj", type=positive_int, default=1, help="parallel jobs (shard i is written by job i %% nj + 1)")
    p.add_argument("--cmd", default="", help="job runner called as 'CMD JOB=1:N LOG CMD...' (e.g. "
                   "utils/run.pl, utils/slurm.pl); empty: write every shard in this process")
    p.add_argument("--job", type=positive_int, default=None,
                   help="internal: write only this job's shards (no manifest)")
    p.add_argument("--out-dir", default=None, help="where the export goes (default: DATA_DIR/shar)")
    p.add_argument("data_dir", help="a Kaldi data dir (with utt2dur or utt2num_frames when it has audio)")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    opts = ExportOptions(args.shard_utts, args.shard_mb).check()
    if args.job is not None:
        export_job(args.data_dir, args.out_dir, opts, args.job, args.nj)
    else:
        export(args.data_dir, args.out_dir, opts, nj=args.nj, cmd=args.cmd or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
