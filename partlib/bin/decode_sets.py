"""Decode several data sets and tasks with one model, loading it once.

    python -m partlib.bin.decode_sets --model-dir DIR --data-root dump/raw \\
        --asr "test_en test_de" --s2tt "test_de:en test_en:de" [--audio shuffled] OUT_ROOT

Writes ``OUT_ROOT/decode_<set>_asr`` and ``OUT_ROOT/decode_<set>_to_<tgt>_s2tt`` (the layout
that scoring and RESULTS.md read); finished decodes (``hyp`` present) are skipped. Other options
are those of ``partlib.bin.decode`` (one set, parallel jobs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from partlib.common import ConfigError, PartError, get_logger

log = get_logger("partlib.bin.decode_sets")


def decode_jobs(out_root: Path, asr: List[str], s2tt: List[str]) -> List[Tuple[str, str, Optional[str], Path]]:
    """``(set, task, tgt, out_dir)`` for every requested decode."""
    jobs = [(s, "asr", None, out_root / f"decode_{s}_asr") for s in asr]
    for pair in s2tt:
        s, sep, tgt = pair.partition(":")
        if not sep or not tgt:
            raise ConfigError(f"--s2tt entry {pair!r} must look like set:tgt")
        jobs.append((s, "s2tt", tgt, out_root / f"decode_{s}_to_{tgt}_s2tt"))
    return jobs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-root", required=True, help="directory holding the data sets")
    p.add_argument("--asr", default="", help="space-separated sets decoded with task asr")
    p.add_argument("--s2tt", default="", help="space-separated set:tgt pairs decoded with task s2tt")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-frames", type=int, default=60000)
    p.add_argument("--audio", choices=["real", "shuffled", "none"], default="real")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("out_root")
    args = p.parse_args(argv)
    try:
        jobs = [j for j in decode_jobs(Path(args.out_root), args.asr.split(), args.s2tt.split())
                if not (j[3] / "hyp").is_file()]
        if not jobs:
            log.info("%s: every decode is done", args.out_root)
            return 0
        import torch

        from partlib.infer.decode import decode_dir
        from partlib.models.speech_llm import SpeechLLM

        if args.threads:
            torch.set_num_threads(args.threads)
        model = SpeechLLM.from_pretrained(args.model_dir)
        for data_set, task, tgt, out in jobs:
            decode_dir(model, Path(args.data_root) / data_set, out, task=task, tgt_lang=tgt,
                       batch_frames=args.batch_frames, batch_size=args.batch_size, num_beams=args.beam,
                       audio=args.audio, seed=args.seed)
    except PartError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
