"""Where the log-mel features of an utterance come from: dumped (``feats.scp``) or computed from
audio on the fly. One class serves training, dev evaluation, decoding, encoder pretraining and
the representation analysis.

Checks: a dumped dir's ``feats_type`` must give the encoder's mel bins (once per dir, when the
file is there), and every matrix must be ``(T, n_mels)`` — a feats.scp without ``feats_type`` is
still caught at its first matrix; an utterance missing from ``feats.scp`` is an error naming both.
When the source is made, before any batch, the archives feats.scp points into are checked
(:func:`check_archives`: present, offsets inside, last matrix complete; one header read per ark);
a matrix that still cannot be read at batch time (corruption in the middle) is a :class:`DataError`
naming the ark entry and the utterance.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib.common import ConfigError, DataError
from partlib.data.datadir import DataDir
from partlib.data.kv import find_line
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


def _ark_offset(value: str) -> Optional[Tuple[str, int]]:
    """``(file, offset)`` of a feats.scp value (``file.ark:offset``, optionally with a kaldiio
    ``[rows,cols]`` slice; a bare file is read from offset 0); None for a command (``... |``)."""
    value = value.strip()
    if value.endswith("|") or value.startswith("|"):
        return None
    if value.endswith("]") and "[" in value:
        value = value[: value.rindex("[")]
    ark, sep, offset = value.rpartition(":")
    return (ark, int(offset)) if sep and offset.isdigit() else (value, 0)


# Kaldi binary objects ("\0B" + type token + " "): the bytes of the header after the token and of
# each element. FM/DM: '\4' rows '\4' cols; FV/DV: '\4' dim; CM*: min, range, rows, cols (4 bytes each).
_SIZES = {"FM": (10, 4), "DM": (10, 8), "FV": (5, 4), "DV": (5, 8), "CM": (16, 1), "CM2": (16, 2), "CM3": (16, 1)}
_HEAD_BYTES = 2 + 4 + 16  # the longest header: "\0B" "CM2 " + the compressed global header


def matrix_end(head: bytes, offset: int) -> Optional[int]:
    """Where the Kaldi binary matrix or vector whose first bytes (at least :data:`_HEAD_BYTES`, fewer
    at the end of the file) are ``head`` at file ``offset`` ends; None when ``head`` is no binary
    matrix header (kaldiio's other formats: text, wav, npy; not checked here)."""
    if head[:2] != b"\0B" or b" " not in head[2:6]:
        return None
    token = head[2:head.index(b" ", 2)].decode("ascii", "replace")
    if token not in _SIZES:
        return None
    start = 2 + len(token) + 1
    header, element = _SIZES[token]
    if len(head) < start + header:  # the header itself is cut off
        return offset + start + header
    fields = head[start:start + header]
    if token.startswith("CM"):
        _, _, rows, cols = struct.unpack("<ffii", fields)
        header += 8 * cols if token == "CM" else 0  # CM: 4 uint16 quantiles per column
        count = rows * cols
    elif token.endswith("M"):
        rows, cols = struct.unpack("<xixi", fields)
        count = rows * cols
    else:
        (count,) = struct.unpack("<xi", fields)
    return offset + start + header + count * element


def _scp_error(message: str, scp_path: Optional[Path], utt: str) -> DataError:
    """A :class:`DataError` naming the feats.scp line of ``utt`` (looked up: only on the error path)."""
    return DataError(message, scp_path, None if scp_path is None else find_line(scp_path, utt), utt)


def check_archives(feats_scp: Mapping[str, str], scp_path: Optional[Path]) -> None:
    """Check the archives a feats.scp points into, cheaply enough for millions of utterances: each
    exists, no offset lies past its end, and its last matrix (read from its header) ends inside it.

    One ``stat`` and one small read per archive file, not per utterance. A problem is a
    :class:`DataError` naming the feats.scp line, the utterance and the archive.
    """
    first: Dict[str, str] = {}  # archive -> the first utterance that uses it
    last: Dict[str, Tuple[int, str]] = {}  # archive -> (largest offset, its utterance)
    for utt, value in feats_scp.items():
        entry = _ark_offset(value)
        if entry is None:
            continue
        ark, offset = entry
        first.setdefault(ark, utt)
        if ark not in last or offset > last[ark][0]:
            last[ark] = (offset, utt)

    for ark, (offset, utt) in last.items():
        try:
            size = os.path.getsize(ark)
        except FileNotFoundError:
            raise _scp_error(f"feature archive {ark} does not exist (missing file)", scp_path, first[ark]) from None
        if offset >= size:
            raise _scp_error(f"offset {offset} is past the end of {ark} ({size} bytes)", scp_path, utt)
        with open(ark, "rb") as f:
            f.seek(offset)
            end = matrix_end(f.read(_HEAD_BYTES), offset)
        if end is not None and end > size:
            raise _scp_error(f"{ark} is truncated: the matrix at offset {offset} needs {end} bytes, "
                             f"the file has {size}", scp_path, utt)


class FeatureSource:
    """Loads log-mel features ``[T, n_mels]`` of utterances of some data dirs; ``mode`` is one of
    :data:`FEATURE_MODES`. The feature archives of the dirs read from feats.scp are checked here
    (:func:`check_archives`), so a missing or truncated ark fails before training or decoding."""

    def __init__(self, dirs: Sequence[DataDir], n_mels: int, mode: str = "auto") -> None:
        self.dirs = list(dirs)
        self.n_mels = n_mels
        self.mode = check_feature_mode(mode)
        self._readers: Dict[int, object] = {}
        self._checked: set = set()
        for d in self.dirs:
            if d.feats_scp is not None and self._use_dumped(d):
                check_archives(d.feats_scp, self._scp(d))

    @staticmethod
    def _scp(d: DataDir) -> Optional[Path]:
        return None if d.path is None else d.path / "feats.scp"

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
            raise DataError("utterance missing", self._scp(d), utt=utt)
        value = d.feats_scp[utt]
        try:
            mat = np.array(kaldiio.load_mat(value), dtype=np.float32)  # a writable copy for torch
        except Exception as e:  # kaldiio raises assorted errors (ValueError, AssertionError, struct.error, OSError)
            raise _scp_error(f"cannot read the features at {value}: {e or type(e).__name__}", self._scp(d),
                             utt) from None
        if mat.ndim != 2 or mat.shape[1] != self.n_mels:
            raise DataError(f"features of shape {mat.shape}, the model needs (T, {self.n_mels})",
                            self._scp(d), utt=utt)
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
