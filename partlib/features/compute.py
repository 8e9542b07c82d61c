"""Feature computation shared by on-the-fly training and dumping: input checks, batching, types.

The dataset calls :func:`compute_features` (or :func:`compute_batch` at collate time) on raw
audio; ``extract_feats`` calls the same functions before writing arks, so features computed on
the fly and features read back from a dump are the same numbers.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from partlib.common import ConfigError, DataError, PathLike, atomic_write
from partlib.features.whisper_mel import N_FFT, WhisperMel

FEATURE_TYPES = ("whisper_mel",)
MEL_BINS = (80, 128)
FEATS_TYPE_FILE = "feats_type"

Waveform = Union[np.ndarray, torch.Tensor]


class FeatsType(NamedTuple):
    """Content of a dumped data dir's ``feats_type`` file, e.g. ``whisper_mel 80``."""

    name: str
    n_mels: int

    def __str__(self) -> str:
        return f"{self.name} {self.n_mels}"


def check_feature_config(feature: str, n_mels: int) -> FeatsType:
    """Validate a feature name and bin count (CLI/YAML values); raise :class:`ConfigError`."""
    if feature not in FEATURE_TYPES:
        raise ConfigError(f"unknown feature type '{feature}' (supported: {', '.join(FEATURE_TYPES)})")
    if int(n_mels) not in MEL_BINS:
        raise ConfigError(
            f"num_mel_bins must be one of {', '.join(map(str, MEL_BINS))} for {feature}, got {n_mels}"
        )
    return FeatsType(feature, int(n_mels))


def read_feats_type(data_dir: PathLike) -> FeatsType:
    """Read ``<data_dir>/feats_type``; a missing or malformed file is a :class:`DataError`."""
    path = Path(data_dir) / FEATS_TYPE_FILE
    if not path.is_file():
        raise DataError("file not found (a dumped data dir needs it to check the mel bins)", path)
    fields = path.read_text(encoding="utf-8").split()
    if len(fields) != 2 or not fields[1].isdigit():
        raise DataError(f"expected '<feature> <num_mel_bins>', got {' '.join(fields)!r}", path, 1)
    try:
        return check_feature_config(fields[0], int(fields[1]))
    except ConfigError as e:
        raise DataError(str(e), path, 1) from None


def write_feats_type(data_dir: PathLike, feats_type: FeatsType) -> None:
    """Write ``<data_dir>/feats_type`` atomically."""
    atomic_write(Path(data_dir) / FEATS_TYPE_FILE, f"{feats_type}\n")


def check_mel_bins(feats_n_mels: int, encoder_n_mels: int, where: str) -> None:
    """Raise :class:`ConfigError` when features and the speech encoder disagree on mel bins.

    ``where`` names the feature source (a data dir or a config key) for the message.
    """
    if int(feats_n_mels) != int(encoder_n_mels):
        raise ConfigError(
            f"{where}: features have {feats_n_mels} mel bins but the speech encoder expects "
            f"num_mel_bins={encoder_n_mels}; extract features with --num-mel-bins {encoder_n_mels} "
            f"(Whisper large-v3 uses 128, earlier Whisper models 80)"
        )


def check_waveform(wav: Waveform, utt: Optional[str] = None) -> None:
    """Raise :class:`DataError` naming ``utt`` for audio features cannot be computed from.

    Rejected: non-1-D arrays, empty audio, fewer samples than one analysis window (400 samples,
    25 ms at 16 kHz) and NaN/Inf samples.
    """
    shape = tuple(wav.shape)
    if len(shape) != 1:
        raise DataError(f"expected mono audio (1-D samples), got shape {shape}", utt=utt)
    if shape[0] == 0:
        raise DataError("empty audio", utt=utt)
    if shape[0] < N_FFT:
        raise DataError(
            f"audio too short: {shape[0]} samples, need at least one window of {N_FFT}", utt=utt
        )
    finite = torch.isfinite(wav).all() if isinstance(wav, torch.Tensor) else np.isfinite(wav).all()
    if not bool(finite):
        raise DataError("audio contains NaN or Inf samples", utt=utt)


@functools.lru_cache(maxsize=8)
def get_extractor(n_mels: int, device: str = "cpu") -> WhisperMel:
    """A shared :class:`WhisperMel` for ``(n_mels, device)``; filters are built once per process."""
    return WhisperMel(n_mels).to(device)


def pad_waveforms(wavs: Sequence[Waveform]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros into ``([B, S] float32, lengths [B])``."""
    lengths = torch.tensor([int(w.shape[0]) for w in wavs], dtype=torch.long)
    batch = torch.zeros(len(wavs), int(lengths.max()) if len(wavs) else 0, dtype=torch.float32)
    for i, w in enumerate(wavs):
        batch[i, : w.shape[0]] = torch.as_tensor(w, dtype=torch.float32)
    return batch, lengths


def compute_batch(
    wavs: Sequence[Waveform],
    n_mels: int,
    utts: Optional[Sequence[str]] = None,
    device: Union[str, torch.device] = "cpu",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features of a batch of waveforms: ``(feats [B, T, n_mels], frame_lengths [B])`` on ``device``.

    Each waveform is checked with :func:`check_waveform` (errors name ``utts[i]`` when given).
    Every row equals the features of that waveform computed alone.
    """
    if not wavs:
        raise ValueError("compute_batch needs at least one waveform")
    if utts is not None and len(utts) != len(wavs):
        raise ValueError(f"{len(utts)} utterance ids for {len(wavs)} waveforms")
    for i, w in enumerate(wavs):
        check_waveform(w, None if utts is None else utts[i])
    batch, lengths = pad_waveforms(wavs)
    # no_grad, not inference_mode: the features feed encoders that are trained.
    with torch.no_grad():
        return get_extractor(int(n_mels), str(torch.device(device)))(batch, lengths)


def compute_features(
    wavs: Sequence[Waveform],
    n_mels: int,
    utts: Optional[Sequence[str]] = None,
    device: Union[str, torch.device] = "cpu",
) -> List[torch.Tensor]:
    """Features of each waveform as a list of ``[T_i, n_mels]`` float32 tensors (batched inside)."""
    feats, lens = compute_batch(wavs, n_mels, utts, device)
    return [feats[i, : int(n)].clone() for i, n in enumerate(lens)]
