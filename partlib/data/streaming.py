"""Streaming training data from shard exports (:mod:`partlib.data.shards`): memory per reader
bounded by a window of utterances, whatever the size of the corpus.

Data flow::

    micro-batch m ──GroupMixture──▶ group g = (task, language)       (same mixture as in memory)
    reader r (one per rank and DataLoader worker) ──GroupStream(g, r)──▶ its next batch of g

A *reader* is one of ``world_size × max(1, num_workers)`` consumers; reader ``r`` serves the
micro-batches ``m ≡ r mod W`` of its rank (``W`` workers). The schedule's ``batch`` bounds a global
micro-batch, all ranks together; a rank's batch of micro-batch m is its own reader's, so readers cut
their batches to the rank's share (:func:`rank_limits`). A group's stream over one epoch:

1. the group's *pieces* — every shard of its data holding the language, split into
   ``ceil(readers / shards)`` strided slices when there are fewer shards than readers (empty
   slices dropped) — are permuted from (seed, group, epoch) and dealt out: reader r takes pieces
   r, r + R, ...; a group with fewer pieces than readers gives each reader one (they repeat);
2. the reader reads its pieces' cut metadata in order, ``window`` utterances at a time (the
   shuffle buffer); a window becomes the task's examples, cut into length-bounded dynamic batches
   (:func:`partlib.data.batching.make_batches`: sorted by length, i.e. bucketed by duration),
   emitted in an order shuffled from (seed, group, reader, epoch, window);
3. audio is read from the window's shard tars by offset (each tar opened once per window) and
   decoded in the worker; features are computed there too.

When a stream runs dry its next epoch starts, with a new permutation of the pieces: a group drawn
more often than its size allows repeats its data in a fresh order, as the in-memory sampler does.
Every example of a reader's pieces is emitted exactly once per epoch of that stream.

Position: ``(epoch, window, batches emitted in the window)`` per group and reader. Restoring it
rebuilds the window from its shards' metadata and skips the emitted batches, so a resumed run
sees exactly the batches an uninterrupted run sees. The layout (world size, workers) is part of
the data order: resuming with another layout is an error.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from partlib import tasks
from partlib.common import ConfigError
from partlib.data import langs, shards
from partlib.data.batching import GroupMixture, make_batches
from partlib.data.examples import (Example, Row, TaskSpec, TextLengths, directions, finish_examples,
                                   frames_of_seconds, utterance_targets)

Key = Tuple[str, str]  # (task, source language)


@dataclass(frozen=True)
class Source:
    """One shard export feeding one task spec of a stage."""

    spec_index: int
    export_dir: Path
    manifest: Dict[str, Any]

    def shard_path(self, shard: int, field: str) -> Path:
        return self.export_dir / self.manifest["shards"][shard]["files"][field]["path"]


@dataclass(frozen=True)
class Piece:
    """The cuts of one language in one shard whose ordinal (among that language's) is ``phase`` mod
    ``stride``."""

    source: int
    shard: int
    stride: int
    phase: int
    count: int


@dataclass
class Position:
    """Where a group's stream of one reader stands."""

    epoch: int = 0
    window: int = 0
    emitted: int = 0


def sources_of(specs: Sequence[TaskSpec], dirs_of_spec: Sequence[Sequence[Path]]) -> List[Source]:
    """The shard exports of every spec's data dirs; a dir without a complete, current export is an
    error naming it."""
    out = []
    manifests: Dict[Path, Dict[str, Any]] = {}  # a dir that feeds several tasks is read and hashed once
    for i, dirs in enumerate(dirs_of_spec):
        task = tasks.get(specs[i].task)
        for d in dirs:
            export = shards.shard_dir(d)
            if export not in manifests:
                manifests[export] = shards.load_manifest(export)
                shards.check_current(d, manifests[export])
            manifest = manifests[export]
            if task.speech and not manifest["audio"]:
                raise ConfigError(f"task {task.name!r} needs speech, but {d} has no audio")
            out.append(Source(i, export, manifest))
    return out


def serves(spec: TaskSpec, lang: str) -> bool:
    """Whether a task spec takes utterances of ``lang`` (its ``langs``, when it has them)."""
    return spec.langs is None or lang in {langs.canonical(x) for x in spec.langs}


def group_sizes(specs: Sequence[TaskSpec], sources: Sequence[Source]) -> Dict[Key, int]:
    """Examples per (task, language) from the manifests: utterances x target languages (what the
    in-memory sampler counts, without reading the data)."""
    sizes: Dict[Key, int] = {}
    for i, spec in enumerate(specs):
        mine = [s for s in sources if s.spec_index == i]
        if mine and not any(serves(spec, lang) for s in mine for lang in s.manifest["languages"]):
            raise ConfigError(f"task {spec.task!r} has no examples in {[str(s.export_dir) for s in mine]} for "
                              f"languages {sorted(spec.langs or [])}")
    for s in sources:
        spec = specs[s.spec_index]
        task = tasks.get(spec.task)
        for lang, info in s.manifest["languages"].items():
            if not serves(spec, lang):
                continue
            n = 1
            if task.cross_lingual:  # checked here, before any worker reads the data
                targets = directions(spec, lang, s.manifest["translations"])
                for t in targets:
                    if t not in s.manifest["translations"]:
                        raise ConfigError(f"task {task.name!r} {lang}->{t}: {s.manifest['source']} has no text.{t} "
                                          f"(translations present: {s.manifest['translations'] or 'none'})")
                n = len(targets)
            if n:
                sizes[(spec.task, lang)] = sizes.get((spec.task, lang), 0) + info["utterances"] * n
    return sizes


class GroupStream:
    """The batches of one group for one reader (see the module docstring)."""

    def __init__(self, key: Key, gid: int, specs: Sequence[TaskSpec], sources: Sequence[Source], reader: int,
                 n_readers: int, seed: int, window: int, limits: Tuple[int, int, int],
                 text_lengths: TextLengths, speech_len: Callable[[int], int]) -> None:
        self.key, self.gid, self.specs, self.sources = key, gid, specs, sources
        self.reader, self.n_readers, self.seed, self.window, self.limits = reader, n_readers, seed, window, limits
        self.text_lengths, self.speech_len = text_lengths, speech_len
        task, lang = key
        self._shards = [(si, k, rec["languages"][lang]) for si, s in enumerate(sources)
                        if specs[s.spec_index].task == task and serves(specs[s.spec_index], lang)
                        for k, rec in enumerate(s.manifest["shards"]) if rec["languages"].get(lang)]
        if not self._shards:
            raise ConfigError(f"group {task}/{lang}: no shard holds this language")
        self.pos = Position()
        self._epoch_emitted = False  # whether the current epoch has given a batch yet
        self._batches: Optional[List[List[Tuple[Example, int, int]]]] = None  # the current window's
        self._cuts: Optional[Iterator[Tuple[int, int, Dict[str, Any]]]] = None
        self._cuts_at: Tuple[int, int] = (-1, -1)  # (epoch, cut ordinal) where _cuts stands

    # -- the epoch's pieces ------------------------------------------------------------------
    def pieces(self, epoch: int) -> List[Piece]:
        """This reader's pieces of ``epoch``, in reading order. A group with fewer utterances than
        readers has fewer pieces: then each reader takes one, and pieces repeat among readers."""
        stride = max(1, math.ceil(self.n_readers / len(self._shards)))
        all_pieces = [piece for si, k, n in self._shards for p in range(stride)
                      for piece in [Piece(si, k, stride, p, len(range(p, n, stride)))] if piece.count]
        perm = np.random.default_rng([self.seed, 104729, self.gid, epoch]).permutation(len(all_pieces))
        if len(all_pieces) < self.n_readers:
            return [all_pieces[int(perm[self.reader % len(all_pieces)])]]
        return [all_pieces[int(i)] for i in perm[self.reader::self.n_readers]]

    def _piece_cuts(self, piece: Piece, skip: int) -> Iterator[Dict[str, Any]]:
        src = self.sources[piece.source]
        lang = self.key[1]
        j = 0  # ordinal among the shard's cuts of this language
        taken = 0
        for cut in shards.read_cuts(src.export_dir, src.manifest["shards"][piece.shard]):
            if cut["supervisions"][0]["language"] != lang:
                continue
            if j % piece.stride == piece.phase:
                if taken >= skip:
                    yield cut
                taken += 1
            j += 1

    def _epoch_cuts(self, epoch: int, start: int) -> Iterator[Tuple[int, int, Dict[str, Any]]]:
        """(source, shard, cut) of the reader's epoch from cut ordinal ``start`` on."""
        for piece in self.pieces(epoch):
            if start >= piece.count:
                start -= piece.count
                continue
            for cut in self._piece_cuts(piece, start):
                yield piece.source, piece.shard, cut
            start = 0

    # -- windows -----------------------------------------------------------------------------
    def _read_window(self, epoch: int, w: int) -> List[Tuple[int, int, Dict[str, Any]]]:
        first = w * self.window
        if self._cuts is None or self._cuts_at != (epoch, first):
            self._cuts = self._epoch_cuts(epoch, first)
        out = []
        for item in self._cuts:
            out.append(item)
            if len(out) == self.window:
                break
        self._cuts_at = (epoch, first + len(out))
        return out

    def _examples(self, items: Sequence[Tuple[int, int, Dict[str, Any]]]) -> List[Tuple[Example, int, int]]:
        task = tasks.get(self.key[0])
        rows: List[Row] = []
        where: List[Tuple[int, int]] = []
        for si, shard, cut in items:
            src = self.sources[si]
            spec = self.specs[src.spec_index]
            sup = cut["supervisions"][0]
            custom = cut.get("custom", {})
            utt, lang = cut["id"], sup["language"]
            frames = int(custom.get("num_frames", 0)) if task.speech else 0
            translations = custom.get("translations", {})
            for tgt, src_text, target in utterance_targets(spec, utt, lang, sup.get("text"),
                                                           src.manifest["translations"], translations.get,
                                                           Path(src.manifest["source"])):
                rows.append((src.manifest["source"], si, utt, lang, tgt, frames, src_text, target))
                where.append((si, shard))
        exs = finish_examples(task.name, rows, self.text_lengths, self.speech_len) if rows else []
        return [(e, si, shard) for e, (si, shard) in zip(exs, where)]

    def _build(self, epoch: int, w: int) -> Optional[List[List[Tuple[Example, int, int]]]]:
        """The batches of window ``w`` of ``epoch`` in emission order; None past the epoch's end."""
        items = self._read_window(epoch, w)
        if not items:
            return None
        exs = self._examples(items)
        if not exs:
            return []
        where = {id(e): (e, si, shard) for e, si, shard in exs}  # not by key: two dirs may share a name
        batches = make_batches([e for e, _, _ in exs], *self.limits)
        order = np.random.default_rng([self.seed, 15485863, self.gid, self.reader, epoch, w]).permutation(len(batches))
        return [[where[id(e)] for e in batches[int(i)]] for i in order]

    def next_batch(self) -> List[Tuple[Example, int, int]]:
        """The next batch: ``(example, source index, shard index)`` each; advances the position."""
        while True:
            if self._batches is None:
                self._batches = self._build(self.pos.epoch, self.pos.window)
                if self._batches is None:  # the epoch is over
                    if not self._epoch_emitted:  # every reader has utterances: the task made nothing of them
                        raise ConfigError(f"task {self.key[0]!r} makes no examples of the {self.key[1]} "
                                          f"utterances of reader {self.reader} of {self.n_readers}")
                    self.pos, self._epoch_emitted = Position(self.pos.epoch + 1, 0, 0), False
                    continue
            if self.pos.emitted < len(self._batches):
                batch = self._batches[self.pos.emitted]
                self.pos.emitted += 1
                self._epoch_emitted = True
                return batch
            self._batches = None
            self.pos = Position(self.pos.epoch, self.pos.window + 1, 0)

    def state(self) -> Tuple[int, int, int]:
        return self.pos.epoch, self.pos.window, self.pos.emitted

    def restore(self, state: Sequence[int]) -> None:
        """Continue from a :meth:`state`: rebuild that window and skip what it already emitted."""
        epoch, window, emitted = (int(x) for x in state)
        self._batches, self._cuts = None, None
        self.pos = Position(epoch, window, 0)
        self._epoch_emitted = window > 0 or emitted > 0
        if emitted:
            self._batches = self._build(epoch, window) or []
            self.pos.emitted = emitted


class SpeechLengths:
    """Speech embeddings per log-mel frame count, tabulated up to a bound (picklable)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.int64)

    def __call__(self, frames: int) -> int:
        if frames >= len(self.table):
            raise ConfigError(f"batch.max_frames={len(self.table) - 1} is smaller than an utterance of "
                              f"{frames} frames")
        return int(self.table[frames])


def rank_limits(budget: Tuple[int, int, int], world_size: int) -> Tuple[int, int, int]:
    """One rank's share of a global micro-batch budget ``(max_frames, max_tokens, max_utts)``: each
    bound divided by the number of ranks, rounded down, so that the ranks' batches together stay
    within the budget."""
    frames, tokens, utts = budget
    if utts < world_size:
        raise ConfigError(f"batch.max_utts={utts} bounds a micro-batch over all {world_size} ranks: it must be "
                          f">= {world_size}, one utterance per rank")
    return frames // world_size, tokens // world_size, utts // world_size


class StreamPlan:
    """What every reader of a stage shares: sources, groups, the mixture, batch bounds.

    ``budget`` bounds one global micro-batch (the schedule's ``batch``: padded frames, padded
    tokens, utterances, summed over the ``world_size`` ranks). Each rank streams its own batch of
    the micro-batch, so every reader cuts its batches to the rank's share, :attr:`limits`
    (:func:`rank_limits`).
    """

    def __init__(self, specs: Sequence[TaskSpec], sources: Sequence[Source], task_weights: Dict[str, float],
                 temperature: float, seed: int, window: int, budget: Tuple[int, int, int],
                 text_lengths: TextLengths, speech_len: Callable[[int], int],
                 world_size: int = 1) -> None:
        if window < 1:
            raise ConfigError(f"stream window must be >= 1 utterance, got {window}")
        self.specs, self.sources = list(specs), list(sources)
        self.sizes = group_sizes(specs, sources)
        if not self.sizes:
            raise ConfigError("no examples in the stage's shard exports")
        self.mixture = GroupMixture(self.sizes, task_weights, temperature, seed)
        self.seed, self.window, self.budget = seed, window, budget
        self.limits = rank_limits(budget, world_size)
        self.text_lengths, self.speech_len = text_lengths, speech_len
        share = f" ({self.limits[0]} per rank of {world_size})" if world_size > 1 else ""
        for s in self.sources:  # the check make_batches does in memory, before any worker starts
            longest = max((r.get("longest_s", 0.0) for r in s.manifest["shards"]), default=0.0)
            if tasks.get(self.specs[s.spec_index].task).speech and frames_of_seconds(longest) > self.limits[0]:
                raise ConfigError(f"batch.max_frames={budget[0]}{share} is smaller than the longest utterance of "
                                  f"{s.export_dir} ({frames_of_seconds(longest)} frames)")

    def fingerprint(self) -> str:
        """What the data order depends on besides the layout: groups, window, the per-rank batch
        bounds, seed and each export (a checkpoint's reader positions mean nothing for another)."""
        body = [[list(k) for k in self.mixture.keys], self.window, list(self.limits), self.seed,
                [[str(s.export_dir), s.manifest["source_hash"], s.manifest["options"], len(s.manifest["shards"])]
                 for s in self.sources]]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()

    def streams(self, reader: int, n_readers: int) -> List[GroupStream]:
        """One stream per group (indexed like ``mixture.keys``) for one reader."""
        return [GroupStream(key, gid, self.specs, self.sources, reader, n_readers, self.seed, self.window,
                            self.limits, self.text_lengths, self.speech_len)
                for gid, key in enumerate(self.mixture.keys)]

    def hours(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """``{task: {lang: {utterances, hours}}}`` from the manifests (utterances = examples)."""
        out: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for s in self.sources:
            task = self.specs[s.spec_index].task
            for lang, info in s.manifest["languages"].items():
                if (task, lang) not in self.sizes:
                    continue
                if not serves(self.specs[s.spec_index], lang):
                    continue
                d = out.setdefault(task, {}).setdefault(lang, {"utterances": self.sizes[(task, lang)], "hours": 0.0})
                d["hours"] = round(d["hours"] + info["hours"], 4) if s.manifest["audio"] and tasks.get(task).speech else None
        return out

    def first_windows(self) -> List[Example]:
        """The examples of every group's first window as reader 0 of 1 reads it: a sample of the
        data that reads only a window of metadata per group."""
        return [e for st in self.streams(0, 1) for batch in (st._build(0, 0) or []) for e, _, _ in batch]

    def longest_s(self) -> float:
        return max((r.get("longest_s", 0.0) for s in self.sources if s.manifest["audio"]
                    for r in s.manifest["shards"]), default=0.0)
