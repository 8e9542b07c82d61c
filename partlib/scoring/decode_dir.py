"""Scoring a decode directory with the scorer of its task.

A decode dir (written by ``partlib.infer.decode``) holds Kaldi-format ``ref``, ``hyp``,
``utt2lang``, ``decode.json`` (its options, the task among them) and, for a cross-lingual task,
``tgt_lang``. The task comes from ``decode.json``, else from the dir name
(``decode_<set>[_to_<tgt>]_<task>``, :func:`partlib.tasks.parse_decode_dir`); a dir that names
neither is scored as translation when it has a target language and by error rate otherwise. The
scorer is the one the task names (:mod:`partlib.scoring.scorers`). WER/CER use a normaliser scheme
(``partlib.scoring.normalize``); left unsaid, the one the dir's ``scores.json`` records, so that a
re-score (a significance test) matches the scores on disk.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from partlib import tasks
from partlib.common import DataError, PathLike
from partlib.scoring import normalize as norm
from partlib.scoring import scorers, wer_bleu
from partlib.scoring.scores import read_scores_if_any


def decode_tgt_lang(decode_dir: PathLike) -> Optional[str]:
    """Target language of a decode dir (``tgt_lang`` file, else ``scores.json``), None for ASR."""
    d = Path(decode_dir)
    if (d / "tgt_lang").is_file():
        words = (d / "tgt_lang").read_text(encoding="utf-8").split()
        if len(words) != 1:
            raise DataError("expected one language code", d / "tgt_lang")
        return words[0]
    scores = read_scores_if_any(d)
    return None if scores is None else scores.tgt_lang


def recorded_normalizer(decode_dir: PathLike) -> Optional[str]:
    """The normaliser scheme the dir's ``scores.json`` was scored with (``part-basic-v1`` for
    files older than the option); None without a WER/BLEU ``scores.json``."""
    scores = read_scores_if_any(decode_dir)
    return None if scores is None else scores.normalizer_scheme


def decode_task(decode_dir: PathLike) -> Optional[str]:
    """The task a decode dir was decoded with (``decode.json``, else its name), None if unknown."""
    d = Path(decode_dir)
    if (d / "decode.json").is_file():
        try:
            task = json.loads((d / "decode.json").read_text(encoding="utf-8")).get("task")
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e})", d / "decode.json") from None
        if task is not None:
            tasks.get(task)  # a task this installation does not know is an error, not a guess
            return task
    parsed = tasks.parse_decode_dir(d.name)
    return parsed[1] if parsed else None


def decode_scorer(decode_dir: PathLike, tgt_lang: Optional[str] = None) -> scorers.Scorer:
    """The scorer of a decode dir: its task's, else translation with a target language
    (``tgt_lang``, else the dir's) and error rate without."""
    d = Path(decode_dir)
    name = decode_task(d)
    if name is not None:
        return scorers.of_task(tasks.get(name), d)
    has_tgt = tgt_lang is not None or decode_tgt_lang(d) is not None
    return scorers.get("translation" if has_tgt else "error_rate")


def score_decode_dir(decode_dir: PathLike, tgt_lang: Optional[str] = None, normalizer: Optional[str] = None
                     ) -> Tuple[Dict[str, Any], List[Any]]:
    """Score a decode dir's ref/hyp with its scorer (see the module docstring), WER/CER after the
    ``normalizer`` scheme (None: the recorded one, else the default); returns (the ``scores.json``
    dict, per-utterance results)."""
    d = Path(decode_dir)
    inputs = wer_bleu.load_inputs(d / "ref", d / "hyp", utt2lang=d / "utt2lang")
    scorer = decode_scorer(d, tgt_lang)
    name = decode_task(d)
    labels = tasks.get(name).labels if name is not None else None
    if normalizer is None:
        normalizer = recorded_normalizer(d) or norm.DEFAULT_SCHEME
    return scorer.score(inputs, tgt_lang=tgt_lang if tgt_lang is not None else decode_tgt_lang(d),
                        normalizer=normalizer, labels=labels() if labels else None)


def write_outputs(decode_dir: PathLike, result: Mapping[str, Any], utts: Sequence[Any]) -> None:
    """Write the scoring files of a result of :func:`score_decode_dir` into the decode dir it
    scored, by the dir's scorer, each file atomically."""
    decode_scorer(decode_dir, result.get("tgt_lang")).write_outputs(decode_dir, result, utts)
