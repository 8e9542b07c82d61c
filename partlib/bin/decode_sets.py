"""Decode several data sets and tasks with one model, loading it once.

    python -m partlib.bin.decode_sets --model-dir DIR --data-root dump/raw \\
        --decodes "asr:test_en asr:test_de lid:test_de s2tt:test_de:en" [--audio shuffled] OUT_ROOT

Each decode is ``<task>:<set>`` or, for a cross-lingual task, ``<task>:<set>:<tgt_lang>`` (tasks:
``python -m partlib.bin.tasks list``). Writes ``OUT_ROOT/decode_<set>_<task>`` and
``OUT_ROOT/decode_<set>_to_<tgt>_<task>`` (the layout that scoring and RESULTS.md read); finished
decodes (``hyp`` present) are skipped. Other options are those of ``partlib.bin.decode`` (one set,
parallel jobs).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from partlib import tasks
from partlib.common import PartError, get_logger

log = get_logger("partlib.bin.decode_sets")


def decode_jobs(out_root: Path, specs: List[str]) -> List[Tuple[str, str, Optional[str], Path]]:
    """``(task, set, tgt, out_dir)`` for every requested decode (checked against the task registry)."""
    jobs = []
    for spec in specs:
        task, data_set, tgt = tasks.parse_decode_spec(spec)
        jobs.append((task, data_set, tgt, out_root / tasks.decode_dir_name(task, data_set, tgt)))
    return jobs


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data-root", required=True, help="directory holding the data sets")
    p.add_argument("--decodes", required=True, help="space-separated task:set[:tgt] decodes")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batch-frames", type=int, default=60000)
    p.add_argument("--audio", choices=["real", "shuffled", "none"], default="real")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("out_root")
    args = p.parse_args(argv)
    try:
        jobs = [j for j in decode_jobs(Path(args.out_root), args.decodes.split()) if not (j[3] / "hyp").is_file()]
        if not jobs:
            log.info("%s: every decode is done", args.out_root)
            return 0
        import torch

        from partlib.infer.decode import decode_dir
        from partlib.models.speech_llm import SpeechLLM

        if args.threads:
            torch.set_num_threads(args.threads)
        model = SpeechLLM.from_pretrained(args.model_dir)
        for task, data_set, tgt, out in jobs:
            if args.audio != "real" and not tasks.get(task).speech:
                log.info("%s: the %s-audio control does not apply to the text task %s", out, args.audio, task)
                continue
            decode_dir(model, Path(args.data_root) / data_set, out, task=task, tgt_lang=tgt,
                       batch_frames=args.batch_frames, batch_size=args.batch_size, num_beams=args.beam,
                       audio=args.audio, seed=args.seed)
    except PartError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
