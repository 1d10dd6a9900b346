"""The across-seed statistics against independent implementations: direct resampling in numpy,
scipy, and deepsig (Dror et al.'s ASO as its authors' successors package it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as sps

from reports import seeds
from reports.seeds import aso, holm, prob_better, seed_bootstrap, seeds_needed, t_quantile, two_level_bootstrap
from reports.stats import paired_bootstrap


def _runs(rng: np.random.Generator, accs: list[float], n: int, shared: float = 0.0) -> np.ndarray:
    """seeds x examples right/wrong; `shared` of the examples get the same draw in every seed."""
    common = rng.random(n)
    out = []
    for acc in accs:
        u = np.where(rng.random(n) < shared, common, rng.random(n))
        out.append(u < acc)
    return np.array(out)


def _by_hand(a: np.ndarray, b: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """The two-level bootstrap written out: resample seeds, then the examples (one draw for all runs)."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    out = np.empty(reps)
    for r in range(reps):
        ia, ib = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        idx = rng.integers(0, n, n)
        out[r] = b[ib][:, idx].mean() - a[ia][:, idx].mean()
    return out


@pytest.mark.parametrize(("accs_a", "accs_b", "shared", "exact"), [
    ([0.70, 0.74, 0.72], [0.78, 0.75, 0.80, 0.77], 0.8, True),  # 7 runs: at most 128 patterns, mostly shared
    ([0.70, 0.72], [0.71, 0.73], 0.0, True),  # 4 runs: 16 patterns
    ([0.7, 0.72, 0.71, 0.69, 0.73], [0.74, 0.72, 0.75, 0.73, 0.76], 0.0, False),  # 10 independent runs: normal limit
])
def test_two_level_bootstrap_equals_resampling_by_hand(accs_a: list[float], accs_b: list[float], shared: float,
                                                       exact: bool) -> None:
    rng = np.random.default_rng(len(accs_a) + 10 * len(accs_b))
    a, b = _runs(rng, accs_a, 300, shared), _runs(rng, accs_b, 300, shared)
    got = two_level_bootstrap(a, b)
    assert got.exact == exact
    assert got.diff == pytest.approx(b.mean(1).mean() - a.mean(1).mean())
    ref = _by_hand(a, b, 6_000, seed=1)
    lo, hi = np.quantile(ref, [0.025, 0.975])
    spread = hi - lo
    assert got.low == pytest.approx(lo, abs=0.06 * spread) and got.high == pytest.approx(hi, abs=0.06 * spread)
    p_ref = min(1.0, 2 * min(np.mean(ref <= 0), np.mean(ref >= 0)))
    assert got.p_value == pytest.approx(p_ref, abs=0.03)


def test_two_level_bootstrap_edge_cases() -> None:
    rng = np.random.default_rng(5)
    a = _runs(rng, [0.8], 400)
    b = _runs(rng, [0.84], 400)
    # one seed a side: only the test examples vary, which is the paired bootstrap of reports.stats
    one = two_level_bootstrap(a, b)
    _, lo, hi = paired_bootstrap(a[0], b[0])
    assert one.low == pytest.approx(lo, abs=0.006) and one.high == pytest.approx(hi, abs=0.006)
    # identical runs: no difference, and no evidence of one
    same = two_level_bootstrap(np.repeat(a, 3, 0), np.repeat(a, 3, 0))
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # every run collapsed onto the majority class: the same right/wrong everywhere
    labels = rng.integers(0, 2, 400)
    collapsed = np.repeat((labels == 0)[None], 3, 0)
    flat = two_level_bootstrap(collapsed, collapsed.copy())
    assert flat.diff == 0.0 and flat.p_value == 1.0


def test_seed_bootstrap_against_scipy() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.80, 0.01, 5), rng.normal(0.82, 0.01, 4)
    got = seed_bootstrap(a, b)
    ci = sps.bootstrap((b, a), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=False, vectorized=True,
                       n_resamples=20_000, method="percentile", random_state=3).confidence_interval
    assert got.diff == pytest.approx(b.mean() - a.mean())
    assert got.low == pytest.approx(ci.low, abs=0.001) and got.high == pytest.approx(ci.high, abs=0.001)
    batch = seeds.seed_bootstrap_many(a, np.stack([b, b + 0.01]))
    assert (batch[0].low, batch[0].high, batch[0].p_value) == pytest.approx((got.low, got.high, got.p_value), abs=1e-12)
    assert batch[1].diff == pytest.approx(got.diff + 0.01)


def test_violation_ratio_equals_deepsig() -> None:
    deepsig = pytest.importorskip("deepsig.aso")
    rng = np.random.default_rng(0)
    for na, nb, shift in [(3, 3, 0.3), (5, 7, 0.0), (20, 20, -0.2), (4, 4, 5.0)]:
        a, b = rng.normal(shift, 1, na), rng.normal(0, 1, nb)
        ia, ib, w = seeds._segments(na, nb, seeds.ASO_DT)
        ours = float(seeds._violation(np.sort(a), np.sort(b), ia, ib, w))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert ours == pytest.approx(deepsig.compute_violation_ratio(a, b, dt=seeds.ASO_DT), abs=1e-9)


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


def test_prob_better_holm_t_and_seeds_needed() -> None:
    a, b = np.array([0.80, 0.82, 0.81]), np.array([0.81, 0.83, 0.79, 0.80])
    by_hand = sum((x > y) + 0.5 * (x == y) for x in a for y in b) / (len(a) * len(b))
    assert prob_better(a, b) == pytest.approx(by_hand)
    assert prob_better(a, a) == 0.5
    # Holm (1979) on a textbook example, and against the step-down rule written out
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])
    for df in (1, 2, 3, 4, 5, 8, 12, 20, 50, 200):
        assert t_quantile(0.975, df) == pytest.approx(sps.t.ppf(0.975, df), rel=2e-3)
    # seeds needed, against the same rule with scipy's t
    for sd_a, sd_b, effect, test_sd in [(0.01, 0.012, 0.01, 0.0), (0.004, 0.004, 0.002, 0.0005), (0.02, 0.01, 0.03, 0.0)]:
        expected = next(n for n in range(2, 1001)
                        if sps.t.ppf(0.975, 2 * n - 2) * np.sqrt((sd_a**2 + sd_b**2) / n + test_sd**2) < effect)
        assert seeds_needed(sd_a, sd_b, effect, test_sd=test_sd) == expected
    assert seeds_needed(0.01, 0.01, 0.001, test_sd=0.002) is None  # the test set alone is too small to see it
    assert seeds_needed(None, 0.01, 0.01) is None  # one seed: no spread to go on
