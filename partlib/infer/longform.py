"""Long recordings: voice-activity segmentation into decodable pieces, and stitching them back.

A recording longer than the maximum segment is cut in three steps:

1. **Speech regions** from a voice-activity detector (:class:`VoiceActivity`: the ``silero-vad``
   package, whose wheel carries its model; audio is passed as samples, never read by it).
2. **Hard splits** of a region longer than the maximum (no pause in it): at the quietest 10 ms frame
   (short-time energy) in the second half of the allowed length, so a piece is never longer than
   the maximum nor shorter than half of it (but the last), and the cut falls between words where
   there is any dip between them.
3. **Packing**: consecutive pieces are joined, pauses included, while the span stays within the
   maximum, so a segment holds as much context as the model was trained on.

:func:`partlib.data.langs.join_texts` joins the segments' texts in order (without spaces for
languages written without).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib.common import ConfigError, DataError
from partlib.data import audio
from partlib.data.audio import TARGET_SR

Span = Tuple[int, int]  # [start, end) in samples

_FRAME = TARGET_SR // 100  # 10 ms energy frames for hard splits


@dataclass
class VoiceActivity:
    """Speech regions of 16 kHz audio from silero-vad (options as in its ``get_speech_timestamps``)."""

    threshold: float = 0.5  # speech probability above which a 32 ms window is speech
    min_silence_s: float = 0.1  # a pause at least this long ends a region
    min_speech_s: float = 0.25  # shorter regions are dropped
    pad_s: float = 0.1  # regions are widened by this much on each side (onsets can be faint)

    def __post_init__(self) -> None:
        self._model = None

    def _load(self):
        if self._model is None:
            threads = torch.get_num_threads()
            try:
                from silero_vad import load_silero_vad
            except ImportError:
                raise ConfigError("long recordings need the silero-vad package (pip install silero-vad)") from None
            self._model = load_silero_vad()
            torch.set_num_threads(threads)  # importing silero_vad sets one thread for the whole process
        return self._model

    def regions(self, samples: np.ndarray) -> List[Span]:
        """The speech regions of ``samples`` (16 kHz mono float32), in order."""
        from silero_vad import get_speech_timestamps

        model = self._load()
        with torch.no_grad():
            found = get_speech_timestamps(
                torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), model, threshold=self.threshold,
                sampling_rate=TARGET_SR, min_speech_duration_ms=int(1000 * self.min_speech_s),
                min_silence_duration_ms=int(1000 * self.min_silence_s), speech_pad_ms=int(1000 * self.pad_s))
        return [(int(r["start"]), int(r["end"])) for r in found]


def _quietest(samples: np.ndarray, lo: int, hi: int) -> int:
    """The sample index at the centre of the lowest-energy 10 ms frame between ``lo`` and ``hi``."""
    first = lo // _FRAME
    frames = samples[first * _FRAME:(hi // _FRAME) * _FRAME].reshape(-1, _FRAME).astype(np.float64)
    return (first + int(np.argmin((frames ** 2).mean(axis=1)))) * _FRAME + _FRAME // 2


def hard_split(samples: np.ndarray, span: Span, max_len: int) -> List[Span]:
    """``span`` cut into pieces of at most ``max_len`` samples at quiet frames (module docstring)."""
    start, end = span
    pieces = []
    while end - start > max_len:
        lo, hi = start + max_len // 2, start + max_len
        cut = _quietest(samples, lo, hi) if hi - lo >= _FRAME else hi
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def pack(pieces: Sequence[Span], max_len: int) -> List[Span]:
    """Consecutive pieces joined (the pauses between them included) while a span fits ``max_len``."""
    out: List[Span] = []
    for s, e in pieces:
        if out and e - out[-1][0] <= max_len:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def plan_segments(samples: np.ndarray, max_seconds: float, vad: Optional[VoiceActivity] = None) -> List[Span]:
    """The segments to decode of a recording: the whole of it when it fits ``max_seconds``,
    otherwise its speech regions split and packed (module docstring). May be empty (no speech)."""
    max_len = int(max_seconds * TARGET_SR)
    if max_len < 4 * _FRAME:
        raise ConfigError(f"the maximum segment must be at least 0.04 s, got {max_seconds} s")
    if len(samples) <= max_len:
        return [(0, len(samples))]
    regions = (vad or VoiceActivity()).regions(samples)
    return pack([p for r in regions for p in hard_split(samples, r, max_len)], max_len)


@dataclass
class Recording:
    """Utterances of a data dir joined into one recording with pauses between them."""

    name: str
    lang: str
    samples: np.ndarray
    utts: List[str]
    spans: List[Span]  # each utterance's [start, end) in the recording


def join_utterances(data_dir, per_recording: int, pause_s: Tuple[float, float] = (0.1, 0.4), seed: int = 0,
                    limit: Optional[int] = None) -> List[Recording]:
    """Consecutive utterances of ``data_dir`` (sorted ids, one language per recording) joined in
    groups of ``per_recording`` into recordings, each utterance followed by a pause drawn uniformly
    from ``pause_s`` (seeded); at most ``limit`` recordings."""
    from partlib.data.datadir import DataDir

    d = data_dir if isinstance(data_dir, DataDir) else DataDir.load(data_dir)
    if per_recording < 1:
        raise ConfigError(f"utterances per recording must be >= 1, got {per_recording}")
    if not 0 <= pause_s[0] <= pause_s[1]:
        raise ConfigError(f"pause range must be 0 <= low <= high, got {pause_s}")
    if d.utt2lang is None:
        raise DataError("utt2lang is needed to join utterances of one language", d.path)
    reader = audio.AudioReader(d)
    rng = np.random.default_rng(seed)
    by_lang: dict = {}
    for u in d.utts:
        by_lang.setdefault(d.utt2lang[u], []).append(u)
    out: List[Recording] = []
    base = d.path.name if d.path is not None else "data"
    for lang in sorted(by_lang):
        utts = by_lang[lang]
        for k in range(0, len(utts), per_recording):
            if limit is not None and len(out) >= limit:
                return out
            group = utts[k:k + per_recording]
            samples, spans = audio.concatenate([reader[u] for u in group], rng.uniform(*pause_s, size=len(group)))
            out.append(Recording(f"{base}-{lang}-{k // per_recording:04d}", lang, samples, group, spans))
    return out


def utterances_per_segment(spans: Sequence[Span], segments: Sequence[Span]) -> List[int]:
    """For each segment, how many of the utterance ``spans`` it holds (by the utterance's midpoint)."""
    mids = [(s + e) / 2 for s, e in spans]
    return [sum(a <= m < b for m in mids) for a, b in segments]
