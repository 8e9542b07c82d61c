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
    """Per-sentence sufficient statistics (rows), to re-score resampled corpora quickly."""
    m = metric(name, tgt_lang)
    return np.asarray(m._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=np.float64)


def score_from_stats(name: str, stats: np.ndarray, tgt_lang: str) -> float:
    """Corpus score from summed sufficient statistics (a 1-D array)."""
    m = metric(name, tgt_lang)
    values: List = [int(round(v)) for v in stats]
    return float(m._compute_score_from_stats(values).score)
