"""The one language-code table of the project.

Every corpus spells languages its own way (CommonVoice ``zh-CN``/``sv-SE``, Fleurs ``cmn_hans_cn``/
``de_de``, CoVoST2 ``zh-CN``). :func:`canonical` maps all of them to one code — ISO 639-1 where it
exists, else ISO 639-3 — used in ``utt2lang``, ``text.<lang>`` file names, prompts, the CER/WER
choice and result rows.

Scoring unit: CER for the languages of the paper's CER list (zh, ja, ko, yue) and for every other
language written without spaces between words (th, lo, km, my, nan); WER for the rest.
:func:`uses_cer` is the one place that decides it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from partlib.common import PartError


class UnknownLanguageError(PartError):
    """A language code that the table does not know."""


@dataclass(frozen=True)
class Language:
    """One language: canonical code, English name (used in prompts), and writing properties."""

    code: str
    name: str
    no_space: bool = False  # written without spaces between words
    script: str = "Latn"
    cer: bool = False       # ASR scored by character error rate (else word error rate)


def _L(code: str, name: str, script: str = "Latn", no_space: bool = False, cer: Optional[bool] = None
       ) -> Language:
    """A table row; ``cer`` defaults to ``no_space``."""
    return Language(code=code, name=name, no_space=no_space, script=script,
                    cer=no_space if cer is None else cer)


# Canonical table: Fleurs' 102 languages, CommonVoice 15 and CoVoST2 languages.
_TABLE: Tuple[Language, ...] = (
    _L("ab", "Abkhaz", "Cyrl"), _L("af", "Afrikaans"), _L("am", "Amharic", "Ethi"),
    _L("ar", "Arabic", "Arab"), _L("as", "Assamese", "Beng"), _L("ast", "Asturian"),
    _L("az", "Azerbaijani"), _L("ba", "Bashkir", "Cyrl"), _L("bas", "Basaa"),
    _L("be", "Belarusian", "Cyrl"), _L("bg", "Bulgarian", "Cyrl"), _L("bn", "Bengali", "Beng"),
    _L("br", "Breton"), _L("bs", "Bosnian"), _L("ca", "Catalan"), _L("ceb", "Cebuano"),
    _L("ckb", "Central Kurdish", "Arab"), _L("cnh", "Hakha Chin"), _L("cs", "Czech"),
    _L("cv", "Chuvash", "Cyrl"), _L("cy", "Welsh"), _L("da", "Danish"), _L("de", "German"),
    _L("dv", "Dhivehi", "Thaa"), _L("dyu", "Dyula"), _L("el", "Greek", "Grek"),
    _L("en", "English"), _L("eo", "Esperanto"), _L("es", "Spanish"), _L("et", "Estonian"),
    _L("eu", "Basque"), _L("fa", "Persian", "Arab"), _L("ff", "Fula"), _L("fi", "Finnish"),
    _L("fil", "Filipino"), _L("fr", "French"), _L("fy", "Western Frisian"), _L("ga", "Irish"),
    _L("gl", "Galician"), _L("gn", "Guarani"), _L("gu", "Gujarati", "Gujr"), _L("ha", "Hausa"),
    _L("he", "Hebrew", "Hebr"), _L("hi", "Hindi", "Deva"), _L("hr", "Croatian"),
    _L("hsb", "Upper Sorbian"), _L("hu", "Hungarian"), _L("hy", "Armenian", "Armn"),
    _L("ia", "Interlingua"), _L("id", "Indonesian"), _L("ig", "Igbo"), _L("is", "Icelandic"),
    _L("it", "Italian"), _L("ja", "Japanese", "Jpan", True), _L("jv", "Javanese"),
    _L("ka", "Georgian", "Geor"), _L("kab", "Kabyle"), _L("kam", "Kamba"),
    _L("kea", "Kabuverdianu"), _L("kk", "Kazakh", "Cyrl"), _L("km", "Khmer", "Khmr", True),
    _L("kmr", "Northern Kurdish"), _L("kn", "Kannada", "Knda"), _L("ko", "Korean", "Kore", cer=True),
    _L("ky", "Kyrgyz", "Cyrl"), _L("lb", "Luxembourgish"), _L("lg", "Luganda"),
    _L("ln", "Lingala"), _L("lo", "Lao", "Laoo", True), _L("lt", "Lithuanian"),
    _L("luo", "Luo"), _L("lv", "Latvian"), _L("mdf", "Moksha", "Cyrl"), _L("mhr", "Meadow Mari", "Cyrl"),
    _L("mi", "Maori"), _L("mk", "Macedonian", "Cyrl"), _L("ml", "Malayalam", "Mlym"),
    _L("mn", "Mongolian", "Cyrl"), _L("mr", "Marathi", "Deva"), _L("mrj", "Hill Mari", "Cyrl"),
    _L("ms", "Malay"), _L("mt", "Maltese"), _L("my", "Burmese", "Mymr", True),
    _L("myv", "Erzya", "Cyrl"), _L("nan", "Min Nan", "Hani", True), _L("nb", "Norwegian Bokmal"),
    _L("ne", "Nepali", "Deva"), _L("nl", "Dutch"), _L("nn", "Norwegian Nynorsk"),
    _L("nso", "Northern Sotho"), _L("ny", "Nyanja"), _L("oc", "Occitan"), _L("om", "Oromo"),
    _L("or", "Odia", "Orya"), _L("pa", "Punjabi", "Guru"), _L("pl", "Polish"),
    _L("ps", "Pashto", "Arab"), _L("pt", "Portuguese"), _L("quy", "Quechua"),
    _L("rm", "Romansh"), _L("ro", "Romanian"), _L("ru", "Russian", "Cyrl"),
    _L("rw", "Kinyarwanda"), _L("sah", "Sakha", "Cyrl"), _L("sat", "Santali", "Olck"),
    _L("sc", "Sardinian"), _L("sd", "Sindhi", "Arab"), _L("sk", "Slovak"),
    _L("skr", "Saraiki", "Arab"), _L("sl", "Slovenian"), _L("sn", "Shona"), _L("so", "Somali"),
    _L("sq", "Albanian"), _L("sr", "Serbian", "Cyrl"), _L("sv", "Swedish"), _L("sw", "Swahili"),
    _L("ta", "Tamil", "Taml"), _L("te", "Telugu", "Telu"), _L("tg", "Tajik", "Cyrl"),
    _L("th", "Thai", "Thai", True), _L("ti", "Tigrinya", "Ethi"), _L("tig", "Tigre", "Ethi"),
    _L("tk", "Turkmen"), _L("tok", "Toki Pona"), _L("tr", "Turkish"), _L("tt", "Tatar", "Cyrl"),
    _L("tw", "Twi"), _L("ug", "Uyghur", "Arab"), _L("uk", "Ukrainian", "Cyrl"),
    _L("umb", "Umbundu"), _L("ur", "Urdu", "Arab"), _L("uz", "Uzbek"), _L("vi", "Vietnamese"),
    _L("vot", "Votic"), _L("wo", "Wolof"), _L("xh", "Xhosa"), _L("yi", "Yiddish", "Hebr"),
    _L("yo", "Yoruba"), _L("yue", "Cantonese", "Hani", True), _L("zgh", "Standard Moroccan Tamazight", "Tfng"),
    _L("zh", "Chinese", "Hani", True), _L("zu", "Zulu"),
)

LANGUAGES: Dict[str, Language] = {lang.code: lang for lang in _TABLE}

# Corpus spellings that the generic rule (lower-case, first part before '-'/'_') gets wrong,
# plus ISO 639-2/3 codes of languages that have a 639-1 code.
_ALIASES: Dict[str, str] = {
    # CommonVoice: zh-HK is Cantonese; zh-TW is Mandarin in traditional script.
    "zh-hk": "yue", "zh-tw": "zh", "zh-cn": "zh",
    # Fleurs irregular locales.
    "cmn_hans_cn": "zh", "yue_hant_hk": "yue", "es_419": "es",
    # ISO 639-3 / 639-2 spellings.
    "cmn": "zh", "zho": "zh", "chi": "zh", "eng": "en", "deu": "de", "ger": "de", "fra": "fr",
    "fre": "fr", "spa": "es", "ita": "it", "por": "pt", "rus": "ru", "jpn": "ja", "kor": "ko",
    "ara": "ar", "nld": "nl", "dut": "nl", "tur": "tr", "pes": "fa", "fas": "fa", "per": "fa",
    "swe": "sv", "cat": "ca", "est": "et", "mon": "mn", "lav": "lv", "slv": "sl", "tam": "ta",
    "ind": "id", "cym": "cy", "wel": "cy", "hin": "hi", "tgl": "fil", "tl": "fil",
    "nob": "nb", "nno": "nn", "no": "nb",
}

_SPLIT = re.compile(r"[-_]")


def canonical(code: str) -> str:
    """Map any corpus's language code to the canonical one; raise on an unknown code.

    >>> canonical("zh-CN"), canonical("cmn_hans_cn"), canonical("sv-SE"), canonical("de_de")
    ('zh', 'zh', 'sv', 'de')
    """
    if not isinstance(code, str) or not code.strip():
        raise UnknownLanguageError(f"empty language code {code!r}")
    key = code.strip().lower()
    if key in LANGUAGES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    head = _SPLIT.split(key, maxsplit=1)[0]
    if head in LANGUAGES:
        return head
    if head in _ALIASES:
        return _ALIASES[head]
    raise UnknownLanguageError(
        f"unknown language code {code!r}: add it to partlib/data/langs.py (canonical table or aliases)"
    )


# English names, lower-cased, as tools other than Kaldi recipes write them (lhotse recipes give
# ``language="English"`` or ``"Mandarin"``): the table's names plus names it does not use.
_NAMES: Dict[str, str] = {**{lang.name.lower(): lang.code for lang in _TABLE}, "mandarin": "zh"}


def from_name_or_code(value: str) -> str:
    """The canonical code of a language given by its English name or by any code :func:`canonical`
    knows; raise on an unknown one.

    >>> from_name_or_code("English"), from_name_or_code("Mandarin"), from_name_or_code("zh-CN")
    ('en', 'zh', 'zh')
    """
    if isinstance(value, str) and value.strip().lower() in _NAMES:
        return _NAMES[value.strip().lower()]
    return canonical(value)


def codes() -> List[str]:
    """Every canonical language code of the table."""
    return [lang.code for lang in _TABLE]


def get(code: str) -> Language:
    """The :class:`Language` record for any spelling of a language code."""
    return LANGUAGES[canonical(code)]


def name(code: str) -> str:
    """English name of a language, as used in task instructions."""
    return get(code).name


def uses_cer(code: str) -> bool:
    """Whether ASR in the language is scored by CER (else WER): zh, ja, ko, yue as in the paper
    (Korean, though written with spaces, by characters), and the other languages written without
    spaces."""
    return get(code).cer


def no_space(code: str) -> bool:
    """Whether the language is written without spaces between words (texts join and split by
    characters)."""
    return get(code).no_space


def join_texts(texts: Sequence[str], code: str) -> str:
    """Consecutive texts of one language as one (no space between them where the language is
    written without spaces); empty texts are skipped."""
    return ("" if get(code).no_space else " ").join(t for t in texts if t)
