"""ESPnet-style ``RESULTS.md`` from the scoring files of one or more experiments.

Experiment layout read here (the recipes write it)::

    exp/<tag>/env.json                                  # write_env_json() at training time
    exp/<tag>/config.yaml                               # resolved config (optional)
    exp/<tag>/<stage>/decode_<testset>_<task>/scores.json
    exp/<tag>/decode_<testset>_<task>/scores.json       # the final model: stage "final"

* ``<tag>`` names the system; with ``--seeds``, tags ``<system>_seed<k>`` are runs of one system
  and their numbers are shown as mean ± sample standard deviation over seeds.
* ``<stage>`` is the alignment stage directory of the checkpoint decoded (e.g. ``s1_adapter``,
  ``s2a_enc_top8``); stages sort by name, ``final`` last.
* ``<task>`` is the last ``_``-separated part of the decode dir name, a scored task of the
  registry (``asr``, ``s2tt``, ``t2tt``, ``lid``, ...; :func:`partlib.tasks.parse_decode_dir`);
  ``<testset>`` is the rest (it may contain ``_``).
* A decode dir holds ``ref``, ``hyp``, ``utt2lang`` (and ``tgt_lang`` for translation) next to the
  scoring outputs, which is what ``--compare`` re-reads for paired bootstrap tests.

Tables: one per task and metric (WER/CER for error-rate tasks such as ASR, BLEU and chrF for
translation, the wrong-language rate for both, accuracy for label tasks such as LID), in the task
registry's order; rows = test set x language (ASR, LID) or direction (translation) plus ``all``,
columns = system x stage. The best value of each row is bold. The output depends only on the files read (no
clock, no absolute paths), so regenerating it from the same ``scores.json`` files is byte-identical.

Against a paper (``paper=``, :mod:`partlib.scoring.published`): the paper's summary columns (e.g.
FLEURS and CV15 average error, CoVoST 2 -> en average BLEU), each computed from the decodes it names,
with the published rows above ours and a per-language table of each column; and an ablation chain:
each ablation's change against the full system, beside the paper's published changes.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import platform
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from partlib import tasks
from partlib.common import ConfigError, DataError, PathLike, atomic_write
from partlib.scoring import bootstrap, published, significance

FINAL_STAGE = "final"
ENV_FIELDS = (("date", "date"), ("git_commit", "git commit"), ("python", "python"),
              ("torch", "torch"), ("transformers", "transformers"), ("device", "device"))
_SEED = re.compile(r"^(?P<system>.+)_seed(?P<seed>\d+)$")
# The tables of each scorer, in order: (key, title). "err" is each set's headline error rate (WER
# or CER, named in the row) and "wrong_lang" the wrong-language rate, both lower-is-better; the
# other keys are metrics, whose direction the task registry knows.
_TABLES = {
    "error_rate": (("err", "WER / CER (%)"), ("wrong_lang", "wrong-language rate (%)")),
    "translation": (("bleu", "BLEU"), ("chrf", "chrF"), ("wrong_lang", "wrong-language rate (%)")),
    "accuracy": (("accuracy", "accuracy (%)"),),
}


def _lower_is_better(key: str) -> bool:
    return key in ("err", "wrong_lang") or not tasks.higher_is_better(key)


def git_commit() -> str:
    """The commit of the working tree (``-dirty`` when tracked files changed), or ``unknown``."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                 cwd=Path(__file__).resolve().parent)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (commit + ("-dirty" if dirty else "")) if commit else "unknown"


def write_env_json(exp_dir: PathLike, *, overwrite: bool = True) -> Path:
    """Record the training environment in ``<exp_dir>/env.json`` (date, git commit, versions,
    device), so that RESULTS.md can show it without depending on when it is regenerated."""
    path = Path(exp_dir) / "env.json"
    if path.exists() and not overwrite:
        return path
    import torch
    import transformers

    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        device = "cpu"
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    atomic_write(path, json.dumps(env, indent=2, sort_keys=True) + "\n")
    return path


@dataclass
class Decode:
    """One scored decode dir."""

    tag: str
    system: str
    seed: Optional[int]
    stage: str
    testset: str
    task: str
    path: Path
    scores: Dict
    options: Dict = field(default_factory=dict)  # decode.json (decoding options and statistics)


@dataclass
class Experiment:
    """One experiment dir with its decodes."""

    tag: str
    path: Path
    env: Optional[Dict]
    config_sha: Optional[str]
    decodes: List[Decode] = field(default_factory=list)


def _split_tag(tag: str, seeds: bool) -> Tuple[str, Optional[int]]:
    m = _SEED.match(tag) if seeds else None
    return (m.group("system"), int(m.group("seed"))) if m else (tag, None)


def load_experiment(exp_dir: PathLike, seeds: bool = False) -> Experiment:
    """Find the scored decode dirs of an experiment (layout in the module docstring)."""
    path = Path(exp_dir)
    if not path.is_dir():
        raise DataError("experiment directory not found", path)
    tag = path.resolve().name
    system, seed = _split_tag(tag, seeds)
    env = None
    if (path / "env.json").is_file():
        env = json.loads((path / "env.json").read_text(encoding="utf-8"))
    sha = None
    if (path / "config.yaml").is_file():
        sha = hashlib.sha256((path / "config.yaml").read_bytes()).hexdigest()[:12]
    exp = Experiment(tag=tag, path=path, env=env, config_sha=sha)
    candidates = [(FINAL_STAGE, d) for d in path.glob("decode_*")]
    candidates += [(d.parent.name, d) for d in path.glob("*/decode_*")]
    for stage, d in sorted(candidates, key=lambda sd: (sd[0], sd[1].name)):
        parsed = tasks.parse_decode_dir(d.name)
        if not parsed or not (d / "scores.json").is_file():
            continue
        try:
            scores = json.loads((d / "scores.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e})", d / "scores.json") from None
        options = {}
        if (d / "decode.json").is_file():
            try:
                options = json.loads((d / "decode.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e})", d / "decode.json") from None
        exp.decodes.append(Decode(tag, system, seed, stage, parsed[0], parsed[1], d, scores, options))
    return exp


def _stage_key(stage: str) -> Tuple[bool, str]:
    return (stage == FINAL_STAGE, stage)


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(values: Sequence[float], bold: bool, digits: int = 2) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"**{text}**" if bold else text


@dataclass
class _Table:
    title: str
    lower_is_better: bool
    rows: Dict[str, Dict[Tuple[str, str], List[float]]] = field(default_factory=dict)

    def add(self, row: str, column: Tuple[str, str], value: Optional[float]) -> None:
        if value is not None:
            self.rows.setdefault(row, {}).setdefault(column, []).append(float(value))


def _row_name(testset: str, key: str, sec: Mapping, metric_label: bool) -> str:
    name = f"{testset} / {'all' if key == 'overall' else key}"
    return f"{name} ({sec['primary'].upper()})" if metric_label else name


def _collect(decodes: Sequence[Decode]) -> List[_Table]:
    tables: Dict[Tuple[str, str], _Table] = {}
    order = tasks.names(scored=True)
    for d in sorted(decodes, key=lambda d: (order.index(d.task), d.testset)):
        task = tasks.get(d.task)
        col = (d.system, d.stage)
        for key in sorted(d.scores["sets"], key=lambda k: (k == "overall", k)):
            sec = d.scores["sets"][key]
            for metric, title in _TABLES[task.scorer]:
                if metric == "err":
                    row, value = _row_name(d.testset, key, sec, True), sec["scores"][sec["primary"]]["value"]
                elif metric == "wrong_lang":
                    row, value = _row_name(d.testset, key, sec, False), sec["diagnostics"]["wrong_lang"]["rate"]
                elif metric in sec["scores"]:
                    row, value = _row_name(d.testset, key, sec, False), sec["scores"][metric]["value"]
                else:
                    continue
                table = tables.setdefault((d.task, metric), _Table(f"{task.title}: {title}", _lower_is_better(metric)))
                table.add(row, col, value)
    keys = [(t, m) for t in order for m, _ in _TABLES[tasks.get(t).scorer]]
    return [tables[k] for k in keys if k in tables]


def _render_table(t: _Table, columns: Sequence[Tuple[str, str]], labels: Mapping[str, str]) -> List[str]:
    head = ["test set"] + [f"{labels.get(s, s)} {st}" for s, st in columns]
    out = [f"### {t.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, cells in t.rows.items():
        means = {c: mean_std(v)[0] for c, v in cells.items()}
        best = (min if t.lower_is_better else max)(means.values())
        rendered = [_cell(cells.get(c, []), c in means and round(means[c], 2) == round(best, 2))
                    for c in columns]
        out.append("| " + " | ".join([row, *rendered]) + " |")
    return out + [""]


def _env_section(exps: Sequence[Experiment]) -> List[str]:
    head = ["experiment"] + [label for _, label in ENV_FIELDS] + ["config.yaml sha256"]
    out = ["## Environment", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in sorted(exps, key=lambda e: e.tag):
        env = e.env or {}
        vals = [f"`{env[k]}`" if k in env else "n/a" for k, _ in ENV_FIELDS]
        out.append("| " + " | ".join([e.tag, *vals, f"`{e.config_sha}`" if e.config_sha else "n/a"]) + " |")
    return out + [""]


def _column_id(spec: str, systems: Mapping[str, str], what: str = "--compare side") -> Tuple[str, str]:
    """``system/stage`` (system by tag or by its label) -> column key; ``what`` names the option."""
    if "/" not in spec:
        raise ConfigError(f"{what} {spec!r}: expected <system>/<stage>, e.g. base/s1_adapter")
    system, stage = spec.rsplit("/", 1)
    by_label = {v: k for k, v in systems.items()}
    return by_label.get(system, system), stage


def _primary(d: Decode) -> Tuple[str, Optional[float]]:
    """The headline metric of a decode's ``overall`` set and its value."""
    sec = d.scores["sets"]["overall"]
    metric = sec["primary"]
    return metric, sec["scores"].get(metric, {}).get("value")


def _groups(keys: Sequence[Tuple[str, str]], decodes: Mapping[Tuple[str, str], Decode]) -> Dict[str, List[Tuple[str, str]]]:
    """(testset, task) keys grouped for the seed-level test: by task, and translation by target
    language where a target has several test sets (the rest pooled, e.g. en->X)."""
    tgt = {k: decodes[k].scores.get("tgt_lang") for k in keys}
    per_tgt: Dict[Tuple[str, Optional[str]], List[Tuple[str, str]]] = {}
    for k in keys:
        per_tgt.setdefault((k[1], tgt[k]), []).append(k)
    out: Dict[str, List[Tuple[str, str]]] = {}
    for (task, t), ks in per_tgt.items():
        if t is None:
            out.setdefault(task, []).extend(ks)
        elif len(ks) > 1:
            out.setdefault(f"{task} into {t}", []).extend(ks)
        else:
            rest = sorted(x for (tk, x), v in per_tgt.items() if tk == task and x is not None and len(v) == 1)
            out.setdefault(f"{task} into {', '.join(rest)}", []).extend(ks)
    return out


def _compare_section(pairs: Sequence[str], decodes: Sequence[Decode], systems: Mapping[str, str],
                     n_bootstrap: int, alpha: float = 0.05) -> List[str]:
    by_key: Dict[Tuple[str, str, str, str, Optional[int]], Decode] = {
        (d.system, d.stage, d.testset, d.task, d.seed): d for d in decodes}
    out = ["## Comparisons with significance", "",
           f"diff = A - B of each test set's headline metric (WER/CER: lower is better; BLEU, accuracy: "
           f"higher is better). Per seed: paired bootstrap over the utterances ({n_bootstrap} resamples, "
           f"seed 0), `*` where p < {alpha}. Seed level: paired sign-flip test over every (seed, test set) "
           f"pair of a task (exact over all sign assignments up to 16 pairs), two-sided.", ""]
    statements: List[str] = []
    for pair in pairs:
        if ":" not in pair:
            raise ConfigError(f"--compare {pair!r}: expected A:B")
        a_spec, b_spec = pair.split(":", 1)
        col_a, col_b = _column_id(a_spec, systems), _column_id(b_spec, systems)
        cells_a = {(ts, tk, sd) for (s, st, ts, tk, sd) in by_key if (s, st) == col_a}
        cells_b = {(ts, tk, sd) for (s, st, ts, tk, sd) in by_key if (s, st) == col_b}
        common = cells_a & cells_b
        if not common:
            raise ConfigError(f"--compare {pair!r}: no test set decoded by both systems (with the same seed)")
        keys = sorted({(ts, tk) for ts, tk, _ in common})
        seeds = sorted({sd for _, _, sd in common}, key=lambda s: (s is not None, s or 0))
        first = {k: by_key[(*col_a, *k, next(sd for sd in seeds if (*k, sd) in common))] for k in keys}
        head = ["test set", "task", "metric"] + [f"seed {s}" if s is not None else "diff (p)" for s in seeds]
        out += [f"### {a_spec} (A) vs {b_spec} (B)", "", "Per-seed paired bootstrap: diff (p-value).", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        diffs: Dict[Tuple[str, str], List[float]] = {}
        n_sig = {True: 0, False: 0}
        for k in keys:
            metric = _primary(first[k])[0]
            row = [k[0], k[1], metric.upper()]
            for sd in seeds:
                if (*k, sd) not in common:
                    row.append("-")
                    continue
                da, db = by_key[(*col_a, *k, sd)], by_key[(*col_b, *k, sd)]
                res = bootstrap.compare_dirs(da.path, db.path, n_bootstrap=n_bootstrap, seed=0)
                r = res["sets"]["overall"].get(metric)
                va, vb = _primary(da)[1], _primary(db)[1]
                if va is not None and vb is not None:
                    diffs.setdefault(k, []).append(va - vb)
                if r is None or r["diff"] is None:
                    row.append("n/a")
                    continue
                sig = r["p_value"] < alpha
                if sig:
                    n_sig[(r["diff"] < 0) == _lower_is_better(metric)] += 1
                row.append(f"{r['diff']:+.2f} ({r['p_value']:.3f}){'*' if sig else ''}")
            out.append("| " + " | ".join(row) + " |")
        n_cells = sum(len(v) for v in diffs.values())
        out += ["", f"Per-seed bootstrap: A significantly better in {n_sig[True]}, B significantly better in "
                f"{n_sig[False]} of {n_cells} (seed, test set) cells.", "",
                "Seed-level sign-flip test per task (mean of A - B over the pairs):", "",
                "| task | metric | pairs | mean diff | A better | B better | p-value | significant |",
                "|---|---|---|---|---|---|---|---|"]
        for group, ks in _groups(keys, first).items():
            d = [x for k in ks for x in diffs.get(k, [])]
            metrics = sorted({_primary(first[k])[0] for k in ks})
            lower = _lower_is_better(metrics[0])
            t = significance.sign_flip_test(d)
            if t["p_value"] is None:
                continue
            better_a = t["negative"] if lower else t["positive"]
            better_b = t["positive"] if lower else t["negative"]
            sig = t["p_value"] < alpha
            out.append(f"| {group} | {'/'.join(m.upper() for m in metrics)} | {t['n']} | {t['mean_diff']:+.2f} | "
                       f"{better_a} | {better_b} | {t['p_value']:.4f} | {'yes' if sig else 'no'} |")
            winner = (a_spec if (t["mean_diff"] < 0) == lower else b_spec) if t["mean_diff"] else None
            statements.append(
                f"- {group}: {a_spec} vs {b_spec}: "
                + (f"{winner} is better by {abs(t['mean_diff']):.2f} on average over {t['n']} (seed, test set) "
                   f"pairs, p = {t['p_value']:.4f}: " if winner else f"no difference over {t['n']} pairs: ")
                + ("significant." if sig else f"not significant at {alpha}."))
        out.append("")
    return out + ["### Which differences are significant", "", *statements, ""]


def _target_value(source: str, decodes: Sequence[Decode], systems: Mapping[str, str], base: Optional[Path]) -> float:
    """The value a target is measured on (see :func:`build_results`)."""
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
    col = _column_id(col_spec, systems)
    per_seed: Dict[Optional[int], List[float]] = {}
    for d in decodes:
        if (d.system, d.stage) == col and d.task == task and (tgts is None or d.scores.get("tgt_lang") in tgts):
            value = _primary(d)[1]
            if value is not None:
                per_seed.setdefault(d.seed, []).append(value)
    if not per_seed:
        raise ConfigError(f"target source {source!r}: no scored {task or '?'} decode of {col_spec}")
    return mean_std([sum(v) / len(v) for v in per_seed.values()])[0]


def _targets_section(targets: Sequence[str], decodes: Sequence[Decode], systems: Mapping[str, str],
                     base: Optional[Path]) -> List[str]:
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


def _run_section(infos: Sequence[Mapping[str, str]]) -> List[str]:
    out = ["## Run", "", "| command | wall time | peak memory (largest process) | CPU use | exit status |",
           "|---|---|---|---|---|"]
    for info in infos:
        rss_gib = int(info["max_rss_kb"]) / 2**20
        out.append(f"| `{info['command']}` | {info['wall']} | {rss_gib:.2f} GiB | {info['cpu']} | {info['exit_status']} |")
    return out + [""]


def _section_columns(title: str, specs: Sequence[str], columns: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
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
    for d in sorted(decodes, key=lambda d: (d.system, _stage_key(d.stage), d.testset, d.task)):
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
        out.append("| " + " | ".join([row] + [_cell(cells.get(name, []), False, digits)
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


def _section(title: str, columns: Sequence[Tuple[str, str]], decodes: Sequence[Decode],
             labels: Mapping[str, str]) -> List[str]:
    chosen = [d for d in decodes if (d.system, d.stage) in columns]
    lines = [f"## {title}", ""]
    for t in _collect(chosen):
        lines += _render_table(t, columns, labels)
    lines += _stats_table("Re-decode triggers (share of the utterances)", chosen, _redecode_rates,
                          _TROUBLE_FIELDS, {k: 100.0 for k, _, _ in _TROUBLE_FIELDS})
    lines += _stats_table("Long-form segmentation", chosen, lambda d: d.options.get("longform"),
                          _LONGFORM_FIELDS, {})
    return lines


def _measure(spec: str, column: Tuple[str, str], decodes: Sequence[Decode]) -> Tuple[Dict[str, List[float]], List[float]]:
    """Our numbers of a paper column (``spec``: its decodes, :func:`published.matches`) for one
    system/stage: per key (language or direction of the scores) the per-seed values, each the mean
    over the matched test sets of that key, and the per-seed unweighted means over the keys (a seed
    that lacks a key of the others is left out of the average)."""
    seeds: Dict[Optional[int], Dict[str, List[float]]] = {}
    for d in decodes:
        if (d.system, d.stage) != column or not published.matches(spec, d.task, d.testset, d.scores.get("tgt_lang")):
            continue
        cells = seeds.setdefault(d.seed, {})
        for key, sec in d.scores["sets"].items():
            value = sec["scores"].get(sec["primary"], {}).get("value")
            if key != "overall" and value is not None:
                cells.setdefault(key, []).append(float(value))
    keys = sorted({k for cells in seeds.values() for k in cells})
    order = sorted(seeds, key=lambda s: (s is not None, s or 0))
    per_key = {k: [mean_std(seeds[s][k])[0] for s in order if k in seeds[s]] for k in keys}
    avg = [mean_std([mean_std(seeds[s][k])[0] for k in keys])[0] for s in order if set(keys) <= set(seeds[s])]
    return per_key, avg


def _paper_columns(ref: published.Reference, specs: Sequence[str]) -> List[Tuple[str, published.Column]]:
    """The columns ``ID`` (of the reference file) or ``ID=TASK:GLOB[:TGT]`` (its decodes replaced,
    or a column of ours titled ID) asked for; none asked: the reference's summary columns."""
    out = []
    for spec in specs or ref.summary:
        cid, sep, decodes = spec.partition("=")
        if not sep and cid not in ref.columns:
            raise ConfigError(f"--paper-columns {cid!r}: not a column of the reference (columns: {', '.join(ref.columns)}); "
                              "ID=TASK:GLOB[:TGT] defines one")
        col = ref.columns.get(cid) or published.Column(title=cid, decodes=decodes, group=cid)
        col = replace(col, decodes=decodes) if sep else col
        tasks.parse_decode_spec(col.decodes)
        out.append((cid, col))
    return out


def _published_value(value: Optional[float], sign: bool = False) -> str:
    if value is None:
        return "—"
    return ("+" if sign and value > 0 else "") + str(value)


def _paper_section(ref: published.Reference, cols: Sequence[Tuple[str, published.Column]],
                   ours: Sequence[Tuple[str, str]], decodes: Sequence[Decode], labels: Mapping[str, str],
                   notes: Dict[str, int]) -> List[str]:
    """The paper's summary table and a per-language table of each column: published rows first."""
    measured = {(cid, c): _measure(col.decodes, c, decodes) for cid, col in cols for c in ours}
    union = {cid: sorted({k for c in ours for k in measured[(cid, c)][0]}) for cid, _ in cols}

    def mark(source: str) -> str:
        return f"published [{notes.setdefault(source, len(notes) + 1)}]"

    def ours_label(c: Tuple[str, str]) -> str:
        return f"{labels.get(c[0], c[0])} {c[1]}"

    def ours_avg(cid: str, c: Tuple[str, str]) -> str:
        per_key, avg = measured[(cid, c)]
        if not avg:
            return "—"
        short = f" ({len(per_key)}/{len(union[cid])})" if len(per_key) < len(union[cid]) else ""
        return _cell(avg, False) + short

    head = ["system", "source"] + [col.title for _, col in cols]
    out = ["## Against the paper", "",
           "Published rows first (sources below the tables), then ours. A column of ours is the "
           "unweighted mean over the languages (directions) of the test sets its decodes name, each "
           "language the mean over its test sets; cells are the mean over seeds ± sample std; `(k/n)`: "
           "over k of the n languages any system of ours has. Published averages are over the paper's "
           "languages (listed in the per-language tables). —: not measured or not published. Error "
           "rates: lower is better; BLEU: higher is better.", "",
           "Columns: " + "; ".join(f"{col.title} = `{col.decodes}`" for _, col in cols) + ".", "",
           "### Summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in ref.systems:
        if any(cid in s.avg for cid, _ in cols):
            out.append("| " + " | ".join([s.label, mark(s.source)] + [_published_value(s.avg.get(cid))
                                                                      for cid, _ in cols]) + " |")
    found = [c for c in ours if any(measured[(cid, c)][0] for cid, _ in cols)]
    for c in found:
        out.append("| " + " | ".join([ours_label(c), "ours"] + [ours_avg(cid, c) for cid, _ in cols]) + " |")
    out += [""] + ([] if found else ["No decode of ours matches these columns (the decodes named above).", ""])
    for cid, col in cols:
        keys = list(col.keys) + [k for k in union[cid] if k not in col.keys]
        rows = [[s.label, mark(s.source)] + [_published_value(s.per_key[cid].get(k)) for k in keys]
                + [_published_value(s.avg.get(cid))] for s in ref.systems if s.per_key.get(cid)]
        rows += [[ours_label(c), "ours"] + [_cell(measured[(cid, c)][0][k], False) if k in measured[(cid, c)][0]
                                            else "—" for k in keys] + [ours_avg(cid, c)]
                 for c in ours if measured[(cid, c)][0]]
        if rows:  # published rows with averages only are in the summary
            head = ["system", "source"] + keys + ["avg"]
            out += [f"### {col.title}: per language", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                    *("| " + " | ".join(r) + " |" for r in rows), ""]
    return out


def _ablation_section(spec: str, ref: published.Reference, cols: Sequence[Tuple[str, published.Column]],
                      decodes: Sequence[Decode], labels: Mapping[str, str], notes: Dict[str, int]) -> List[str]:
    """The ablation chain as changes of the paper columns against the reference system, with the
    paper's published changes beside (the k-th system given beside the paper's step k; ``-`` in
    the k-th place: that step was not run)."""
    ref_spec, sep, abl_specs = spec.partition("=")
    if not sep or not ref_spec or not abl_specs or set(abl_specs.split(",")) == {"-"}:
        raise ConfigError(f"--ablation {spec!r}: expected REF=ABL[,ABL...], each <system>/<stage> (or - for a "
                          "step not run)")
    given = [(i, x) for i, x in enumerate(abl_specs.split(",")) if x != "-"]
    specs = [ref_spec] + [x for _, x in given]
    systems = [_column_id(x, labels, "--ablation system") for x in specs]
    known = {(d.system, d.stage) for d in decodes}
    for x, c in zip(specs, systems):
        if c not in known:
            raise ConfigError(f"--ablation: no decodes of {x!r}")
    means = {}
    for cid, col in cols:
        for c in systems:
            avg = _measure(col.decodes, c, decodes)[1]
            means[(cid, c)] = mean_std(avg)[0] if avg else None
    steps = ref.ablation.steps if ref.ablation else []
    groups = list(dict.fromkeys(col.group for _, col in cols))
    head = [f"ablation (Δ against {labels.get(systems[0][0], systems[0][0])} {systems[0][1]}: + better, - worse)"]
    head += ["paper's step"] if steps else []
    places = [i for i, _ in given]  # each system's step of the chain
    rows = [[f"{labels.get(c[0], c[0])} {c[1]}"] + ([steps[i].name if i < len(steps) else "—"] if steps else [])
            for i, c in zip(places, systems[1:])]
    for g in groups:
        members = [(cid, col) for cid, col in cols if col.group == g]
        deltas = []
        for cid, col in members:
            head.append(f"{col.title} Δ")
            column = []
            for row, c in zip(rows, systems[1:]):
                r, a = means[(cid, systems[0])], means[(cid, c)]
                d = None if r is None or a is None else (a - r if col.higher_is_better else r - a)
                column.append(d)
                row.append("—" if d is None else f"{d:+.2f}")
            deltas.append(column)
        if len(members) > 1:
            head.append(f"{g} Δ (mean of its columns)")
            for row, ds in zip(rows, zip(*deltas)):
                known_ds = [d for d in ds if d is not None]
                row.append(f"{mean_std(known_ds)[0]:+.2f}" if known_ds else "—")
        if any(g in st.delta for st in steps):
            head.append(f"{g} Δ published [{notes.setdefault(ref.ablation.source, len(notes) + 1)}]")
            for i, row in zip(places, rows):
                row.append(_published_value(steps[i].delta.get(g) if i < len(steps) else None, sign=True))
    return ["## Ablation chain", "",
            "Each system's change against the reference on the columns above: Δ > 0 better, Δ < 0 worse "
            "(error rates: reference - system; BLEU: system - reference), the paper's convention (\"ASR -0.4\"); "
            "ours from the means over seeds. The paper's ablations are cumulative.", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _against_paper(paper: str, paper_columns: Sequence[str], ablation: Optional[str], ours: Sequence[Tuple[str, str]],
                   decodes: Sequence[Decode], labels: Mapping[str, str]) -> List[str]:
    """The sections that read our systems against a reference file (:mod:`partlib.scoring.published`)."""
    ref = published.load(paper)
    cols = _paper_columns(ref, paper_columns)
    notes: Dict[str, int] = {}  # source key -> its footnote number, in order of first use
    lines = _paper_section(ref, cols, ours, decodes, labels, notes)
    if ablation:
        lines += _ablation_section(ablation, ref, cols, decodes, labels, notes)
    if notes:
        lines += ["Sources of the published numbers:", ""] + [f"- [{n}] {ref.sources[k]}" for k, n in notes.items()] + [""]
    return lines


def build_results(exp_dirs: Sequence[PathLike], *, seeds: bool = False,
                  systems: Optional[Mapping[str, str]] = None, compare: Sequence[str] = (),
                  n_bootstrap: int = 1000, links: Sequence[Tuple[str, str]] = (),
                  run_info: Sequence[Mapping[str, str]] = (),
                  sections: Sequence[Tuple[str, Sequence[str]]] = (), targets: Sequence[str] = (),
                  base_dir: Optional[PathLike] = None, paper: Optional[str] = None,
                  paper_columns: Sequence[str] = (), ablation: Optional[str] = None) -> str:
    """The text of RESULTS.md for the given experiment dirs.

    ``systems`` maps a system name (tag without ``_seed<k>``) to its column label and, if given,
    selects and orders the columns; otherwise systems appear in the order of ``exp_dirs``.
    ``compare`` holds ``A:B`` pairs of ``<system>/<stage>`` for the bootstrap section.
    ``links`` holds ``(title, relative path)`` pairs listed in a final section (e.g. the
    representation analysis reports). ``run_info`` (:func:`parse_time_log` of each command of the
    run) adds a section with the command, wall time and peak memory. ``sections`` holds ``(title,
    specs)``: the systems (``system``) or columns (``system/stage``) named are shown in a section
    of their own (a whole system there leaves the main tables), with the re-decode triggers and
    long-form segmentation statistics of their ``decode.json``. ``targets`` holds
    ``LABEL=SOURCE<=GOAL`` (or ``>=``) goals listed with whether they were reached; SOURCE is
    ``system/stage:task[:tgt_lang[,tgt_lang...]]`` (mean over seeds of the mean over the task's test
    sets, of those target languages) or
    ``file.json:key.path`` (a number in a JSON file, relative to ``base_dir``).
    ``paper`` names a reference file of published numbers (:func:`published.load`: ``part`` or a
    path): an "Against the paper" section, before the result tables, shows its rows above those of
    our main-table columns in its ``paper_columns`` (``ID`` or ``ID=TASK:GLOB[:TGT]``; default: its
    summary columns), each also per language. ``ablation`` (``REF=ABL[,ABL...]`` of
    ``<system>/<stage>``) adds each ablation's change against REF on those columns, the k-th beside
    the paper's step k.
    """
    exps = [load_experiment(d, seeds) for d in exp_dirs]
    decodes = [d for e in exps for d in e.decodes]
    if not decodes:
        raise DataError("no decode_*/scores.json found in " + ", ".join(e.tag for e in exps))
    labels = dict(systems or {})
    order = list(labels) if labels else list(dict.fromkeys(d.system for d in decodes))
    unknown = [s for s in order if s not in {d.system for d in decodes}]
    if unknown:
        raise ConfigError(f"--systems names unknown system(s): {', '.join(unknown)}")
    decodes = [d for d in decodes if d.system in order]
    all_columns = sorted({(d.system, d.stage) for d in decodes},
                         key=lambda c: (order.index(c[0]), _stage_key(c[1])))
    own = {spec for _, specs in sections for spec in specs if "/" not in spec}
    columns = [c for c in all_columns if c[0] not in own]
    section_columns = [(title, _section_columns(title, specs, all_columns)) for title, specs in sections]
    seed_counts = {}
    for d in decodes:
        seed_counts.setdefault((d.system, d.stage, d.testset, d.task), set()).add(d.seed)
    n_seeds = sorted({len(v) for v in seed_counts.values()})
    if (paper_columns or ablation) and not paper:
        raise ConfigError("--paper-columns and --ablation need --paper (the reference file of published numbers)")
    lines = ["# RESULTS", "", *(_run_section(run_info) if run_info else []), *_env_section(exps)]
    if paper:
        lines += _against_paper(paper, paper_columns, ablation, columns, decodes, labels)
    lines += ["## Results", ""]
    if seeds:
        lines += [f"Seeds per cell: {', '.join(map(str, n_seeds))}; cells are mean ± sample std.", ""]
    lines += ["Best value of each row in bold. Error rates and the wrong-language rate: lower is "
              "better; BLEU, chrF: higher is better.", ""]
    for t in _collect([d for d in decodes if (d.system, d.stage) in columns]):
        lines += _render_table(t, columns, labels)
    for title, cols in section_columns:
        lines += _section(title, cols, decodes, labels)
    if targets:
        lines += _targets_section(targets, decodes, labels, Path(base_dir) if base_dir is not None else None)
    if compare:
        lines += _compare_section(compare, decodes, labels, n_bootstrap)
    if links:
        lines += ["## Reports", ""] + [f"- [{title}]({path})" for title, path in links] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
