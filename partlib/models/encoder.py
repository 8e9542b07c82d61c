"""Whisper encoder for variable-length log-mel batches.

Stock Whisper pads every input to 30 s (3000 frames) and attends over all of it. Here the
positional table is sliced to the actual length and padded frames are removed from attention
(key-padding mask) and zeroed between the convolutions, so an utterance encoded alone gives the
same frames as inside a padded batch. ``pad_to_30s=True`` reproduces the stock conditions.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from partlib.common import ConfigError, DataError, PathLike
from partlib.models.pretrained import load_pretrained


def conv_output_lengths(lens: Tensor) -> Tensor:
    """Frames after Whisper's conv stack: conv1 keeps T, conv2 (kernel 3, stride 2, padding 1)."""
    return (lens - 1) // 2 + 1


def load_whisper_encoder(path: PathLike, dtype: torch.dtype = torch.float32, *, key: str = "encoder.path",
                         base_dir: Optional[PathLike] = None) -> WhisperEncoder:
    """Load the encoder of a Whisper checkpoint: a full Whisper model (``WhisperModel`` or
    ``WhisperForConditionalGeneration``: keys ``[model.]encoder.*``, local dir or hub id) or an
    encoder-only save. Only the encoder is built; the decoder's weights are never materialised.
    A path that is not there is a :class:`ConfigError` naming the config ``key``
    (:func:`partlib.models.pretrained.load_pretrained`)."""
    def load(name: str):
        return WhisperEncoder.from_pretrained(name, dtype=dtype, key_mapping=_ENCODER_KEYS, output_loading_info=True)

    with _transformers_quiet():
        encoder, info = load_pretrained(load, path, key, base_dir)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ConfigError(f"{path}: not a Whisper checkpoint with an encoder: {len(missing)} encoder weights "
                          f"missing (e.g. {missing[0]})")
    # transformers would undo the key mapping when saving; this encoder saves under its own keys
    encoder._weight_conversions = None
    return encoder


_ENCODER_KEYS = {r"^(model\.)?encoder\.": ""}  # a full checkpoint's encoder keys -> WhisperEncoder's own


@contextmanager
def _transformers_quiet():
    """Silence transformers' load report: the decoder weights a full checkpoint also holds are
    skipped by design."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def whisper_encoder_from_config(config: Union[dict, PathLike]) -> WhisperEncoder:
    """A randomly initialised encoder from a WhisperConfig dict or a config.json file."""
    if not isinstance(config, dict):
        config = json.loads(Path(config).read_text())
    return WhisperEncoder(WhisperConfig(**{k: v for k, v in config.items() if k != "model_type"}))


class SpeechEncoder(nn.Module):
    """Variable-length wrapper around a transformers ``WhisperEncoder``.

    Args:
        whisper: the encoder module (its parameters are used as they are).
        pad_to_30s: pad every input to the full positional table and attend over all of it, as
            stock Whisper does; the outputs are still cut to each utterance's real frames.
        gradient_checkpointing: recompute layer activations in the backward pass.
    """

    def __init__(self, whisper: WhisperEncoder, pad_to_30s: bool = False,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.whisper = whisper
        self.pad_to_30s = pad_to_30s
        self.gradient_checkpointing = gradient_checkpointing
        cfg = whisper.config
        self.n_mels: int = cfg.num_mel_bins
        self.d_model: int = cfg.d_model
        self.max_frames: int = cfg.max_source_positions * 2  # conv2 halves the frame rate
        self.frame_rate: float = 50.0  # output states per second: 100 log-mel frames/s, halved by conv2

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return len(self.whisper.layers)

    def output_lengths(self, feat_lens: Tensor) -> Tensor:
        """Exact number of encoder frames for each input length."""
        return conv_output_lengths(feat_lens)

    def set_trainable(self, spec: Union[str, int]) -> None:
        """``"frozen"``, ``"full"`` or an integer N: the top N layers and the final norm train."""
        w = self.whisper
        if spec == "frozen":
            top = 0
        elif spec == "full":
            top = None
        elif isinstance(spec, int) and not isinstance(spec, bool) and 0 <= spec <= self.num_layers:
            top = spec
        else:
            raise ConfigError(f"trainable.encoder must be frozen, full or {{top_k: N}} with N in "
                              f"[0, {self.num_layers}], got {spec!r}")
        for p in w.parameters():
            p.requires_grad_(top is None)
        if top:
            for layer in w.layers[self.num_layers - top:]:
                layer.requires_grad_(True)
            w.layer_norm.requires_grad_(True)
        w.embed_positions.requires_grad_(False)  # fixed sinusoids in Whisper

    def _first_trainable_stage(self) -> int:
        """Index in [convs, layer 0..L-1, final norm] of the first stage with trainable weights."""
        w = self.whisper
        stages: list[Sequence[nn.Module]] = [(w.conv1, w.conv2), *[(l,) for l in w.layers], (w.layer_norm,)]
        for i, mods in enumerate(stages):
            if any(p.requires_grad for m in mods for p in m.parameters()):
                return i
        return len(stages)

    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """Encode ``feats`` [B, T, n_mels] with lengths [B] -> ([B, T', d_model], lengths [B]).

        Frames beyond each output length are zero.
        """
        if feats.dim() != 3 or feats.shape[-1] != self.n_mels:
            raise ConfigError(
                f"encoder expects features [B, T, {self.n_mels}] (config num_mel_bins), got {tuple(feats.shape)}")
        # Decisions on lengths are taken on a host copy: no device sync when the lengths come from
        # the host, and the memory planner can run this on the meta device.
        lens = feat_lens.cpu()
        if int(lens.max()) > self.max_frames or feats.shape[1] > self.max_frames:
            raise DataError(
                f"input of {int(max(lens.max(), feats.shape[1]))} frames is longer than Whisper's "
                f"{self.max_frames} frames ({self.max_frames // 100} s); segment the audio first")
        out_lens = self.output_lengths(lens)
        t_in = feats.shape[1]
        in_mask = (torch.arange(t_in)[None, :] < lens[:, None]).to(feats.device)  # [B, T]
        x = feats.masked_fill(~in_mask[..., None], 0.0)
        if self.pad_to_30s:
            x = _pad_like_whisper(x, in_mask, self.max_frames)
        first = self._first_trainable_stage()
        n_layers = self.num_layers
        with torch.set_grad_enabled(torch.is_grad_enabled() and first == 0):
            h = self._embed(x, in_mask)
        t_out = h.shape[1]
        host_mask = torch.arange(t_out)[None, :] < out_lens[:, None]  # [B, T']
        out_mask = host_mask.to(h.device)
        attn_mask = None
        if not self.pad_to_30s and not bool(host_mask.all()):
            # Additive key-padding mask [B, 1, 1, T'], broadcast over heads and queries.
            attn_mask = torch.zeros(out_mask.shape, dtype=h.dtype, device=h.device)
            attn_mask = attn_mask.masked_fill(~out_mask, torch.finfo(h.dtype).min)[:, None, None, :]
        for i, layer in enumerate(self.whisper.layers):
            with torch.set_grad_enabled(torch.is_grad_enabled() and first <= i + 1):
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    h = checkpoint(layer, h, attn_mask, use_reentrant=False)
                else:
                    h = layer(h, attn_mask)
        with torch.set_grad_enabled(torch.is_grad_enabled() and first <= n_layers + 1):
            h = self.whisper.layer_norm(h)
        if self.pad_to_30s:
            h = h[:, : int(out_lens.max())]
            out_mask = out_mask[:, : h.shape[1]]
        return h.masked_fill(~out_mask[..., None], 0.0), out_lens.to(feats.device)

    def _embed(self, x: Tensor, in_mask: Tensor) -> Tensor:
        """Convolutions + positions: [B, T, M] -> [B, T', D]."""
        w = self.whisper
        h = nn.functional.gelu(w.conv1(x.transpose(1, 2)))  # [B, D, T]
        if not self.pad_to_30s:
            # conv2 of the last real frame reads conv1's first padded frame: make it the zero
            # padding that the utterance alone would see.
            h = h * in_mask[:, None, :].to(h.dtype)
        h = nn.functional.gelu(w.conv2(h)).transpose(1, 2)  # [B, T', D]
        h = h + w.embed_positions.weight[: h.shape[1]].to(h.dtype)
        return nn.functional.dropout(h, p=w.dropout, training=self.training)


def _pad_like_whisper(x: Tensor, mask: Tensor, frames: int) -> Tensor:
    """Pad normalised log-mels to ``frames`` with the value Whisper's feature extractor gives silence.

    The extractor computes log10 mel of zero-padded audio (-10 after flooring at 1e-10), floors it
    at max - 8 and maps l -> (l + 4) / 4; in normalised units that is max(x_max - 2, -1.5).
    """
    x_max = x.masked_fill(~mask[..., None], float("-inf")).amax(dim=(1, 2))  # [B]
    pad_value = torch.clamp(x_max - 2.0, min=-1.5)  # [B]
    out = pad_value[:, None, None].expand(x.shape[0], frames, x.shape[2]).clone()
    t = x.shape[1]
    out[:, :t] = torch.where(mask[..., None], x, pad_value[:, None, None])
    return out
