"""Where the log-mel features of an utterance come from: dumped (``feats.scp``) or computed from
audio on the fly. One class serves training, dev evaluation, decoding, encoder pretraining and
the representation analysis.

Checks: a dumped dir's ``feats_type`` must give the encoder's mel bins (once per dir, when the
file is there), and every matrix must be ``(T, n_mels)`` — a feats.scp without ``feats_type`` is
still caught at its first matrix; an utterance missing from ``feats.scp`` is an error naming both.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib.common import ConfigError, DataError
from partlib.data.datadir import DataDir
from partlib.features.compute import FEATS_TYPE_FILE, check_mel_bins, compute_features, read_feats_type

# The values of the one features setting (part.sh --features, the CLIs' --features,
# Trainer(features=...), decode_dir(features=...)): auto = feats.scp where a dir has one, else
# computed from audio; dumped = feats.scp required; on_the_fly = always computed from wav.scp;
# shards = training data streamed from the data dirs' Lhotse Shar exports (partlib.data.shards),
# features computed from their audio; everything else (dev sets, decoding) as on_the_fly.
FEATURE_MODES = ("auto", "dumped", "on_the_fly", "shards")


def check_feature_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`FEATURE_MODES`, else a :class:`ConfigError`."""
    if mode not in FEATURE_MODES:
        raise ConfigError(f"features must be {' | '.join(FEATURE_MODES)}, got {mode!r}")
    return mode


class FeatureSource:
    """Loads log-mel features ``[T, n_mels]`` of utterances of some data dirs; ``mode`` is one of
    :data:`FEATURE_MODES`."""

    def __init__(self, dirs: Sequence[DataDir], n_mels: int, mode: str = "auto") -> None:
        self.dirs = list(dirs)
        self.n_mels = n_mels
        self.mode = check_feature_mode(mode)
        self._readers: Dict[int, object] = {}
        self._checked: set = set()

    def _use_dumped(self, d: DataDir) -> bool:
        if self.mode == "auto":
            return d.feats_scp is not None
        if self.mode == "dumped" and d.feats_scp is None:
            raise ConfigError(f"features are set to 'dumped' but {d.path} has no feats.scp (run the feature stage)")
        return self.mode == "dumped"  # on_the_fly and shards: from audio

    def _dumped(self, di: int, utt: str) -> torch.Tensor:
        import kaldiio

        d = self.dirs[di]
        if di not in self._checked:  # once per dir: the dump's mel bins match the encoder
            if (d.path / FEATS_TYPE_FILE).is_file():
                check_mel_bins(read_feats_type(d.path).n_mels, self.n_mels, str(d.path))
            self._checked.add(di)
        if utt not in d.feats_scp:
            raise DataError("utterance missing", d.path / "feats.scp", utt=utt)
        mat = np.array(kaldiio.load_mat(d.feats_scp[utt]), dtype=np.float32)  # a writable copy for torch
        if mat.ndim != 2 or mat.shape[1] != self.n_mels:
            raise DataError(f"features of shape {mat.shape}, the model needs (T, {self.n_mels})",
                            d.path / "feats.scp", utt=utt)
        return torch.from_numpy(mat)

    def load(self, items: Sequence[Tuple[int, str]]) -> List[torch.Tensor]:
        """Features ``[T, n_mels]`` for ``(dir_index, utt)`` pairs, in order."""
        from partlib.data.audio import AudioReader

        out: List[Optional[torch.Tensor]] = [None] * len(items)
        wav_idx, wavs, wav_utts = [], [], []
        for i, (di, utt) in enumerate(items):
            d = self.dirs[di]
            if self._use_dumped(d):
                out[i] = self._dumped(di, utt)
            else:
                if di not in self._readers:
                    self._readers[di] = AudioReader(d)
                wav_idx.append(i)
                wavs.append(self._readers[di][utt])
                wav_utts.append(utt)
        if wavs:
            for i, f in zip(wav_idx, compute_features(wavs, self.n_mels, utts=wav_utts)):
                out[i] = f
        return out  # type: ignore[return-value]


def pad_features(feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[B, T, n_mels]`` and the frame counts ``[B]`` of a list of matrices."""
    lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(list(feats), batch_first=True), lens
