"""``scores.json``, the scoring result of one decode dir: one typed reader and one writer.

Every scorer of :mod:`partlib.scoring.scorers` writes a dict of this shape (the full schema of the
error-rate and translation scorers is in :mod:`partlib.scoring.wer_bleu`, the accuracy scorer's in
:mod:`partlib.scoring.accuracy`)::

    {"schema_version": 1, "task": "<what the scorer scored>", "tgt_lang": null | "<code>",
     "metrics": [...], "num_utts": int, "num_missing": int, "num_extra": int,
     "sets": {"<set>" | "overall": {"num_utts": int, "primary": "<headline metric>",
                                    "scores": {"<metric>": {"value": float | null, ...}}, ...}},
     ...scorer-specific keys}

:func:`read_scores` needs of a file only what every reader uses (``sets``, each set's ``primary``
and ``scores`` with their ``value``); the rest is optional, so that files written before a key
existed still read. :func:`write_scores` is the one way a ``scores.json`` is written: sorted keys,
floats rounded to :data:`FLOAT_DIGITS` decimals, atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

from partlib.common import DataError, PathLike, atomic_write

FILE_NAME = "scores.json"
FLOAT_DIGITS = 4
OVERALL = "overall"
LEGACY_SCHEME = "part-basic-v1"  # what files written before the normaliser option were scored with


@dataclass(frozen=True)
class SetScores:
    """One set of a ``scores.json`` (a language, a direction or ``overall``)."""

    key: str
    primary: str                               # the headline metric
    scores: Mapping[str, Mapping[str, Any]]    # metric -> {"value": ..., "counts" | "signature": ...}
    num_utts: Optional[int] = None
    error_metric: Optional[str] = None         # error-rate scorers: the error rate in the set's unit
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    normalizer: Optional[str] = None

    def value(self, metric: Optional[str] = None) -> Optional[float]:
        """The value of ``metric`` (default: the headline), None if not scored or undefined."""
        block = self.scores.get(metric or self.primary)
        return None if block is None else block.get("value")

    def diagnostic_rate(self, name: str) -> Optional[float]:
        """The rate of a diagnostic (``wrong_lang``, ``repetition``, ``runaway``), None if absent."""
        block = self.diagnostics.get(name)
        return block.get("rate") if isinstance(block, Mapping) else None


@dataclass(frozen=True)
class Scores:
    """A ``scores.json`` (module docstring); ``data`` is the whole dict as read."""

    sets: Mapping[str, SetScores]
    data: Mapping[str, Any]
    path: Optional[Path] = None

    @property
    def task(self) -> Optional[str]:
        """What the scorer scored (``asr``, ``translation``, ``accuracy``, ...)."""
        return self.data.get("task")

    @property
    def tgt_lang(self) -> Optional[str]:
        """The target language of a translation, None otherwise."""
        return self.data.get("tgt_lang")

    @property
    def overall(self) -> SetScores:
        """The ``overall`` set."""
        return self.sets[OVERALL]

    @property
    def normalizer_scheme(self) -> Optional[str]:
        """The WER/CER normaliser scheme recorded (:func:`recorded_scheme`)."""
        return recorded_scheme(self.data)


def recorded_scheme(data: Mapping[str, Any]) -> Optional[str]:
    """The WER/CER normaliser scheme a ``scores.json`` dict records: ``part-basic-v1`` for a
    WER/BLEU file older than the option, None for a file without normalisers (accuracy)."""
    norm = data.get("normalizer")
    if not isinstance(norm, Mapping):
        return None
    return norm.get("scheme", LEGACY_SCHEME)


def _require(obj: Any, key: str, kind: type, path: Optional[Path], where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise DataError(f"not a scores.json of partlib.scoring: no key {where}{key}", path)
    value = obj[key]
    if not isinstance(value, kind):
        raise DataError(f"not a scores.json of partlib.scoring: {where}{key} is not a {kind.__name__}", path)
    return value


def parse_scores(data: Mapping[str, Any], path: Optional[PathLike] = None) -> Scores:
    """A ``scores.json`` dict as :class:`Scores`; a missing or mistyped key is a :class:`DataError`
    naming the file and the key."""
    p = None if path is None else Path(path)
    sets: Dict[str, SetScores] = {}
    for key, sec in _require(data, "sets", dict, p, "").items():
        where = f"sets.{key}."
        scores = _require(sec, "scores", dict, p, where)
        for metric, block in scores.items():
            value = _require(block, "value", object, p, f"{where}scores.{metric}.")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise DataError(f"not a scores.json of partlib.scoring: {where}scores.{metric}.value "
                                "is not a number", p)
        sets[key] = SetScores(key=key, primary=_require(sec, "primary", str, p, where), scores=scores,
                              num_utts=sec.get("num_utts"), error_metric=sec.get("error_metric"),
                              diagnostics=sec.get("diagnostics") or {}, normalizer=sec.get("normalizer"))
    if OVERALL not in sets:
        raise DataError(f"not a scores.json of partlib.scoring: no key sets.{OVERALL}", p)
    return Scores(sets=sets, data=data, path=p)


def read_scores(path: PathLike) -> Scores:
    """Read a ``scores.json`` file (a decode dir's: pass the dir or the file)."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no such file", p) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"invalid JSON ({e})", p) from None
    if not isinstance(data, dict):
        raise DataError("not a scores.json of partlib.scoring: not a JSON object", p)
    return parse_scores(data, p)


def read_scores_if_any(decode_dir: PathLike) -> Optional[Scores]:
    """The decode dir's ``scores.json``, None when it has none."""
    f = Path(decode_dir) / FILE_NAME
    return read_scores(f) if f.is_file() else None


def round_floats(obj: Any, digits: int = FLOAT_DIGITS) -> Any:
    """Round every float in a JSON-like structure (deterministic output)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, rounded floats, UTF-8, trailing newline."""
    return json.dumps(round_floats(obj), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_scores(path: PathLike, result: Mapping[str, Any]) -> None:
    """Write a scorer's result as ``scores.json`` (``path``: the file or its decode dir), atomically;
    a result a reader would refuse is refused here, before anything is written."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE_NAME
    parse_scores(round_floats(result), p)
    atomic_write(p, dumps_json(result))


def set_order(keys: Iterable[str]) -> List[str]:
    """Set keys in the order tables show them: sorted, ``overall`` last."""
    return sorted(keys, key=lambda k: (k == OVERALL, k))
