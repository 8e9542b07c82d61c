"""Paired bootstrap comparison of two systems decoded on the same test set.

Example: python -m partlib.bin.compare exp/a/decode_test_asr exp/b/decode_test_asr --n-bootstrap 1000
Each argument is a decode dir with ref, hyp, utt2lang (and tgt_lang or scores.json for translation).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from partlib.bin import add_normalizer_option, cli, positive_int
from partlib.common import atomic_write
from partlib.scoring import bootstrap
from partlib.scoring.scores import dumps_json


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sys_a", help="decode dir of system A")
    p.add_argument("sys_b", help="decode dir of system B")
    p.add_argument("--n-bootstrap", type=positive_int, default=1000, help="number of resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument("--out", help="also write the result as JSON to this file")
    add_normalizer_option(p, None, "the one A's scores.json records, else part-basic-v1")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Run the comparison and print a markdown table (diff = A - B)."""
    args = get_parser().parse_args(argv)
    result = bootstrap.compare_dirs(args.sys_a, args.sys_b, args.n_bootstrap, args.seed, args.normalizer)
    if args.out:
        atomic_write(args.out, dumps_json(result))
    sys.stdout.write(bootstrap.format_markdown(result, args.sys_a, args.sys_b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
