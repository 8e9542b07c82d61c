"""Training checkpoints: atomic writes, checksums, a ``latest`` pointer, keep-last-K plus best-N
retention, and a fallback to the previous checkpoint when the newest is damaged.

Layout of ``<stage_dir>/checkpoints/``::

    ckpt-000100.pt          model (trainable parameters + buffers), optimizer, scheduler, step, RNG states
    ckpt-000100.dcp/        FSDP runs: the model entries and optimizer state as every rank's shards
                            (torch.distributed.checkpoint); the .pt then holds the rest
    ckpt-000100.pt.sha256   SHA-256 of the .pt (computed while it was written) and of every shard file
                            (``sha256sum -c`` format, paths relative to the directory)
    latest                  the file name of the newest complete checkpoint
    best.json               [[metric, step], ...] of the best-N evaluations, best first

A checkpoint counts only with its checksum file, which is written after it and its shards (or,
one written by a version without checksums, when ``latest`` names it): a kill during a save leaves
the previous checkpoint the newest. Temporary files of a save cut short are removed at the next
start (:meth:`CheckpointManager.remove_stale`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from partlib.common import PartError, PathLike, atomic_open, atomic_write, file_sha256, get_logger

logger = get_logger("partlib.train.checkpoint")
SUFFIX = ".sha256"  # the checksum file beside each checkpoint
CORRUPT = ".corrupt"  # a damaged checkpoint, moved aside for inspection


def ckpt_name(step: int) -> str:
    return f"ckpt-{step:06d}.pt"


def shards_name(step: int) -> str:
    """The directory of a checkpoint's shards (FSDP runs)."""
    return f"ckpt-{step:06d}.dcp"


def step_of(name: str) -> int:
    """The step of a checkpoint file name (:func:`ckpt_name`)."""
    return int(name.split("-")[1].split(".")[0])


class CheckpointError(PartError):
    """A checkpoint that cannot be used: missing, truncated or not matching its checksum."""


class _HashingWriter:
    """A binary file that hashes what goes through it: the checksum costs no second read."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def rng_state() -> Dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Saves and restores training state of one alignment stage."""

    def __init__(self, directory: PathLike, keep_last: int = 3, best_n: int = 3, higher_is_better: bool = False,
                 writer: bool = True) -> None:
        """``writer``: whether this process writes ``best.json`` (rank 0 of a multi-process run;
        the others keep the same list in memory: :meth:`set_best`, :meth:`record_metric`)."""
        self.dir = Path(directory)
        self.keep_last = max(1, keep_last)
        self.best_n = max(1, best_n)
        self.higher_is_better = higher_is_better
        self.writer = writer
        self._best: Optional[List[Tuple[float, int]]] = None  # None: not read yet

    # ---- best-N bookkeeping -------------------------------------------------------------
    def best(self) -> List[Tuple[float, int]]:
        """The best-N evaluations, best first (``best.json``, read once)."""
        if self._best is None:
            path = self.dir / "best.json"
            self._best = [(float(v), int(s)) for v, s in json.loads(path.read_text())] if path.is_file() else []
        return list(self._best)

    def set_best(self, entries: List[Tuple[float, int]]) -> None:
        """Adopt the writer's list (after it resumed) without reading the file."""
        self._best = [(float(v), int(s)) for v, s in entries]

    def _write_best(self, entries: List[Tuple[float, int]]) -> None:
        self._best = list(entries)
        if self.writer:
            atomic_write(self.dir / "best.json", json.dumps(self._best) + "\n")

    def record_metric(self, value: float, step: int) -> bool:
        """Add a dev evaluation; return True if it entered the best-N list."""
        entries = [e for e in self.best() if e[1] != step] + [(float(value), int(step))]
        sign = -1.0 if self.higher_is_better else 1.0
        entries.sort(key=lambda e: (sign * e[0], e[1]))
        kept = entries[: self.best_n]
        self._write_best(kept)
        return (float(value), int(step)) in kept

    # ---- save / load --------------------------------------------------------------------
    def shards_tmp(self, step: int) -> Path:
        """Where the ranks write the shards of ``step`` before :meth:`save` renames them in."""
        return self.dir / f".{shards_name(step)}.tmp"

    def save(self, step: int, state: Dict[str, Any], shards: Optional[Path] = None,
             shard_sums: Optional[Dict[str, str]] = None) -> Path:
        """Write the checkpoint of ``step`` (renaming the complete ``shards`` directory in, if
        given, and naming it in the state), then the checksums, then the ``latest`` pointer.
        ``shard_sums``: SHA-256 of shard files by name, as the ranks that wrote them computed
        them; the others are hashed here."""
        path = self.dir / ckpt_name(step)
        # a checkpoint of this step written before (a resumed run saves its last step again) must not
        # keep the old checksum, or stay named by ``latest``, while the new one is written
        path.with_name(path.name + SUFFIX).unlink(missing_ok=True)
        if self._pointed() == step:
            (self.dir / "latest").unlink()
        sums = []
        if shards is not None:
            final = self.dir / shards_name(step)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(shards, final)
            state = {**state, "shards": final.name}
            known = shard_sums or {}
            for f in sorted(f for f in final.rglob("*") if f.is_file()):
                sha = known.get(f.name) if f.parent == final else None
                sums.append(f"{sha or file_sha256(f)}  {f.relative_to(self.dir).as_posix()}")
        with atomic_open(path, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(state, writer)
        sums.insert(0, f"{writer.sha.hexdigest()}  {path.name}")
        atomic_write(path.with_name(path.name + SUFFIX), "\n".join(sums) + "\n")
        atomic_write(self.dir / "latest", path.name + "\n")
        (path.with_name(path.name + CORRUPT)).unlink(missing_ok=True)
        self._prune()
        return path

    def latest(self) -> Optional[Path]:
        """The checkpoint the ``latest`` pointer names (not verified), or None."""
        pointer = self.dir / "latest"
        if not pointer.is_file():
            return None
        path = self.dir / pointer.read_text().strip()
        return path if path.is_file() else None

    def verify(self, path: PathLike) -> bool:
        """True when ``path`` matches the checksum written with it, False when it has no checksum
        file (a save cut short, or a checkpoint of a version without checksums); a missing,
        truncated or altered checkpoint raises :class:`CheckpointError`."""
        path = Path(path)
        sums = path.with_name(path.name + SUFFIX)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint missing")
        if not sums.is_file():
            return False
        lines = [line.split(None, 1) for line in sums.read_text().splitlines() if line.strip()]
        for i, (expected, rel) in enumerate(lines or [["", path.name]]):
            f = path if i == 0 else self.dir / rel.strip()
            if not f.is_file():
                raise CheckpointError(f"{f}: shard of checkpoint {path.name} missing")
            actual = file_sha256(f)
            if actual != expected:
                what = "checkpoint" if i == 0 else f"shard of checkpoint {path.name}"
                raise CheckpointError(f"{f}: corrupt or truncated {what} ({f.stat().st_size} bytes, "
                                      f"SHA-256 {actual[:12]}... is not the {expected[:12]}... of {sums.name})")
        return True

    def load(self, path: PathLike, verify: bool = True) -> Dict[str, Any]:
        """A checkpoint's state, verified against its checksum where it has one (``verify=False``:
        one that :meth:`resumable` has just verified)."""
        if verify:
            self.verify(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a checksum that matches a file torch cannot read: written damaged
            raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None

    def model_state(self, path: PathLike, verify: bool = True) -> Dict[str, Any]:
        """The model entries (trainable parameters and buffers) of a checkpoint, whole, on CPU:
        read from its shards for an FSDP checkpoint (by this process alone); ``verify`` as in
        :meth:`load`."""
        state = self.load(path, verify)
        if state.get("shards"):
            from partlib.train.fsdp import load_model_entries

            return load_model_entries(self.dir / state["shards"])
        return state["model"]

    def _pointed(self) -> Optional[int]:
        latest = self.latest()
        return None if latest is None else step_of(latest.name)

    def resumable(self) -> Optional[Path]:
        """The newest usable checkpoint, or None. A damaged one is reported by name and moved aside
        (``*.pt.corrupt``) and the previous one is tried; one without a checksum is used only if the
        ``latest`` pointer vouches for it. Evaluations recorded after the checkpoint returned are
        dropped from ``best.json`` (training repeats them)."""
        pointed = self._pointed()
        for step in reversed(self.steps()):
            path = self.dir / ckpt_name(step)
            try:
                if not self.verify(path):
                    if pointed is None or step > pointed:
                        continue  # its save was cut short
                    logger.warning("%s: no checksum file; loading it unverified", path)
            except CheckpointError as e:
                logger.warning("%s; moved aside to %s, trying the previous checkpoint", e, path.name + CORRUPT)
                os.replace(path, path.with_name(path.name + CORRUPT))
                shards = self.dir / shards_name(step)
                if shards.is_dir():
                    shutil.rmtree(shards.with_name(shards.name + CORRUPT), ignore_errors=True)
                    os.replace(shards, shards.with_name(shards.name + CORRUPT))
                path.with_name(path.name + SUFFIX).unlink(missing_ok=True)
                continue
            best = self.best()
            if any(s > step for _, s in best):
                self._write_best([e for e in best if e[1] <= step])
            if step != pointed:
                atomic_write(self.dir / "latest", path.name + "\n")
            return path
        if self.best():  # nothing usable: training starts afresh, its evaluations too
            self._write_best([])
        return None

    def remove_stale(self) -> int:
        """Remove what saves cut short left behind: temporary files (a kill during ``torch.save``:
        at paper scale gigabytes each) and checkpoints without a checksum newer than the ``latest``
        pointer. Returns the bytes freed."""
        if not self.dir.is_dir():
            return 0
        pointed = self._pointed()
        stale = list(self.dir.glob(".*.tmp"))
        steps = set(self.steps()) | {step_of(d.name) for d in self.dir.glob("ckpt-*.dcp")}
        stale += [self.dir / name for s in sorted(steps) if (pointed is None or s > pointed)
                  and not (self.dir / (ckpt_name(s) + SUFFIX)).is_file() for name in (ckpt_name(s), shards_name(s))
                  if (self.dir / name).exists()]
        freed = 0
        for p in stale:
            with contextlib.suppress(FileNotFoundError):
                if p.is_dir():  # shards of a save cut short
                    freed += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                    shutil.rmtree(p)
                else:
                    freed += p.stat().st_size
                    p.unlink()
        if stale:
            logger.info("%s: removed %d file(s) of interrupted saves (%.1f MiB)", self.dir, len(stale), freed / 2**20)
        return freed

    def steps(self) -> List[int]:
        return sorted(step_of(p.name) for p in self.dir.glob("ckpt-*.pt"))

    def _prune(self) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last:]) | {s for _, s in self.best()}
        for s in steps:
            if s not in keep:
                for name in (ckpt_name(s), ckpt_name(s) + SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / name)
                shutil.rmtree(self.dir / shards_name(s), ignore_errors=True)
