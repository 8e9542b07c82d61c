"""The scorer registry: scorer name -> :class:`Scorer`, the one place a metric family is defined.

A task names its scorer (``Task.scorer`` in :mod:`partlib.tasks`); everything that scores, compares
or tabulates a decode dir asks the scorer registered under that name: scoring a decode dir and its
files (:mod:`partlib.scoring.decode_dir`), the paired bootstrap (:mod:`partlib.scoring.bootstrap`),
the tables of RESULTS.md and the direction of each metric. Built in: ``error_rate`` (WER/CER),
``translation`` (BLEU/chrF, with WER/CER beside) and ``accuracy`` (label accuracy).

Adding a metric family is one :func:`register` call with a :class:`Scorer` subclass that
implements :meth:`Scorer.score` (and, for significance tests, :meth:`Scorer.stats`); its tables,
``scores.md`` and ``scores.json`` follow from the defaults. ``test/test_scorers.py`` registers a
toy scorer in the test file and finds it in all three.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from partlib.common import ConfigError, DataError, PathLike, atomic_write
from partlib.scoring import accuracy
from partlib.scoring import bleu as bleu_mod
from partlib.scoring import wer_bleu
from partlib.scoring.scores import SetScores, set_order, write_scores
from partlib.scoring.wer_bleu import TRANSLATION_METRICS, Inputs


@dataclass(frozen=True)
class Table:
    """A RESULTS.md table of a scorer: a row per set of each decode, a column per system/stage."""

    key: str                                    # the table's id (a metric or a derived value)
    title: str
    higher_is_better: bool
    value: Callable[[SetScores], Optional[float]]
    metric_in_row: bool = False                 # the row name shows the set's headline metric


class Scorer:
    """A metric family. Subclasses set :attr:`name`, :attr:`metrics` (headline first) and
    :attr:`higher_is_better` (every metric its ``scores.json`` reports) and implement :meth:`score`."""

    name: str = ""
    metrics: Tuple[str, ...] = ()
    higher_is_better: Mapping[str, bool] = {}

    def score(self, inputs: Inputs, *, tgt_lang: Optional[str], normalizer: str,
              labels: Optional[Sequence[str]]) -> Tuple[Dict[str, Any], List[Any]]:
        """The ``scores.json`` dict (:mod:`partlib.scoring.scores`) of paired texts and the
        per-utterance results (each with ``utt``, ``src_lang``, ``ref`` and ``hyp``)."""
        raise NotImplementedError

    def tables(self) -> Tuple[Table, ...]:
        """The RESULTS.md tables of a task scored by it: by default one per metric."""
        return tuple(Table(m, m, self.higher_is_better[m], lambda s, m=m: s.value(m)) for m in self.metrics)

    def format_markdown(self, result: Mapping[str, Any]) -> str:
        """``scores.md``: by default one row per set, one column per metric."""
        lines = [f"# Scores ({result['task']})", "",
                 "| set | #utts | " + " | ".join(m.upper() for m in self.metrics) + " |",
                 "|---|---|" + "---|" * len(self.metrics)]
        for key in set_order(result["sets"]):
            sec = result["sets"][key]
            values = [sec["scores"].get(m, {}).get("value") for m in self.metrics]
            lines.append(f"| {key} | {sec.get('num_utts', '')} | "
                         + " | ".join("n/a" if v is None else f"{v:.2f}" for v in values) + " |")
        return "\n".join(lines) + "\n"

    def format_result_txt(self, result: Mapping[str, Any], utts: Sequence[Any]) -> str:
        """``result.txt``: by default each utterance's reference and hypothesis, then the summary."""
        rows = [f"{u.utt}\tref: {u.ref}\thyp: {u.hyp}" for u in utts]
        return "\n".join(rows) + "\n\n" + self.format_markdown(result)

    def write_outputs(self, out_dir: PathLike, result: Mapping[str, Any], utts: Sequence[Any]) -> None:
        """``result.txt``, ``scores.md`` and ``scores.json`` in ``out_dir``, each written atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "result.txt", self.format_result_txt(result, utts))
        atomic_write(out / "scores.md", self.format_markdown(result))
        write_scores(out, result)

    # the paired bootstrap (partlib.scoring.bootstrap)
    def set_of(self, utt: Any, result: Mapping[str, Any]) -> str:
        """The set (other than ``overall``) a per-utterance result is reported in."""
        return utt.src_lang

    def compared_metrics(self, result: Mapping[str, Any], key: str) -> List[str]:
        """The metrics a significance test compares on set ``key``: by default its headline."""
        return [result["sets"][key]["primary"]]

    def stats(self, utts: Sequence[Any], metric: str, tgt_lang: Optional[str]) -> np.ndarray:
        """Per-utterance sufficient statistics of ``metric`` (rows), summed over a resample; by
        default ``(numerator, denominator)`` of a percentage (:meth:`value_of_stats`)."""
        raise ConfigError(f"scorer {self.name!r} has no significance test (no Scorer.stats)")

    def value_of_stats(self, metric: str, stats: np.ndarray, tgt_lang: Optional[str]) -> np.ndarray:
        """``metric`` of summed statistics (one row per resample): by default 100 x numerator /
        denominator, a denominator of 0 (a resample of empty references) counted as 1."""
        return 100.0 * stats[:, 0] / np.maximum(stats[:, 1], 1)

    def defined(self, metric: str, stats: np.ndarray) -> bool:
        """Whether ``metric`` is defined on the full set (an error rate of empty references is not)."""
        return bool(stats[:, 1].sum() > 0)


class WerBleuScorer(Scorer):
    """Error rates and, with a target language, BLEU/chrF (:mod:`partlib.scoring.wer_bleu`)."""

    higher_is_better = {"wer": False, "cer": False, "mixed": False, "bleu": True, "chrf": True}

    def __init__(self, name: str, metrics: Tuple[str, ...], tables: Tuple[Table, ...]) -> None:
        self.name, self.metrics, self._tables = name, metrics, tables

    def score(self, inputs, *, tgt_lang, normalizer, labels):
        return wer_bleu.score(inputs, tgt_lang=tgt_lang, normalizer=normalizer)

    def tables(self):
        return self._tables

    def format_markdown(self, result):
        return wer_bleu.format_markdown(result)

    def format_result_txt(self, result, utts):
        return wer_bleu.format_result_txt(result, utts)

    def write_outputs(self, out_dir, result, utts):
        wer_bleu.write_outputs(out_dir, result, utts)

    def set_of(self, utt, result):
        return wer_bleu.set_key(utt, result["tgt_lang"])

    def compared_metrics(self, result, key):
        return list(TRANSLATION_METRICS) if result["tgt_lang"] else [result["sets"][key]["error_metric"]]

    def stats(self, utts, metric, tgt_lang):
        if metric in TRANSLATION_METRICS:
            return bleu_mod.sentence_stats(metric, [u.hyp for u in utts], [u.ref for u in utts], tgt_lang)
        unit = {"wer": "word", "cer": "char"}
        rows = [(u.counts[unit.get(metric, u.unit)].errors, u.counts[unit.get(metric, u.unit)].n) for u in utts]
        return np.asarray(rows, dtype=np.float64).reshape(len(utts), 2)

    def value_of_stats(self, metric, stats, tgt_lang):
        if metric in TRANSLATION_METRICS:
            return np.array([bleu_mod.score_from_stats(metric, row, tgt_lang) for row in stats])
        return super().value_of_stats(metric, stats, tgt_lang)

    def defined(self, metric, stats):
        return metric in TRANSLATION_METRICS or super().defined(metric, stats)


class AccuracyScorer(Scorer):
    """Accuracy of label-valued outputs with a confusion matrix (:mod:`partlib.scoring.accuracy`)."""

    name = "accuracy"
    metrics = ("accuracy",)
    higher_is_better = {"accuracy": True}

    def score(self, inputs, *, tgt_lang, normalizer, labels):
        return accuracy.score(inputs.refs, inputs.hyps, inputs.utt2lang, len(inputs.missing), len(inputs.extra),
                              labels)

    def tables(self):
        return (Table("accuracy", "accuracy (%)", True, lambda s: s.value("accuracy")),)

    def format_markdown(self, result):
        return accuracy.format_markdown(result)

    def format_result_txt(self, result, utts):
        return accuracy.format_result_txt(result, utts)

    def stats(self, utts, metric, tgt_lang):
        return np.asarray([(float(u.correct), 1.0) for u in utts], dtype=np.float64).reshape(len(utts), 2)


_REGISTRY: Dict[str, Scorer] = {}


def register(scorer: Scorer) -> Scorer:
    """Add a scorer to the registry (checked); returns it. A name can be registered once."""
    if not scorer.name or scorer.name in _REGISTRY:
        raise ConfigError(f"scorer {scorer.name!r}: " + ("already registered" if scorer.name else "no name"))
    unknown = [m for m in scorer.metrics if m not in scorer.higher_is_better]
    if not scorer.metrics or unknown:
        raise ConfigError(f"scorer {scorer.name!r}: needs metrics, each with its direction in higher_is_better "
                          f"(missing: {', '.join(unknown) or 'metrics'})")
    for other in _REGISTRY.values():
        clash = [m for m, up in scorer.higher_is_better.items() if other.higher_is_better.get(m, up) != up]
        if clash:
            raise ConfigError(f"scorer {scorer.name!r}: metric(s) {', '.join(clash)} of scorer {other.name!r} "
                              "have the other direction")
    _REGISTRY[scorer.name] = scorer
    return scorer


def unregister(name: str) -> None:
    """Remove a scorer (tests that register a toy scorer clean up with this)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Scorer:
    """The registered scorer ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown scorer {name!r}; known scorers: {', '.join(_REGISTRY)}") from None


def names() -> List[str]:
    """Names of the registered scorers, in registration order."""
    return list(_REGISTRY)


def of_task(task: Any, where: Optional[PathLike] = None) -> Scorer:
    """The scorer a task (:class:`partlib.tasks.Task`) names; ``where`` (a decode dir) is named in
    the error of a training-only task."""
    if task.scorer is None:
        raise DataError(f"task {task.name} is a training-only task: nothing to score", where)
    try:
        return get(task.scorer)
    except ConfigError as e:
        raise ConfigError(f"task {task.name}: {e}") from None


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of a metric of any registered scorer is better."""
    for s in _REGISTRY.values():
        if metric in s.higher_is_better:
            return s.higher_is_better[metric]
    known = sorted({m for s in _REGISTRY.values() for m in s.higher_is_better})
    raise ConfigError(f"unknown metric {metric!r} (known: {', '.join(known)})")


def _wrong_lang(s: SetScores) -> Optional[float]:
    return s.diagnostic_rate("wrong_lang")


_WRONG_LANG = Table("wrong_lang", "wrong-language rate (%)", False, _wrong_lang)
register(WerBleuScorer("error_rate", ("wer", "cer"), (
    Table("err", "WER / CER (%)", False, lambda s: s.value(), metric_in_row=True), _WRONG_LANG)))
register(WerBleuScorer("translation", ("bleu", "chrf"), (
    Table("bleu", "BLEU", True, lambda s: s.value("bleu")), Table("chrf", "chrF", True, lambda s: s.value("chrf")),
    _WRONG_LANG)))
register(AccuracyScorer())
