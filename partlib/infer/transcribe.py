"""Transcribe or translate audio with an exported model folder: audio in, text out.

    from partlib.infer.transcribe import Transcriber

    model = Transcriber("exp/model_part_seed1")
    for r in model(["a.wav", "b.flac"], task="asr"):            # or s2tt with tgt_lang="en"
        print(r.language, r.text)

An input is an audio file (anything soundfile reads: wav, flac, ogg/opus, mp3), a
``(samples, sample_rate)`` pair or a list of them; audio is mixed to mono and resampled to 16 kHz.
Without ``src_lang`` the model first names the spoken language (the ``lid`` task, as a choice
among the languages it was trained on) and the task then runs with it; the prediction is returned.
A recording longer than the maximum segment (default: the longest training utterance of the model,
never more than the encoder window) is cut at pauses found by a voice-activity detector and decoded
in pieces (:mod:`partlib.infer.longform`); each result lists its segments with start and end
seconds. Segments are decoded in batches sorted by duration, and every result equals the one of
the input decoded alone. ``script_mask`` and ``redecode`` are the output controls of
:mod:`partlib.infer.control`. A request for a task, source language or direction the model was not
trained on (by its ``info.json``) is refused before anything is decoded, naming what it was trained
on (:func:`check_request`; ``allow_untrained`` decodes anyway, with a warning).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from partlib import tasks
from partlib.common import ConfigError, PathLike, get_logger
from partlib.data import audio, langs
from partlib.data.audio import TARGET_SR
from partlib.data.batching import collate
from partlib.data.examples import Example
from partlib.features.compute import compute_features
from partlib.features.whisper_mel import FRAMES_PER_SECOND
from partlib.infer import control, longform
from partlib.infer.decode import generate_hyps
from partlib.models import card

Audio = Union[PathLike, Tuple[np.ndarray, int]]
logger = get_logger("partlib.infer.transcribe")
NO_LID = ("this model was not trained on the lid task (its info.json names no lid data), so it cannot name "
          "the spoken language: give the source language")


def text_tasks() -> List[str]:
    """The tasks that turn speech into free text (asr, s2tt; not closed-set ones such as lid)."""
    return tasks.names(speech=True, free_text=True)


@dataclass
class Segment:
    """A span of the input (seconds) and its text."""

    start: float
    end: float
    text: str


@dataclass
class Result:
    """The output for one input."""

    source: str  # the file, or "<array i>"
    task: str
    language: str  # the source language: given, or predicted by the lid task ("" if no speech was found)
    text: str
    segments: List[Segment] = field(default_factory=list)
    tgt_lang: Optional[str] = None

    def to_dict(self) -> Dict:
        """The JSON form (``jsonl`` output of ``partlib.bin.transcribe``)."""
        return {"file": self.source, **{k: v for k, v in asdict(self).items() if k != "source"}}


def check_request(model_dir: PathLike, info: Dict, task: str, src_lang: Optional[str], tgt_lang: Optional[str],
                  allow_untrained: bool = False, heard: str = "") -> Tuple[Optional[str], Optional[str]]:
    """The canonical codes of ``src_lang`` (None: to be identified by the lid task) and ``tgt_lang``
    (None for a within-language task) of a request for the model of ``model_dir`` (provenance
    ``info``); a :class:`ConfigError` when the request is malformed, or when the model was not trained
    on the task, source language or direction (``allow_untrained``: a warning instead). ``heard``
    says where an identified ``src_lang`` comes from. A model that cannot name the spoken language
    (no lid data) is refused without ``src_lang`` in any case: its closed-set choice has no candidates."""
    if task not in text_tasks():
        raise ConfigError(f"task must be one of {', '.join(text_tasks())} (speech -> text), got {task!r}")
    t = tasks.get(task)
    if t.cross_lingual and not tgt_lang:
        raise ConfigError(f"task {task} needs a target language (--tgt-lang)")
    if not t.cross_lingual and tgt_lang:
        raise ConfigError(f"task {task} is within-language: a target language (--tgt-lang) does not apply")
    src = langs.canonical(src_lang) if src_lang is not None else None
    tgt = langs.canonical(tgt_lang) if tgt_lang else None
    if src is None and not info.get("data", {}).get("lid"):
        raise ConfigError(f"{model_dir}: {NO_LID}")
    problem = card.untrained(info, task, src, tgt)
    if problem is not None:
        if not allow_untrained:
            raise ConfigError(f"{model_dir}: {heard}{problem}; allow_untrained (--allow-untrained) decodes anyway")
        logger.warning("%s: %s%s; decoding anyway (allow_untrained)", model_dir, heard, problem)
    return src, tgt


def load_input(item: Audio, index: int) -> Tuple[str, np.ndarray]:
    """``(name, 16 kHz mono float32 samples)`` of one input; errors name the file."""
    if isinstance(item, tuple):
        name = f"<array {index}>"
        return name, audio.from_array(item[0], item[1], name=name)
    return str(item), audio.load_file(item)


def _example(i: int, feats: torch.Tensor, task: str, src: str, tgt: str, target: str = "") -> Example:
    """Input ``i`` as an example of ``task`` (its features are ``_Features`` entry ``i``)."""
    return Example(key=f"{i}/{task}/{tgt}/{target}", utt=f"{i}", dir_index=i, task=task, src_lang=src, tgt_lang=tgt,
                   num_frames=int(feats.shape[0]), src_text=None, target=target, n_tokens=0)


class _Features:
    """In-memory log-mel features, served like :class:`partlib.features.source.FeatureSource`."""

    def __init__(self, feats: Sequence[torch.Tensor]) -> None:
        self.feats = list(feats)

    def load(self, keys: Sequence[Tuple[int, str]]) -> List[torch.Tensor]:
        return [self.feats[i] for i, _ in keys]


class Transcriber:
    """An exported model folder ready to run (``partlib.bin.export`` / part.sh stage 10)."""

    def __init__(self, model_dir: PathLike, device: Optional[str] = None, threads: Optional[int] = None,
                 progress: bool = False, max_segment_s: Optional[float] = None,
                 vad: Optional[longform.VoiceActivity] = None, allow_untrained: bool = False) -> None:
        """Load ``model_dir`` (on ``device``); ``progress`` shows a progress bar on stderr;
        ``max_segment_s`` and ``vad`` set how long recordings are cut (module docstring);
        ``allow_untrained`` decodes requests the model was not trained on (:func:`check_request`)."""
        from partlib.models.speech_llm import SpeechLLM

        self.model_dir = model_dir
        self.progress = progress
        self.allow_untrained = allow_untrained
        if threads:
            torch.set_num_threads(threads)
        self.model = SpeechLLM.from_pretrained(model_dir).eval()
        if device:
            self.model.to(device)
        self.info = info = card.read_info(model_dir)
        if card.trained_on(info) is None:
            logger.warning("%s: its info.json names no training data: tasks and languages are not checked", model_dir)
        # the languages the model learned to name: those of its lid training data
        self.languages: List[str] = sorted(info.get("data", {}).get("lid", {}))
        self.target_rates: Dict[str, Dict[str, float]] = info.get("target_rates", {})
        window = self.model.encoder.max_frames / FRAMES_PER_SECOND
        if max_segment_s is not None and not 0 < max_segment_s <= window:
            raise ConfigError(f"the maximum segment must be in (0, {window:g}] s (the encoder window), "
                              f"got {max_segment_s}")
        self.max_segment_s = max_segment_s or min(window, info.get("longest_utterance_s") or window)
        self.vad = vad or longform.VoiceActivity()

    def _lid_scores(self, feats: Sequence[torch.Tensor], batch_size: int) -> torch.Tensor:
        """[len(feats), len(self.languages)]: the log-probability of each language name as the
        ``lid`` answer for each input."""
        cands = self.languages
        if not cands:
            raise ConfigError(f"{self.model_dir}: {NO_LID}")
        exs = [_example(i, f, "lid", code, code, target=langs.name(code)) for i, f in enumerate(feats) for code in cands]
        scores = torch.empty(len(exs))
        step = max(1, batch_size) * len(cands)
        for i in range(0, len(exs), step):
            chunk = exs[i:i + step]
            batch = collate(chunk, [feats[e.dir_index] for e in chunk])
            scores[i:i + len(chunk)] = self.model.target_log_probs(batch).float().cpu()
        return scores.view(len(feats), len(cands))

    def identify(self, feats: Sequence[torch.Tensor], batch_size: int, groups: Optional[Sequence[int]] = None
                 ) -> List[str]:
        """The spoken language of each input: the model's ``lid`` answer chosen among the names of
        the languages it was trained on, by the log-probability it gives each name (a closed-set
        decision, so it always names one of them). With ``groups`` (the input of each of ``feats``,
        0..n-1), the segments of one input decide together (their log-probabilities summed)."""
        scores = self._lid_scores(feats, batch_size)
        if groups is not None:
            scores = torch.zeros(max(groups) + 1, scores.shape[1]).index_add_(0, torch.tensor(groups), scores)
        return [self.languages[int(j)] for j in scores.argmax(dim=1)]

    def _generate(self, task: str, tgt_lang: Optional[str], feats: Sequence[torch.Tensor],
                  src_langs: Sequence[str], batch_size: int, opts: Dict) -> List[str]:
        exs = [_example(i, f, task, src, tgt_lang or src) for i, (f, src) in enumerate(zip(feats, src_langs))]
        decoded = generate_hyps(self.model, exs, _Features(feats), batch_size=batch_size, progress=self.progress, **opts)
        return [decoded.hyps[e.key] for e in exs]

    def __call__(self, inputs: Union[Audio, Sequence[Audio]], task: str = "asr", src_lang: Optional[str] = None,
                 tgt_lang: Optional[str] = None, num_beams: int = 1, batch_size: int = 8,
                 max_new_tokens: Optional[int] = None, script_mask: bool = False,
                 redecode: bool = False) -> List[Result]:
        """One :class:`Result` per input, in input order."""
        items = [inputs] if isinstance(inputs, (str, Path, tuple)) else list(inputs)
        return self.transcribe_loaded([load_input(x, i) for i, x in enumerate(items)], task, src_lang, tgt_lang,
                                      num_beams, batch_size, max_new_tokens, script_mask, redecode)

    def transcribe_loaded(self, loaded: Sequence[Tuple[str, np.ndarray]], task: str = "asr",
                          src_lang: Optional[str] = None, tgt_lang: Optional[str] = None, num_beams: int = 1,
                          batch_size: int = 8, max_new_tokens: Optional[int] = None, script_mask: bool = False,
                          redecode: bool = False) -> List[Result]:
        """:meth:`__call__` on inputs already loaded by :func:`load_input`: ``(name, samples)``."""
        src, target = check_request(self.model_dir, self.info, task, src_lang, tgt_lang, self.allow_untrained)
        if not loaded:
            return []
        # every input as segments [(input, start, end)], decoded together
        spans = [(i, s, e) for i, (_, samples) in enumerate(loaded)
                 for s, e in longform.plan_segments(samples, self.max_segment_s, self.vad)]
        feats = compute_features([loaded[i][1][s:e] for i, s, e in spans], self.model.n_mels,
                                 utts=[f"{loaded[i][0]}@{s / TARGET_SR:.2f}" for i, s, _ in spans])
        if src is not None:
            input_langs = [src] * len(loaded)
        else:
            found = self.identify(feats, batch_size, groups=[i for i, _, _ in spans]) if spans else []
            heard = {i for i, _, _ in spans}
            input_langs = [found[i] if i in heard else "" for i in range(len(loaded))]  # "": no speech found
            first: Dict[str, int] = {}  # the first input of each identified language
            for i, lang in enumerate(input_langs):
                if lang:
                    first.setdefault(lang, i)
            for lang, i in first.items():
                check_request(self.model_dir, self.info, task, lang, target, self.allow_untrained,
                              heard=f"{loaded[i][0]} was identified as {lang}: ")
        opts = {"num_beams": num_beams, "max_new_tokens": max_new_tokens, "script_mask": script_mask,
                "trouble": control.Trouble(self.target_rates) if redecode else None}
        texts = self._generate(task, target, feats, [input_langs[i] for i, _, _ in spans], batch_size, opts)
        segments: List[List[Segment]] = [[] for _ in loaded]
        for (i, s, e), text in zip(spans, texts):
            segments[i].append(Segment(round(s / TARGET_SR, 3), round(e / TARGET_SR, 3), text))
        return [Result(source=name, task=task, language=lang, tgt_lang=target, segments=segs,
                       text=langs.join_texts([g.text for g in segs], target or lang) if segs else "")
                for (name, _), lang, segs in zip(loaded, input_langs, segments)]
