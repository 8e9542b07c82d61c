"""Accuracy of label-valued outputs (the ``accuracy`` scorer; the ``lid`` task's language names).

A hypothesis is correct when it equals its reference after :func:`normalize_label` (Unicode NFKC,
case folded, surrounding whitespace and punctuation removed, inner whitespace collapsed): "German."
and "german" are the label "german".

``scores.json`` (schema version 1, like ``partlib.scoring.wer_bleu``'s)::

    {
      "schema_version": 1, "task": "accuracy", "tgt_lang": null, "metrics": ["accuracy"],
      "num_utts": int, "num_missing": int, "num_extra": int,
      "sets": {"<lang>" | "overall": {"num_utts": int, "primary": "accuracy",
               "scores": {"accuracy": {"value": float, "counts": {"N": int, "corr": int}}}}},
      "confusion": {"labels": [reference labels], "columns": [labels + "(other)"],
                    "counts": {"<reference label>": {"<hypothesis label>": int}}}
    }

Sets are the utterances' source languages and ``overall``. The confusion matrix has a row per
reference label and a column per label that was a reference or, given a task's closed label set
(every language name for ``lid``), was predicted; any other hypothesis counts as ``(other)``.
"""
from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from partlib.common import DataError

OTHER = "(other)"
_STRIP = string.punctuation + string.whitespace + "。．，！？、"


def normalize_label(text: str) -> str:
    """The label a text stands for (see the module docstring)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().strip(_STRIP).split())


def label_matches(hyp: str, ref: str) -> bool:
    """Whether a hypothesis is its reference's label."""
    return normalize_label(hyp) == normalize_label(ref)


@dataclass
class LabelScore:
    """One utterance: its reference and hypothesis labels."""

    utt: str
    src_lang: str
    ref: str
    hyp: str
    ref_label: str
    hyp_label: str

    @property
    def correct(self) -> bool:
        return self.ref_label == self.hyp_label


def _section(utts: Sequence[LabelScore]) -> Dict:
    n, c = len(utts), sum(u.correct for u in utts)
    return {"num_utts": n, "primary": "accuracy",
            "scores": {"accuracy": {"value": 100.0 * c / n, "counts": {"N": n, "corr": c}}}}


def score(refs: Mapping[str, str], hyps: Mapping[str, str], utt2lang: Mapping[str, str],
          num_missing: int = 0, num_extra: int = 0, labels: Optional[Sequence[str]] = None
          ) -> Tuple[Dict, List[LabelScore]]:
    """Accuracy per source language and overall, and the confusion matrix (``scores.json``);
    ``labels`` is the task's closed set of answers, if it has one."""
    if not refs:
        raise DataError("no utterances to score")
    utts = [LabelScore(u, utt2lang[u], refs[u], hyps[u], normalize_label(refs[u]), normalize_label(hyps[u]))
            for u in refs]
    shown: Dict[str, str] = {}  # label -> the reference as first written, for the tables
    for u in utts:
        shown.setdefault(u.ref_label, " ".join(u.ref.split()))
    rows = sorted(shown)
    closed = {normalize_label(x): x for x in labels or ()}
    for u in utts:
        if u.hyp_label in closed:
            shown.setdefault(u.hyp_label, closed[u.hyp_label])
    counts: Dict[str, Dict[str, int]] = {}
    for u in utts:
        col = shown[u.hyp_label] if u.hyp_label in shown else OTHER
        row = counts.setdefault(shown[u.ref_label], {})
        row[col] = row.get(col, 0) + 1
    columns = [shown[k] for k in sorted(shown)]
    if any(OTHER in row for row in counts.values()):
        columns.append(OTHER)
    groups: Dict[str, List[LabelScore]] = {}
    for u in utts:
        groups.setdefault(u.src_lang, []).append(u)
    sets = {k: _section(v) for k, v in groups.items()}
    sets["overall"] = _section(utts)
    result = {"schema_version": 1, "task": "accuracy", "tgt_lang": None, "metrics": ["accuracy"],
              "num_utts": len(utts), "num_missing": num_missing, "num_extra": num_extra, "sets": sets,
              "confusion": {"labels": [shown[k] for k in rows], "columns": columns, "counts": counts}}
    return result, utts


def format_markdown(result: Mapping) -> str:
    """``scores.md`` of an accuracy result: accuracy per set, then the confusion matrix."""
    lines = ["# Scores (accuracy)", "", "| set | #utts | accuracy (%) | correct |", "|---|---|---|---|"]
    for key in sorted(result["sets"], key=lambda k: (k == "overall", k)):
        sec = result["sets"][key]
        acc = sec["scores"]["accuracy"]
        lines.append(f"| {key} | {sec['num_utts']} | {acc['value']:.2f} | {acc['counts']['corr']} |")
    conf = result["confusion"]
    lines += ["", "## Confusion matrix (rows: reference, columns: hypothesis)", "",
              "| reference | " + " | ".join(conf["columns"]) + " |", "|---|" + "---|" * len(conf["columns"])]
    for label in conf["labels"]:
        row = conf["counts"].get(label, {})
        lines.append(f"| {label} | " + " | ".join(str(row.get(c, 0)) for c in conf["columns"]) + " |")
    if result["num_missing"] or result["num_extra"]:
        lines += ["", f"- {result['num_missing']} missing hypotheses scored as empty, "
                      f"{result['num_extra']} extra hypotheses ignored"]
    return "\n".join(lines) + "\n"


def format_result_txt(result: Mapping, utts: Sequence[LabelScore]) -> str:
    """``result.txt``: one line per utterance (reference, hypothesis, verdict), then the summary."""
    out = [f"{u.utt}\tref: {u.ref}\thyp: {u.hyp}\t{'correct' if u.correct else 'wrong'}" for u in utts]
    return "\n".join(out) + "\n\n" + format_markdown(result)
