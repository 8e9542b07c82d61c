"""Join the utterances of a data dir into long recordings: one wav per recording, with its
reference text, for trying long-form transcription.

    python -m partlib.bin.join_audio --data-dir dump/raw/test_en --utts-per-recording 20 --limit 1 OUT_DIR

Writes ``OUT_DIR/<recording>.wav`` (16 kHz) and ``OUT_DIR/<recording>.txt`` (the references of
its utterances, one per line, in order). Recordings are groups of consecutive utterances of one
language separated by pauses drawn from ``--pause`` seconds, as ``partlib.bin.decode_longform``
makes them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from partlib.bin import cli, nonnegative_float, pair, positive_int
from partlib.common import DataError, atomic_open, atomic_write, get_logger

logger = get_logger("partlib.bin.join_audio")


@cli
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--utts-per-recording", type=positive_int, default=10)
    p.add_argument("--pause", type=pair(nonnegative_float), default=(0.1, 0.4),
                   help="LOW:HIGH seconds between utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many recordings")
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    import soundfile as sf

    from partlib.data.audio import TARGET_SR
    from partlib.data.datadir import DataDir
    from partlib.infer.longform import join_utterances

    d = DataDir.load(args.data_dir)
    if d.text is None:
        raise DataError("no text (references) in this data dir", args.data_dir)
    out = Path(args.out_dir)
    recordings = join_utterances(d, args.utts_per_recording, args.pause, args.seed, args.limit)
    for r in recordings:
        with atomic_open(out / f"{r.name}.wav", "wb") as f:
            sf.write(f, r.samples, TARGET_SR, format="WAV", subtype="PCM_16")
        atomic_write(out / f"{r.name}.txt", "".join(d.text[u] + "\n" for u in r.utts))
        logger.info("%s/%s.wav: %d utterances, %.1f s", out, r.name, len(r.utts), len(r.samples) / TARGET_SR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
