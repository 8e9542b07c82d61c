"""Training curves of experiments: one PNG and JSON per experiment and an index page.

Example: python -m partlib.bin.plot_curves exp/part_seed1 exp/baseline_2stage_seed1 --out-dir exp/curves

Writes OUT_DIR/<tag>.png (train and dev loss against the cumulative step, alignment-stage
boundaries, LoRA activation steps, dev WER/BLEU/accuracy at each stage's end), OUT_DIR/<tag>.json
(the numbers plotted) and OUT_DIR/curves.md (the plots and a table of the stage-end dev metrics).
Reading: partlib/analysis/curves.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from partlib.analysis.curves import DEV_METRICS, plot_curves, training_curves
from partlib.bin import cli
from partlib.common import atomic_write


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", nargs="+", help="trained experiment dirs (exp/<tag>)")
    p.add_argument("--out-dir", required=True, help="where the plots, JSON and curves.md go")
    return p


@cli
def main(argv: Optional[List[str]] = None) -> int:
    """Plot every experiment's curves."""
    args = get_parser().parse_args(argv)
    curves = [training_curves(d) for d in args.exp_dirs]  # every input checked before anything is written
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Training curves", "", "Dev loss (red) and train loss (blue) against the step of the whole "
             "schedule; dashed: alignment-stage ends, dotted: LoRA activation.", "",
             "| experiment | stage | steps | dev loss | " + " | ".join(m.upper() for m in DEV_METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(DEV_METRICS)]
    for c in curves:
        plot_curves(c, out / f"{c['exp']}.png")
        atomic_write(out / f"{c['exp']}.json", json.dumps(c, indent=1, sort_keys=True) + "\n")
        for st in c["stages"]:
            vals = [st["end_dev"].get(m) for m in ("loss", *DEV_METRICS)]
            lines.append(f"| {c['exp']} | {st['name']} | {st['start']}-{st['end']} | "
                         + " | ".join("-" if v is None else f"{v:.{3 if i == 0 else 2}f}" for i, v in enumerate(vals))
                         + " |")
    lines.append("")
    for c in curves:
        lines += [f"## {c['exp']}", "", f"![{c['exp']}]({c['exp']}.png)", ""]
    atomic_write(out / "curves.md", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
