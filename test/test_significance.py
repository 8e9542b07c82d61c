"""The seed-level paired sign-flip test against hand-counted and brute-force p-values."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from partlib.scoring.significance import sign_flip_test


def test_exact_p_values_counted_by_hand():
    # |±1 ±2 ±3| >= 6 only for +++ and ---: 2 of 8 assignments.
    r = sign_flip_test([1.0, 2.0, 3.0])
    assert r == {"n": 3, "mean_diff": 2.0, "positive": 3, "negative": 0, "exact": True, "p_value": 0.25}
    # observed sum 0: every assignment is at least as extreme
    assert sign_flip_test([1.0, -1.0])["p_value"] == 1.0
    # 3 + 1 - 1 = 3; the eight signed sums are 3 5 1 3 -3 -1 -5 -3: six reach |3|
    assert sign_flip_test([3.0, 1.0, -1.0])["p_value"] == pytest.approx(6 / 8)
    assert sign_flip_test([])["p_value"] is None


def test_exact_matches_brute_force_and_monte_carlo_approximates_it():
    d = np.random.default_rng(3).normal(0.4, 1.0, 12)
    brute = np.mean([abs(sum(s * x for s, x in zip(signs, d))) >= abs(d.sum()) - 1e-9
                     for signs in itertools.product((1, -1), repeat=len(d))])
    assert sign_flip_test(d)["p_value"] == pytest.approx(brute)
    mc = sign_flip_test(d, n_perm=40000, exact_max=0, seed=1)
    assert not mc["exact"] and abs(mc["p_value"] - brute) < 0.01
    # all 30 differences positive: exact p = 2 / 2**30; Monte Carlo never reports 0
    big = sign_flip_test(np.ones(30), n_perm=1000)
    assert big["p_value"] == pytest.approx(1 / 1001) and big["positive"] == 30
