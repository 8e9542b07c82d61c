"""Quick dev scores during training: corpus WER/CER over asr examples and BLEU over s2tt examples.

The same normalisation and alignment as ``partlib.scoring`` (the full scorer used after decoding).
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

from partlib.data import langs
from partlib.scoring.bleu import corpus_score
from partlib.scoring.normalize import normalize, units
from partlib.scoring.wer import ErrorCounts, score_units


def quick_scores(examples: Sequence, hyps: Mapping[str, str]) -> Dict[str, float]:
    """``{"wer": ..., "bleu": ...}`` for the examples that have a hypothesis (keys by ``example.key``).

    ``wer`` pools word errors (WER languages) and character errors (CER languages) into one rate.
    BLEU is computed per target language and averaged over target languages.
    """
    counts = []
    by_tgt: Dict[str, tuple] = {}
    for e in examples:
        if e.key not in hyps:
            continue
        if e.task == "asr":
            unit = "char" if langs.uses_cer(e.src_lang) else "word"
            ref = units(normalize(e.target, e.src_lang), unit)
            hyp = units(normalize(hyps[e.key], e.src_lang), unit)
            counts.append(score_units(ref, hyp)[0])
        elif e.task == "s2tt":
            h, r = by_tgt.setdefault(e.tgt_lang, ([], []))
            h.append(hyps[e.key])
            r.append(e.target)
    out: Dict[str, float] = {}
    if counts:
        rate = ErrorCounts.total(counts).rate()
        out["wer"] = 100.0 if rate is None else rate
    if by_tgt:
        vals = [corpus_score("bleu", h, r, tgt)["value"] for tgt, (h, r) in sorted(by_tgt.items())]
        out["bleu"] = sum(vals) / len(vals)
    return out
