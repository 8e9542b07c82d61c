"""The result tables of RESULTS.md: one per task and table of its scorer, rows = test set x set,
columns = system x stage, cells = mean ± sample std over seeds, the best of each row in bold."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from partlib import tasks
from partlib.provenance import ENV_FIELDS
from partlib.scoring import scorers
from partlib.scoring.experiments import Decode, Experiment
from partlib.scoring.scores import OVERALL, SetScores, set_order


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def cell(values: Sequence[float], bold: bool, digits: int = 2) -> str:
    """A table cell: the mean (± sample std over several values), bold if asked; ``-`` if empty."""
    if not values:
        return "-"
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"**{text}**" if bold else text


@dataclass
class ResultTable:
    """One table of RESULTS.md being filled: row -> column -> the values over seeds."""

    title: str
    lower_is_better: bool
    rows: Dict[str, Dict[Tuple[str, str], List[float]]] = field(default_factory=dict)

    def add(self, row: str, column: Tuple[str, str], value: float) -> None:
        """Add one seed's value to a cell."""
        self.rows.setdefault(row, {}).setdefault(column, []).append(float(value))


def _row_name(testset: str, sec: SetScores, metric_in_row: bool) -> str:
    name = f"{testset} / {'all' if sec.key == OVERALL else sec.key}"
    return f"{name} ({sec.primary.upper()})" if metric_in_row else name


def collect(decodes: Sequence[Decode]) -> List[ResultTable]:
    """The tables of the decodes' tasks (each its scorer's tables, :mod:`partlib.scoring.scorers`),
    in the task registry's order; a table without a value is left out."""
    tables: Dict[Tuple[str, str], ResultTable] = {}
    order = tasks.names(scored=True)
    for d in sorted(decodes, key=lambda d: (order.index(d.task), d.testset)):
        task = tasks.get(d.task)
        col = (d.system, d.stage)
        for key in set_order(d.scores.sets):
            sec = d.scores.sets[key]
            for spec in scorers.of_task(task, d.path).tables():
                value = spec.value(sec)
                if value is None:
                    continue
                table = tables.setdefault((d.task, spec.key), ResultTable(f"{task.title}: {spec.title}",
                                                                          not spec.higher_is_better))
                table.add(_row_name(d.testset, sec, spec.metric_in_row), col, value)
    keys = [(t, spec.key) for t in order for spec in scorers.of_task(tasks.get(t)).tables()]
    return [tables[k] for k in keys if k in tables]


def render_table(t: ResultTable, columns: Sequence[Tuple[str, str]], labels: Mapping[str, str]) -> List[str]:
    """A table in Markdown, columns labelled by ``labels`` (system -> label), the best of each row bold."""
    head = ["test set"] + [f"{labels.get(s, s)} {st}" for s, st in columns]
    out = [f"### {t.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, cells in t.rows.items():
        means = {c: mean_std(v)[0] for c, v in cells.items()}
        best = (min if t.lower_is_better else max)(means.values())
        rendered = [cell(cells.get(c, []), c in means and round(means[c], 2) == round(best, 2))
                    for c in columns]
        out.append("| " + " | ".join([row, *rendered]) + " |")
    return out + [""]


def env_section(exps: Sequence[Experiment]) -> List[str]:
    """The environment of each experiment (its ``env.json``, :mod:`partlib.provenance`)."""
    head = ["experiment"] + [label for _, label in ENV_FIELDS] + ["config.yaml sha256"]
    out = ["## Environment", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in sorted(exps, key=lambda e: e.tag):
        env = e.env or {}
        vals = [f"`{env[k]}`" if k in env else "n/a" for k, _ in ENV_FIELDS]
        out.append("| " + " | ".join([e.tag, *vals, f"`{e.config_sha}`" if e.config_sha else "n/a"]) + " |")
    return out + [""]

