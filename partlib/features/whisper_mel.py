"""Whisper's log-mel spectrogram for variable-length, batched audio (no padding to 30 s).

Per utterance the result equals Hugging Face ``WhisperFeatureExtractor`` applied to that utterance
alone (``padding="longest"``): a centred STFT (n_fft 400, hop 160, periodic Hann window, reflect
padding of n_fft/2 at both ends), the power spectrum through Slaney-normalised Slaney-scale mel
filters, ``log10`` clamped at 1e-10, the last STFT frame dropped (``num_samples // 160`` frames),
dynamic range limited to ``max - 8`` and the affine map ``(x + 4) / 4``.

Unlike the stock extractor run on a padded batch, every quantity here depends only on an
utterance's own samples: the reflect padding is built from each utterance's true end and the
``max - 8`` floor uses only its own frames, so the amount of padding in a batch never changes an
utterance's features (batch invariance).

Frame count and values match the stock extractor exactly in layout (no one-frame offset); the
only deliberate difference is length: the stock extractor truncates input to 30 s, this module
keeps the whole utterance.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

N_FFT = 400
HOP_LENGTH = 160
SAMPLING_RATE = 16000
FRAMES_PER_SECOND = SAMPLING_RATE // HOP_LENGTH  # 100: a log-mel frame is 10 ms
MAX_FREQUENCY = 8000.0
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0


def num_frames(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Number of feature frames for ``num_samples`` samples (the centred STFT minus its last frame)."""
    return int(num_samples) // hop_length


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mel = hz / f_sp
    above = hz >= min_log_hz
    mel[above] = min_log_mel + np.log(hz[above] / min_log_hz) / logstep
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    hz = mel * f_sp
    above = mel >= min_log_mel
    hz[above] = min_log_hz * np.exp(logstep * (mel[above] - min_log_mel))
    return hz


def mel_filters(
    n_mels: int,
    sampling_rate: int = SAMPLING_RATE,
    n_fft: int = N_FFT,
    max_frequency: float = MAX_FREQUENCY,
) -> np.ndarray:
    """Triangular mel filters, Slaney scale and Slaney (area) norm, shape ``(n_fft // 2 + 1, n_mels)``.

    Filter ``m`` rises linearly from mel point ``m`` to ``m + 1`` and falls to ``m + 2`` (points
    evenly spaced on the mel scale between 0 Hz and ``max_frequency``); each filter is scaled by
    ``2 / (f[m + 2] - f[m])`` so that filters have equal area. Computed in float64.
    """
    fft_freqs = np.linspace(0.0, sampling_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel_slaney(np.array([0.0]))[0],
                             _hz_to_mel_slaney(np.array([max_frequency]))[0], n_mels + 2)
    hz_points = _mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)                        # (n_mels + 1,)
    offsets = hz_points[None, :] - fft_freqs[:, None]  # (n_freq, n_mels + 2)
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= 2.0 / (hz_points[2:] - hz_points[:-2])
    return filters


class WhisperMel(torch.nn.Module):
    """Batched, batch-invariant Whisper log-mel features: ``[B, S]`` audio -> ``[B, T, n_mels]``.

    Works on any device the module is moved to; computation is float32.
    """

    def __init__(self, n_mels: int = 80, sampling_rate: int = SAMPLING_RATE) -> None:
        super().__init__()
        self.n_mels = int(n_mels)
        self.sampling_rate = int(sampling_rate)
        self.n_fft = N_FFT
        self.hop_length = HOP_LENGTH
        filters = torch.from_numpy(mel_filters(self.n_mels, self.sampling_rate)).float()
        # Not saved in checkpoints: they are a pure function of (n_mels, sampling_rate).
        self.register_buffer("filters", filters, persistent=False)       # (n_fft//2+1, n_mels)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, sampling_rate={self.sampling_rate}"

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Compute features.

        Args:
            wavs: ``[B, S]`` float audio; samples at or beyond ``lengths[b]`` are ignored.
            lengths: ``[B]`` number of valid samples per row; each must be >= n_fft (400).

        Returns:
            ``(feats [B, T, n_mels], frame_lengths [B])`` with ``T = max(frame_lengths)`` and
            ``frame_lengths = lengths // 160``; frames past an utterance's length are 0.
        """
        if wavs.dim() != 2:
            raise ValueError(f"expected audio of shape [B, S], got {tuple(wavs.shape)}")
        device = self.filters.device
        wavs = wavs.to(device=device, dtype=torch.float32)
        lengths = torch.as_tensor(lengths, device=device, dtype=torch.long)
        if lengths.shape != (wavs.shape[0],):
            raise ValueError(f"lengths must have shape [{wavs.shape[0]}], got {tuple(lengths.shape)}")
        if bool((lengths < self.n_fft).any()) or bool((lengths > wavs.shape[1]).any()):
            raise ValueError(
                f"every length must be in [{self.n_fft}, {wavs.shape[1]}], got {lengths.tolist()}"
            )
        frame_lens = lengths // self.hop_length
        n_frames = int(frame_lens.max())
        half = self.n_fft // 2
        padded_len = (n_frames - 1) * self.hop_length + self.n_fft

        # Reflect padding built from each utterance's own ends (never from the batch padding):
        # the left edge mirrors samples 1..half, the right edge mirrors the samples before the
        # utterance's last one. Positions past that are read only by frames beyond the
        # utterance's end, which are masked below.
        batch = wavs.shape[0]
        padded = wavs.new_empty(batch, padded_len + self.n_fft)
        body = min(wavs.shape[1], padded_len - half)
        padded[:, half : half + body] = wavs[:, :body]
        padded[:, half + body :] = 0.0
        padded[:, :half] = wavs[:, 1 : half + 1].flip(1)
        offsets = torch.arange(half, device=device)
        right = torch.gather(wavs, 1, lengths.unsqueeze(1) - 2 - offsets)           # (B, half)
        padded.scatter_(1, half + lengths.unsqueeze(1) + offsets, right)
        padded = padded[:, :padded_len]                                              # (B, P)

        frames = padded.unfold(1, self.n_fft, self.hop_length) * self.window        # (B, T, n_fft)
        spec = torch.fft.rfft(frames, dim=-1)                                        # (B, T, F)
        parts = torch.view_as_real(spec).square_()                                  # (B, T, F, 2)
        power = parts[..., 0] + parts[..., 1]                                        # (B, T, F)
        log_spec = (power @ self.filters).clamp_(min=LOG_FLOOR).log10_()             # (B, T, M)

        valid = torch.arange(n_frames, device=device).unsqueeze(0) < frame_lens.unsqueeze(1)
        peak = log_spec.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=(1, 2))
        log_spec = torch.maximum(log_spec, (peak - DYNAMIC_RANGE).view(-1, 1, 1))
        log_spec = log_spec.add_(4.0).div_(4.0).masked_fill_(~valid.unsqueeze(-1), 0.0)
        return log_spec, frame_lens
