"""BLEU and chrF with sacrebleu, on raw detokenised text.

The BLEU tokenizer follows the target language: ``zh`` for Chinese (and Cantonese, written in Han
characters), ``ja-mecab`` for Japanese (needs ``pip install 'partlib[ja]'``), ``13a`` otherwise.
chrF uses sacrebleu's defaults (character 6-grams, beta 2). Each score comes with sacrebleu's
signature string, so that numbers are comparable across papers.
"""
from __future__ import annotations

import functools
from typing import Dict, List, Sequence, Union

import numpy as np
import sacrebleu
from sacrebleu.metrics.helpers import extract_all_char_ngrams

from partlib.common import ConfigError

_TOKENIZERS = {"zh": "zh", "yue": "zh", "ja": "ja-mecab"}


def bleu_tokenizer(tgt_lang: str) -> str:
    """sacrebleu tokenizer name for a target language (canonical code)."""
    return _TOKENIZERS.get(tgt_lang, "13a")


@functools.lru_cache(maxsize=None)
def _bleu(tokenize: str) -> sacrebleu.BLEU:
    try:
        metric = sacrebleu.BLEU(tokenize=tokenize)
        metric.corpus_score(["a"], [["a"]])  # the ja-mecab tokenizer loads its dictionary lazily
    except (RuntimeError, ImportError) as e:
        raise ConfigError(
            f"BLEU tokenizer '{tokenize}' is not available ({str(e).strip().splitlines()[0]}); "
            "for Japanese install the extra: pip install 'partlib[ja]' (mecab-python3, ipadic)"
        ) from None
    return metric


@functools.lru_cache(maxsize=1)
def _chrf() -> sacrebleu.CHRF:
    return sacrebleu.CHRF()


def metric(name: str, tgt_lang: str) -> Union[sacrebleu.BLEU, sacrebleu.CHRF]:
    """The sacrebleu metric object ``bleu`` or ``chrf`` for a target language."""
    if name == "bleu":
        return _bleu(bleu_tokenizer(tgt_lang))
    if name == "chrf":
        return _chrf()
    raise ValueError(f"unknown translation metric {name!r}")


def corpus_score(name: str, hyps: Sequence[str], refs: Sequence[str], tgt_lang: str) -> Dict:
    """``{"value": score, "signature": sacrebleu signature}`` of one corpus (one reference)."""
    m = metric(name, tgt_lang)
    score = m.corpus_score(list(hyps), [list(refs)])
    return {"value": float(score.score), "signature": m.get_signature().format()}


def sentence_stats(name: str, hyps: Sequence[str], refs: Sequence[str], tgt_lang: str) -> np.ndarray:
    """Per-sentence sufficient statistics (rows), to re-score resampled corpora quickly (a paired
    bootstrap): BLEU ``[hyp length, ref length, matches per order..., n-grams per order...]`` from
    ``sentence_score``; chrF ``[hyp, ref, match]`` character n-gram counts per order."""
    if name == "bleu":
        metric(name, tgt_lang)  # the tokenizer is available (else a ConfigError saying what to install)
        m = _sentence_bleu(bleu_tokenizer(tgt_lang))
        rows = []
        for hyp, ref in zip(hyps, refs):
            s = m.sentence_score(hyp, [ref])
            rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), 2 + 2 * m.max_ngram_order)
    if name == "chrf":
        _check_chrf(_chrf())
        rows = [_chrf_stats(hyp, ref) for hyp, ref in zip(hyps, refs)]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), 3 * sacrebleu.CHRF.CHAR_ORDER)
    raise ValueError(f"unknown translation metric {name!r}")


def score_from_stats(name: str, stats: np.ndarray, tgt_lang: str) -> float:
    """Corpus score from summed sufficient statistics (a 1-D array of :func:`sentence_stats`)."""
    values: List[int] = [int(round(v)) for v in stats]
    m = metric(name, tgt_lang)
    if name == "bleu":
        order = m.max_ngram_order
        return float(sacrebleu.BLEU.compute_bleu(
            values[2:2 + order], values[2 + order:], sys_len=values[0], ref_len=values[1],
            smooth_method=m.smooth_method, smooth_value=m.smooth_value, effective_order=m.effective_order,
            max_ngram_order=order).score)
    return _chrf_from_stats(values)


@functools.lru_cache(maxsize=None)
def _sentence_bleu(tokenize: str) -> sacrebleu.BLEU:
    """A BLEU for sentence statistics: the corpus metric's tokenizer; ``effective_order`` (which
    only changes how a score is computed from the statistics, not the statistics) keeps sacrebleu
    from warning about sentence-level BLEU once per sentence."""
    return sacrebleu.BLEU(tokenize=tokenize, effective_order=True)


# chrF from sufficient statistics. sacrebleu's public API scores a corpus (``corpus_score``) but
# exposes no per-sentence statistics of chrF, and re-scoring every bootstrap resample with
# ``corpus_score`` costs minutes per test set; so the statistics and the F-score of the metric's
# configuration (sacrebleu's defaults: character 6-grams, no word n-grams, beta 2, case kept,
# whitespace ignored, effective-order averaging) are computed here from sacrebleu's public n-gram
# helper, the same arithmetic in the same order. test/test_bleu.py checks them against
# ``corpus_score`` digit for digit.
def _check_chrf(m: sacrebleu.CHRF) -> None:
    if (m.char_order, m.word_order, m.beta, m.lowercase, m.whitespace, m.eps_smoothing) != (
            sacrebleu.CHRF.CHAR_ORDER, 0, 2, False, False, False):
        raise ConfigError("chrF statistics are computed for sacrebleu's default chrF only")


def _chrf_stats(hyp: str, ref: str) -> List[int]:
    """``[hyp, ref, match]`` character n-gram counts of each order (sacrebleu's statistics)."""
    hyp_ngrams = extract_all_char_ngrams(hyp, sacrebleu.CHRF.CHAR_ORDER, False)
    ref_ngrams = extract_all_char_ngrams(ref, sacrebleu.CHRF.CHAR_ORDER, False)
    out: List[int] = []
    for h, r in zip(hyp_ngrams, ref_ngrams):
        match = sum(min(c, r[g]) for g, c in h.items() if g in r)
        out += [sum(h.values()) if r else 0, sum(r.values()), match]  # no hits without a reference n-gram
    return out


def _chrf_from_stats(stats: Sequence[int], beta: int = 2) -> float:
    """chrF (0-100) of summed statistics: precision and recall averaged over the orders where both
    the hypothesis and the reference have n-grams, then the F-beta score."""
    factor = beta ** 2
    avg_prec = avg_rec = 0.0
    effective = 0
    for i in range(len(stats) // 3):
        n_hyp, n_ref, n_match = stats[3 * i: 3 * i + 3]
        if n_hyp > 0 and n_ref > 0:
            avg_prec += n_match / n_hyp
            avg_rec += n_match / n_ref
            effective += 1
    if effective == 0:
        return 0.0
    avg_prec /= effective
    avg_rec /= effective
    if not avg_prec + avg_rec:
        return 0.0
    score = (1 + factor) * avg_prec * avg_rec
    score /= (factor * avg_prec) + avg_rec
    return 100 * score
