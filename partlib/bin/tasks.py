"""The task registry from the shell: task names for recipes, decode specs checked and named.

    python -m partlib.bin.tasks list [--speech | --text] [--within | --cross] [--scored] [--long]
    python -m partlib.bin.tasks decodes SPEC [SPEC ...]

``list`` prints the names of the registered tasks, one a line (``--long``: what each reads, needs,
and how it is scored). ``decodes`` checks ``<task>:<set>[:<tgt>]`` decode specs and prints
``<task> <set> <tgt or -> <decode dir name>`` for each, the layout scoring and RESULTS.md read.
An unknown task or a malformed spec exits 1 with the reason.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib import tasks
from partlib.bin import cli
from partlib.common import get_logger

log = get_logger("partlib.bin.tasks")


def _describe(name: str) -> str:
    from partlib.scoring import scorers  # only --long needs the scorers (and sacrebleu)

    t = tasks.get(name)
    metrics = ",".join(scorers.of_task(t).metrics) if t.scorer else "-"
    return "\t".join([name, "speech" if t.speech else "text", "cross-lingual" if t.cross_lingual else "within",
                      ",".join(t.needs()), metrics, t.dev_metric or "-", repr(t.template)])


@cli
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="names of the registered tasks")
    kind = ls.add_mutually_exclusive_group()
    kind.add_argument("--speech", dest="speech", action="store_const", const=True, help="speech-input tasks")
    kind.add_argument("--text", dest="speech", action="store_const", const=False, help="text-input tasks")
    lang = ls.add_mutually_exclusive_group()
    lang.add_argument("--within", dest="cross", action="store_const", const=False, help="within-language tasks")
    lang.add_argument("--cross", dest="cross", action="store_const", const=True, help="cross-lingual tasks")
    ls.add_argument("--scored", action="store_true", help="tasks that are decoded and scored")
    ls.add_argument("--free-text", action="store_true", help="tasks whose output is free text (no label set)")
    ls.add_argument("--long", action="store_true",
                    help="name, input, languages, data-dir files, metrics, dev metric, default instruction")
    dec = sub.add_parser("decodes", help="check decode specs and name their decode dirs")
    dec.add_argument("specs", nargs="+", help="<task>:<set> or <task>:<set>:<tgt_lang>")
    args = p.parse_args(argv)
    if args.command == "list":
        for name in tasks.names(speech=args.speech, cross_lingual=args.cross, scored=args.scored or None,
                                free_text=args.free_text or None):
            print(_describe(name) if args.long else name)
    else:
        rows = []
        for spec in args.specs:
            task, data_set, tgt = tasks.parse_decode_spec(spec)
            rows.append(f"{task} {data_set} {tgt or '-'} {tasks.decode_dir_name(task, data_set, tgt)}")
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
