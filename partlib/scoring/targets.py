"""RESULTS.md's targets: goals (``LABEL=SOURCE<=GOAL`` or ``>=``) listed with whether they were
reached; SOURCE is ``system/stage:task[:tgt_lang[,tgt_lang...]]`` (mean over seeds of the mean over
the task's test sets, of those target languages) or ``file.json:key.path`` (a number in a JSON
file, relative to the output's dir)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from partlib.common import ConfigError, DataError
from partlib.scoring.experiments import Decode, column_id, primary
from partlib.scoring.tables import mean_std


def _target_value(source: str, decodes: Sequence[Decode], systems: Mapping[str, str], base: Optional[Path]) -> float:
    """The value a target is measured on (module docstring)."""
    if ".json:" in source:
        file, _, path = source.partition(".json:")
        f = Path(file + ".json")
        f = f if f.is_absolute() or base is None else base / f
        if not f.is_file():
            raise DataError("target source file not found", f)
        value = json.loads(f.read_text(encoding="utf-8"))
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                raise DataError(f"target source: no key {path!r}", f)
            value = value[part]
        if not isinstance(value, (int, float)):
            raise DataError(f"target source: {path!r} is not a number", f)
        return float(value)
    col_spec, _, sel = source.partition(":")
    task, _, tgt = sel.partition(":")
    tgts = set(tgt.split(",")) if tgt else None  # e.g. de,fr,es,zh: the en->X mean
    col = column_id(col_spec, systems)
    per_seed: Dict[Optional[int], List[float]] = {}
    for d in decodes:
        if (d.system, d.stage) == col and d.task == task and (tgts is None or d.scores.tgt_lang in tgts):
            value = primary(d)[1]
            if value is not None:
                per_seed.setdefault(d.seed, []).append(value)
    if not per_seed:
        raise ConfigError(f"target source {source!r}: no scored {task or '?'} decode of {col_spec}")
    return mean_std([sum(v) / len(v) for v in per_seed.values()])[0]


def targets_section(targets: Sequence[str], decodes: Sequence[Decode], systems: Mapping[str, str],
                    base: Optional[Path]) -> List[str]:
    """The targets with their values and whether each was reached."""
    out = ["## Targets", "", "| target | measured on | goal | value | reached |", "|---|---|---|---|---|"]
    for spec in targets:
        m = re.fullmatch(r"(?P<label>[^=]+)=(?P<source>.+?)(?P<op><=|>=)(?P<goal>-?[0-9.]+)", spec)
        if not m:
            raise ConfigError(f"--target {spec!r}: expected LABEL=SOURCE<=VALUE or LABEL=SOURCE>=VALUE")
        value = _target_value(m["source"], decodes, systems, base)
        goal = float(m["goal"])
        reached = value <= goal if m["op"] == "<=" else value >= goal
        out.append(f"| {m['label']} | `{m['source']}` | {m['op']} {m['goal']} | {value:.2f} | "
                   f"{'yes' if reached else 'no'} |")
    return out + ["", "Targets on decodes: mean over seeds of the mean over the task's test sets "
                  "(translation: of the target languages named).", ""]

