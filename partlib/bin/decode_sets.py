"""Decode several data sets and tasks with one model, loading it once.

    python -m partlib.bin.decode_sets --model-dir DIR --data-root dump/raw \\
        --decodes "asr:test_en asr:test_de lid:test_de s2tt:test_de:en" [--audio shuffled] OUT_ROOT

Each decode is ``<task>:<set>`` or, for a cross-lingual task, ``<task>:<set>:<tgt_lang>`` (tasks:
``python -m partlib.bin.tasks list``). Writes ``OUT_ROOT/decode_<set>_<task>`` and
``OUT_ROOT/decode_<set>_to_<tgt>_<task>`` (the layout that scoring and RESULTS.md read); finished
decodes (``hyp`` present) are skipped. With ``--nj N`` each set is split into N jobs of ``--cmd``
(``partlib.bin.decode``'s parallel path), as ``part.sh --decode_nj N`` does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from partlib import tasks
from partlib.bin import cli
from partlib.bin import decode as decode_cli
from partlib.common import get_logger
from partlib.features.source import FEATURE_MODES

log = get_logger("partlib.bin.decode_sets")


def decode_jobs(out_root: Path, specs: List[str]) -> List[Tuple[str, str, Optional[str], Path]]:
    """``(task, set, tgt, out_dir)`` for every requested decode (checked against the task registry)."""
    jobs = []
    for spec in specs:
        task, data_set, tgt = tasks.parse_decode_spec(spec)
        jobs.append((task, data_set, tgt, out_root / tasks.decode_dir_name(task, data_set, tgt)))
    return jobs


@cli
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
    p.add_argument("--features", choices=FEATURE_MODES, default="auto")
    p.add_argument("--nj", type=int, default=1,
                   help="N > 1: each set is split into N jobs of --cmd (partlib.bin.decode), each loading the model")
    p.add_argument("--cmd", default="utils/run.pl", help="job runner for --nj (run.pl / slurm.pl interface)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("out_root")
    args = p.parse_args(argv)
    jobs = [j for j in decode_jobs(Path(args.out_root), args.decodes.split()) if not (j[3] / "hyp").is_file()]
    if args.audio != "real":
        for task, _, _, out in [j for j in jobs if not tasks.get(j[0]).speech]:
            log.info("%s: the %s-audio control does not apply to the text task %s", out, args.audio, task)
        jobs = [j for j in jobs if tasks.get(j[0]).speech]
    if not jobs:
        log.info("%s: every decode is done", args.out_root)
        return 0
    if args.nj > 1:
        for task, data_set, tgt, out in jobs:
            decode_cli.decode_in_jobs(decode_cli.get_parser().parse_args(
                ["--model-dir", args.model_dir, "--data-dir", str(Path(args.data_root) / data_set), "--task", task,
                 *(["--tgt-lang", tgt] if tgt else []), "--beam", str(args.beam), "--batch-size", str(args.batch_size),
                 "--batch-frames", str(args.batch_frames), "--audio", args.audio, "--seed", str(args.seed),
                 "--features", args.features, "--nj", str(args.nj), "--cmd", args.cmd,
                 *(["--threads", str(args.threads)] if args.threads else []), str(out)]))
        return 0
    import torch

    from partlib.infer.decode import decode_dir
    from partlib.models.speech_llm import SpeechLLM

    if args.threads:
        torch.set_num_threads(args.threads)
    model = SpeechLLM.from_pretrained(args.model_dir)
    for task, data_set, tgt, out in jobs:
        decode_dir(model, Path(args.data_root) / data_set, out, task=task, tgt_lang=tgt,
                   batch_frames=args.batch_frames, batch_size=args.batch_size, num_beams=args.beam,
                   audio=args.audio, seed=args.seed, features=args.features)
    return 0


if __name__ == "__main__":
    sys.exit(main())
