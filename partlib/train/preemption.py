"""Stopping training cleanly when the cluster asks: SIGTERM and SIGUSR1.

Slurm sends SIGTERM before it kills a job (preemption, ``scancel``, the time limit; ``KillWait``
seconds later comes SIGKILL) and, with ``sbatch --signal=USR1@120``, SIGUSR1 that many seconds
before the time limit. While a stage trains, either signal only raises a flag: the trainer
finishes the current step (and its dev evaluation, if one is due), writes a checkpoint and ends
with :data:`partlib.bin.EXIT_PREEMPTED`; rerunning the same command resumes from that checkpoint
exactly. Under DDP/FSDP the flag is all-reduced after every step, so every rank stops after the
same step, whichever of them received the signal.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Dict, Optional

import torch

from partlib.train import distributed as dist_utils

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of the DataLoader: Slurm signals every process of the job, and a worker
    that died of it would end training with an error before the main process could checkpoint; the
    main process stops the workers itself."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequest:
    """A context that catches :data:`SIGNALS` (in the main thread; elsewhere it catches nothing)
    and restores the previous handlers on exit; after a stop the signals stay ignored, so that a
    second one (Slurm signals every process, a runner passes it on too) cannot cut the exit short.
    Entering it again while inside is allowed (the CLI enters it before the trainer does)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}
        self._depth = 0

    def __enter__(self) -> "StopRequest":
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._depth -= 1
        if self._depth:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if self.received is not None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signum

    def agreed(self) -> bool:
        """Whether any rank received a stop signal (a collective: every rank calls it at the same
        point, once per step)."""
        flag = torch.tensor([0.0 if self.received is None else 1.0], device=self.device)
        return bool(dist_utils.all_reduce_(flag).item() > 0)

    @property
    def name(self) -> str:
        """The received signal's name (``SIGTERM``), or ``a signal on another rank``."""
        return signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
