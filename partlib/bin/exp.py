"""Experiment directories from the shell (``part.sh`` uses it; layout: ``partlib.train.layout``).

    python -m partlib.bin.exp env EXP_DIR      # write EXP_DIR/env.json once (date, commit, versions)
    python -m partlib.bin.exp models EXP_DIR   # "<stage> <model dir>" of every exported stage
    python -m partlib.bin.exp stages SCHEDULE  # the stage names of a schedule file, in order

``models`` lists the stages whose exported model is complete, in schedule order.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from partlib.bin import cli
from partlib.train import layout


@cli
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", help="record the environment in EXP_DIR/env.json (kept if present)")
    env.add_argument("exp_dir", type=Path)
    models = sub.add_parser("models", help="the exported stage models, in schedule order")
    models.add_argument("exp_dir", type=Path)
    stages = sub.add_parser("stages", help="the stage names of a schedule file, one a line, in order")
    stages.add_argument("schedule", type=Path)
    args = p.parse_args(argv)
    if args.command == "env":
        from partlib.provenance import write_env_json

        args.exp_dir.mkdir(parents=True, exist_ok=True)
        write_env_json(args.exp_dir, overwrite=False)
    elif args.command == "stages":
        from partlib.train.schedule import load_schedule

        print("\n".join(load_schedule(args.schedule).stage_names()))
    else:
        for name, model in layout.exported_models(args.exp_dir):
            print(name, model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
