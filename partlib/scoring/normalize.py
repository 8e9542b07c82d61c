"""Text normalisation before WER/CER scoring, and the split of text into scoring units.

Both reference and hypothesis go through the same normaliser, chosen by the language of the text
(the source language for ASR, the target language for translation):

* English (``en``): Whisper's English rules, ``whisper_normalizer.english.EnglishTextNormalizer``
  (spelling standardisation, contractions, numbers, ...), after the invisible-character folding
  below. Recorded as ``whisper-english``.
* Every other language: the project's own rules, recorded as ``part-basic-v1``, in this order:

  1. invisible characters: U+200B (zero-width space) becomes a space; U+200C/U+200D (joiners),
     U+200E/U+200F (direction marks), U+2060 and U+FEFF (BOM) are removed, so a word written with
     or without them scores the same;
  2. Unicode NFKC (full-width forms, ligatures, U+00A0 and U+2000-U+200A spaces become ASCII);
  3. lowercase (``str.lower``);
  4. every punctuation (Unicode category ``P*``) and symbol (``S*``: currency, maths, emoji)
     character becomes a space; combining marks (``M*``) are kept, since they carry vowels in
     Brahmic scripts, and bracketed text is kept (unlike Whisper's basic normaliser);
  5. whitespace folding: any run of Unicode whitespace becomes one space, ends are stripped.

Scoring units: words (split on whitespace) for WER; for CER, all whitespace is removed and the text
is split into extended grapheme clusters (``regex`` ``\\X``), so a base letter and its combining
marks count as one character (code points for CJK are the same thing).

BLEU and chrF are computed on the raw detokenised text (sacrebleu's convention): no normaliser.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from typing import Callable, Dict, List

import regex

BASIC_NAME = "part-basic-v1"
ENGLISH_NAME = "whisper-english"
RAW_NAME = "none (raw detokenised text, sacrebleu convention)"

DESCRIPTIONS: Dict[str, str] = {
    BASIC_NAME: (
        "U+200B->space; U+200C-U+200F, U+2060, U+FEFF removed; NFKC; lowercase; Unicode P* and S* "
        "-> space (marks kept); whitespace runs -> one space"
    ),
    ENGLISH_NAME: (
        "U+200B->space; U+200C-U+200F, U+2060, U+FEFF removed; "
        "whisper_normalizer.english.EnglishTextNormalizer"
    ),
}

_INVISIBLE = {0x200B: " ", 0x200C: None, 0x200D: None, 0x200E: None, 0x200F: None,
              0x2060: None, 0xFEFF: None}
_WS = re.compile(r"\s+")
_GRAPHEME = regex.compile(r"\X")


def _fold_invisible(text: str) -> str:
    return text.translate(_INVISIBLE)


def basic_normalize(text: str) -> str:
    """The ``part-basic-v1`` rules (module docstring) for any language."""
    text = unicodedata.normalize("NFKC", _fold_invisible(text)).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _WS.sub(" ", text).strip()


@functools.lru_cache(maxsize=1)
def _english() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def english_normalize(text: str) -> str:
    """Whisper's English rules (``whisper-english``), with whitespace folded."""
    return _WS.sub(" ", _english()(_fold_invisible(text))).strip()


def normalizer_name(lang: str) -> str:
    """Name of the normaliser used for language ``lang`` (a canonical code)."""
    return ENGLISH_NAME if lang == "en" else BASIC_NAME


def normalize(text: str, lang: str) -> str:
    """Normalise ``text`` written in ``lang`` for WER/CER scoring."""
    return english_normalize(text) if lang == "en" else basic_normalize(text)


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
