"""Paired bootstrap resampling between two systems decoded on the same test set.

Utterances are resampled with replacement (the same resample for both systems), ``n_bootstrap``
times with a seeded generator. Error rates are recomputed as sum of errors / sum of reference units
of the resample (the set's own unit: words, characters, or mixed); BLEU and chrF are recomputed by
sacrebleu from the summed per-sentence sufficient statistics (what ``sacrebleu --paired-bs`` does).

Reported per metric: both systems' scores on the full set, the difference A - B, the 95% percentile
interval of the resampled differences, and a two-sided p-value
``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` over the resampled differences ``d``: a system against
itself gives difference 0 and p = 1; a consistently better system gives p close to 0.

A decode directory holds Kaldi-format ``ref``, ``hyp``, ``utt2lang`` and, for translation, a
``tgt_lang`` file (the target code as its only word) or a ``scores.json`` that names it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from partlib import tasks
from partlib.common import DataError, PathLike
from partlib.scoring import bleu as bleu_mod
from partlib.scoring import normalize as norm
from partlib.scoring import wer_bleu
from partlib.scoring.decode_dir import decode_tgt_lang, recorded_normalizer, score_decode_dir
from partlib.scoring.wer_bleu import TRANSLATION_METRICS



def resample_weights(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) matrix: how often each utterance is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    flat = idx + (np.arange(n_bootstrap)[:, None] * n)
    return np.bincount(flat.ravel(), minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(np.float64)


def _error_stats(utts: Sequence, metric: str) -> np.ndarray:
    """(errors, units) per utterance; for ``accuracy``: (correct, 1)."""
    if metric == "accuracy":
        return np.asarray([(float(u.correct), 1.0) for u in utts], dtype=np.float64).reshape(len(utts), 2)
    rows = []
    for u in utts:
        unit = {"wer": "word", "cer": "char"}.get(metric, u.unit)
        c = u.counts[unit]
        rows.append((c.errors, c.n))
    return np.asarray(rows, dtype=np.float64).reshape(len(utts), 2)


def _scores(metric: str, stats: np.ndarray, tgt_lang: Optional[str]) -> np.ndarray:
    """Metric values of summed statistics (rows)."""
    if metric in TRANSLATION_METRICS:
        return np.array([bleu_mod.score_from_stats(metric, row, tgt_lang) for row in stats])
    # Error rates and accuracy: a percentage of summed units. A resample made only of empty
    # references (tiny sets) counts its errors against 1 unit.
    return 100.0 * stats[:, 0] / np.maximum(stats[:, 1], 1)


def paired_bootstrap(a: Sequence, b: Sequence, metric: str,
                     tgt_lang: Optional[str] = None, n_bootstrap: int = 1000, seed: int = 0) -> Dict:
    """Compare systems A and B (same utterances, same order) on ``metric``: per-utterance results
    of ``partlib.scoring.wer_bleu`` (error rates, BLEU, chrF) or ``partlib.scoring.accuracy``."""
    if [u.utt for u in a] != [u.utt for u in b]:
        raise DataError("the two systems were not decoded on the same utterances")
    if metric in TRANSLATION_METRICS:
        stats_a = bleu_mod.sentence_stats(metric, [u.hyp for u in a], [u.ref for u in a], tgt_lang)
        stats_b = bleu_mod.sentence_stats(metric, [u.hyp for u in b], [u.ref for u in b], tgt_lang)
    else:
        stats_a, stats_b = _error_stats(a, metric), _error_stats(b, metric)
    if metric not in TRANSLATION_METRICS and stats_a[:, 1].sum() == 0:
        # Empty references: the error rate is undefined, there is nothing to compare.
        return {"metric": metric, "a": None, "b": None, "diff": None, "ci95": None, "p_value": None,
                "n_bootstrap": n_bootstrap, "seed": seed, "lower_is_better": True, "num_utts": len(a)}
    weights = resample_weights(len(a), n_bootstrap, seed)
    full_a = float(_scores(metric, stats_a.sum(0, keepdims=True), tgt_lang)[0])
    full_b = float(_scores(metric, stats_b.sum(0, keepdims=True), tgt_lang)[0])
    diffs = _scores(metric, weights @ stats_a, tgt_lang) - _scores(metric, weights @ stats_b, tgt_lang)
    p = min(1.0, 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"metric": metric, "a": full_a, "b": full_b, "diff": full_a - full_b,
            "ci95": [float(low), float(high)], "p_value": p, "n_bootstrap": n_bootstrap,
            "seed": seed, "lower_is_better": not tasks.higher_is_better(metric), "num_utts": len(a)}


def compare_dirs(dir_a: PathLike, dir_b: PathLike, n_bootstrap: int = 1000, seed: int = 0,
                 normalizer: Optional[str] = None) -> Dict:
    """Paired bootstrap of two decode dirs, per set (language / direction) and overall; both scored
    with the ``normalizer`` scheme (None: the one A's ``scores.json`` records, else the default)."""
    tgt_a, tgt_b = decode_tgt_lang(dir_a), decode_tgt_lang(dir_b)
    if tgt_a != tgt_b:
        raise DataError(f"different target languages: {tgt_a} vs {tgt_b}", dir_b)
    scheme = normalizer or recorded_normalizer(dir_a) or norm.DEFAULT_SCHEME
    res_a, utts_a = score_decode_dir(dir_a, tgt_a, scheme)
    res_b, utts_b = score_decode_dir(dir_b, tgt_a, scheme)
    refs_a = {u.utt: u.ref for u in utts_a}
    refs_b = {u.utt: u.ref for u in utts_b}
    if refs_a != refs_b:
        diff = sorted(set(refs_a) ^ set(refs_b)) or [u for u in refs_a if refs_a[u] != refs_b[u]]
        raise DataError(f"the two decode dirs differ in references (e.g. {', '.join(diff[:5])})", dir_b)
    tgt = res_a["tgt_lang"]
    labels = res_a["task"] == "accuracy"
    out: Dict[str, Dict] = {}
    for key, sec in res_a["sets"].items():
        keep = (lambda u: True) if key == "overall" else (
            (lambda u, k=key: u.src_lang == k) if labels else (lambda u, k=key: wer_bleu.set_key(u, tgt) == k))
        sa = [u for u in utts_a if keep(u)]
        sb = [u for u in utts_b if keep(u)]
        if labels:
            metrics: List[str] = ["accuracy"]
        else:
            metrics = list(TRANSLATION_METRICS) if tgt else [sec["error_metric"]]
        out[key] = {m: paired_bootstrap(sa, sb, m, tgt, n_bootstrap, seed) for m in metrics}
    return {"task": res_a["task"], "tgt_lang": tgt, "sets": out}


def format_markdown(result: Dict, name_a: str = "A", name_b: str = "B") -> str:
    """A table of the comparison: one row per set and metric."""
    lines = [f"| set | metric | {name_a} | {name_b} | diff | 95% CI | p-value |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(result["sets"], key=lambda k: (k == "overall", k)):
        for m, r in sorted(result["sets"][key].items()):
            if r["diff"] is None:
                lines.append(f"| {key} | {m.upper()} | n/a | n/a | n/a | n/a | n/a |")
                continue
            lines.append(f"| {key} | {m.upper()} | {r['a']:.2f} | {r['b']:.2f} | {r['diff']:+.2f} | "
                         f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | {r['p_value']:.3f} |")
    return "\n".join(lines) + "\n"
