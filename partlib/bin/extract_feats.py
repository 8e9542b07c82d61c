"""Dump speech features of a Kaldi data dir to ark/scp.

Usage:
    python -m partlib.bin.extract_feats --feature whisper_mel [--num-mel-bins {80,128}] \\
        [--nj N] [--cmd utils/run.pl] [--batch-size N] [--skip-bad] DATA_DIR OUT_DIR

OUT_DIR becomes a copy of DATA_DIR plus feats.scp (float32 frames x bins), utt2num_frames and
feats_type (e.g. ``whisper_mel 128``); arks are under OUT_DIR/data, per-job logs under
OUT_DIR/log. Re-running resumes: jobs finished earlier are skipped.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.bin import cli, nonnegative_int, positive_int
from partlib.common import get_logger
from partlib.features.compute import FEATURE_TYPES, MEL_BINS, check_feature_config
from partlib.features.dump import DumpOptions, extract_feats, run_job, set_threads

logger = get_logger("partlib.bin.extract_feats")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m partlib.bin.extract_feats",
        description="Compute speech features of a data dir and dump them to ark/scp.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--feature", default="whisper_mel", choices=FEATURE_TYPES, help="feature type")
    p.add_argument("--num-mel-bins", type=int, default=80, choices=MEL_BINS,
                   help="mel bins: 80 for Whisper <= v2, 128 for Whisper large-v3")
    p.add_argument("--nj", type=positive_int, default=1, help="number of jobs (splits of the data dir)")
    p.add_argument("--cmd", default="",
                   help="job runner called as 'CMD JOB=1:N LOG CMD...' (e.g. utils/run.pl); "
                        "empty: run the jobs one after another in this process")
    p.add_argument("--batch-size", type=positive_int, default=16, help="utterances per feature batch")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and count) utterances with empty, too short or non-finite audio "
                        "instead of stopping with an error")
    p.add_argument("--no-resample", dest="resample", action="store_false",
                   help="reject audio whose sample rate is not 16 kHz instead of resampling it")
    p.add_argument("--device", default="cpu", help="torch device for the computation")
    p.add_argument("--num-threads", type=nonnegative_int, default=0,
                   help="torch threads per job (0: torch's default when jobs run in this process, "
                        "1 per job under --cmd)")
    p.add_argument("--job", type=positive_int, default=None,
                   help="internal (one job of the job runner): DATA_DIR is this job's split of "
                        "OUT_DIR; write only its arks")
    p.add_argument("data_dir", help="input data dir (with wav.scp)")
    p.add_argument("out_dir", help="output data dir")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    opts = DumpOptions(
        feats_type=check_feature_config(args.feature, args.num_mel_bins),
        batch_size=args.batch_size,
        skip_bad=args.skip_bad,
        resample=args.resample,
        device=args.device,
    )
    if args.job is not None:
        set_threads(args.num_threads)
        run_job(args.data_dir, args.out_dir, args.job, opts)
        return 0
    if not args.cmd:
        set_threads(args.num_threads)
    extract_feats(args.data_dir, args.out_dir, opts, nj=args.nj, cmd=args.cmd or None,
                  num_threads=args.num_threads or 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
