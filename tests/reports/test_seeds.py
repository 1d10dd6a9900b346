"""The across-seed statistics against independent implementations: direct resampling in numpy,
scipy, and deepsig (Dror et al.'s ASO as its authors' successors package it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from reports import seeds
from reports.seeds import aso, holm, prob_better


def test_violation_ratio_against_deepsig_and_the_paper() -> None:
    """eps_W2 on deepsig's grid t = dt, 2dt, ... < 1 with deepsig's own quantile functions, both
    integrals over the same points (Dror et al. eq. 4-5). deepsig 1.2.8 drops t = dt from the
    numerator only: the same value where min(A) >= min(B), a few hundredths off otherwise."""
    deepsig = pytest.importorskip("deepsig.aso")
    rng = np.random.default_rng(0)
    t = np.arange(seeds.ASO_DT, 1, seeds.ASO_DT)
    cases = [(rng.normal(shift, 1, na), rng.normal(0, 1, nb))
             for na, nb, shift in [(3, 3, 0.3), (5, 7, 0.0), (20, 20, -0.2), (4, 4, 5.0), (6, 3, -1.0)]]
    cases.append((np.array([0.80, 0.83, 0.84]), np.array([0.81, 0.82, 0.83])))  # min(A) < min(B); exactly 1/3 in the paper
    differs = 0
    for a, b in cases:
        ia, ib, w = seeds._segments(len(a), len(b), seeds.ASO_DT)
        ours = float(seeds._violation(np.sort(a), np.sort(b), ia, ib, w))
        f, g = deepsig.get_quantile_function(a)(t), deepsig.get_quantile_function(b)(t)
        assert ours == pytest.approx(np.sum(((g - f) ** 2)[f < g]) / np.sum((g - f) ** 2), abs=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = deepsig.compute_violation_ratio(a, b, dt=seeds.ASO_DT)
        if a.min() >= b.min():
            assert ours == pytest.approx(theirs, abs=1e-9)
        else:
            differs += abs(ours - theirs) > 1e-4
    assert differs >= 2
    assert float(seeds._violation(np.sort(cases[-1][0]), np.sort(cases[-1][1]), *seeds._segments(3, 3, seeds.ASO_DT))) \
        == pytest.approx(1 / 3, abs=0.005)


def test_aso_bonferroni_is_one_minus_alpha_over_m() -> None:
    """deepsig raises the confidence to c + (1 - c)/m, i.e. 1 - alpha (1 - 1/m): looser as m
    grows. Bonferroni over m comparisons is 1 - alpha/m."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.2, 1, 8), rng.normal(0, 1, 8)
    for m in (2, 3, 10, 100):
        assert aso(a, b, comparisons=m) == aso(a, b, confidence=1 - 0.05 / m)
    eps = [aso(a, b, comparisons=m).eps_a_over_b for m in (1, 3, 100)]
    assert eps[0] < eps[1] < eps[2] < 1, eps


def test_aso_eps_min_against_deepsig() -> None:
    deepsig = pytest.importorskip("deepsig")
    rng = np.random.default_rng(1234)
    for a, b in [(rng.normal(0.9, 0.8, 5), rng.normal(0, 1, 5)),  # deepsig's README example: A better
                 (rng.normal(0.0, 1.0, 6), rng.normal(0.1, 1.0, 6))]:  # no clear order
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = deepsig.aso(a, b, seed=0, num_bootstrap_iterations=300, show_progress=False)
        ours = aso(a, b)
        assert ours.eps_a_over_b == pytest.approx(theirs, abs=0.05)
    # edge cases: identical scores say nothing either way; total order says everything
    same = aso(np.array([0.8, 0.81, 0.82]), np.array([0.8, 0.81, 0.82]))
    assert same.eps_a_over_b >= seeds.ASO_TAU and same.eps_b_over_a >= seeds.ASO_TAU
    flat = aso(np.full(3, 0.8), np.full(3, 0.8))  # identical runs: deepsig's 0.5 for a zero distance
    assert flat.eps_a_over_b == flat.eps_b_over_a == 0.5
    far = aso(np.array([0.9, 0.91, 0.92]), np.array([0.5, 0.51, 0.52]))
    assert far.eps_a_over_b == 0.0 and far.eps_b_over_a == 1.0
    # the Bonferroni adjustment only ever raises eps_min
    a, b = rng.normal(0.5, 1, 8), rng.normal(0, 1, 8)
    assert aso(a, b, comparisons=10).eps_a_over_b >= aso(a, b).eps_a_over_b


def test_prob_better_and_holm() -> None:
    a, b = np.array([0.80, 0.82, 0.81]), np.array([0.81, 0.83, 0.79, 0.80])
    by_hand = sum((x > y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))
    assert prob_better(a, b) == pytest.approx(by_hand)
    assert prob_better(a, a) == 0.5
    # Holm (1979) on a textbook example, and against the step-down rule written out
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])
