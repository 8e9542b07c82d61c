"""Quick dev scores during training, one per dev metric of the task registry: corpus WER/CER
(``wer``), BLEU (``bleu``) and exact-match accuracy (``accuracy``).

The same normalisation and alignment as ``partlib.scoring`` (the full scorer used after decoding).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

from partlib import tasks
from partlib.data import langs
from partlib.scoring.accuracy import label_matches
from partlib.scoring.bleu import corpus_score
from partlib.scoring.normalize import normalize, units
from partlib.scoring.wer import ErrorCounts, score_units


def quick_scores(examples: Sequence, hyps: Mapping[str, str]) -> Dict[str, float]:
    """``{"wer": ..., "bleu": ..., "accuracy": ...}`` for the examples that have a hypothesis (keys
    by ``example.key``), each metric over the examples of the tasks that report it.

    ``wer`` pools word errors (WER languages) and character errors (CER languages) into one rate.
    BLEU is computed per target language and averaged over target languages. ``accuracy`` is the
    percentage of hypotheses equal to their target (case and surrounding punctuation ignored).
    """
    counts = []
    by_tgt: Dict[str, Tuple[List[str], List[str]]] = {}
    correct: List[bool] = []
    for e in examples:
        if e.key not in hyps:
            continue
        metric = tasks.get(e.task).dev_metric
        if metric == "wer":
            unit = "char" if langs.uses_cer(e.tgt_lang) else "word"
            ref = units(normalize(e.target, e.tgt_lang), unit)
            hyp = units(normalize(hyps[e.key], e.tgt_lang), unit)
            counts.append(score_units(ref, hyp)[0])
        elif metric == "bleu":
            h, r = by_tgt.setdefault(e.tgt_lang, ([], []))
            h.append(hyps[e.key])
            r.append(e.target)
        elif metric == "accuracy":
            correct.append(label_matches(hyps[e.key], e.target))
    out: Dict[str, float] = {}
    if counts:
        rate = ErrorCounts.total(counts).rate()
        out["wer"] = 100.0 if rate is None else rate
    if by_tgt:
        vals = [corpus_score("bleu", h, r, tgt)["value"] for tgt, (h, r) in sorted(by_tgt.items())]
        out["bleu"] = sum(vals) / len(vals)
    if correct:
        out["accuracy"] = 100.0 * sum(correct) / len(correct)
    return out
