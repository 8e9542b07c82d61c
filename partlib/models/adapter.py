"""Adapters: encoder frames [B, T', D] -> LLM input embeddings [B, ceil(T'/k), H].

Both adapters downsample by ``k``. An utterance's last group of frames is completed with zeros,
exactly what it gets when encoded alone, so outputs do not depend on the batch.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from partlib.common import ConfigError


def adapter_output_lengths(lens: Tensor, k: int) -> Tensor:
    """ceil(lens / k): one output per (possibly incomplete) group of k frames."""
    return (lens + k - 1) // k


def _zero_pad_groups(x: Tensor, lens: Tensor, k: int) -> Tensor:
    """Zero frames beyond ``lens`` and right-pad the time axis to a multiple of ``k``."""
    t = x.shape[1]
    mask = torch.arange(t, device=x.device)[None, :] < lens[:, None]
    x = x.masked_fill(~mask[..., None], 0.0)
    extra = (-t) % k
    return nn.functional.pad(x, (0, 0, 0, extra)) if extra else x


class StackAdapter(nn.Module):
    """Stack k consecutive frames (k*D features) and map them with Linear-GELU-Linear to the LLM width."""

    def __init__(self, in_dim: int, out_dim: int, k: int = 4, hidden: int = 1024) -> None:
        super().__init__()
        self.k = k
        self.proj1 = nn.Linear(in_dim * k, hidden)
        self.proj2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        """[B, T', D], [B] -> [B, ceil(T'/k), H], ceil(lens/k); outputs beyond the lengths are zero."""
        x = _zero_pad_groups(x, lens, self.k)
        b, t, d = x.shape
        x = x.reshape(b, t // self.k, d * self.k)
        y = self.proj2(nn.functional.gelu(self.proj1(x)))
        return _mask_out(y, adapter_output_lengths(lens, self.k))


class ConvAdapter(nn.Module):
    """Strided-convolution downsampler: Conv1d (kernel k, stride k) to ``hidden``, GELU, Linear."""

    def __init__(self, in_dim: int, out_dim: int, k: int = 4, hidden: int = 1024) -> None:
        super().__init__()
        self.k = k
        self.conv = nn.Conv1d(in_dim, hidden, kernel_size=k, stride=k)
        self.proj = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        """[B, T', D], [B] -> [B, ceil(T'/k), H], ceil(lens/k); outputs beyond the lengths are zero."""
        x = _zero_pad_groups(x, lens, self.k)
        y = nn.functional.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return _mask_out(self.proj(y), adapter_output_lengths(lens, self.k))


def _mask_out(y: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
    mask = torch.arange(y.shape[1], device=y.device)[None, :] < lens[:, None]
    return y.masked_fill(~mask[..., None], 0.0), lens


def build_adapter(cfg: dict, in_dim: int, out_dim: int) -> nn.Module:
    """Adapter from the ``adapter`` config section: ``{type: stack|conv, stack: k, hidden: H}``."""
    unknown = set(cfg) - {"type", "stack", "hidden"}
    if unknown:
        raise ConfigError(f"unknown adapter option(s): {sorted(unknown)}")
    kind = cfg.get("type", "stack")
    k = cfg.get("stack", 4)
    hidden = cfg.get("hidden", 1024)
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"adapter.stack must be a positive integer, got {k!r}")
    if not isinstance(hidden, int) or hidden < 1:
        raise ConfigError(f"adapter.hidden must be a positive integer, got {hidden!r}")
    if kind == "stack":
        return StackAdapter(in_dim, out_dim, k, hidden)
    if kind == "conv":
        return ConvAdapter(in_dim, out_dim, k, hidden)
    raise ConfigError(f"adapter.type must be 'stack' or 'conv', got {kind!r}")
