"""Seed-level significance: a paired sign-flip (permutation) test over matched scores.

The paired bootstrap (:mod:`partlib.scoring.bootstrap`) asks whether two *models* differ on one test
set; it says nothing about training noise. With several seeds per system, each (seed, test set)
cell gives one paired difference ``d = A - B``. Under the null hypothesis that the two systems are
exchangeable, every ``d`` is as likely to have its sign flipped; the two-sided p-value is the share
of sign assignments whose mean difference is at least as far from 0 as the observed one. The test
is exact (all ``2^n`` assignments) for ``n <= exact_max`` and otherwise uses ``n_perm`` random
assignments from a seeded generator (the observed one counted, so p is never 0).
"""
from __future__ import annotations

import itertools
from typing import Dict, Sequence

import numpy as np


def sign_flip_test(diffs: Sequence[float], n_perm: int = 100_000, seed: int = 0, exact_max: int = 16) -> Dict:
    """Two-sided paired sign-flip test of ``mean(diffs) == 0``.

    Returns ``{"n", "mean_diff", "positive", "negative", "p_value", "exact"}`` (``p_value`` is None
    for no differences).
    """
    d = np.asarray(list(diffs), dtype=np.float64)
    n = len(d)
    out = {"n": n, "mean_diff": float(d.mean()) if n else None,
           "positive": int((d > 0).sum()), "negative": int((d < 0).sum()), "exact": n <= exact_max}
    if n == 0:
        return {**out, "p_value": None}
    observed = abs(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))  # ties with the observed sum count as extreme
    if n <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        p = float(np.mean(np.abs(signs @ d) >= observed - tol))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(n_perm, n))
        hits = int((np.abs(signs @ d) >= observed - tol).sum())
        p = (hits + 1) / (n_perm + 1)
    return {**out, "p_value": p}
