"""Training checkpoints: atomic writes, a ``latest`` pointer, keep-last-K plus best-N retention.

Layout of ``<stage_dir>/checkpoints/``::

    ckpt-000100.pt   model (trainable parameters + buffers), optimizer, scheduler, step, RNG states
    latest           the file name of the newest complete checkpoint
    best.json        [[metric, step], ...] of the best-N evaluations, best first
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from partlib.common import PathLike, atomic_open, atomic_write


def ckpt_name(step: int) -> str:
    return f"ckpt-{step:06d}.pt"


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

    def __init__(self, directory: PathLike, keep_last: int = 3, best_n: int = 3, higher_is_better: bool = False) -> None:
        self.dir = Path(directory)
        self.keep_last = max(1, keep_last)
        self.best_n = max(1, best_n)
        self.higher_is_better = higher_is_better

    # ---- best-N bookkeeping -------------------------------------------------------------
    def best(self) -> List[Tuple[float, int]]:
        path = self.dir / "best.json"
        if not path.is_file():
            return []
        return [(float(v), int(s)) for v, s in json.loads(path.read_text())]

    def record_metric(self, value: float, step: int) -> bool:
        """Add a dev evaluation; return True if it entered the best-N list."""
        entries = [e for e in self.best() if e[1] != step] + [(float(value), int(step))]
        sign = -1.0 if self.higher_is_better else 1.0
        entries.sort(key=lambda e: (sign * e[0], e[1]))
        kept = entries[: self.best_n]
        atomic_write(self.dir / "best.json", json.dumps(kept) + "\n")
        return (float(value), int(step)) in kept

    # ---- save / load --------------------------------------------------------------------
    def save(self, step: int, state: Dict[str, Any]) -> Path:
        path = self.dir / ckpt_name(step)
        with atomic_open(path, "wb") as f:
            torch.save(state, f)
        atomic_write(self.dir / "latest", path.name + "\n")
        self._prune()
        return path

    def latest(self) -> Optional[Path]:
        pointer = self.dir / "latest"
        if not pointer.is_file():
            return None
        path = self.dir / pointer.read_text().strip()
        return path if path.is_file() else None

    def load(self, path: PathLike) -> Dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=False)

    def steps(self) -> List[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("ckpt-*.pt"))

    def _prune(self) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last:]) | {s for _, s in self.best()}
        for s in steps:
            if s not in keep:
                try:
                    os.unlink(self.dir / ckpt_name(s))
                except FileNotFoundError:
                    pass
