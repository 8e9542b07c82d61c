"""Adapters: encoder states [B, T', D] -> LLM input embeddings [B, N, H], one registry of them.

Every adapter reports :meth:`Adapter.output_lengths` (encoder frames -> embeddings), masks the
outputs beyond each utterance's length to zero, and gives an utterance the same outputs in a batch
as alone (its padding never reaches its outputs). The ``adapter`` section of a model config names
one by ``type``; its other keys are that adapter's options (``OPTIONS``: name -> default).

- ``stack`` (default): stack ``stack`` consecutive frames, Linear-GELU-Linear to the LLM width;
- ``conv``: strided Conv1d (kernel = stride = ``stack``) to ``hidden``, GELU, Linear;
- ``qformer``: a window-level Q-Former as in SALMONN: ``queries`` learned queries attend to each
  window of ``window_s`` seconds of encoder states (``layers`` blocks of self-attention among the
  queries, cross-attention to the window's frames, feed-forward), then a Linear to the LLM width.

Adding an adapter is one class with ``@register_adapter("name")`` (docs/architecture.md).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Tuple, Type

import torch
from torch import Tensor, nn

from partlib.common import ConfigError
from partlib.config import Invalid, join

ADAPTERS: Dict[str, Type["Adapter"]] = {}


def register_adapter(name: str) -> Callable[[Type["Adapter"]], Type["Adapter"]]:
    """Class decorator: make an :class:`Adapter` available as ``adapter: {type: <name>}``."""

    def add(cls: Type["Adapter"]) -> Type["Adapter"]:
        if name in ADAPTERS:
            raise ConfigError(f"adapter type {name!r} is already registered")
        ADAPTERS[name] = cls
        return cls

    return add


class Adapter(nn.Module):
    """Base class: ``forward(x [B, T', D], lens [B]) -> (y [B, N, H], output_lengths(lens))``."""

    OPTIONS: Mapping[str, Any] = {}

    @classmethod
    def from_options(cls, in_dim: int, out_dim: int, frame_rate: float, options: Mapping[str, Any]) -> "Adapter":
        """The adapter for encoder width ``in_dim`` at ``frame_rate`` frames/s and LLM width ``out_dim``."""
        return cls(in_dim, out_dim, **options)

    def output_lengths(self, lens: Tensor) -> Tensor:
        """Number of embeddings made of ``lens`` encoder frames."""
        raise NotImplementedError


def _zero_pad_groups(x: Tensor, lens: Tensor, k: int) -> Tensor:
    """Zero frames beyond ``lens`` and right-pad the time axis to a multiple of ``k``."""
    t = x.shape[1]
    mask = torch.arange(t, device=x.device)[None, :] < lens[:, None]
    x = x.masked_fill(~mask[..., None], 0.0)
    extra = (-t) % k
    return nn.functional.pad(x, (0, 0, 0, extra)) if extra else x


def _mask_out(y: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
    mask = torch.arange(y.shape[1], device=y.device)[None, :] < lens[:, None]
    return y.masked_fill(~mask[..., None], 0.0), lens


class _Downsampler(Adapter):
    """An adapter with one output per group of ``k`` frames (``stack`` in the config)."""

    OPTIONS = {"stack": 4, "hidden": 1024}
    k: int

    @classmethod
    def from_options(cls, in_dim: int, out_dim: int, frame_rate: float, options: Mapping[str, Any]) -> "Adapter":
        return cls(in_dim, out_dim, k=options["stack"], hidden=options["hidden"])

    def output_lengths(self, lens: Tensor) -> Tensor:
        """ceil(lens / k): one output per (possibly incomplete) group of k frames."""
        return (lens + self.k - 1) // self.k


@register_adapter("stack")
class StackAdapter(_Downsampler):
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
        return _mask_out(y, self.output_lengths(lens))


@register_adapter("conv")
class ConvAdapter(_Downsampler):
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
        return _mask_out(self.proj(y), self.output_lengths(lens))


class _QFormerBlock(nn.Module):
    """Pre-norm block: self-attention among the queries, cross-attention to the frames, MLP."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm_q, self.norm_x, self.norm_c, self.norm_f = (nn.LayerNorm(dim) for _ in range(4))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, q: Tensor, x: Tensor, pad: Tensor) -> Tensor:
        """q [N, Q, dim] queries, x [N, W, dim] frames, pad [N, W] True at padded frames."""
        h = self.norm_q(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.norm_x(x)
        q = q + self.cross_attn(self.norm_c(q), kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return q + self.ffn(self.norm_f(q))


@register_adapter("qformer")
class WindowQFormer(Adapter):
    """Window-level Q-Former: ``queries`` learned queries per window of ``window_s`` seconds.

    The encoder output runs at ``frame_rate`` frames/s (50 for Whisper), so a window holds
    ``W = round(window_s * frame_rate)`` frames and an utterance of ``n`` frames gives
    ``ceil(n / W) * queries`` embeddings. Windows are attended to independently; the frames past
    an utterance's end are masked out of the cross-attention.
    """

    OPTIONS = {"window_s": 0.33, "queries": 1, "layers": 2, "dim": 256, "heads": 4, "ffn": 1024}

    @classmethod
    def from_options(cls, in_dim: int, out_dim: int, frame_rate: float, options: Mapping[str, Any]) -> "Adapter":
        return cls(in_dim, out_dim, frame_rate, **options)

    def __init__(self, in_dim: int, out_dim: int, frame_rate: float, window_s: float = 0.33, queries: int = 1,
                 layers: int = 2, dim: int = 256, heads: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        self.window = max(1, round(float(window_s) * frame_rate))
        self.n_queries = int(queries)
        if dim % heads:
            raise ConfigError(f"adapter.dim ({dim}) must be divisible by adapter.heads ({heads})")
        self.inp = nn.Linear(in_dim, dim)
        self.pos = nn.Parameter(torch.zeros(self.window, dim))  # frame position inside the window
        self.queries = nn.Parameter(torch.randn(self.n_queries, dim) / math.sqrt(dim))
        self.blocks = nn.ModuleList(_QFormerBlock(dim, heads, ffn) for _ in range(int(layers)))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    def output_lengths(self, lens: Tensor) -> Tensor:
        """ceil(lens / W) * queries."""
        return (lens + self.window - 1) // self.window * self.n_queries

    def forward(self, x: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        """[B, T', D], [B] -> [B, ceil(T'/W)*Q, H]; outputs beyond the lengths are zero."""
        b, t, _ = x.shape
        w = self.window
        x = _zero_pad_groups(x, lens, w)
        n_win = x.shape[1] // w
        frames = self.inp(x).reshape(b * n_win, w, -1) + self.pos
        pos = torch.arange(n_win * w, device=x.device).reshape(n_win, w)
        pad = (pos[None] >= lens[:, None, None]).reshape(b * n_win, w)
        pad = pad & ~pad.all(dim=1, keepdim=True)  # a window wholly past the end: its output is dropped
        q = self.queries.expand(b * n_win, -1, -1)
        for block in self.blocks:
            q = block(q, frames, pad)
        y = self.out(self.norm(q)).reshape(b, n_win * self.n_queries, -1)
        return _mask_out(y, self.output_lengths(lens))


def adapter_options(cfg: Any, path: str = "adapter") -> Dict[str, Any]:
    """The ``adapter`` section checked against the registry: ``{type, <every option of that type>}``
    (defaults filled in). Raises :class:`partlib.config.Invalid` naming the key path."""
    if not isinstance(cfg, dict):
        raise Invalid(path, f"expected a mapping with 'type' ({' | '.join(ADAPTERS)}) and its options, got {cfg!r}")
    cfg = dict(cfg)
    kind = cfg.pop("type", "stack")
    if kind not in ADAPTERS:
        raise Invalid(join(path, "type"), f"expected one of {' | '.join(ADAPTERS)}, got {kind!r}")
    cls = ADAPTERS[kind]
    for key in cfg:
        if key not in cls.OPTIONS:
            raise Invalid(join(path, key), f"unknown key for adapter type {kind} (known: type, {', '.join(cls.OPTIONS)})")
    opts = {**cls.OPTIONS, **cfg}
    for key, value in opts.items():
        default = cls.OPTIONS[key]
        if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise Invalid(join(path, key), f"expected a positive integer, got {value!r}")
        if isinstance(default, float) and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                               and value > 0):
            raise Invalid(join(path, key), f"expected a positive number, got {value!r}")
    return {"type": kind, **opts}


def build_adapter(cfg: dict, in_dim: int, out_dim: int, frame_rate: float) -> Adapter:
    """The adapter of the ``adapter`` config section: ``{type: <registered name>, <its options>}``;
    ``frame_rate`` is the encoder's output frames per second."""
    try:
        opts = adapter_options(cfg)
    except Invalid as e:
        raise ConfigError(f"model config: {e}") from None
    kind = opts.pop("type")
    return ADAPTERS[kind].from_options(in_dim, out_dim, frame_rate, opts)
