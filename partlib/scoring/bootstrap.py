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

from typing import Any, Dict, Optional, Sequence

import numpy as np

from partlib.common import DataError, PathLike
from partlib.scoring import normalize as norm
from partlib.scoring.decode_dir import decode_scorer, decode_tgt_lang, recorded_normalizer, score_decode_dir
from partlib.scoring.scorers import Scorer
from partlib.scoring.scores import OVERALL, set_order


def resample_weights(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n) matrix: how often each utterance is drawn in each resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    flat = idx + (np.arange(n_bootstrap)[:, None] * n)
    return np.bincount(flat.ravel(), minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(np.float64)


def paired_bootstrap(scorer: Scorer, a: Sequence, b: Sequence, metric: str, tgt_lang: Optional[str] = None,
                     n_bootstrap: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """Compare systems A and B (same utterances, same order) on ``metric``: per-utterance results
    of ``scorer`` (its :meth:`~partlib.scoring.scorers.Scorer.stats` are resampled)."""
    if [u.utt for u in a] != [u.utt for u in b]:
        raise DataError("the two systems were not decoded on the same utterances")
    stats_a, stats_b = scorer.stats(a, metric, tgt_lang), scorer.stats(b, metric, tgt_lang)
    lower = not scorer.higher_is_better[metric]
    if not scorer.defined(metric, stats_a):
        # Empty references: the error rate is undefined, there is nothing to compare.
        return {"metric": metric, "a": None, "b": None, "diff": None, "ci95": None, "p_value": None,
                "n_bootstrap": n_bootstrap, "seed": seed, "lower_is_better": lower, "num_utts": len(a)}
    weights = resample_weights(len(a), n_bootstrap, seed)
    full_a = float(scorer.value_of_stats(metric, stats_a.sum(0, keepdims=True), tgt_lang)[0])
    full_b = float(scorer.value_of_stats(metric, stats_b.sum(0, keepdims=True), tgt_lang)[0])
    diffs = (scorer.value_of_stats(metric, weights @ stats_a, tgt_lang)
             - scorer.value_of_stats(metric, weights @ stats_b, tgt_lang))
    p = min(1.0, 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"metric": metric, "a": full_a, "b": full_b, "diff": full_a - full_b,
            "ci95": [float(low), float(high)], "p_value": p, "n_bootstrap": n_bootstrap,
            "seed": seed, "lower_is_better": lower, "num_utts": len(a)}


def compare_dirs(dir_a: PathLike, dir_b: PathLike, n_bootstrap: int = 1000, seed: int = 0,
                 normalizer: Optional[str] = None) -> Dict[str, Any]:
    """Paired bootstrap of two decode dirs, per set (language / direction) and overall; both scored
    with the ``normalizer`` scheme (None: the one A's ``scores.json`` records, else the default)."""
    tgt_a, tgt_b = decode_tgt_lang(dir_a), decode_tgt_lang(dir_b)
    if tgt_a != tgt_b:
        raise DataError(f"different target languages: {tgt_a} vs {tgt_b}", dir_b)
    scheme = normalizer or recorded_normalizer(dir_a) or norm.DEFAULT_SCHEME
    scorer = decode_scorer(dir_a, tgt_a)
    res_a, utts_a = score_decode_dir(dir_a, tgt_a, scheme)
    res_b, utts_b = score_decode_dir(dir_b, tgt_a, scheme)
    refs_a = {u.utt: u.ref for u in utts_a}
    refs_b = {u.utt: u.ref for u in utts_b}
    if refs_a != refs_b:
        diff = sorted(set(refs_a) ^ set(refs_b)) or [u for u in refs_a if refs_a[u] != refs_b[u]]
        raise DataError(f"the two decode dirs differ in references (e.g. {', '.join(diff[:5])})", dir_b)
    tgt = res_a["tgt_lang"]
    out: Dict[str, Dict] = {}
    for key in res_a["sets"]:
        def keep(u, k=key) -> bool:
            return k == OVERALL or scorer.set_of(u, res_a) == k
        sa = [u for u in utts_a if keep(u)]
        sb = [u for u in utts_b if keep(u)]
        out[key] = {m: paired_bootstrap(scorer, sa, sb, m, tgt, n_bootstrap, seed)
                    for m in scorer.compared_metrics(res_a, key)}
    return {"task": res_a["task"], "tgt_lang": tgt, "sets": out}


def format_markdown(result: Dict, name_a: str = "A", name_b: str = "B") -> str:
    """A table of the comparison: one row per set and metric."""
    lines = [f"| set | metric | {name_a} | {name_b} | diff | 95% CI | p-value |",
             "|---|---|---|---|---|---|---|"]
    for key in set_order(result["sets"]):
        for m, r in sorted(result["sets"][key].items()):
            if r["diff"] is None:
                lines.append(f"| {key} | {m.upper()} | n/a | n/a | n/a | n/a | n/a |")
                continue
            lines.append(f"| {key} | {m.upper()} | {r['a']:.2f} | {r['b']:.2f} | {r['diff']:+.2f} | "
                         f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | {r['p_value']:.3f} |")
    return "\n".join(lines) + "\n"
