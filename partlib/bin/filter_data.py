"""Recipe stage 2: validate a data dir, add utt2dur, and copy it with length filtering.

    python -m partlib.bin.filter_data [--min-dur 0.1] [--max-dur 30] [--max-text-chars 400] SRC DST

Utterances shorter than --min-dur or longer than --max-dur seconds (Whisper's positional table ends
at 30 s), and those whose text or any translation is longer than --max-text-chars characters, are
dropped; the counts are logged per reason. Text-only data dirs are filtered on text length only.

A segment that ends more than 0.5 s (Kaldi extract-segments' --max-overshoot; SEGMENT_TOLERANCE_S
of partlib.data.datadir) after the end of its recording is an error naming the segments line, the
utterance, the recording and both durations: recording durations come from reco2dur, or else from
the audio headers (written to DST as reco2dur). DST is built next to it and swapped into place
only when complete; on an error it is left as it was.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from partlib.bin import cli, nonnegative_float, positive_float, positive_int
from partlib.common import PartError, get_logger, replace_dir
from partlib.data.audio import compute_reco2dur, compute_utt2dur
from partlib.data.datadir import DataDir

logger = get_logger("partlib.bin.filter_data")


def filter_data_dir(src: str, dst: str, min_dur: float, max_dur: float, max_text_chars: int) -> dict:
    """Filter ``src`` into ``dst``; return ``{reason: count}`` of dropped utterances and ``kept``."""
    d = DataDir.load(src)  # checks segments against reco2dur when the dir has one
    if d.segments is not None and d.reco2dur is None:
        d.reco2dur = compute_reco2dur(d)
        d.check()
    if d.has_audio() and d.utt2dur is None and d.wav_scp is not None:
        d.utt2dur = compute_utt2dur(d)
    drop = {"too_short": set(), "too_long": set(), "text_too_long": set()}
    for utt in d.utts:
        if d.utt2dur is not None:
            dur = float(d.utt2dur[utt])
            if dur < min_dur:
                drop["too_short"].add(utt)
            elif dur > max_dur:
                drop["too_long"].add(utt)
        texts = ([d.text[utt]] if d.text is not None else []) + [m[utt] for m in d.translations.values() if utt in m]
        if any(len(t) > max_text_chars for t in texts):
            drop["text_too_long"].add(utt)
    removed = set().union(*drop.values())
    kept = d.subset([u for u in d.utts if u not in removed])
    if not len(kept):
        raise PartError(f"{src}: every utterance was filtered out ({ {k: len(v) for k, v in drop.items()} })")
    out = Path(dst)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    kept.write(tmp)
    replace_dir(tmp, out)
    counts = {k: len(v) for k, v in drop.items()}
    counts["kept"] = len(kept)
    logger.info("%s -> %s: kept %d of %d (dropped: %s)", src, dst, len(kept), len(d),
                ", ".join(f"{k} {v}" for k, v in counts.items() if k != "kept"))
    return counts


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-dur", type=nonnegative_float, default=0.1)
    p.add_argument("--max-dur", type=positive_float, default=30.0)
    p.add_argument("--max-text-chars", type=positive_int, default=400)
    p.add_argument("src")
    p.add_argument("dst")
    args = p.parse_args(argv)
    filter_data_dir(args.src, args.dst, args.min_dur, args.max_dur, args.max_text_chars)
    return 0


if __name__ == "__main__":
    sys.exit(main())
