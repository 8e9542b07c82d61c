"""Failure diagnostics of multilingual Speech LLM outputs.

* **wrong-language rate**: share of non-empty hypotheses that ``langid`` (whose model ships inside
  the package) does not identify as the expected language (the source language for ASR, the target
  language for translation). langid is restricted to the languages of the test set (sources and
  target, so that an untranslated output is caught) plus English and Chinese (the usual fallback languages of an English/Chinese-centred LLM), which makes
  short texts far less noisy than a 97-language decision. Languages that langid does not know are
  skipped (``n_checked`` says how many hypotheses were judged). Our codes map to langid's where they
  differ (``fil`` -> ``tl``; Cantonese and Min Nan, written in Han characters, -> ``zh``).
* **repetition rate**: share of hypotheses containing an n-gram of scoring units (n = 1..4)
  repeated at least 3 times in a row, which the reference does not also contain (a hypothesis that
  reproduces a real repetition is not degenerate).
* **runaway rate**: share of hypotheses longer than twice the reference, in scoring units
  (``len(hyp) > 2 * max(len(ref), 1)``).
"""
from __future__ import annotations

import copy
import functools
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

_LANGID_ALIASES = {"fil": "tl", "yue": "zh", "nan": "zh"}
FALLBACK_LANGS = ("en", "zh")
MIN_REPEATS = 3
MAX_NGRAM = 4
RUNAWAY_RATIO = 2.0


@functools.lru_cache(maxsize=1)
def _identifier():
    """The full (all languages) langid model, loaded once; never restricted in place."""
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def langid_code(lang: str) -> Optional[str]:
    """The langid code of a canonical language code, or None if langid does not know it."""
    code = _LANGID_ALIASES.get(lang, lang)
    return code if code in _identifier().nb_classes else None


class LanguageChecker:
    """Identifies the language of hypotheses among a fixed candidate set."""

    def __init__(self, expected_langs: Iterable[str]) -> None:
        cands: Set[str] = {c for c in map(langid_code, [*expected_langs, *FALLBACK_LANGS]) if c}
        self.candidates: List[str] = sorted(cands)
        # set_languages() trims the model arrays in place: restrict a copy, keep the shared model whole.
        self._ident = copy.copy(_identifier())
        self._ident.set_languages(self.candidates)

    def identify(self, text: str) -> str:
        """langid's decision among the candidates."""
        return self._ident.classify(text)[0]

    def is_wrong(self, text: str, expected: str) -> Optional[bool]:
        """True/False, or None when it cannot be judged (empty text or language unknown to langid)."""
        code = langid_code(expected)
        if code is None or not text.strip():
            return None
        return self.identify(text) != code


def repeated_ngram(units: Sequence[str], min_repeats: int = MIN_REPEATS,
                   max_n: int = MAX_NGRAM) -> Optional[Tuple[str, ...]]:
    """The first n-gram (n <= max_n) found repeated ``min_repeats`` times in a row, else None."""
    for n in range(1, max_n + 1):
        span = n * min_repeats
        for i in range(len(units) - span + 1):
            gram = tuple(units[i:i + n])
            if all(tuple(units[i + k * n:i + (k + 1) * n]) == gram for k in range(1, min_repeats)):
                return gram
    return None


def _has_run(units: Sequence[str], gram: Tuple[str, ...], min_repeats: int = MIN_REPEATS) -> bool:
    needle = list(gram) * min_repeats
    return any(list(units[i:i + len(needle)]) == needle for i in range(len(units) - len(needle) + 1))


def is_degenerate(hyp_units: Sequence[str], ref_units: Sequence[str]) -> bool:
    """Whether the hypothesis loops (see module docstring) without the reference doing the same."""
    gram = repeated_ngram(hyp_units)
    return gram is not None and not _has_run(ref_units, gram)


def is_runaway(hyp_units: Sequence[str], ref_units: Sequence[str]) -> bool:
    """Whether the hypothesis is more than twice as long as the reference."""
    return len(hyp_units) > RUNAWAY_RATIO * max(len(ref_units), 1)


def summarize(wrong: Sequence[Optional[bool]], degenerate: Sequence[bool],
              runaway: Sequence[bool], candidates: Sequence[str]) -> Dict:
    """JSON block of the diagnostics of a set of utterances (rates in percent)."""
    judged = [w for w in wrong if w is not None]
    n = len(degenerate)

    def pct(k: int, d: int) -> float:
        return 100.0 * k / d if d else 0.0

    return {
        "wrong_lang": {"rate": pct(sum(judged), len(judged)), "count": sum(judged),
                       "n_checked": len(judged), "candidates": list(candidates)},
        "repetition": {"rate": pct(sum(degenerate), n), "count": sum(degenerate)},
        "runaway": {"rate": pct(sum(runaway), n), "count": sum(runaway)},
    }
