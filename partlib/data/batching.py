"""Batching of examples: length-bounded dynamic batches, the deterministic multi-task mixture
sampler, SpecAugment and collation into the model's batch dict.

Data flow::

    [Example] ──group by (task, language)──▶ dynamic batches, bounded by encoder frames and LLM tokens
    micro-batch index m ──MixtureSampler.batch(m)──▶ a batch: the group is drawn from the mixture
        (task weight × temperature-scaled language share), the batch from that group's shuffled order

The sampler is a pure function of (seed, m): resuming at micro-batch m needs nothing but m, and
every rank of a distributed run draws the same global batch, then takes its own slice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib.common import ConfigError
from partlib.data.examples import Example


def make_batches(
    examples: Sequence[Example], max_frames: int, max_tokens: int, max_utts: int
) -> List[List[Example]]:
    """Cut length-sorted examples into dynamic batches whose *padded* size stays within the limits:
    batch_size × longest frames ≤ max_frames and batch_size × longest tokens ≤ max_tokens."""
    longest = max(examples, key=lambda e: (e.num_frames, e.n_tokens))
    if longest.num_frames > max_frames:
        raise ConfigError(f"batch.max_frames={max_frames} is smaller than the longest utterance "
                          f"({longest.key}: {longest.num_frames} frames)")
    longest_tok = max(examples, key=lambda e: e.n_tokens)
    if longest_tok.n_tokens > max_tokens:
        raise ConfigError(f"batch.max_tokens={max_tokens} is smaller than the longest example "
                          f"({longest_tok.key}: ~{longest_tok.n_tokens} LLM tokens)")
    ordered = sorted(examples, key=lambda e: (e.num_frames, e.n_tokens, e.key))
    batches: List[List[Example]] = []
    cur: List[Example] = []
    mf = mt = 0
    for e in ordered:
        nf, nt = max(mf, e.num_frames), max(mt, e.n_tokens)
        n = len(cur) + 1
        if cur and (n * nf > max_frames or n * nt > max_tokens or n > max_utts):
            batches.append(cur)
            cur, nf, nt = [], e.num_frames, e.n_tokens
        cur.append(e)
        mf, mt = nf, nt
    if cur:
        batches.append(cur)
    return batches


def padding_fraction(batches: Sequence[Sequence[Example]]) -> Tuple[float, float]:
    """Fraction of padded encoder frames and of padded LLM tokens over a set of batches."""
    pf = rf = pt = rt = 0
    for b in batches:
        rf += sum(e.num_frames for e in b)
        pf += len(b) * max(e.num_frames for e in b)
        rt += sum(e.n_tokens for e in b)
        pt += len(b) * max(e.n_tokens for e in b)
    return (1 - rf / pf if pf else 0.0), (1 - rt / pt if pt else 0.0)


class GroupMixture:
    """Which group each micro-batch comes from: a pure function of (seed, micro-batch index).

    Group ``g`` is drawn for micro-batch ``m`` with probability ``w_task(g) · p_lang(g)``, where
    ``p_lang ∝ n^(1/T)`` among the groups of the same task (language sampling with temperature T)
    and ``n`` is the group's size in examples.
    """

    BLOCK = 4096

    def __init__(self, sizes: Dict[Tuple[str, str], int], task_weights: Dict[str, float], temperature: float,
                 seed: int) -> None:
        if temperature <= 0:
            raise ConfigError("sampling.temperature must be positive")
        self.keys = sorted(sizes)
        self.seed = int(seed)
        total_w = sum(task_weights[t] for t in {k[0] for k in self.keys})
        probs = np.zeros(len(self.keys))
        for task in {k[0] for k in self.keys}:
            idx = [i for i, k in enumerate(self.keys) if k[0] == task]
            share = np.array([sizes[self.keys[i]] for i in idx], dtype=float) ** (1.0 / temperature)
            probs[idx] = task_weights[task] / total_w * share / share.sum()
        self.probs = probs / probs.sum()
        self._choices = np.zeros(0, dtype=np.int64)

    def choices(self, upto: int) -> np.ndarray:
        """Group indices (into :attr:`keys`) of micro-batches ``0 .. upto-1``."""
        while len(self._choices) < upto:
            block = len(self._choices) // self.BLOCK
            rng = np.random.default_rng([self.seed, 7919, block])
            new = rng.choice(len(self.keys), size=self.BLOCK, p=self.probs)
            self._choices = np.concatenate([self._choices, new])
        return self._choices[:upto]

    def group_index(self, m: int) -> int:
        return int(self.choices(m + 1)[m])

    def group_of(self, m: int) -> Tuple[str, str]:
        return self.keys[self.group_index(m)]


class MixtureSampler(GroupMixture):
    """Deterministic sampler over in-memory groups of batches: the group of micro-batch ``m`` from
    the mixture, and each group walks through its batches in an order reshuffled every epoch of
    that group."""

    def __init__(self, groups: Dict[Tuple[str, str], List[List[Example]]], task_weights: Dict[str, float],
                 temperature: float, seed: int) -> None:
        super().__init__({k: sum(len(b) for b in v) for k, v in groups.items()}, task_weights, temperature, seed)
        self.groups = [groups[k] for k in self.keys]

    def batch(self, m: int) -> List[Example]:
        """The global batch of micro-batch index ``m`` (pure function of seed and m)."""
        choices = self.choices(m + 1)
        g = int(choices[m])
        pos = int(np.count_nonzero(choices[:m] == g))
        n = len(self.groups[g])
        epoch, i = divmod(pos, n)
        perm = np.random.default_rng([self.seed, g, epoch]).permutation(n)
        return self.groups[g][int(perm[i])]


@dataclass
class SpecAug:
    """SpecAugment masks (:func:`partlib.data.batching.spec_augment`)."""

    freq_masks: int = field(default=2, metadata={"min": 0})
    freq_width: int = field(default=27, metadata={"min": 0})
    time_masks: int = field(default=2, metadata={"min": 0})
    time_width_ratio: float = field(default=0.05, metadata={"min": 0, "max": 1})


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, cfg: SpecAug, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment (frequency and time masks) on [B, T, M] features, in place on a copy.

    Masks stay inside each utterance's true length and use the given generator (deterministic per
    micro-batch).
    """
    out = feats.clone()
    n_mels = feats.shape[2]
    for b in range(feats.shape[0]):
        L = int(lens[b])
        for _ in range(cfg.freq_masks):
            w = int(torch.randint(0, cfg.freq_width + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(1, n_mels - w), (1,), generator=gen))
            out[b, :L, f0:f0 + w] = 0.0
        max_w = max(1, int(L * cfg.time_width_ratio))
        for _ in range(cfg.time_masks):
            w = int(torch.randint(0, max_w + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, L - w), (1,), generator=gen))
            out[b, t0:t0 + w, :] = 0.0
    return out


def collate(examples: Sequence[Example], feats: Optional[List[torch.Tensor]]) -> Dict:
    """The model's batch dict (see partlib.models.SpeechLLM.forward) from examples and features."""
    batch = {
        "utt_ids": [e.utt for e in examples],
        "keys": [e.key for e in examples],
        "tasks": [e.task for e in examples],
        "src_langs": [e.src_lang for e in examples],
        "tgt_langs": [e.tgt_lang for e in examples],
        "src_texts": [e.src_text for e in examples],
        "targets": [e.target for e in examples],
        "feats": None,
        "feat_lens": None,
    }
    if feats is not None and any(f is not None for f in feats):
        n_mels = next(f for f in feats if f is not None).shape[1]
        filled = [f if f is not None else torch.zeros(0, n_mels) for f in feats]
        batch["feat_lens"] = torch.tensor([f.shape[0] for f in filled], dtype=torch.long)
        batch["feats"] = torch.nn.utils.rnn.pad_sequence(filled, batch_first=True)
    return batch
