"""Build RESULTS.md (environment, result tables, optional bootstrap tests) from experiment dirs.

Example: python -m partlib.bin.results exp/base_seed1 exp/base_seed2 exp/part_seed1 --seeds \\
             --systems base=Baseline,part=PART --compare base/final:part/final --out RESULTS.md
Against the paper: ... --paper part --ablation part_3stage/s3_joint_lora=ablation_1/s3_joint_lora,ablation_2/s3_joint
Layout and table conventions: see partlib/scoring/results.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from partlib.bin import cli, positive_int
from partlib.common import ConfigError, atomic_write
from partlib.scoring import results
from partlib.scoring.sections import parse_time_log


def parse_systems(spec: Optional[str]) -> Dict[str, str]:
    """``a=Label A,b`` -> {"a": "Label A", "b": "b"} (insertion order = column order)."""
    out: Dict[str, str] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, _, label = item.partition("=")
        if not name.strip():
            raise ConfigError(f"--systems: empty system name in {item!r}")
        out[name.strip()] = label.strip() or name.strip()
    return out


def _section(value: str):
    title, sep, specs = value.partition("=")
    if not sep or not title.strip() or not specs.split():
        raise ConfigError(f"--section {value!r}: expected TITLE=SPEC[ SPEC...]")
    return title.strip(), specs.split()


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", nargs="+", help="experiment dirs (exp/<tag>)")
    p.add_argument("--seeds", action="store_true",
                   help="group tags <system>_seed<k> and report mean ± std over seeds")
    p.add_argument("--systems", help="comma list of system[=label]: selects, orders and labels columns")
    p.add_argument("--compare", action="append", default=[], metavar="A:B",
                   help="add a paired bootstrap comparison of <system>/<stage> pairs (repeatable)")
    p.add_argument("--n-bootstrap", type=positive_int, default=1000, help="resamples for --compare")
    p.add_argument("--link", action="append", default=[], metavar="TITLE=PATH",
                   help="list a report (e.g. an analysis.md) in a final section; PATH as written (relative "
                        "to the output file); repeatable")
    p.add_argument("--time-log", action="append", default=[],
                   help="report of /usr/bin/time -v for the run (command, wall time, peak memory); repeat it "
                        "for a run made of several commands")
    p.add_argument("--section", action="append", default=[], metavar="TITLE=SPEC[ SPEC...]",
                   help="show these systems (system) or columns (system/stage) in a section of their own, "
                        "with their re-decode and long-form statistics; repeatable")
    p.add_argument("--target", action="append", default=[], metavar="LABEL=SOURCE<=GOAL",
                   help="a goal listed with whether it was reached (<= or >=); SOURCE: system/stage:task[:tgt_lang] "
                        "(mean over seeds of the task's test-set mean) or file.json:key.path (relative to the output "
                        "file's dir); repeatable")
    p.add_argument("--paper", metavar="NAME|FILE",
                   help="published numbers shown above ours in an 'Against the paper' section: a shipped reference "
                        "(part: the PART paper and other systems' reports) or a YAML file of the same grammar "
                        "(partlib/scoring/published.py)")
    p.add_argument("--paper-columns", metavar="ID[=TASK:GLOB[:TGT]],...",
                   help="columns of --paper to show (default: its summary, for part: fleurs,cv15,covost2); "
                        "=TASK:GLOB[:TGT] replaces a column's decodes (e.g. fleurs=asr:fl_*_test) or defines one of ours")
    p.add_argument("--ablation", metavar="REF=ABL[,ABL...]",
                   help="ablation chain: each ABL's change against REF (all <system>/<stage>) on the --paper columns, "
                        "the k-th ABL beside the paper's k-th published ablation")
    p.add_argument("--out", default="-", help="output file (default: stdout)")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Write RESULTS.md."""
    args = get_parser().parse_args(argv)
    text = results.build_results(args.exp_dirs, seeds=args.seeds, systems=parse_systems(args.systems),
                                 compare=args.compare, n_bootstrap=args.n_bootstrap,
                                 links=[tuple(x.split("=", 1)) for x in args.link if "=" in x],
                                 run_info=[parse_time_log(t) for t in args.time_log],
                                 sections=[_section(x) for x in args.section], targets=args.target,
                                 base_dir=Path(args.out).parent if args.out != "-" else Path.cwd(),
                                 paper=args.paper, paper_columns=[x for x in (args.paper_columns or "").split(",") if x],
                                 ablation=args.ablation)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        atomic_write(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
