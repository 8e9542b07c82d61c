"""Output control without a reference: a script mask, and signs of trouble that ask for a re-decode.

* **Script mask** (:class:`ScriptMask`): generation may only emit tokens whose letters belong to
  the target language's script (``partlib.data.langs``: ``Language.script``, ISO 15924); tokens
  without letters (digits, punctuation, spaces, byte pieces) and special tokens stay allowed. It
  keeps a Chinese hypothesis in Han characters, which matters for zh ASR and en->zh translation;
  among Latin-script languages (en, de, fr, es, ...) it changes nothing that matters, as they
  share the script. It reaches the model's ``generate`` as a logits processor
  (:meth:`ScriptMask.processor`) that the decoder passes in; the model knows nothing of scripts.
* **Trouble** (:func:`troubles`): a greedy hypothesis that (a) reached its token budget without
  ending, (b) has more tokens per audio second than the model's training targets ever had (the
  99th percentile of its training data, :func:`target_rates`, times a factor), or (c) repeats an
  n-gram of words (characters for languages written without spaces) three or more times in a row.
  :func:`partlib.infer.decode.generate_hyps` re-decodes such hypotheses with beam search.
"""
from __future__ import annotations

import unicodedata
import weakref
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessor

from partlib.common import ConfigError
from partlib.data import langs

# Unicode character-name prefixes of the letters of each ISO 15924 script in the language table.
_SCRIPT_LETTERS: Dict[str, tuple] = {
    "Latn": ("LATIN",), "Hani": ("CJK",), "Jpan": ("CJK", "HIRAGANA", "KATAKANA"), "Kore": ("HANGUL", "CJK"),
    "Cyrl": ("CYRILLIC",), "Arab": ("ARABIC",), "Grek": ("GREEK",), "Hebr": ("HEBREW",), "Armn": ("ARMENIAN",),
    "Geor": ("GEORGIAN",), "Ethi": ("ETHIOPIC",), "Deva": ("DEVANAGARI",), "Beng": ("BENGALI",),
    "Gujr": ("GUJARATI",), "Guru": ("GURMUKHI",), "Knda": ("KANNADA",), "Mlym": ("MALAYALAM",),
    "Orya": ("ORIYA",), "Taml": ("TAMIL",), "Telu": ("TELUGU",), "Khmr": ("KHMER",), "Laoo": ("LAO",),
    "Mymr": ("MYANMAR",), "Thai": ("THAI",), "Thaa": ("THAANA",), "Tfng": ("TIFINAGH",), "Olck": ("OL CHIKI",),
}

TROUBLES = ("budget", "rate", "repeat")  # the reasons of :func:`troubles`, in report order
REPEATS = 3  # an n-gram this many times in a row is a repetition loop
RATE_QUANTILE = 99.0  # percentile of the training targets' tokens per second kept in info.json


def letters_in_script(text: str, script: str) -> bool:
    """Whether every letter of ``text`` belongs to ``script`` (non-letters always do)."""
    prefixes = _SCRIPT_LETTERS.get(script)
    if prefixes is None:
        raise ConfigError(f"no script mask for script {script!r} (known: {', '.join(sorted(_SCRIPT_LETTERS))})")
    for ch in text:
        if unicodedata.category(ch).startswith("L") and not unicodedata.name(ch, "").startswith(prefixes):
            return False
    return True


class ScriptMask:
    """Per-language allowed-token masks over a model's vocabulary, built once per language."""

    def __init__(self, tokenizer, vocab_size: int, always: Sequence[int] = ()) -> None:
        """``vocab_size``: the LM head's width (ids past the tokenizer are never allowed);
        ``always``: ids allowed in every language (the stop ids)."""
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.always = sorted(set(always) | set(tokenizer.all_special_ids))
        self._masks: Dict[str, torch.Tensor] = {}
        self._pieces: Optional[List[str]] = None

    def allowed(self, lang: str) -> torch.Tensor:
        """Boolean [vocab_size]: the tokens a hypothesis in ``lang`` may contain."""
        script = langs.get(lang).script
        if script not in self._masks:
            if self._pieces is None:
                n = min(len(self.tokenizer), self.vocab_size)
                self._pieces = self.tokenizer.batch_decode([[i] for i in range(n)])
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[:len(self._pieces)] = torch.tensor([letters_in_script(p, script) for p in self._pieces])
            mask[[i for i in self.always if i < self.vocab_size]] = True
            self._masks[script] = mask
        return self._masks[script]

    def processor(self, tgt_langs: Sequence[str], num_beams: int) -> LogitsProcessor:
        """A ``transformers`` logits processor masking each row of a batch (beams of one example
        are consecutive rows) to its example's target language."""
        rows = torch.stack([self.allowed(lang) for lang in tgt_langs]).repeat_interleave(num_beams, dim=0)

        class _Mask(LogitsProcessor):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                allowed = rows.to(scores.device)[:, :scores.shape[-1]]
                return scores.masked_fill(~allowed, float("-inf"))

        return _Mask()


_MASKS: "weakref.WeakKeyDictionary[nn.Module, ScriptMask]" = weakref.WeakKeyDictionary()


def script_mask(model: nn.Module) -> ScriptMask:
    """The script mask of a SpeechLLM's tokenizer and output layer, its stop ids always allowed;
    built once per model (it decodes the whole vocabulary)."""
    if model not in _MASKS:
        _MASKS[model] = ScriptMask(model.tokenizer, model.vocab_size, always=model.prompt.stop_ids)
    return _MASKS[model]


def tokens_per_second(n_tokens: int, seconds: float) -> float:
    """The output rate that bounds a hypothesis: tokens per audio second, the audio counted as at
    least one second (a short clip's rate says little)."""
    return n_tokens / max(1.0, seconds)


def target_rates(items: Sequence[tuple], quantile: float = RATE_QUANTILE) -> Dict[str, Dict[str, float]]:
    """``{task: {target language: rate}}``: the ``quantile`` percentile of
    :func:`tokens_per_second` over ``(task, tgt_lang, n_target_tokens, seconds)`` items."""
    by: Dict[str, Dict[str, List[float]]] = {}
    for task, tgt, n_tok, seconds in items:
        by.setdefault(task, {}).setdefault(tgt, []).append(tokens_per_second(n_tok, seconds))
    return {t: {lang: round(float(np.percentile(v, quantile)), 3) for lang, v in sorted(d.items())}
            for t, d in sorted(by.items())}


def repeats(units: Sequence[str], times: int = REPEATS) -> bool:
    """Whether some n-gram of ``units`` occurs ``times`` or more times in a row."""
    n_units = len(units)
    for n in range(1, n_units // times + 1):
        for i in range(n_units - times * n + 1):
            if all(units[i + k * n:i + (k + 1) * n] == units[i:i + n] for k in range(1, times)):
                return True
    return False


@dataclass
class Trouble:
    """How :func:`troubles` judges a hypothesis (the re-decode's trigger settings)."""

    max_rates: Mapping[str, Mapping[str, float]]  # {task: {tgt_lang: tokens/s}} (info.json's target_rates)
    rate_factor: float = 1.5  # a hypothesis may exceed the training rate by this factor
    beams: int = 4  # beam size of the re-decode

    def bound(self, task: str, tgt_lang: str) -> Optional[float]:
        """The highest acceptable rate for ``task`` into ``tgt_lang`` (None: not known)."""
        rate = self.max_rates.get(task, {}).get(tgt_lang)
        return None if rate is None else rate * self.rate_factor


def troubles(text: str, n_tokens: int, ended: bool, seconds: float, lang: str,
             bound: Optional[float]) -> List[str]:
    """The signs of trouble of one hypothesis (subset of :data:`TROUBLES`, in that order):
    ``ended`` is False when generation stopped at the budget; ``bound`` is the rate limit."""
    out = []
    if not ended:
        out.append("budget")
    if bound is not None and tokens_per_second(n_tokens, seconds) > bound:
        out.append("rate")
    units = list(text.replace(" ", "")) if langs.get(lang).no_space else text.split()
    if repeats(units):
        out.append("repeat")
    return out


def trouble_counts(reasons: Iterable[str]) -> Dict[str, int]:
    """``{"redecoded": n, "<reason>": n, ...}`` from comma-joined reasons, one item per re-decoded
    utterance (the ``troubles`` file of a decode dir)."""
    items = [r.split(",") for r in reasons]
    return {"redecoded": len(items), **{t: sum(t in r for r in items) for t in TROUBLES}}
