"""Kaldi data-dir tools: ``python -m partlib.bin.datadir <command> ...``.

The ``utils/*.sh`` wrappers call these commands with Kaldi's command lines:

  validate [--no-feats] [--no-text] [--no-wav] [--non-print] [--no-spk-sort] DIR
  fix DIR
  subset [--first|--last] SRC N DST      (Kaldi form; also --first N SRC DST)
  subset --utt-list F | --spk-list F SRC DST
  subset [--seed S] SRC N DST             (N random utterances)
  combine DST SRC1 [SRC2 ...]
  copy [--utt-prefix P] [--spk-prefix P] [--utt-suffix S] SRC DST
  split [--per-utt] DIR N                 (writes DIR/splitN/1..N, DIR/splitNutt/... per utterance)
  concat [--sizes 2:3] [--pause 0.1:0.4] [--fraction F] [--max-dur S] [--seed N] SRC AUDIO_DIR DST
                                          (longer utterances: several of one speaker joined)

Errors are printed as ``file:line: utterance 'id': message`` and exit with status 1.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Sequence

from partlib.bin import cli, fraction, nonnegative_float, number, pair, positive_float, positive_int
from partlib.data import dirtools
from partlib.data.validate import validate_data_dir

VALIDATE_FLAGS = ("--no-feats", "--no-text", "--no-wav", "--non-print", "--no-spk-sort")


def _validate(argv: List[str]) -> None:
    # Kaldi's own loop: flags in any order, exactly one directory.
    flags = {f: False for f in VALIDATE_FLAGS}
    dirs = []
    for a in argv:
        if a in flags:
            flags[a] = True
        elif a.startswith("--"):
            raise SystemExit(f"validate_data_dir.sh: unknown option {a}; "
                             f"options: {' '.join(VALIDATE_FLAGS)}")
        else:
            dirs.append(a)
    if len(dirs) != 1:
        raise SystemExit(f"usage: validate_data_dir.sh [{'] ['.join(VALIDATE_FLAGS)}] <data-dir>")
    validate_data_dir(
        dirs[0], no_feats=flags["--no-feats"], no_text=flags["--no-text"],
        no_wav=flags["--no-wav"], non_print=flags["--non-print"],
        no_spk_sort=flags["--no-spk-sort"])
    print(f"validate_data_dir.sh: Successfully validated data-directory {dirs[0]}")


def _subset(argv: List[str]) -> None:
    usage = ("usage: subset_data_dir.sh [--first|--last] <src> <N> <dst>\n"
             "       subset_data_dir.sh --first N|--last N <src> <dst>\n"
             "       subset_data_dir.sh --utt-list <file> | --spk-list <file> <src> <dst>\n"
             "       subset_data_dir.sh [--seed S] <src> <N> <dst>   (N random utterances)")
    opts: Dict[str, Optional[str]] = {}
    pos: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i].replace("_", "-") if argv[i].startswith("--") else argv[i]
        if a in ("--first", "--last"):
            rest = argv[i + 1:]
            # "--first N SRC DST" (N given to the flag) vs Kaldi's "--first SRC N DST".
            if len(rest) == 3 and rest[0].isdigit() and not pos:
                opts[a] = rest[0]
                i += 1
            else:
                opts[a] = None
        elif a in ("--utt-list", "--spk-list", "--seed") and i + 1 < len(argv):
            opts[a] = argv[i + 1]
            i += 1
        elif a.startswith("--"):
            raise SystemExit(f"subset_data_dir.sh: unknown option {argv[i]}\n{usage}")
        else:
            pos.append(argv[i])
        i += 1
    modes = [m for m in ("--first", "--last", "--utt-list", "--spk-list") if m in opts]
    if len(modes) > 1:
        raise SystemExit(usage)
    mode = modes[0] if modes else None
    count_given = mode in ("--first", "--last") and opts[mode] is not None
    if mode in ("--utt-list", "--spk-list") or count_given:
        if len(pos) != 2:
            raise SystemExit(usage)
        src, dst = pos
        n = int(opts[mode]) if count_given else None
    else:
        if len(pos) != 3 or not pos[1].isdigit():
            raise SystemExit(usage)
        src, n, dst = pos[0], int(pos[1]), pos[2]
    kwargs = {
        None: {"random_n": n, "seed": int(opts.get("--seed") or 0)},
        "--first": {"first": n}, "--last": {"last": n},
        "--utt-list": {"utt_list": opts.get("--utt-list")},
        "--spk-list": {"spk_list": opts.get("--spk-list")},
    }[mode]
    dirtools.subset_data_dir(src, dst, **kwargs)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description)


@cli
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one data-dir command; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("validate", "fix", "subset", "combine", "copy", "split", "concat")
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd == "validate":
        _validate(args)
    elif cmd == "subset":
        _subset(args)
    elif cmd == "fix":
        p = _parser("fix_data_dir.sh", dirtools.fix_data_dir.__doc__)
        p.add_argument("dir")
        dirtools.fix_data_dir(p.parse_args(args).dir)
    elif cmd == "combine":
        p = _parser("combine_data.sh", dirtools.combine_data_dirs.__doc__)
        p.add_argument("dest")
        p.add_argument("srcs", nargs="+")
        a = p.parse_args(args)
        dirtools.combine_data_dirs(a.dest, a.srcs)
    elif cmd == "concat":
        p = _parser("concat", dirtools.concat_data_dir.__doc__)
        p.add_argument("--sizes", type=pair(number(int, 2)), default=(2, 3), help="MIN:MAX utterances per group")
        p.add_argument("--pause", type=pair(nonnegative_float), default=(0.1, 0.4),
                       help="LOW:HIGH seconds between them")
        p.add_argument("--fraction", type=fraction, default=1.0, help="share of the utterances used")
        p.add_argument("--max-dur", type=positive_float, default=None, help="seconds")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("src")
        p.add_argument("audio_dir")
        p.add_argument("dst")
        a = p.parse_args(args)
        dirtools.concat_data_dir(a.src, a.audio_dir, a.dst, a.sizes, a.pause, a.fraction, a.max_dur, a.seed)
    elif cmd == "copy":
        p = _parser("copy_data_dir.sh", dirtools.copy_data_dir.__doc__)
        for name in ("utt-prefix", "spk-prefix", "utt-suffix"):
            p.add_argument(f"--{name}", f"--{name.replace('-', '_')}", default="")
        p.add_argument("src")
        p.add_argument("dst")
        a = p.parse_args(args)
        dirtools.copy_data_dir(a.src, a.dst, utt_prefix=a.utt_prefix,
                              spk_prefix=a.spk_prefix, utt_suffix=a.utt_suffix)
    else:
        p = _parser("split_data.sh", dirtools.split_data_dir.__doc__)
        p.add_argument("--per-utt", "--per_utt", action="store_true",
                       help="split by utterance (DIR/splitNutt) instead of by speaker")
        p.add_argument("dir")
        p.add_argument("n", type=positive_int)
        a = p.parse_args(args)
        dirtools.split_data_dir(a.dir, a.n, by_speaker=not a.per_utt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
