"""Examples of a task over Kaldi data dirs: one per utterance (and target language).

An :class:`Example` is what training, dev evaluation, decoding and encoder pretraining all feed the
model: a source (the utterance's speech, or a source text), the task, the languages and the target
text. What a task makes of an utterance is the task's own :attr:`partlib.tasks.Task.target`; this
module only walks the data dirs, checks that they hold what the task needs and estimates the
lengths that batching uses.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from partlib import tasks
from partlib.common import ConfigError, DataError
from partlib.config import Invalid
from partlib.data import langs
from partlib.data.datadir import DataDir

# The LLM tokens of examples outside their speech span (prompt, target, end of turn) from the task
# and each example's ``(src_lang, tgt_lang, src_text, target)``: partlib.models.prompt.PromptLengths.
TextLengths = Callable[[str, Sequence[Tuple[str, str, Optional[str], str]]], List[int]]


@dataclass(frozen=True)
class Example:
    """One training/decoding example: a source (speech or text) and a target text."""

    key: str  # unique: "<data dir name>/<utt>/<task>/<tgt_lang>"
    utt: str
    dir_index: int  # index into the list of data dirs the examples were built from
    task: str
    src_lang: str
    tgt_lang: str
    num_frames: int  # log-mel frames (0 for text tasks)
    src_text: Optional[str]
    target: str
    n_tokens: int  # LLM sequence length (prompt + speech embeddings + target)


class Patterns:
    """Data-dir names or globs: one string or a list of them."""

    DESCRIPTION = "a data-dir name or glob, or a list of them"

    @staticmethod
    def config_check(value: Any, path: str) -> List[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise Invalid(path, f"expected {Patterns.DESCRIPTION}, got {value!r}")


@dataclass
class TaskSpec:
    """A task and the data that feeds it (a schedule's task entry; decoding makes one per set)."""

    task: str
    weight: float = field(default=1.0, metadata={"gt": 0})  # share in the stage's mixture
    data: Patterns = field(default_factory=list)  # type: ignore[assignment]  # data-dir names or globs
    langs: Optional[List[str]] = None  # restrict source languages
    tgt_langs: Optional[List[str]] = None  # cross-lingual tasks: target languages (every available one if None)
    directions: Optional[List[str]] = None  # cross-lingual tasks: explicit "src-tgt" pairs

    def validate(self) -> None:
        """Schedule checks (:mod:`partlib.config`): a registered task, data, options that apply."""
        try:
            task = tasks.get(self.task)
        except ConfigError as e:
            raise Invalid("task", str(e)) from None
        if not self.data:
            raise Invalid("data", "required: data-dir names or globs")
        if not task.cross_lingual and (self.tgt_langs or self.directions):
            raise Invalid("tgt_langs" if self.tgt_langs else "directions",
                          f"task {self.task!r} is within-language; it takes no target languages")


def resolve_data_dirs(patterns: Sequence[str], data_root: Optional[str]) -> List[Path]:
    """Expand data-dir patterns (globs allowed; relative to ``data_root``), sorted, de-duplicated."""
    out: List[Path] = []
    for pat in patterns:
        full = pat if data_root is None or Path(pat).is_absolute() else str(Path(data_root) / pat)
        hits = sorted(p for p in glob.glob(full) if Path(p).is_dir())
        if not hits:
            raise ConfigError(f"no data directory matches {pat!r} (looked for {full})")
        for h in hits:
            if Path(h) not in out:
                out.append(Path(h))
    return out


def frames_of_seconds(seconds: float) -> int:
    """Log-mel frames (10 ms hop at 16 kHz) of ``seconds`` of audio, as batching counts them."""
    return int(round(seconds * 16000)) // 160


def utt_num_frames(d: DataDir, utt: str) -> int:
    """Log-mel frames of an utterance from utt2num_frames, else from utt2dur."""
    if d.utt2num_frames is not None and utt in d.utt2num_frames:
        return int(d.utt2num_frames[utt])
    if d.utt2dur is not None and utt in d.utt2dur:
        return frames_of_seconds(float(d.utt2dur[utt]))
    raise DataError("no utt2num_frames or utt2dur entry (run stage 2 of the recipe, which writes utt2dur)",
                    d.path, utt=utt)


def directions(spec: TaskSpec, src: str, available: Sequence[str]) -> List[str]:
    """Target languages of a cross-lingual task for source language ``src``: the spec's explicit
    directions or target languages, else every ``available`` one but ``src``."""
    if spec.directions:
        targets = []
        for d in spec.directions:
            s, _, t = d.partition("-")
            if not t:
                raise ConfigError(f"direction {d!r} must look like src-tgt")
            if langs.canonical(s) == src:
                targets.append(langs.canonical(t))
        return targets
    if spec.tgt_langs:
        return [langs.canonical(t) for t in spec.tgt_langs if langs.canonical(t) != src]
    return [t for t in available if t != src]


def utterance_targets(spec: TaskSpec, utt: str, src: str, text: Optional[str], available: Sequence[str],
                      translation: Callable[[str], Optional[str]], where: Path
                      ) -> List[Tuple[str, Optional[str], str]]:
    """``(tgt_lang, src_text, target)`` of each example a task makes of one utterance.

    ``available`` are the target languages of the utterance's data (its ``text.<lang>`` files),
    ``translation(lang)`` the utterance's text in one of them (None: missing); ``where`` is the
    data dir named in errors.
    """
    task = tasks.get(spec.task)
    if not task.cross_lingual:
        made = task.target(tasks.Utterance(utt, src, text, src))
        return [] if made is None else [(src, *made)]
    out = []
    for tgt in directions(spec, src, sorted(available)):
        if tgt not in available:
            raise ConfigError(f"task {task.name!r} {src}->{tgt}: {where} has no text.{tgt} (translations present: "
                              f"{sorted(available) or 'none'})")
        ref = translation(tgt)
        if ref is None:
            raise DataError(f"no translation into {tgt}", where / f"text.{tgt}", utt=utt)
        made = task.target(tasks.Utterance(utt, src, text, tgt, ref))
        if made is not None:
            out.append((tgt, *made))
    return out


# (dir name, dir index, utt, src_lang, tgt_lang, frames, src_text, target): an example before tokenising
Row = Tuple[str, int, str, str, str, int, Optional[str], str]


def finish_examples(task: str, rows: Sequence[Row], text_lengths: TextLengths,
                    speech_len: Callable[[int], int]) -> List[Example]:
    """Examples of one task from their rows, with the LLM sequence length that batching uses."""
    n_text = text_lengths(task, [(r[3], r[4], r[6], r[7]) for r in rows])
    out = []
    for r, nt in zip(rows, n_text):
        name, di, utt, src, tgt, frames, src_text, target = r
        n_tokens = nt + (speech_len(frames) if frames else 0)
        out.append(Example(f"{name}/{utt}/{task}/{tgt}", utt, di, task, src, tgt, frames, src_text, target, n_tokens))
    return out


def build_examples(
    spec: TaskSpec,
    dirs: Sequence[DataDir],
    text_lengths: TextLengths,
    speech_len: Callable[[int], int],
    dir_offset: int = 0,
) -> List[Example]:
    """Examples of one task over the given data dirs.

    ``text_lengths`` gives the LLM tokens of examples outside their speech span (the model's
    :class:`partlib.models.prompt.PromptLengths`); ``speech_len`` maps log-mel frames to the number
    of speech embeddings the adapter produces.
    """
    task = tasks.get(spec.task)
    rows: List[Row] = []
    want = None if spec.langs is None else {langs.canonical(x) for x in spec.langs}
    for di, d in enumerate(dirs):
        if task.speech and not d.has_audio():
            raise ConfigError(f"task {task.name!r} needs speech, but {d.path} has no wav.scp or feats.scp")
        if task.needs_text and d.text is None:
            raise ConfigError(f"task {task.name!r}: {d.path} has no 'text' file")
        for utt in d.utts:
            src = d.lang(utt)
            if want is not None and src not in want:
                continue
            frames = utt_num_frames(d, utt) if task.speech else 0
            text = d.text[utt] if d.text is not None else None
            for tgt, src_text, target in utterance_targets(
                    spec, utt, src, text, list(d.translations),
                    lambda t: d.translations[t].get(utt) if t in d.translations else None, d.path):
                rows.append((d.path.name, dir_offset + di, utt, src, tgt, frames, src_text, target))
    if not rows:
        raise ConfigError(f"task {task.name!r} has no examples in {[str(d.path) for d in dirs]}"
                          + (f" for languages {sorted(want)}" if want else ""))
    return finish_examples(task.name, rows, text_lengths, speech_len)
