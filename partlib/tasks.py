"""The task registry: every task a SpeechLLM is trained, decoded and scored on, defined once.

A task says what it reads (speech or a source text), whether its target is in another language,
what it needs of a data dir, how one utterance becomes its example (source text and target), its
default prompt instruction, how its outputs are scored, which quick dev metric it reports while
training, and how its decode directory is named. Every other module asks this registry: the
schedule checks task names here, the data layer builds examples through :attr:`Task.target`, the
prompt builder takes the default instructions, scoring and RESULTS.md pick metrics and titles, CLI
choice lists and ``part.sh`` (through ``python -m partlib.bin.tasks``) read the names.

Adding a task is one :func:`register` call (see ``docs/architecture.md``); the built-in tasks:

======  ======  ==============  ==================================================  ============
name    input   target          example                                             scored by
======  ======  ==============  ==================================================  ============
asr     speech  same language   speech -> transcript                                error rate
s2tt    speech  other language  speech -> translation (``text.<tgt>``)              translation
t2tt    text    other language  transcript -> translation                           translation
lm      text    same language   first half of a sentence -> the rest                (not decoded)
lid     speech  language name   speech -> the spoken language's English name        accuracy
======  ======  ==============  ==================================================  ============

The decode-dir layout ``decode_<set>_<task>`` (``decode_<set>_to_<tgt>_<task>`` for cross-lingual
tasks) is defined here too, by :func:`decode_dir_name` and :func:`parse_decode_dir`.

This module is the ground floor: it imports nothing of partlib but ``common`` and ``data.langs``.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from partlib.common import ConfigError
from partlib.data import langs

# The quick dev metrics of training (partlib.train.quick_eval), each with the scorer of the tasks
# that report it; a task's scorer is a name of the scorer registry, partlib.scoring.scorers, where
# each scorer's metrics and their directions are defined.
DEV_METRICS: Dict[str, str] = {"wer": "error_rate", "bleu": "translation", "accuracy": "accuracy"}
# Fields a prompt template may name; each task allows a subset (``Task.fields``).
TEMPLATE_FIELDS = ("src_lang", "tgt_lang", "text", "speech")


@dataclass(frozen=True)
class Utterance:
    """What a task may read of one utterance when its example is made.

    ``tgt_lang``/``tgt_text`` are the target language and its reference (``text.<tgt>``) for
    cross-lingual tasks; for within-language tasks ``tgt_lang`` is ``lang`` and ``tgt_text`` None.
    """

    utt: str
    lang: str
    text: Optional[str]
    tgt_lang: str
    tgt_text: Optional[str] = None


# (source text shown in the prompt or None, target text), or None: no example for this utterance.
TargetFn = Callable[[Utterance], Optional[Tuple[Optional[str], str]]]


@dataclass(frozen=True)
class Task:
    """One task. See the module docstring for the built-in ones."""

    name: str
    speech: bool            # the input is speech (else a source text)
    cross_lingual: bool     # the target is in another language: a direction, text.<tgt>, --tgt-lang
    template: str           # default prompt instruction
    target: TargetFn        # one utterance -> (source text, target)
    title: str              # heading of the task's tables in RESULTS.md
    needs_text: bool = True             # the data dir needs a `text` file
    scorer: Optional[str] = None        # a scorer of partlib.scoring.scorers; None: training only (not decoded)
    dev_metric: Optional[str] = None    # a key of DEV_METRICS: decoded during dev evaluation
    fields: Tuple[str, ...] = TEMPLATE_FIELDS  # template fields the instruction may name
    labels: Optional[Callable[[], List[str]]] = None  # accuracy tasks: the closed set of answers

    def needs(self) -> List[str]:
        """Data-dir files the task reads (``text.<tgt>`` stands for every target language)."""
        out = ["wav.scp|feats.scp", "utt2num_frames|utt2dur"] if self.speech else []
        out += ["utt2lang"] + (["text"] if self.needs_text else [])
        return out + (["text.<tgt>"] if self.cross_lingual else [])


_REGISTRY: Dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to the registry (checked); returns it. A name can be registered once."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", task.name):
        raise ConfigError(f"task name {task.name!r}: lower-case letters and digits, starting with a letter")
    if task.name in _REGISTRY:
        raise ConfigError(f"task {task.name!r} is already registered")
    if task.dev_metric is not None and DEV_METRICS.get(task.dev_metric) != task.scorer:
        raise ConfigError(f"task {task.name!r}: dev_metric {task.dev_metric!r} does not fit the scorer "
                          f"{task.scorer!r} (dev metrics: " + ", ".join(f"{m} for {s}" for m, s in DEV_METRICS.items())
                          + ")")
    bad = set(task.fields) - set(TEMPLATE_FIELDS)
    if bad:
        raise ConfigError(f"task {task.name!r}: unknown template field(s) {sorted(bad)}")
    check_template(task, task.template)
    _REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task (tests that register a toy task clean up with this)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Task:
    """The registered task ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}") from None


def names(*, speech: Optional[bool] = None, cross_lingual: Optional[bool] = None,
          scored: Optional[bool] = None, free_text: Optional[bool] = None) -> List[str]:
    """Names of the registered tasks (in registration order), optionally filtered; ``free_text``:
    the output is free text (asr, s2tt, ...), not a choice from a closed label set (lid)."""
    return [t.name for t in _REGISTRY.values()
            if (speech is None or t.speech == speech)
            and (cross_lingual is None or t.cross_lingual == cross_lingual)
            and (scored is None or (t.scorer is not None) == scored)
            and (free_text is None or (t.labels is None) == free_text)]


def dev_metric_names() -> List[str]:
    """The ``dev.metric`` values a schedule may use: ``loss`` and every task's dev metric."""
    return ["loss"] + sorted({t.dev_metric for t in _REGISTRY.values() if t.dev_metric})




def check_template(task: Task, template: str) -> None:
    """A template names only fields the task allows (e.g. ``lid`` must not name the language)."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ConfigError(f"prompt template for {task.name} {template!r}: {e}") from None
    bad = used - set(task.fields)
    if bad:
        raise ConfigError(f"prompt template for {task.name} {template!r}: field(s) {sorted(bad)} are not "
                          f"allowed; this task's fields are {', '.join('{%s}' % f for f in task.fields)}")


# ---------------------------------------------------------------------------------------------
# decode directories
# ---------------------------------------------------------------------------------------------
def decode_dir_name(task: str, testset: str, tgt_lang: Optional[str] = None) -> str:
    """``decode_<set>_<task>``, or ``decode_<set>_to_<tgt>_<task>`` for a cross-lingual task."""
    t = get(task)
    if t.cross_lingual != bool(tgt_lang):
        raise ConfigError(f"task {task}: " + ("needs a target language" if t.cross_lingual
                                              else "is within-language; no target language"))
    return f"decode_{testset}_to_{tgt_lang}_{task}" if tgt_lang else f"decode_{testset}_{task}"


def parse_decode_dir(name: str) -> Optional[Tuple[str, str]]:
    """``(testset, task)`` of a decode dir name (the testset keeps ``_to_<tgt>``); None if not one."""
    scored = names(scored=True)
    m = re.fullmatch(r"decode_(?P<testset>.+)_(?P<task>%s)" % "|".join(map(re.escape, scored)), name)
    return (m.group("testset"), m.group("task")) if m else None


def parse_decode_spec(spec: str) -> Tuple[str, str, Optional[str]]:
    """``task:set`` or ``task:set:tgt`` (cross-lingual tasks) -> ``(task, set, tgt)``, checked."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"decode {spec!r}: expected <task>:<set> or <task>:<set>:<tgt_lang>")
    task, testset, tgt = parts[0], parts[1], (parts[2] if len(parts) == 3 else None)
    t = get(task)
    if t.scorer is None:
        raise ConfigError(f"decode {spec!r}: task {task} is a training-only task (nothing to score)")
    decode_dir_name(task, testset, tgt)  # checks the target language against the task
    return task, testset, tgt


# ---------------------------------------------------------------------------------------------
# the built-in tasks
# ---------------------------------------------------------------------------------------------
def split_for_lm(text: str, lang: str) -> Tuple[str, str]:
    """Split a sentence into (prefix, continuation) for the ``lm`` task: at the middle word, or the
    middle character for languages written without spaces.

    The one ``lm`` split rule: the task's examples and LM pretraining's "continue this text"
    examples (:mod:`partlib.train.lm_pretrain`) both cut here. The middle, not a random point:
    an example stays a pure function of its sentence (the same on every rank, reader and rerun,
    with no generator to seed), and the prompt always holds enough of the sentence for the
    continuation to be guessable, so the LLM pretrains on exactly the examples the alignment
    stages later train the ``lm`` task on."""
    if langs.no_space(lang):
        units, sep = list(text.replace(" ", "")), ""
    else:
        units, sep = text.split(), " "
    cut = max(1, len(units) // 2)
    return sep.join(units[:cut]), sep.join(units[cut:])


def _lm_target(u: Utterance) -> Optional[Tuple[Optional[str], str]]:
    prefix, rest = split_for_lm(u.text or "", u.lang)
    return (prefix, rest) if rest else None


_WITHIN_FIELDS = ("src_lang", "tgt_lang", "speech")

register(Task("asr", speech=True, cross_lingual=False, template="Transcribe the {src_lang} speech.",
              target=lambda u: (None, u.text), title="ASR", scorer="error_rate", dev_metric="wer",
              fields=_WITHIN_FIELDS))
register(Task("s2tt", speech=True, cross_lingual=True, template="Translate the {src_lang} speech into {tgt_lang}.",
              target=lambda u: (None, u.tgt_text), title="Speech translation (s2tt)", scorer="translation",
              dev_metric="bleu", fields=_WITHIN_FIELDS))
register(Task("t2tt", speech=False, cross_lingual=True,
              template="Translate the following {src_lang} text into {tgt_lang}.\n{text}",
              target=lambda u: (u.text, u.tgt_text), title="Text translation (t2tt)", scorer="translation",
              fields=("src_lang", "tgt_lang", "text")))
register(Task("lm", speech=False, cross_lingual=False, template="Continue this {src_lang} text.\n{text}",
              target=_lm_target, title="Text continuation (lm)", fields=("src_lang", "tgt_lang", "text")))
# Text language identification: what a pretrained LLM knows of language names, taught to the
# recipes' own tiny LLMs (partlib.train.lm_pretrain) so that speech LID has an answer to align to.
register(Task("tlid", speech=False, cross_lingual=False,
              template="Which language is the following text written in?\n{text}",
              target=lambda u: (u.text, langs.name(u.lang)), title="Text language identification (tlid)",
              fields=("text",)))
# The instruction must not name the language it asks for: only {speech} is allowed.
register(Task("lid", speech=True, cross_lingual=False, template="Which language is spoken?",
              target=lambda u: (None, langs.name(u.lang)), title="Language identification (lid)",
              needs_text=False, scorer="accuracy", dev_metric="accuracy", fields=("speech",),
              labels=lambda: sorted({lang.name for lang in langs.LANGUAGES.values()})))
