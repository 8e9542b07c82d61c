"""WER/CER and BLEU/chrF of a hypothesis file against a reference file, and the scoring files.

Inputs are Kaldi text files (``<utt> <text>``; a line with only the key is an empty text), an
optional ``utt2lang`` (or one language for all), and for translation the target language.

Outputs in ``OUT_DIR``: ``scores.json``, ``scores.md``, ``ref.trn``, ``hyp.trn`` (sclite trn,
normalised, characters for CER languages) and ``result.txt`` (per-utterance alignments like
sclite's ``pra`` and the summary).

``scores.json`` schema (version 1; written by :func:`partlib.scoring.scores.write_scores`)::

    {
      "schema_version": 1,
      "task": "asr" | "translation",
      "tgt_lang": null | "<code>",
      "metrics": ["wer", ...],            # requested metrics ("auto" resolved)
      "normalizer": {"scheme": "<--normalizer: part-basic-v1 | whisper>",
                     "asr": {"<name>": "<rules>"}, "bleu": "<how BLEU/chrF text is treated>"},
      "num_utts": int, "num_missing": int, "num_extra": int,   # missing hyps scored as empty
      "sets": {
        "<lang>" (ASR) | "<src>-<tgt>" (translation) | "overall": {
          "num_utts": int,
          "primary": "wer" | "cer" | "mixed" | "bleu" | "chrf",   # the headline metric
          "error_metric": "wer" | "cer" | "mixed",   # error rate in the set's own unit
          "normalizer": "<name>" (per-language sets),
          "scores": {
            "wer" | "cer" | "mixed": {"value": float | null, "counts": {"N","corr","sub","del","ins"}},
            "bleu" | "chrf": {"value": float, "signature": "<sacrebleu signature>"}
          },
          "diagnostics": {"wrong_lang": {...}, "repetition": {...}, "runaway": {...}}
        }
      }
    }

``normalizer.scheme`` is absent from files written before it existed: they were scored by
``part-basic-v1``. ``wer`` counts words, ``cer`` characters; ``mixed`` (overall only, when the set
mixes languages scored by words and by characters) counts each utterance in its language's own
unit. Error rates are percent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from partlib.common import ConfigError, DataError, PathLike, atomic_write
from partlib.data import langs
from partlib.data.kv import c_sort_key, read_kv
from partlib.scoring import bleu as bleu_mod
from partlib.scoring import diagnostics as diag
from partlib.scoring import normalize as norm
from partlib.scoring.align import Alignment
from partlib.scoring.scores import recorded_scheme, set_order, write_scores
from partlib.scoring.trn import pra_rows, write_trn
from partlib.scoring.wer import ErrorCounts, score_units

SCHEMA_VERSION = 1
ERROR_METRICS = ("wer", "cer")
TRANSLATION_METRICS = ("bleu", "chrf")
ALL_METRICS = ERROR_METRICS + TRANSLATION_METRICS


@dataclass
class UttScore:
    """Everything computed for one utterance."""

    utt: str
    src_lang: str
    text_lang: str      # language of ref/hyp text: source for ASR, target for translation
    ref: str
    hyp: str
    unit: str           # "word" or "char", the language's scoring unit
    ref_units: List[str]
    hyp_units: List[str]
    counts: Dict[str, ErrorCounts]   # "word" / "char" -> counts
    alignment: Alignment             # in the language's own unit
    wrong_lang: Optional[bool] = None
    degenerate: bool = False
    runaway: bool = False


@dataclass
class Inputs:
    """Paired texts ready for scoring (C-sorted by utterance id)."""

    refs: Dict[str, str]
    hyps: Dict[str, str]
    utt2lang: Dict[str, str]
    missing: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)


def _name_ids(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def load_inputs(ref: PathLike, hyp: PathLike, *, utt2lang: Optional[PathLike] = None,
                lang: Optional[str] = None, allow_missing: bool = False) -> Inputs:
    """Read ref/hyp (and utt2lang) files and pair them.

    A hypothesis missing for a reference utterance, or one without a reference, raises
    :class:`DataError` naming the ids; with ``allow_missing`` a missing hypothesis is scored as
    empty and an extra one is ignored (both are counted).
    """
    if (utt2lang is None) == (lang is None):
        raise ConfigError("give exactly one of utt2lang (a file) or lang (one language for all)")
    refs = read_kv(ref, allow_empty=True)
    hyps = read_kv(hyp, allow_empty=True)
    missing = sorted((u for u in refs if u not in hyps), key=c_sort_key)
    extra = sorted((u for u in hyps if u not in refs), key=c_sort_key)
    if (missing or extra) and not allow_missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} reference utterance(s) without hypothesis: {_name_ids(missing)}")
        if extra:
            parts.append(f"{len(extra)} hypothesis utterance(s) without reference: {_name_ids(extra)}")
        raise DataError("; ".join(parts) + " (use --allow-missing to score missing ones as empty)", hyp)
    order = sorted(refs, key=c_sort_key)
    if utt2lang is not None:
        raw = read_kv(utt2lang)
        absent = [u for u in order if u not in raw]
        if absent:
            raise DataError(f"no language for {len(absent)} utterance(s): {_name_ids(absent)}", utt2lang)
        u2l = {u: langs.canonical(raw[u]) for u in order}
    else:
        code = langs.canonical(lang)
        u2l = {u: code for u in order}
    return Inputs(refs={u: refs[u] for u in order}, hyps={u: hyps.get(u, "") for u in order},
                  utt2lang=u2l, missing=missing, extra=extra)


def resolve_metrics(metrics: str, tgt_lang: Optional[str]) -> List[str]:
    """``auto`` -> error rates for ASR, BLEU+chrF for translation; else a checked list."""
    if metrics == "auto":
        return list(TRANSLATION_METRICS) if tgt_lang else ["auto"]
    names = [m.strip().lower() for m in metrics.split(",") if m.strip()]
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise ConfigError(f"unknown metric(s) {bad or metrics!r}; choose from auto or {','.join(ALL_METRICS)}")
    return names


def score_utterance(utt: str, ref: str, hyp: str, src_lang: str, text_lang: str,
                    normalizer: str = norm.DEFAULT_SCHEME) -> UttScore:
    """Normalise (by the ``normalizer`` scheme), split and align one utterance in both units."""
    ref_n, hyp_n = norm.normalize(ref, text_lang, normalizer), norm.normalize(hyp, text_lang, normalizer)
    unit = "char" if langs.uses_cer(text_lang) else "word"
    counts, alis = {}, {}
    for u in ("word", "char"):
        counts[u], alis[u] = score_units(norm.units(ref_n, u), norm.units(hyp_n, u))
    ref_u, hyp_u = norm.units(ref_n, unit), norm.units(hyp_n, unit)
    return UttScore(utt=utt, src_lang=src_lang, text_lang=text_lang, ref=ref, hyp=hyp, unit=unit,
                    ref_units=ref_u, hyp_units=hyp_u, counts=counts, alignment=alis[unit],
                    degenerate=diag.is_degenerate(hyp_u, ref_u), runaway=diag.is_runaway(hyp_u, ref_u))


def _error_block(counts: ErrorCounts) -> Dict:
    return {"value": counts.rate(), "counts": counts.as_dict()}


def _section(utts: Sequence[UttScore], metrics: Sequence[str], tgt_lang: Optional[str],
             candidates: Sequence[str], overall: bool, normalizer: str) -> Dict:
    """The ``sets`` entry of a non-empty group of utterances."""
    scores: Dict[str, Dict] = {
        "wer": _error_block(ErrorCounts.total(u.counts["word"] for u in utts)),
        "cer": _error_block(ErrorCounts.total(u.counts["char"] for u in utts)),
    }
    unit_kinds = {u.unit for u in utts}
    if len(unit_kinds) > 1:
        scores["mixed"] = _error_block(ErrorCounts.total(u.counts[u.unit] for u in utts))
        native = "mixed"
    else:
        native = "cer" if unit_kinds == {"char"} else "wer"
    text_lang = tgt_lang or utts[0].text_lang
    for name in TRANSLATION_METRICS:
        if name in metrics:
            scores[name] = bleu_mod.corpus_score(name, [u.hyp for u in utts], [u.ref for u in utts],
                                                 text_lang)
    primary = native if metrics[0] == "auto" else metrics[0]
    section = {
        "num_utts": len(utts),
        "primary": primary,
        "error_metric": native,
        "scores": scores,
        "diagnostics": diag.summarize([u.wrong_lang for u in utts], [u.degenerate for u in utts],
                                      [u.runaway for u in utts], candidates),
    }
    if not overall:
        section["normalizer"] = norm.normalizer_name(utts[0].text_lang, normalizer)
    return section


def set_key(u: UttScore, tgt_lang: Optional[str]) -> str:
    """Name of the set an utterance is reported in: its language, or ``src-tgt`` for translation."""
    return f"{u.src_lang}-{tgt_lang}" if tgt_lang else u.src_lang


def score(inputs: Inputs, *, metrics: str = "auto", tgt_lang: Optional[str] = None,
          normalizer: str = norm.DEFAULT_SCHEME) -> Tuple[Dict, List[UttScore]]:
    """Score paired texts, WER/CER after the ``normalizer`` scheme's normalisers
    (:data:`partlib.scoring.normalize.SCHEMES`); return the ``scores.json`` dict and the
    per-utterance results."""
    norm.check_scheme(normalizer)
    tgt = langs.canonical(tgt_lang) if tgt_lang else None
    names = resolve_metrics(metrics, tgt)
    if tgt is None and any(m in TRANSLATION_METRICS for m in names) and len(set(inputs.utt2lang.values())) > 1:
        raise ConfigError("BLEU/chrF of a multilingual set needs --tgt-lang (or score one language at a time)")
    utts = [score_utterance(u, inputs.refs[u], inputs.hyps[u], inputs.utt2lang[u], tgt or inputs.utt2lang[u],
                            normalizer) for u in inputs.refs]
    if not utts:
        raise DataError("no utterances to score")
    # Source languages are candidates too: a translation left in the source language is wrong.
    checker = diag.LanguageChecker({u.text_lang for u in utts} | {u.src_lang for u in utts})
    for u in utts:
        u.wrong_lang = checker.is_wrong(u.hyp, u.text_lang)
    groups: Dict[str, List[UttScore]] = {}
    for u in utts:
        groups.setdefault(set_key(u, tgt), []).append(u)
    sets = {k: _section(v, names, tgt, checker.candidates, False, normalizer) for k, v in groups.items()}
    sets["overall"] = _section(utts, names, tgt, checker.candidates, True, normalizer)
    used_norms = sorted({norm.normalizer_name(u.text_lang, normalizer) for u in utts})
    result = {
        "schema_version": SCHEMA_VERSION,
        "task": "translation" if tgt else "asr",
        "tgt_lang": tgt,
        # "auto" for ASR resolves to the error rates used per language.
        "metrics": names if names != ["auto"] else sorted({s["primary"] for k, s in sets.items()
                                                           if k != "overall"}),
        "normalizer": {"scheme": normalizer, "asr": {n: norm.DESCRIPTIONS[n] for n in used_norms},
                       "bleu": norm.RAW_NAME},
        "num_utts": len(utts),
        "num_missing": len(inputs.missing),
        "num_extra": len(inputs.extra),
        "sets": sets,
    }
    return result, utts


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_markdown(result: Mapping) -> str:
    """``scores.md``: one table row per set, then the sacrebleu signatures."""
    lines = [f"# Scores ({result['task']})", "",
             "| set | #utts | metric | value | N | Corr | Sub | Del | Ins | wrong-lang % | repetition % | runaway % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    signatures = {}
    for key in set_order(result["sets"]):
        sec = result["sets"][key]
        d = sec["diagnostics"]
        primary = sec["primary"]
        err = primary if primary in ERROR_METRICS else sec["error_metric"]
        c = sec["scores"][err]["counts"]
        shown = [primary] if primary in TRANSLATION_METRICS else []
        shown += [m for m in TRANSLATION_METRICS if m in sec["scores"] and m not in shown] + [err]
        for m in shown:
            block = sec["scores"][m]
            counts = [str(c[k]) for k in ("N", "corr", "sub", "del", "ins")] if m == err else [""] * 5
            lines.append(f"| {key} | {sec['num_utts']} | {m.upper()} | {_fmt(block['value'])} | "
                         + " | ".join(counts) + f" | {_fmt(d['wrong_lang']['rate'])} | "
                         f"{_fmt(d['repetition']['rate'])} | {_fmt(d['runaway']['rate'])} |")
            if "signature" in block:
                signatures[m.upper()] = block["signature"]
    lines.append("")
    for name, sig in sorted(signatures.items()):
        lines.append(f"- {name} signature: `{sig}`")
    lines.append(f"- WER/CER normalisation (scheme {recorded_scheme(result)}): " + "; ".join(
        f"{k}: {v}" for k, v in result["normalizer"]["asr"].items()))
    lines.append(f"- BLEU/chrF text: {result['normalizer']['bleu']}")
    if result["num_missing"] or result["num_extra"]:
        lines.append(f"- {result['num_missing']} missing hypotheses scored as empty, "
                     f"{result['num_extra']} extra hypotheses ignored")
    return "\n".join(lines) + "\n"


def format_result_txt(result: Mapping, utts: Sequence[UttScore]) -> str:
    """``result.txt``: sclite-``pra``-like per-utterance alignments, then the summary table."""
    out = []
    for u in utts:
        c, s, d, i = u.alignment.counts
        out += [f"id: ({u.utt})", f"Lang: {u.text_lang}  Unit: {u.unit}",
                f"Scores: (#C #S #D #I) {c} {s} {d} {i}", *pra_rows(u.alignment), ""]
    out.append(format_markdown(result))
    return "\n".join(out)


def write_outputs(out_dir: PathLike, result: Mapping, utts: Sequence[UttScore]) -> None:
    """Write scores.json, scores.md, ref.trn, hyp.trn and result.txt, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_trn(out / "ref.trn", [(u.utt, u.ref_units) for u in utts])
    write_trn(out / "hyp.trn", [(u.utt, u.hyp_units) for u in utts])
    atomic_write(out / "result.txt", format_result_txt(result, utts))
    atomic_write(out / "scores.md", format_markdown(result))
    write_scores(out, result)
