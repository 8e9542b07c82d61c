"""Audio loading for Kaldi data dirs: every wav.scp value form, segments, mono, resampling.

wav.scp values come in three forms (docs/architecture.md, "Kaldi data dirs"):

* a path to a file libsndfile decodes (wav, flac, mp3, ogg/vorbis, ogg/opus, ...);
* a shell command ending in ``|`` whose standard output is audio (``sox x.sph -t wav - |``);
* ``file.ark:offset``, a Kaldi wave archive entry (read with kaldiio).

Audio is returned as float32 mono in [-1, 1] at the requested rate (soxr, high quality).
"""
from __future__ import annotations

import io
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np
import soundfile as sf
import soxr

from partlib.common import DataError, PathLike
from partlib.data.datadir import DataDir, SEGMENT_TOLERANCE_S
from partlib.data.kv import write_kv

TARGET_SR = 16000

# How much of a failing command's stderr goes into the error message.
_STDERR_TAIL_CHARS = 1000

_ARK_RE = re.compile(r"^(?P<ark>.+):(?P<offset>\d+)$")


def _is_pipe(value: str) -> bool:
    return value.rstrip().endswith("|")


def _ark_entry(value: str) -> Optional[Tuple[str, int]]:
    """``(ark_path, offset)`` when ``value`` is an ark entry rather than a file whose name has a colon."""
    m = _ARK_RE.match(value)
    if m is None or os.path.exists(value):
        return None
    return m.group("ark"), int(m.group("offset"))


def _to_float(data: np.ndarray) -> np.ndarray:
    """Integer PCM -> float32 in [-1, 1); float input is kept as it is."""
    if np.issubdtype(data.dtype, np.integer):
        scale = float(2 ** (8 * data.dtype.itemsize - 1))
        if np.issubdtype(data.dtype, np.unsignedinteger):  # 8-bit PCM is unsigned
            return ((data.astype(np.float64) - scale) / scale).astype(np.float32)
        return (data.astype(np.float64) / scale).astype(np.float32)
    return data.astype(np.float32, copy=False)


def _decode_bytes(data: bytes, key: Optional[str], what: str) -> Tuple[np.ndarray, int]:
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise DataError(f"cannot decode the audio written by {what}: {e}", utt=key) from None
    return samples, rate


def _run_pipe(value: str, key: Optional[str]) -> Tuple[np.ndarray, int]:
    cmd = value.rstrip()[:-1].strip()
    # pipefail: a failing first stage (``cat missing.wav | sox ...``) must not pass as silence.
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", errors="replace").strip()[-_STDERR_TAIL_CHARS:]
        raise DataError(
            f"command exited with code {proc.returncode}: '{cmd}'"
            + (f"; its stderr ends: {tail}" if tail else "; it wrote nothing to stderr"),
            utt=key,
        )
    if not proc.stdout:
        raise DataError(f"empty audio: command wrote nothing: '{cmd}'", utt=key)
    return _decode_bytes(proc.stdout, key, f"command '{cmd}'")


def _read_ark(ark: str, offset: int, value: str, key: Optional[str]) -> Tuple[np.ndarray, int]:
    if not os.path.isfile(ark):
        raise DataError("audio archive not found", ark, utt=key)
    try:
        entry = kaldiio.load_mat(value)
    except Exception as e:  # kaldiio raises assorted errors on a bad offset or corrupt data
        raise DataError(f"cannot read a wave entry at offset {offset}: {e}", ark, utt=key) from None
    if not (isinstance(entry, tuple) and len(entry) == 2):
        raise DataError(
            f"entry at offset {offset} is a matrix, not a wave (feats belong in feats.scp)", ark, utt=key
        )
    rate, data = entry
    data = _to_float(np.asarray(data))
    return (data[:, None] if data.ndim == 1 else data), int(rate)


def _read_file(path: str, key: Optional[str]) -> Tuple[np.ndarray, int]:
    if not os.path.isfile(path):
        raise DataError("audio file not found", path, utt=key)
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise DataError(f"cannot decode audio: {e}", path, utt=key) from None
    return samples, rate


def _source(value: str) -> Optional[str]:
    """The file a wav.scp value reads from, for error messages (None for commands)."""
    if _is_pipe(value):
        return None
    ark = _ark_entry(value)
    return ark[0] if ark else value


def decode(value: str, key: Optional[str] = None) -> Tuple[np.ndarray, int]:
    """Decode a wav.scp value to ``(mono float32 samples, sample_rate)`` at the source rate.

    Raises :class:`DataError` naming ``key`` and the file for missing, undecodable or empty
    audio and for NaN/Inf samples.
    """
    value = value.strip()
    if _is_pipe(value):
        samples, rate = _run_pipe(value, key)
    else:
        ark = _ark_entry(value)
        samples, rate = _read_ark(*ark, value, key) if ark else _read_file(value, key)
    path = _source(value)
    origin = "" if path else f" (from command '{value}')"
    if samples.shape[0] == 0:
        raise DataError(f"empty audio (0 samples){origin}", path, utt=key)
    if rate <= 0:
        raise DataError(f"invalid sample rate {rate}{origin}", path, utt=key)
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise DataError(f"audio contains NaN or Inf samples{origin}", path, utt=key)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def cut(
    samples: np.ndarray,
    rate: int,
    start: Optional[float],
    end: Optional[float],
    *,
    key: Optional[str] = None,
    path: Optional[str] = None,
) -> np.ndarray:
    """Samples of ``[start, end)`` seconds; an end up to SEGMENT_TOLERANCE_S past the audio is clipped."""
    if start is None and end is None:
        return samples
    duration = len(samples) / rate
    s = 0.0 if start is None else float(start)
    e = duration if end is None else float(end)
    if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e <= s:
        raise DataError(f"invalid segment [{s}, {e}): need 0 <= start < end", path, utt=key)
    if e > duration + SEGMENT_TOLERANCE_S or s >= duration:
        raise DataError(
            f"segment [{s:.3f}, {e:.3f}) s lies outside the recording ({duration:.3f} s long)",
            path,
            utt=key,
        )
    first = int(round(s * rate))
    last = min(int(round(e * rate)), len(samples))
    if last <= first:
        raise DataError(f"empty audio: segment [{s}, {e}) holds no samples", path, utt=key)
    return samples[first:last]


def _finish(
    samples: np.ndarray, rate: int, sr: int, resample: bool, key: Optional[str], path: Optional[str]
) -> np.ndarray:
    if not np.all(np.isfinite(samples)):  # before clipping, which would turn ±Inf into ±1
        raise DataError("audio contains NaN or Inf samples", path, utt=key)
    if rate != sr:
        if not resample:
            raise DataError(
                f"sample rate is {rate} Hz, expected {sr} Hz (resampling is disabled)", path, utt=key
            )
        samples = soxr.resample(samples, rate, sr, quality="HQ")
    # Resampling can overshoot full scale by a hair; callers rely on [-1, 1].
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


def load_audio(
    wav_scp_value: str,
    *,
    start: Optional[float] = None,
    end: Optional[float] = None,
    sr: int = TARGET_SR,
    resample: bool = True,
    key: Optional[str] = None,
) -> np.ndarray:
    """Load one wav.scp value as float32 mono in [-1, 1] at ``sr`` Hz.

    ``start``/``end`` (seconds) cut a segment before resampling. With ``resample=False`` a
    recording at another rate is a :class:`DataError`. ``key`` (the utterance id) is named in
    every error.
    """
    samples, rate = decode(wav_scp_value, key)
    path = _source(wav_scp_value.strip())
    samples = cut(samples, rate, start, end, key=key, path=path)
    return _finish(samples, rate, sr, resample, key, path)


def load_file(path: PathLike, sr: int = TARGET_SR) -> np.ndarray:
    """An audio file (anything libsndfile decodes: wav, flac, ogg/vorbis, ogg/opus, mp3) as float32
    mono in [-1, 1] at ``sr`` Hz; errors name the file."""
    samples, rate = _read_file(str(path), None)
    return from_array(samples, rate, sr, name=str(path))


def from_array(samples: np.ndarray, rate: int, sr: int = TARGET_SR, name: Optional[str] = None) -> np.ndarray:
    """Audio samples (``[samples]`` or ``[samples, channels]``) at ``rate`` Hz as float32 mono in
    [-1, 1] at ``sr`` Hz; empty or non-finite audio is a :class:`DataError` naming ``name``."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise DataError(f"expected 1-D or [samples, channels] audio with samples, got shape {samples.shape}", name)
    if int(rate) <= 0:
        raise DataError(f"invalid sample rate {rate}", name)
    return _finish(np.ascontiguousarray(samples), int(rate), sr, True, None, name)


def concatenate(clips: Sequence[np.ndarray], pauses_s: Sequence[float], sr: int = TARGET_SR
                ) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """The clips in a row, clip i followed by ``pauses_s[i]`` seconds of silence; returns the
    samples and each clip's ``[start, end)`` sample span in them."""
    parts, spans, pos = [], [], 0
    for clip, pause in zip(clips, pauses_s):
        gap = np.zeros(int(round(pause * sr)), np.float32)
        spans.append((pos, pos + len(clip)))
        parts += [np.asarray(clip, np.float32), gap]
        pos += len(clip) + len(gap)
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), spans


def _tables(
    data_dir: Union[DataDir, PathLike]
) -> Tuple[Optional[Path], Dict[str, str], Optional[Dict[str, Tuple[str, float, float]]]]:
    """``(path, wav_scp, segments)`` of a DataDir or of the data dir at a path."""
    if not isinstance(data_dir, DataDir):
        data_dir = DataDir.load(data_dir, validate=False)
    if data_dir.wav_scp is None:
        raise DataError("no wav.scp in this data dir", data_dir.path)
    return data_dir.path, dict(data_dir.wav_scp), data_dir.segments


class AudioReader(Mapping[str, np.ndarray]):
    """Random access to the audio of a data dir by utterance id (handles ``segments``).

    The last decoded recording is cached, so the consecutive segments of one long recording
    (sorted utterance ids share the recording's prefix) are decoded once.
    """

    def __init__(self, data_dir: Union[DataDir, PathLike], sr: int = TARGET_SR, resample: bool = True):
        self.path, self.wav_scp, self.segments = _tables(data_dir)
        self.sr = sr
        self.resample = resample
        self._cache: Optional[Tuple[str, np.ndarray, int]] = None

    def _recording(self, reco: str, utt: str) -> Tuple[np.ndarray, int]:
        if self._cache is not None and self._cache[0] == reco:
            return self._cache[1], self._cache[2]
        value = self.wav_scp.get(reco)
        if value is None:
            where = None if self.path is None else self.path / "wav.scp"
            raise DataError(f"recording '{reco}' is not in wav.scp", where, utt=utt)
        samples, rate = decode(value, utt)
        self._cache = (reco, samples, rate)
        return samples, rate

    def __getitem__(self, utt: str) -> np.ndarray:
        if self.segments is not None:
            if utt not in self.segments:
                raise KeyError(utt)
            reco, start, end = self.segments[utt]
        else:
            if utt not in self.wav_scp:
                raise KeyError(utt)
            reco, start, end = utt, None, None
        samples, rate = self._recording(reco, utt)
        path = _source(self.wav_scp[reco])
        samples = cut(samples, rate, start, end, key=utt, path=path)
        return _finish(samples, rate, self.sr, self.resample, utt, path)

    def __contains__(self, utt: object) -> bool:  # Mapping's default would decode the audio
        return utt in (self.segments if self.segments is not None else self.wav_scp)

    def __iter__(self) -> Iterator[str]:
        return iter(self.segments if self.segments is not None else self.wav_scp)

    def __len__(self) -> int:
        return len(self.segments if self.segments is not None else self.wav_scp)


def _duration(value: str, key: str) -> float:
    """Seconds of one wav.scp value; plain files are measured from their header."""
    value = value.strip()
    if not _is_pipe(value) and _ark_entry(value) is None:
        if not os.path.isfile(value):
            raise DataError("audio file not found", value, utt=key)
        try:
            info = sf.info(value)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise DataError(f"cannot decode audio: {e}", value, utt=key) from None
        if info.frames > 0 and info.samplerate > 0:
            return info.frames / info.samplerate
    # Commands, arks and headers without a length: decode (which also reports empty audio).
    samples, rate = decode(value, key)
    return len(samples) / rate


def _measure(wav_scp: Mapping[str, str]) -> Dict[str, float]:
    return {key: _duration(value, key) for key, value in wav_scp.items()}


def compute_reco2dur(data_dir: Union[DataDir, PathLike]) -> Dict[str, float]:
    """Recording durations in seconds (keyed like wav.scp): from the file header where there is one;
    commands and ark entries are decoded."""
    return _measure(_tables(data_dir)[1])


def compute_utt2dur(data_dir: Union[DataDir, PathLike]) -> Dict[str, float]:
    """Utterance durations in seconds: ``end - start`` from segments, else measured per recording."""
    _, wav_scp, segments = _tables(data_dir)
    if segments is not None:
        return {utt: end - start for utt, (_, start, end) in segments.items()}
    return _measure(wav_scp)


def write_utt2dur(data_dir: Union[DataDir, PathLike], durations: Optional[Mapping[str, float]] = None) -> Path:
    """Write ``<data_dir>/utt2dur`` atomically (computing durations unless given); return its path."""
    path = data_dir.path if isinstance(data_dir, DataDir) else Path(data_dir)
    if path is None:
        raise ValueError("write_utt2dur needs a DataDir loaded from (or written to) a directory")
    if durations is None:
        durations = compute_utt2dur(data_dir)
    out = path / "utt2dur"
    # 6 decimals keep sample resolution at 16 kHz without float noise such as 1.2300000000000002.
    write_kv(out, {utt: f"{dur:.6f}".rstrip("0").rstrip(".") for utt, dur in durations.items()})
    return out
