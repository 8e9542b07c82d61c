"""Error counts and error rates (WER/CER) from sclite-compatible alignments."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

from partlib.scoring.align import Alignment, align


@dataclass(frozen=True)
class ErrorCounts:
    """Corr/Sub/Del/Ins counts of one utterance or a sum of them; ``n`` is the reference length."""

    corr: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0

    @property
    def n(self) -> int:
        """Number of reference units."""
        return self.corr + self.sub + self.dele

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.sub + self.dele + self.ins

    def rate(self) -> Optional[float]:
        """Error rate in percent; 0 for an empty reference without errors, None if undefined."""
        if self.n == 0:
            return 0.0 if self.ins == 0 else None
        return 100.0 * self.errors / self.n

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.corr + other.corr, self.sub + other.sub,
                           self.dele + other.dele, self.ins + other.ins)

    def as_dict(self) -> Dict[str, int]:
        """JSON form: ``N corr sub del ins``."""
        return {"N": self.n, "corr": self.corr, "sub": self.sub, "del": self.dele, "ins": self.ins}

    @classmethod
    def total(cls, counts: Iterable["ErrorCounts"]) -> "ErrorCounts":
        """Sum of many counts."""
        out = cls()
        for c in counts:
            out = out + c
        return out


def score_units(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[ErrorCounts, Alignment]:
    """Align two unit sequences with sclite's rules; return the counts and the alignment."""
    ali = align(ref, hyp)
    corr, sub, dele, ins = ali.counts
    return ErrorCounts(corr, sub, dele, ins), ali
