"""Adapters: encoder states [B, T', D] -> LLM input embeddings [B, N, H], one registry of them.

Every adapter reports :meth:`Adapter.output_lengths` (encoder frames -> embeddings), masks the
outputs beyond each utterance's length to zero, and gives an utterance the same outputs in a batch
as alone (its padding never reaches its outputs). The ``adapter`` section of a model config names
one by ``type``; its other keys are that adapter's options (``OPTIONS``: name -> default).

- ``stack`` (default): stack ``stack`` consecutive frames, Linear-GELU-Linear to the LLM width;
- ``conv``: strided Conv1d (kernel = stride = ``stack``) to ``hidden``, GELU, Linear;
- ``qformer``: a window-level Q-Former as in SALMONN: ``queries`` learned queries attend to each
  window of ``window_s`` seconds of encoder states (``layers`` blocks of self-attention among the
  queries, cross-attention to the window's frames, feed-forward), then a Linear to the LLM width;
- ``transformer``: the PART paper's adapter, "one CNN layer and two Transformer layers": a strided
  Conv1d (``kernel``, ``stride``) to ``dim``, GELU, sinusoidal positions, ``layers`` pre-norm
  Transformer layers (self-attention over the utterance's own frames), then a Linear to the LLM width.

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

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        """Constraints between options (each one alone is checked against its default's type):
        raise :class:`partlib.config.Invalid` with the offending key."""

    def output_lengths(self, lens: Tensor) -> Tensor:
        """Number of embeddings made of ``lens`` encoder frames."""
        raise NotImplementedError


def _valid(lens: Tensor, t: int, device: torch.device) -> Tensor:
    """[B, t] True at the positions below each length."""
    return torch.arange(t, device=device)[None, :] < lens[:, None]


def _zero_pad_groups(x: Tensor, lens: Tensor, k: int) -> Tensor:
    """Zero frames beyond ``lens`` and right-pad the time axis to a multiple of ``k``."""
    t = x.shape[1]
    x = x.masked_fill(~_valid(lens, t, x.device)[..., None], 0.0)
    extra = (-t) % k
    return nn.functional.pad(x, (0, 0, 0, extra)) if extra else x


def _mask_out(y: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
    return y.masked_fill(~_valid(lens, y.shape[1], y.device)[..., None], 0.0), lens


def _check_heads(opts: Mapping[str, Any]) -> None:
    if opts["dim"] % opts["heads"]:
        raise Invalid("heads", f"must divide dim ({opts['dim']}), got {opts['heads']}")


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

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        _check_heads(opts)

    def __init__(self, in_dim: int, out_dim: int, frame_rate: float, window_s: float = 0.33, queries: int = 1,
                 layers: int = 2, dim: int = 256, heads: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        self.window = max(1, round(float(window_s) * frame_rate))
        self.n_queries = int(queries)
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


def _sinusoids(n: int, dim: int, device: torch.device) -> Tensor:
    """[n, dim] float32 sinusoidal positions: sin(p * f_i) then cos(p * f_i), f_i = 10000^(-i/half)."""
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    angle = torch.arange(n, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)[:, :dim]


class _SelfAttentionBlock(nn.Module):
    """Pre-norm Transformer encoder layer: self-attention over the valid frames, then an MLP."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_a, self.norm_f = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x [B, N, dim], keep [B, N] True at the frames that may be attended to."""
        b, n, d = x.shape
        # [B, N, 3*dim] -> 3 x [B, heads, N, dim/heads]
        q, k, v = self.qkv(self.norm_a(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.ffn(self.norm_f(x))


@register_adapter("transformer")
class TransformerAdapter(Adapter):
    """The PART paper's adapter: one CNN layer, then ``layers`` Transformer layers, randomly initialised.

    The paper gives only that composition; the widths, stride, kernel and heads here are our choice
    (defaults: 4x downsampling to 12.5 embeddings/s from Whisper's 50 states/s, as the ``stack``
    adapter of the paper preset, with one frame of context on either side of each group of 4).

    Conv1d(kernel ``kernel``, stride ``stride``) maps the encoder states to width ``dim``: output
    ``j`` sees frames ``[j*s - p, j*s - p + kernel)`` with ``p = (kernel - stride) // 2`` (zeros
    outside the utterance), so an utterance of ``n`` frames gives ``ceil(n / stride)`` embeddings
    and its padding never enters them. Position enters twice: the convolution keeps local order and
    fixed sinusoidal positions of the downsampled frames are added to its GELU output (no learned
    table, so no length limit). The Transformer layers (pre-norm, no dropout) attend only to the
    utterance's own downsampled frames; a final LayerNorm and a Linear map to the LLM width.
    """

    OPTIONS = {"stride": 4, "kernel": 6, "layers": 2, "dim": 1024, "heads": 8, "ffn": 4096}

    @classmethod
    def check_options(cls, opts: Mapping[str, Any]) -> None:
        if opts["kernel"] < opts["stride"]:
            raise Invalid("kernel", f"must be at least stride ({opts['stride']}) not to skip frames, "
                                    f"got {opts['kernel']}")
        _check_heads(opts)

    def __init__(self, in_dim: int, out_dim: int, stride: int = 4, kernel: int = 6, layers: int = 2,
                 dim: int = 1024, heads: int = 8, ffn: int = 4096) -> None:
        super().__init__()
        self.stride, self.kernel = stride, kernel
        self.conv = nn.Conv1d(in_dim, dim, kernel_size=kernel, stride=stride)
        self.blocks = nn.ModuleList(_SelfAttentionBlock(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    def output_lengths(self, lens: Tensor) -> Tensor:
        """ceil(lens / stride): one output per (possibly incomplete) group of ``stride`` frames."""
        return (lens + self.stride - 1) // self.stride

    def forward(self, x: Tensor, lens: Tensor) -> Tuple[Tensor, Tensor]:
        """[B, T', D], [B] -> [B, ceil(T'/stride), H]; outputs beyond the lengths are zero."""
        t = x.shape[1]
        s, k = self.stride, self.kernel
        n = (t + s - 1) // s
        left = (k - s) // 2
        # zero every frame past its utterance, then pad so that exactly n windows fit:
        # the right pad (n-1)*s + k - left - t is >= k - s - left >= 0
        x = _zero_pad_groups(x, lens, 1)
        x = nn.functional.pad(x, (0, 0, left, (n - 1) * s + k - left - t))
        h = nn.functional.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # [B, n, dim]
        h = h + _sinusoids(n, h.shape[-1], h.device).to(h.dtype)
        out_lens = self.output_lengths(lens)
        keep = _valid(out_lens, n, h.device)
        keep = keep | ~keep.any(dim=1, keepdim=True)  # a row with no frame: its outputs are dropped
        for block in self.blocks:
            h = block(h, keep)
        return _mask_out(self.out(self.norm(h)), out_lens)


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
    try:
        cls.check_options(opts)
    except Invalid as e:
        raise Invalid(join(path, e.path), e.message) from None
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
