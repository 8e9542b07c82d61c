"""The data of one alignment stage: its training batches, held in memory (:class:`InMemoryStageData`)
or streamed from shard exports (:class:`StreamingStageData`, ``features="shards"``), and its dev
set (always in memory). :func:`make_stage_data` builds the one that ``features`` asks for; the
trainer uses the :class:`StageData` interface only.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from partlib import tasks
from partlib.common import ConfigError
from partlib.data.batching import MixtureSampler, make_batches, padding_fraction
from partlib.data.datadir import DataDir
from partlib.data.examples import Example, build_examples, directions, resolve_data_dirs
from partlib.data.streaming import SpeechLengths, StreamPlan, serves, sources_of
from partlib.features.source import FeatureSource
from partlib.features.whisper_mel import FRAMES_PER_SECOND
from partlib.models.prompt import PromptLengths
from partlib.train.loader import BatchDataset, PromptTokens, StreamDataset
from partlib.train.schedule import StageConfig


class StageData(ABC):
    """Training data and the dev set of one stage. ``world_size``: the ranks that share each
    micro-batch (streaming cuts each rank's batches to its share of ``stage.batch``)."""

    streaming: bool = False

    def __init__(self, stage: StageConfig, model, data_root: Optional[str], seed: int,
                 features: str, world_size: int = 1) -> None:
        self.stage = stage
        self.n_mels = model.n_mels
        text_lengths = PromptLengths(model.prompt)
        self.dirs: List[DataDir] = []
        self.dir_index: Dict[Path, int] = {}
        weights: Dict[str, float] = {}
        for spec in stage.tasks:
            weights[spec.task] = weights.get(spec.task, 0.0) + spec.weight
        self._load_training(model, data_root, seed, weights, text_lengths, world_size)
        self.dev_examples = self._dev_examples(model, data_root, text_lengths)
        self.features = FeatureSource(self.dirs, model.n_mels, features)  # after dev dirs joined self.dirs

    # -- what each kind provides ---------------------------------------------------------------
    @abstractmethod
    def _load_training(self, model, data_root: Optional[str], seed: int, weights: Dict[str, float],
                       text_lengths: PromptLengths, world_size: int) -> None:
        """Index (or plan the streaming of) the training examples of ``stage.tasks``."""

    @abstractmethod
    def describe(self) -> str:
        """One line on the training data for the log."""

    @abstractmethod
    def summary(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """``{task: {lang: {utterances, hours}}}`` of the training data (hours None for text tasks)."""

    @abstractmethod
    def longest_s(self) -> float:
        """The longest training utterance in seconds."""

    @abstractmethod
    def _sample_pool(self) -> List[Example]:
        """The training examples :meth:`speech_sample` picks from."""

    @abstractmethod
    def _directions(self) -> Set[Tuple[str, str, str]]:
        """(task, source language, target language) of the cross-lingual training examples."""

    @abstractmethod
    def dataset(self, rank: int, world_size: int, num_workers: int, start: int, end: int,
                stream_state: Dict[int, Dict[int, Tuple[int, int, int]]], specaug, seed: int,
                tokens: PromptTokens) -> Tuple[torch.utils.data.Dataset, Optional[Sequence[int]]]:
        """The DataLoader dataset of this rank's micro-batches ``start .. end-1`` and the sampler of
        their indices (None: the dataset iterates them itself)."""

    def fingerprint(self) -> Optional[str]:
        """What a checkpoint's reader positions depend on (streaming only; None in memory)."""
        return None

    # -- shared ---------------------------------------------------------------------------------
    def speech_sample(self, n: int) -> List[Example]:
        """At most ``n`` speech examples spread over the training data (streaming: from the first
        window of every group as reader 0 of 1 reads it)."""
        exs = [e for e in self._sample_pool() if e.num_frames]
        return exs[::max(1, math.ceil(len(exs) / n))]

    def directions(self) -> Dict[str, Dict[str, List[str]]]:
        """``{task: {source language: [target languages]}}`` of the cross-lingual tasks."""
        out: Dict[str, Dict[str, List[str]]] = {}
        for task, src, tgt in sorted(self._directions()):
            out.setdefault(task, {}).setdefault(src, []).append(tgt)
        return out

    def _load_dirs(self, patterns: Sequence[str], data_root: Optional[str]) -> List[DataDir]:
        out = []
        for p in resolve_data_dirs(patterns, data_root):
            if p not in self.dir_index:
                self.dir_index[p] = len(self.dirs)
                self.dirs.append(DataDir.load(p))
            out.append(self.dirs[self.dir_index[p]])
        return out

    def _dev_examples(self, model, data_root, text_lengths) -> List[Example]:
        dev = self.stage.dev
        if not dev.data:
            return []
        out: List[Example] = []
        for spec in self.stage.tasks:
            dirs = self._load_dirs(dev.data, data_root)
            exs: List[Example] = []
            for d in dirs:
                if tasks.get(spec.task).speech and not d.has_audio():
                    continue
                try:
                    exs += build_examples(spec, [d], text_lengths, model.speech_embed_length,
                                          dir_offset=self.dir_index[d.path])
                except ConfigError:
                    continue  # a dev dir that does not serve this task (e.g. no translations)
            # A fixed, evenly spaced subset per task: deterministic and language-balanced enough.
            exs.sort(key=lambda e: e.key)
            n = dev.max_utts
            if len(exs) > n:
                exs = [exs[int(i)] for i in np.linspace(0, len(exs) - 1, n)]
            out += exs
        return out


class InMemoryStageData(StageData):
    """Every training example in memory, batched per (task, language) group and drawn by the
    mixture sampler (a pure function of the micro-batch index)."""

    def _load_training(self, model, data_root, seed, weights, text_lengths, world_size) -> None:
        b = self.stage.batch
        self.examples: List[Example] = []
        self.groups: Dict[Tuple[str, str], List[List[Example]]] = {}
        for spec in self.stage.tasks:
            exs = []
            for d in self._load_dirs(spec.data, data_root):
                exs += build_examples(spec, [d], text_lengths, model.speech_embed_length,
                                      dir_offset=self.dir_index[d.path])
            by_lang: Dict[str, List[Example]] = {}
            for e in exs:
                by_lang.setdefault(e.src_lang, []).append(e)
            for lang, lex in by_lang.items():
                self.groups.setdefault((spec.task, lang), []).extend(
                    make_batches(lex, b.max_frames, b.max_tokens, b.max_utts))
            self.examples += exs
        self.sampler = MixtureSampler(self.groups, weights, self.stage.sampling.temperature, seed)

    def describe(self) -> str:
        pad_frames, pad_tokens = padding_fraction([b for g in self.groups.values() for b in g])
        return (f"{len(self.examples)} examples in {len(self.groups)} groups "
                f"({sum(len(g) for g in self.groups.values())} batches); padding: {100 * pad_frames:.1f}% frames, "
                f"{100 * pad_tokens:.1f}% tokens")

    def summary(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        out: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for e in self.examples:
            d = out.setdefault(e.task, {}).setdefault(e.src_lang, {"utterances": 0, "frames": 0})
            d["utterances"] += 1
            d["frames"] += e.num_frames
        for by_lang in out.values():
            for d in by_lang.values():  # log-mel frames are 10 ms
                frames = d.pop("frames")
                d["hours"] = round(frames / (3600 * FRAMES_PER_SECOND), 4) if frames else None
        return out

    def longest_s(self) -> float:
        return max((e.num_frames for e in self.examples), default=0) / FRAMES_PER_SECOND

    def _sample_pool(self) -> List[Example]:
        return self.examples

    def _directions(self) -> Set[Tuple[str, str, str]]:
        return {(e.task, e.src_lang, e.tgt_lang) for e in self.examples if tasks.get(e.task).cross_lingual}

    def dataset(self, rank, world_size, num_workers, start, end, stream_state, specaug, seed, tokens):
        return (BatchDataset(self.sampler, self.features, rank, world_size, specaug, seed, tokens),
                range(start, end))


class StreamingStageData(StageData):
    """Training examples streamed from shard exports: a :class:`StreamPlan` of (task, language)
    streams per reader; the checkpoint holds each reader's position."""

    streaming = True

    def _load_training(self, model, data_root, seed, weights, text_lengths, world_size) -> None:
        stage, b = self.stage, self.stage.batch
        frames = torch.arange(b.max_frames + 1)
        table = model.adapter.output_lengths(model.encoder.output_lengths(frames))
        sources = sources_of(stage.tasks, [resolve_data_dirs(s.data, data_root) for s in stage.tasks])
        self.plan = StreamPlan(stage.tasks, sources, weights, stage.sampling.temperature, seed,
                               stage.sampling.window, (b.max_frames, b.max_tokens, b.max_utts),
                               text_lengths, SpeechLengths(table.numpy()), world_size)

    def describe(self) -> str:
        n = sum(len(s.manifest["shards"]) for s in self.plan.sources)
        return (f"streaming {sum(self.plan.sizes.values())} examples in {len(self.plan.sizes)} groups from "
                f"{n} shards of {len(self.plan.sources)} exports (window {self.plan.window} utterances)")

    def summary(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        return self.plan.hours()

    def longest_s(self) -> float:
        return self.plan.longest_s()

    def _sample_pool(self) -> List[Example]:
        return self.plan.first_windows()

    def _directions(self) -> Set[Tuple[str, str, str]]:
        return {(spec.task, lang, t) for s in self.plan.sources for spec in [self.plan.specs[s.spec_index]]
                if tasks.get(spec.task).cross_lingual for lang in s.manifest["languages"]
                if serves(spec, lang) for t in directions(spec, lang, s.manifest["translations"])}

    def dataset(self, rank, world_size, num_workers, start, end, stream_state, specaug, seed, tokens):
        return (StreamDataset(self.plan, self.n_mels, rank, world_size, num_workers, start, end, stream_state,
                              specaug, seed, tokens), None)

    def fingerprint(self) -> Optional[str]:
        return self.plan.fingerprint()


def make_stage_data(stage: StageConfig, model, data_root: Optional[str], seed: int, features: str,
                    world_size: int = 1) -> StageData:
    """The stage's data as ``features`` asks: streamed from shard exports (``shards``), else in memory."""
    kind = StreamingStageData if features == "shards" else InMemoryStageData
    return kind(stage, model, data_root, seed, features, world_size)
