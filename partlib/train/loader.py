"""The training loaders: the collated micro-batches ``m`` of one rank, made in DataLoader worker
processes — in memory (:class:`BatchDataset`: drawn by the mixture sampler of
``partlib.data.batching``, features from a ``FeatureSource``) or streamed from shard exports
(:class:`StreamDataset`: ``partlib.data.streaming``, audio from the shards, features computed in
the worker) — with their prompts tokenised there too (:class:`PromptTokens`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from partlib import tasks
from partlib.data.batching import MixtureSampler, SpecAug, collate, spec_augment
from partlib.data.streaming import SpeechLengths, StreamPlan
from partlib.features.source import FeatureSource
from partlib.models.prompt import PromptBuilder


class PromptTokens:
    """Adds the training prompt's token tensors (:data:`~partlib.models.prompt.TOKEN_KEYS`: ids,
    speech mask, attention mask, positions, labels; right padding) to a collated batch, in the
    DataLoader worker that made it, so that the model's forward takes tensors only. A row's speech
    span is ``lengths(frames)`` embeddings (the encoder and adapter's output lengths, tabulated);
    a batch with an utterance beyond the table is left to the model (which reports it)."""

    def __init__(self, prompt: PromptBuilder, lengths: SpeechLengths) -> None:
        self.prompt, self.lengths = prompt, lengths

    def __call__(self, batch: Dict) -> Dict:
        n = len(batch["tasks"])
        frames = batch["feat_lens"].tolist() if batch.get("feat_lens") is not None else [0] * n
        if max(frames, default=0) >= len(self.lengths.table):
            return batch
        n_speech = [self.lengths(f) if f and tasks.get(t).speech else 0 for t, f in zip(batch["tasks"], frames)]
        tokens, _ = self.prompt.tokenise(batch, n_speech, train=True, left_pad=False)
        batch.update(tokens)
        return batch


def move_batch(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """The batch's tensors on ``device``."""
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def augment(batch: Dict, specaug: Optional[SpecAug], seed: int, m: int) -> Dict:
    """SpecAugment on a batch's features, from a generator of (seed, micro-batch index)."""
    if specaug is not None and batch["feats"] is not None:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + m)
        batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], specaug, gen)
    return batch


class BatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item ``m`` is the collated slice of micro-batch ``m`` for one rank:
    the sampler's batches are global (within ``batch.*`` summed over ranks) and rank ``r`` takes
    their examples ``r, r + world_size, ...``, so the global batches do not depend on the number
    of ranks.

    Used with a DataLoader (``batch_size=None``) so that worker processes load features while the
    model trains; the order of items is the order of micro-batch indices, hence deterministic.
    """

    def __init__(self, sampler: MixtureSampler, features: FeatureSource, rank: int = 0, world_size: int = 1,
                 specaug: Optional[SpecAug] = None, seed: int = 0, tokens: Optional[PromptTokens] = None) -> None:
        self.tokens = tokens
        self.sampler = sampler
        self.features = features
        self.rank = rank
        self.world_size = world_size
        self.specaug = specaug
        self.seed = seed

    def __len__(self) -> int:  # effectively unbounded; the trainer decides how many to take
        return 2**62

    def __getitem__(self, m: int) -> Dict:
        global_batch = self.sampler.batch(m)
        mine = global_batch[self.rank :: self.world_size]
        # A rank whose slice of a small global batch is empty still runs forward/backward (sharded
        # training needs every rank in its collectives): it gets one example whose loss counts 0.
        weight = 1.0 if mine else 0.0
        mine = mine or global_batch[:1]
        feats = None
        if mine and tasks.get(mine[0].task).speech:
            feats = self.features.load([(e.dir_index, e.utt) for e in mine])
        batch = collate(mine, feats)
        if self.tokens is not None:
            batch = self.tokens(batch)
        batch["global_n_examples"] = len(global_batch)
        batch["loss_weight"] = weight
        return augment(batch, self.specaug, self.seed, m)


class StreamDataset(torch.utils.data.IterableDataset):
    """The micro-batches ``start .. end-1`` of one rank, streamed from shard exports
    (:mod:`partlib.data.streaming`).

    Worker ``w`` of ``W`` produces the micro-batches ``m ≡ start + w (mod W)`` as reader
    ``rank · W + m mod W``; the DataLoader takes one item from each worker in turn, so batches
    arrive in micro-batch order. A batch is this rank's share of the global micro-batch: the plan
    cuts it to ``batch.* // world_size`` (:func:`partlib.data.streaming.rank_limits`). Each batch
    carries ``stream_state``: (reader, group, position after it), which the trainer keeps for the
    checkpoint; ``state`` restores those positions.
    """

    OPEN_TARS = 8  # shard tars kept open per worker (a window spans one or two)

    def __init__(self, plan: StreamPlan, n_mels: int, rank: int, world_size: int, num_workers: int,
                 start: int, end: int, state: Optional[Dict] = None, specaug: Optional[SpecAug] = None,
                 seed: int = 0, tokens: Optional[PromptTokens] = None) -> None:
        self.plan, self.n_mels, self.tokens = plan, n_mels, tokens
        self.rank, self.world_size, self.workers = rank, world_size, max(1, num_workers)
        self.start, self.end, self.state = start, end, state or {}
        self.specaug, self.seed = specaug, seed

    def __iter__(self) -> Iterator[Dict]:
        from partlib.data.shards import ShardAudio
        from partlib.features.compute import compute_features

        info = torch.utils.data.get_worker_info()
        w = info.id if info is not None else 0
        n_readers = self.world_size * self.workers
        first = self.start + w
        reader = self.rank * self.workers + first % self.workers
        streams = self.plan.streams(reader, n_readers)
        for gid, pos in self.state.get(reader, {}).items():
            streams[gid].restore(pos)
        tars: "OrderedDict[Tuple[int, int], ShardAudio]" = OrderedDict()
        for m in range(first, self.end, self.workers):
            gid = self.plan.mixture.group_index(m)
            items = streams[gid].next_batch()
            exs = [e for e, _, _ in items]
            feats = None
            if tasks.get(exs[0].task).speech:
                wavs = []
                for e, si, shard in items:
                    if (si, shard) not in tars:
                        tars[(si, shard)] = ShardAudio(self.plan.sources[si].shard_path(shard, "recording"))
                        if len(tars) > self.OPEN_TARS:
                            tars.popitem(last=False)[1].close()
                    tars.move_to_end((si, shard))
                    wavs.append(tars[(si, shard)].load(e.utt))
                feats = compute_features(wavs, self.n_mels, utts=[e.utt for e in exs])
            batch = collate(exs, feats)
            if self.tokens is not None:
                batch = self.tokens(batch)
            batch["loss_weight"] = 1.0
            batch["stream_state"] = (reader, gid, streams[gid].state())
            yield augment(batch, self.specaug, self.seed, m)
        for t in tars.values():
            t.close()
