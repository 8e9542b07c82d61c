"""RESULTS.md's sections beside the main tables: the run (command, wall time, peak memory from GNU
time), and sections of chosen systems with their re-decode and long-form statistics."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from partlib.common import ConfigError, DataError, PathLike
from partlib.scoring.experiments import Decode, stage_key
from partlib.scoring.tables import cell, collect, render_table


_TIME_FIELDS = {  # GNU time -v line prefix -> key
    "Command being timed": "command",
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
    "Maximum resident set size (kbytes)": "max_rss_kb",
    "Percent of CPU this job got": "cpu",
    "Exit status": "exit_status",
}


def parse_time_log(path: PathLike) -> Dict[str, str]:
    """The run's command, wall time, peak memory (largest resident set of any one process), CPU use
    and exit status from the report of ``/usr/bin/time -v`` (GNU time) in ``path``; other lines
    (the run's own output) are ignored."""
    info: Dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.strip().rpartition(": ")
        if sep and key in _TIME_FIELDS:
            info[_TIME_FIELDS[key]] = value.strip().strip('"')
    missing = sorted(set(_TIME_FIELDS.values()) - set(info))
    if missing:
        raise DataError(f"not a GNU time -v report (no {', '.join(missing)})", path)
    return info


def run_section(infos: Sequence[Mapping[str, str]]) -> List[str]:
    """The commands of the run (:func:`parse_time_log` of each) with their time and memory."""
    out = ["## Run", "", "| command | wall time | peak memory (largest process) | CPU use | exit status |",
           "|---|---|---|---|---|"]
    for info in infos:
        rss_gib = int(info["max_rss_kb"]) / 2**20
        out.append(f"| `{info['command']}` | {info['wall']} | {rss_gib:.2f} GiB | {info['cpu']} | {info['exit_status']} |")
    return out + [""]


def section_columns(title: str, specs: Sequence[str], columns: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The columns a section's specs (``system`` or ``system/stage``) name, in spec order."""
    out: List[Tuple[str, str]] = []
    for spec in specs:
        system, _, stage = spec.partition("/")
        found = [c for c in columns if c[0] == system and (not stage or c[1] == stage)]
        if not found:
            raise ConfigError(f"--section {title!r}: no decodes of {spec!r}")
        out += [c for c in found if c not in out]
    return out


def _stats_table(title: str, decodes: Sequence[Decode], stats_of: Callable[[Decode], Optional[Mapping]],
                 fields: Sequence[Tuple[str, str, int]], scale: Mapping[str, float]) -> List[str]:
    """A table of per-decode statistics (``stats_of``, from its ``decode.json``; None: not shown):
    rows = system/stage x test set, cells = mean ± std over seeds of each field ``(name, label,
    digits)`` (times ``scale[name]``, e.g. 100 for %)."""
    rows: Dict[str, Dict[str, List[float]]] = {}
    for d in sorted(decodes, key=lambda d: (d.system, stage_key(d.stage), d.testset, d.task)):
        stats = stats_of(d)
        if not isinstance(stats, Mapping):
            continue
        cells = rows.setdefault(f"{d.system} {d.stage} / {d.testset} ({d.task})", {})
        for name, _, _ in fields:
            value = stats.get(name)
            if value is not None:
                cells.setdefault(name, []).append(float(value) * scale.get(name, 1.0))
    if not rows:
        return []
    out = [f"### {title}", "", "| decode | " + " | ".join(label for _, label, _ in fields) + " |",
           "|" + "---|" * (len(fields) + 1)]
    for row, cells in rows.items():
        out.append("| " + " | ".join([row] + [cell(cells.get(name, []), False, digits)
                                             for name, _, digits in fields]) + " |")
    return out + [""]


def _redecode_rates(d: Decode) -> Optional[Dict[str, float]]:
    """A decode's re-decode counts as shares of its utterances (None without a re-decode)."""
    redecode, n = d.options.get("redecode"), d.options.get("num_utts")
    if not isinstance(redecode, Mapping) or not n:
        return None
    return {k: v / n for k, v in redecode["counts"].items()}


_TROUBLE_FIELDS = (("redecoded", "re-decoded (%)", 2), ("budget", "reached the budget (%)", 2),
                   ("rate", "over the tokens/s bound (%)", 2), ("repeat", "n-gram repeated 3x (%)", 2))
_LONGFORM_FIELDS = (("recordings", "recordings", 0), ("audio_s", "audio (s)", 1), ("segments", "segments", 1),
                    ("utterances_per_segment", "utterances per segment", 2), ("max_segment_s", "max segment (s)", 2),
                    ("rtf", "real-time factor", 4))


def section(title: str, columns: Sequence[Tuple[str, str]], decodes: Sequence[Decode],
            labels: Mapping[str, str]) -> List[str]:
    """A section of its own for the chosen columns: their tables and decode statistics."""
    chosen = [d for d in decodes if (d.system, d.stage) in columns]
    lines = [f"## {title}", ""]
    for t in collect(chosen):
        lines += render_table(t, columns, labels)
    lines += _stats_table("Re-decode triggers (share of the utterances)", chosen, _redecode_rates,
                          _TROUBLE_FIELDS, {k: 100.0 for k, _, _ in _TROUBLE_FIELDS})
    lines += _stats_table("Long-form segmentation", chosen, lambda d: d.options.get("longform"),
                          _LONGFORM_FIELDS, {})
    return lines

