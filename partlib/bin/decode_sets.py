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
    decode_cli.add_decoding_options(p)
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
    if args.nj > 1:  # each set in parallel jobs, each loading the model (partlib.bin.decode)
        common = {k: v for k, v in vars(args).items() if k not in ("data_root", "decodes", "out_root")}
        for task, data_set, tgt, out in jobs:
            decode_cli.decode_in_jobs(argparse.Namespace(**common, data_dir=str(Path(args.data_root) / data_set),
                                                         task=task, tgt_lang=tgt, out_dir=str(out)))
        return 0
    from partlib.infer.decode import decode_dir

    model = decode_cli.load_model(args)
    for task, data_set, tgt, out in jobs:
        decode_dir(model, Path(args.data_root) / data_set, out, task=task, tgt_lang=tgt,
                   **decode_cli.decoding_kwargs(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
