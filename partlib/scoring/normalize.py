"""Text normalisation before WER/CER scoring, and the split of text into scoring units.

Reference and hypothesis go through the same normaliser, chosen by a *scheme* (the scoring option
``--normalizer``) and the language of the text (the source language for ASR, the target language
for translation). Schemes (:data:`SCHEMES`), and the normaliser each gives a language:

* ``part-basic-v1`` (the default): English ``whisper-english``, every other language
  ``part-basic-v1``.
* ``whisper`` (what the PART paper and Whisper report): English ``whisper-english-exact``, every
  other language ``whisper-basic``.

The normalisers (``docs/scoring.md`` has examples):

* ``part-basic-v1``, the project's own rules, in this order:

  1. invisible characters: U+200B (zero-width space) becomes a space; U+200C/U+200D (joiners),
     U+200E/U+200F (direction marks), U+2060 and U+FEFF (BOM) are removed, so a word written with
     or without them scores the same;
  2. Unicode NFKC (full-width forms, ligatures, U+00A0 and U+2000-U+200A spaces become ASCII);
  3. lowercase (``str.lower``);
  4. every punctuation (Unicode category ``P*``) and symbol (``S*``: currency, maths, emoji)
     character becomes a space; combining marks (``M*``) are kept, since they carry vowels in
     Brahmic scripts, and bracketed text is kept (unlike Whisper's basic normaliser);
  5. whitespace folding: any run of Unicode whitespace becomes one space, ends are stripped.

* ``whisper-english``: step 1 above, then Whisper's ``EnglishTextNormalizer`` (from the
  ``whisper-normalizer`` package: spelling standardisation, contractions, numbers, ...), then
  step 5.
* ``whisper-english-exact``: Whisper's ``EnglishTextNormalizer`` alone, output unchanged.
* ``whisper-basic``: Whisper's ``BasicTextNormalizer`` with its defaults
  (``remove_diacritics=False``, ``split_letters=False``), implemented here
  (:func:`whisper_basic_normalize`); the tests check it against the package character for
  character.

Scoring units: words (split on whitespace) for WER; for CER, all whitespace is removed and the text
is split into extended grapheme clusters (``regex`` ``\\X``), so a base letter and its combining
marks count as one character (code points for CJK are the same thing). Which languages are scored
by CER is decided by :func:`partlib.data.langs.uses_cer`.

BLEU and chrF are computed on the raw detokenised text (sacrebleu's convention): no normaliser.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import regex

from partlib.common import ConfigError

BASIC_NAME = "part-basic-v1"
ENGLISH_NAME = "whisper-english"
WHISPER_ENGLISH_NAME = "whisper-english-exact"
WHISPER_BASIC_NAME = "whisper-basic"
RAW_NAME = "none (raw detokenised text, sacrebleu convention)"

_INVISIBLE = {0x200B: " ", 0x200C: None, 0x200D: None, 0x200E: None, 0x200F: None,
              0x2060: None, 0xFEFF: None}
_WS = re.compile(r"\s+")
_GRAPHEME = regex.compile(r"\X")
# Whisper's bracket rules: a span opened by '<' or '[' up to the first '>' or ']' (either closes
# either), and a non-empty span in parentheses.
_WHISPER_BRACKETS = re.compile(r"[<\[][^>\]]*[>\]]")
_WHISPER_PARENS = re.compile(r"\([^)]+?\)")


def _fold_invisible(text: str) -> str:
    return text.translate(_INVISIBLE)


def basic_normalize(text: str) -> str:
    """The ``part-basic-v1`` rules (module docstring) for any language."""
    text = unicodedata.normalize("NFKC", _fold_invisible(text)).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _WS.sub(" ", text).strip()


def whisper_basic_normalize(text: str) -> str:
    """Whisper's ``BasicTextNormalizer()`` (``whisper-basic``): lowercase; drop ``[...]``/``<...>``
    and ``(...)`` spans; NFKC; every mark (``M*``), symbol (``S*``) and punctuation (``P*``)
    character becomes a space; lowercase again (NFKC can make capitals); whitespace runs become one
    space. Ends are not stripped (Whisper does not strip them; units ignore them)."""
    text = _WHISPER_PARENS.sub("", _WHISPER_BRACKETS.sub("", text.lower()))
    text = "".join(" " if unicodedata.category(c)[0] in "MSP" else c
                   for c in unicodedata.normalize("NFKC", text))
    return _WS.sub(" ", text.lower())


@functools.lru_cache(maxsize=1)
def _english() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def english_normalize(text: str) -> str:
    """Whisper's English rules after invisible-character folding, whitespace folded
    (``whisper-english``)."""
    return _WS.sub(" ", _english()(_fold_invisible(text))).strip()


def whisper_english_normalize(text: str) -> str:
    """Whisper's ``EnglishTextNormalizer`` as it is (``whisper-english-exact``)."""
    return _english()(text)


@dataclass(frozen=True)
class Normalizer:
    """One normaliser: the name recorded in ``scores.json``, its rules in one line, the function."""

    name: str
    rules: str
    apply: Callable[[str], str]


_FOLD = "U+200B->space; U+200C-U+200F, U+2060, U+FEFF removed"
NORMALIZERS: Dict[str, Normalizer] = {n.name: n for n in (
    Normalizer(BASIC_NAME, f"{_FOLD}; NFKC; lowercase; Unicode P* and S* -> space (marks kept); "
                           "whitespace runs -> one space", basic_normalize),
    Normalizer(ENGLISH_NAME, f"{_FOLD}; whisper_normalizer.english.EnglishTextNormalizer",
               english_normalize),
    Normalizer(WHISPER_ENGLISH_NAME, "whisper_normalizer.english.EnglishTextNormalizer, unchanged",
               whisper_english_normalize),
    Normalizer(WHISPER_BASIC_NAME, "Whisper's BasicTextNormalizer (remove_diacritics=False, "
                                   "split_letters=False): lowercase; [..], <..>, (..) spans removed; "
                                   "NFKC; Unicode M*, S*, P* -> space; whitespace runs -> one space",
               whisper_basic_normalize),
)}
DESCRIPTIONS: Dict[str, str] = {name: n.rules for name, n in NORMALIZERS.items()}

# scheme -> (normaliser of English, normaliser of every other language)
_SCHEMES: Dict[str, Tuple[str, str]] = {
    "part-basic-v1": (ENGLISH_NAME, BASIC_NAME),
    "whisper": (WHISPER_ENGLISH_NAME, WHISPER_BASIC_NAME),
}
SCHEMES: Tuple[str, ...] = tuple(_SCHEMES)
DEFAULT_SCHEME = "part-basic-v1"


def check_scheme(scheme: str) -> str:
    """``scheme`` if it names a normaliser scheme, else a :class:`ConfigError` listing them."""
    if scheme not in _SCHEMES:
        raise ConfigError(f"unknown normalizer {scheme!r}; choose from {', '.join(SCHEMES)}")
    return scheme


def normalizer_name(lang: str, scheme: str = DEFAULT_SCHEME) -> str:
    """Name of the normaliser that ``scheme`` gives language ``lang`` (a canonical code)."""
    english, other = _SCHEMES[check_scheme(scheme)]
    return english if lang == "en" else other


def normalize(text: str, lang: str, scheme: str = DEFAULT_SCHEME) -> str:
    """Normalise ``text`` written in ``lang`` for WER/CER scoring, by ``scheme``'s normaliser."""
    return NORMALIZERS[normalizer_name(lang, scheme)].apply(text)


def words(text: str) -> List[str]:
    """Word units of normalised text."""
    return text.split()


def chars(text: str) -> List[str]:
    """Character units of normalised text: grapheme clusters, whitespace dropped."""
    return _GRAPHEME.findall(_WS.sub("", text))


def units(text: str, unit: str) -> List[str]:
    """Split normalised text into ``"word"`` or ``"char"`` units."""
    if unit == "word":
        return words(text)
    if unit == "char":
        return chars(text)
    raise ValueError(f"unknown scoring unit {unit!r}")
