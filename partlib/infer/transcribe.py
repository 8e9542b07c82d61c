"""Transcribe or translate audio with an exported model folder: audio in, text out.

    from partlib.infer.transcribe import Transcriber

    model = Transcriber("exp/model_part_seed1")
    for r in model(["a.wav", "b.flac"], task="asr"):            # or s2tt with tgt_lang="en"
        print(r.language, r.text)

An input is an audio file (anything soundfile reads: wav, flac, ogg/opus, mp3), a
``(samples, sample_rate)`` pair or a list of them; audio is mixed to mono and resampled to 16 kHz.
Without ``src_lang`` the model first names the spoken language (the ``lid`` task, as a choice
among the languages it was trained on) and the task then runs with it; the prediction is returned. Inputs are decoded in batches sorted by duration,
and every result equals the one of the input decoded alone. Audio longer than the encoder window
(30 s) is refused: long-form segmentation is not part of this module yet.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from partlib import tasks
from partlib.common import ConfigError, DataError, PathLike
from partlib.data import audio, langs
from partlib.data.audio import TARGET_SR
from partlib.data.batching import collate
from partlib.data.examples import Example
from partlib.features.compute import compute_features
from partlib.infer.decode import generate_hyps
from partlib.models import card

Audio = Union[PathLike, Tuple[np.ndarray, int]]


def text_tasks() -> List[str]:
    """The tasks that turn speech into free text (asr, s2tt; not closed-set ones such as lid)."""
    return [n for n in tasks.names(speech=True) if tasks.get(n).labels is None]
MAX_SECONDS = 30.0  # Whisper's positional table


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
    language: str  # the source language: given, or predicted by the lid task
    text: str
    segments: List[Segment] = field(default_factory=list)
    tgt_lang: Optional[str] = None

    def to_dict(self) -> Dict:
        """The JSON form (``jsonl`` output of ``partlib.bin.transcribe``)."""
        return {"file": self.source, **{k: v for k, v in asdict(self).items() if k != "source"}}


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
                 progress: bool = False) -> None:
        """Load ``model_dir`` (on ``device``); ``progress`` shows a progress bar on stderr."""
        from partlib.models.speech_llm import SpeechLLM

        self.progress = progress
        if threads:
            torch.set_num_threads(threads)
        self.model = SpeechLLM.from_pretrained(model_dir).eval()
        if device:
            self.model.to(device)
        info = card.read_info(model_dir)
        # the languages the model learned to name: those of its lid training data
        self.languages: List[str] = sorted(info.get("data", {}).get("lid", {}))

    def identify(self, feats: Sequence[torch.Tensor], batch_size: int) -> List[str]:
        """The spoken language of each input: the model's ``lid`` answer chosen among the names of
        the languages it was trained on, by the log-probability it gives each name (a closed-set
        decision, so it always names one of them)."""
        cands = self.languages
        if not cands:
            raise ConfigError("this model was not trained on the lid task (its info.json names no lid data): "
                              "give the source language")
        exs = [_example(i, f, "lid", code, code, target=langs.name(code)) for i, f in enumerate(feats) for code in cands]
        scores = torch.empty(len(exs))
        step = max(1, batch_size) * len(cands)
        for i in range(0, len(exs), step):
            chunk = exs[i:i + step]
            batch = collate(chunk, [feats[e.dir_index] for e in chunk])
            scores[i:i + len(chunk)] = self.model.target_log_probs(batch).float().cpu()
        best = scores.view(len(feats), len(cands)).argmax(dim=1)
        return [cands[int(j)] for j in best]

    def _generate(self, task: str, tgt_lang: Optional[str], feats: Sequence[torch.Tensor],
                  src_langs: Sequence[str], batch_size: int, opts: Dict) -> List[str]:
        exs = [_example(i, f, task, src, tgt_lang or src) for i, (f, src) in enumerate(zip(feats, src_langs))]
        hyps = generate_hyps(self.model, exs, _Features(feats), batch_size=batch_size, progress=self.progress, **opts)
        return [hyps[e.key] for e in exs]

    def __call__(self, inputs: Union[Audio, Sequence[Audio]], task: str = "asr", src_lang: Optional[str] = None,
                 tgt_lang: Optional[str] = None, num_beams: int = 1, batch_size: int = 8,
                 max_new_tokens: Optional[int] = None) -> List[Result]:
        """One :class:`Result` per input, in input order."""
        items = [inputs] if isinstance(inputs, (str, Path, tuple)) else list(inputs)
        return self.transcribe_loaded([load_input(x, i) for i, x in enumerate(items)], task, src_lang, tgt_lang,
                                      num_beams, batch_size, max_new_tokens)

    def transcribe_loaded(self, loaded: Sequence[Tuple[str, np.ndarray]], task: str = "asr",
                          src_lang: Optional[str] = None, tgt_lang: Optional[str] = None, num_beams: int = 1,
                          batch_size: int = 8, max_new_tokens: Optional[int] = None) -> List[Result]:
        """:meth:`__call__` on inputs already loaded by :func:`load_input`: ``(name, samples)``."""
        if task not in text_tasks():
            raise ConfigError(f"task must be one of {', '.join(text_tasks())} (speech -> text), got {task!r}")
        t = tasks.get(task)
        if t.cross_lingual and not tgt_lang:
            raise ConfigError(f"task {task} needs tgt_lang")
        if not t.cross_lingual and tgt_lang:
            raise ConfigError(f"task {task} is within-language: tgt_lang does not apply")
        if not loaded:
            return []
        for name, samples in loaded:
            if len(samples) / TARGET_SR > MAX_SECONDS:
                raise DataError(f"{len(samples) / TARGET_SR:.1f} s of audio: longer than the encoder window "
                                f"({MAX_SECONDS:.0f} s); cut it into segments first", name)
        names = [n for n, _ in loaded]
        feats = compute_features([s for _, s in loaded], self.model.n_mels, utts=names)
        if src_lang is not None:
            src_langs = [langs.canonical(src_lang)] * len(loaded)
        else:
            src_langs = self.identify(feats, batch_size)
        target = langs.canonical(tgt_lang) if tgt_lang else None
        opts = {"num_beams": num_beams, "max_new_tokens": max_new_tokens}
        texts = self._generate(task, target, feats, src_langs, batch_size, opts)
        return [Result(source=name, task=task, language=src, text=text, tgt_lang=target,
                       segments=[Segment(0.0, round(len(samples) / TARGET_SR, 3), text)])
                for (name, samples), src, text in zip(loaded, src_langs, texts)]
