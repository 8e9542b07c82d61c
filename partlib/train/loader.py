"""The training loader: a map-style dataset whose item ``m`` is the collated micro-batch ``m`` of
one rank, drawn by the mixture sampler (``partlib.data.batching``) and loaded by a
``FeatureSource`` in DataLoader worker processes.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from partlib import tasks
from partlib.data.batching import MixtureSampler, SpecAug, collate, spec_augment
from partlib.features.source import FeatureSource


class BatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item ``m`` is the collated slice of micro-batch ``m`` for one rank.

    Used with a DataLoader (``batch_size=None``) so that worker processes load features while the
    model trains; the order of items is the order of micro-batch indices, hence deterministic.
    """

    def __init__(self, sampler: MixtureSampler, features: FeatureSource, rank: int = 0, world_size: int = 1,
                 specaug: Optional[SpecAug] = None, seed: int = 0) -> None:
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
        batch["global_n_examples"] = len(global_batch)
        batch["loss_weight"] = weight
        if self.specaug is not None and batch["feats"] is not None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + m)
            batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], self.specaug, gen)
        return batch
