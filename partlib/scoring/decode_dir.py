"""Scoring a decode directory with the scorer of its task.

A decode dir (written by ``partlib.infer.decode``) holds Kaldi-format ``ref``, ``hyp``,
``utt2lang``, ``decode.json`` (its options, the task among them) and, for a cross-lingual task,
``tgt_lang``. The task comes from ``decode.json``, else from the dir name
(``decode_<set>[_to_<tgt>]_<task>``, :func:`partlib.tasks.parse_decode_dir`); a dir that names
neither is scored as translation when it has a target language and by error rate otherwise.
WER/CER use a normaliser scheme (``partlib.scoring.normalize``); left unsaid, the one the dir's
``scores.json`` records, so that a re-score (a significance test) matches the scores on disk.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

from partlib import tasks
from partlib.common import DataError, PathLike, atomic_write
from partlib.scoring import accuracy, wer_bleu
from partlib.scoring import normalize as norm


def _scores_json(decode_dir: Path) -> Optional[dict]:
    """The dir's ``scores.json`` as a dict, None when there is none."""
    f = decode_dir / "scores.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e})", f) from None


def decode_tgt_lang(decode_dir: PathLike) -> Optional[str]:
    """Target language of a decode dir (``tgt_lang`` file, else ``scores.json``), None for ASR."""
    d = Path(decode_dir)
    if (d / "tgt_lang").is_file():
        words = (d / "tgt_lang").read_text(encoding="utf-8").split()
        if len(words) != 1:
            raise DataError("expected one language code", d / "tgt_lang")
        return words[0]
    result = _scores_json(d)
    return None if result is None else result.get("tgt_lang")


def recorded_normalizer(decode_dir: PathLike) -> Optional[str]:
    """The normaliser scheme the dir's ``scores.json`` was scored with (``part-basic-v1`` for
    files older than the option); None without a WER/BLEU ``scores.json``."""
    result = _scores_json(Path(decode_dir))
    if result is None or "normalizer" not in result:
        return None
    return wer_bleu.recorded_scheme(result)


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


def score_decode_dir(decode_dir: PathLike, tgt_lang: Optional[str] = None, normalizer: Optional[str] = None):
    """Score a decode dir's ref/hyp with its task's scorer (see the module docstring), WER/CER
    after the ``normalizer`` scheme (None: the recorded one, else the default); returns (scores
    dict, per-utterance results)."""
    d = Path(decode_dir)
    inputs = wer_bleu.load_inputs(d / "ref", d / "hyp", utt2lang=d / "utt2lang")
    name = decode_task(d)
    task = tasks.get(name) if name is not None else None
    if task is not None and task.scorer is None:
        raise DataError(f"task {name} is a training-only task: nothing to score", d)
    if task is not None and task.scorer == "accuracy":
        return accuracy.score(inputs.refs, inputs.hyps, inputs.utt2lang, len(inputs.missing), len(inputs.extra),
                              task.labels() if task.labels else None)
    # error rates, or translation metrics for a dir with a target language
    if normalizer is None:
        normalizer = recorded_normalizer(d) or norm.DEFAULT_SCHEME
    return wer_bleu.score(inputs, tgt_lang=tgt_lang if tgt_lang is not None else decode_tgt_lang(d),
                          normalizer=normalizer)


def write_outputs(out_dir: PathLike, result: Mapping, utts: Sequence) -> None:
    """The scoring files of a result of :func:`score_decode_dir`, each written atomically."""
    if result["task"] != "accuracy":
        wer_bleu.write_outputs(out_dir, result, utts)
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "result.txt", accuracy.format_result_txt(result, utts))
    atomic_write(out / "scores.md", accuracy.format_markdown(result))
    atomic_write(out / "scores.json", wer_bleu.dumps_json(result))
