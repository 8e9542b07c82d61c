"""Levenshtein alignment with NIST sclite's weights and tie-breaking.

sclite (``-i rm``) aligns with costs correct 0, substitution 4, insertion 3, deletion 3. Among
alignments of equal cost, its choice — and so its Corr/Sub/Del/Ins counts — follows from tracing
back from the end of both sequences and preferring, at each cell, the diagonal step (correct or
substitution), then an insertion, then a deletion. This order reproduces sclite's per-utterance
counts exactly (checked against ``sclite -o pra`` on thousands of random tie-prone pairs in
``test/test_scoring_sclite.py``); other orders disagree on some ties.

The cost matrix is filled row by row with numpy: within a row the insertion chain
``D[i, j] = min(t[j], D[i, j-1] + INS)`` is a running minimum of ``t[k] - INS*k``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

SUB_COST = 4
INS_COST = 3
DEL_COST = 3

# Operation codes of an alignment.
CORRECT, SUB, INS, DEL = "C", "S", "I", "D"


@dataclass
class Alignment:
    """One aligned pair: ``pairs`` are (ref token or None, hyp token or None, op) in order."""

    pairs: List[Tuple[Optional[str], Optional[str], str]]

    def count(self, op: str) -> int:
        """Number of steps with operation ``op`` (``C``, ``S``, ``I`` or ``D``)."""
        return sum(1 for _, _, o in self.pairs if o == op)

    @property
    def counts(self) -> Tuple[int, int, int, int]:
        """(corr, sub, del, ins), sclite's order."""
        return self.count(CORRECT), self.count(SUB), self.count(DEL), self.count(INS)


def cost_matrix(ref: Sequence[str], hyp: Sequence[str]) -> np.ndarray:
    """The (len(ref)+1) x (len(hyp)+1) matrix of minimal alignment costs of the prefixes."""
    n, m = len(ref), len(hyp)
    # Map tokens to ints so that comparisons are vectorised.
    vocab = {tok: k for k, tok in enumerate(dict.fromkeys([*ref, *hyp]))}
    r = np.fromiter((vocab[t] for t in ref), dtype=np.int64, count=n)
    h = np.fromiter((vocab[t] for t in hyp), dtype=np.int64, count=m)
    sub = SUB_COST * (r[:, None] != h[None, :])
    ramp = np.arange(m + 1, dtype=np.int64) * INS_COST
    cost = np.empty((n + 1, m + 1), dtype=np.int64)
    cost[0] = ramp
    step = np.empty(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        prev = cost[i - 1]
        # Best of deletion and diagonal step, then the insertion chain as a running minimum.
        np.minimum(prev[1:] + DEL_COST, prev[:-1] + sub[i - 1], out=step[1:])
        step[0] = prev[0] + DEL_COST
        step -= ramp
        np.minimum.accumulate(step, out=cost[i])
        cost[i] += ramp
    return cost


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Align token sequences the way sclite does; see the module docstring for tie-breaking."""
    cost = cost_matrix(ref, hyp)
    i, j = len(ref), len(hyp)
    out: List[Tuple[Optional[str], Optional[str], str]] = []
    while i > 0 or j > 0:
        here = cost[i, j]
        if i > 0 and j > 0:
            same = ref[i - 1] == hyp[j - 1]
            if here == cost[i - 1, j - 1] + (0 if same else SUB_COST):
                out.append((ref[i - 1], hyp[j - 1], CORRECT if same else SUB))
                i, j = i - 1, j - 1
                continue
        if j > 0 and here == cost[i, j - 1] + INS_COST:
            out.append((None, hyp[j - 1], INS))
            j -= 1
            continue
        out.append((ref[i - 1], None, DEL))
        i -= 1
    out.reverse()
    return Alignment(out)
