"""reports.verdict.compare: Welch's t on scores (scipy), the variance components with predictions
(written out again here from their definitions), and the edge cases: one seed, no spread, a
collapsed seed, ties, ten test examples, bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats as sps

from reports.bootstrap import moments, paired_moments
from reports.seeds import holm
from reports.stats import mcnemar_p, mcnemar_p_counts
from reports.tdist import t_ppf, t_sf
from reports.verdict import Verdict, adjust, compare, compare_many, seeds_needed


def test_student_t_against_scipy() -> None:
    for df in (0.7, 1, 1.5, 2, 2.3, 3, 5.5, 10, 30, 200, 1e5, math.inf):
        for t in (0, 1e-5, 0.1, 1, 2.5, 10, 40, -1.3):
            assert t_sf(t, df) == pytest.approx(sps.t.sf(t, df), rel=1e-8, abs=1e-12)
        for q in (0.5, 0.50001, 0.8, 0.975, 0.999, 0.025):
            assert t_ppf(q, df) == pytest.approx(sps.t.ppf(q, df), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize(("na", "nb", "sd_a", "sd_b", "shift"), [
    (2, 2, 0.01, 0.01, 0.02), (3, 5, 0.005, 0.02, 0.01), (10, 10, 0.004, 0.004, 0.003), (5, 2, 0.03, 0.001, -0.05)])
def test_scores_alone_are_welchs_t(na: int, nb: int, sd_a: float, sd_b: float, shift: float) -> None:
    rng = np.random.default_rng(na * 100 + nb)
    a = 0.8 + rng.normal(0, sd_a, na)
    b = 0.8 + shift + rng.normal(0, sd_b, nb)
    v = compare(a, b)
    welch = sps.ttest_ind(b, a, equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert v.diff == pytest.approx(b.mean() - a.mean())
    assert v.p_value == pytest.approx(welch.pvalue, rel=1e-8)
    assert (v.low, v.high) == pytest.approx((low, high), rel=1e-7)
    assert v.winner == (None if welch.pvalue >= 0.05 else ("b" if shift > 0 else "a"))
    assert v.examples == 0 and "scores only" in v.reason and v.seeds == (na, nb)


def _by_hand(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(diff, se, df) from the definitions, loop by loop: each side's per-seed accuracies' sample
    variance over its seeds, plus the test set's share, var over examples of (mean_b - mean_a)
    minus the per-example seed noise (unbiased binomial variance over seeds / seeds), / examples."""
    n = a.shape[1]
    acc_a, acc_b = a.mean(1), b.mean(1)
    va, vb = np.var(acc_a, ddof=1), np.var(acc_b, ddof=1)
    noise = 0.0
    for x in (a, b):
        s = x.shape[0]
        noise += np.mean([x[:, j].var(ddof=1) for j in range(n)]) / s
    d = b.mean(0) - a.mean(0)
    test = (np.var(d, ddof=1) - noise) / n
    parts = [(va / len(acc_a), len(acc_a) - 1), (vb / len(acc_b), len(acc_b) - 1), (test, n - 1)]
    se2 = sum(v for v, _ in parts)
    df = se2**2 / sum(v**2 / k for v, k in parts if v > 0)
    return float(acc_b.mean() - acc_a.mean()), math.sqrt(se2), df


def test_predictions_add_the_test_sets_variance_as_defined() -> None:
    rng = np.random.default_rng(7)
    n = 400
    hard = rng.random(n)
    a = rng.random((4, n)) < np.clip(0.9 - 0.5 * hard + rng.normal(0, 0.03, (4, 1)), 0, 1)
    b = rng.random((5, n)) < np.clip(0.95 - 0.5 * hard[::-1] + rng.normal(0, 0.03, (5, 1)), 0, 1)
    v = compare(a, b)
    diff, se, df = _by_hand(a.astype(float), b.astype(float))
    assert (v.diff, v.se, v.df) == pytest.approx((diff, se, df), rel=1e-9)
    assert v.p_value == pytest.approx(2 * sps.t.sf(abs(diff) / se, df), rel=1e-7)
    q = sps.t.ppf(0.975, df)
    assert (v.low, v.high) == pytest.approx((diff - q * se, diff + q * se), rel=1e-7)
    assert v.test_sd > 0 and v.examples == n and "test examples" in v.reason
    # the same runs as scores alone: Welch's t, narrower (this test set only)
    assert compare(a.mean(1), b.mean(1)).se < v.se


def test_two_models_of_equal_accuracy_erring_on_other_examples_are_not_told_apart() -> None:
    """Welch's t on seed means is about this test set: two models of the same accuracy that get
    different examples wrong differ on it by chance, and with tight seeds Welch calls it. The
    test set's own variance is what `compare` adds with predictions."""
    rng = np.random.default_rng(3)
    n = 300
    wins = welch_wins = 0
    for _ in range(200):
        # each model knows 80% of the examples (right 98% of the time on them, 2% on the others),
        # which examples independently of the other model: the same accuracy over texts
        pa = np.where(rng.random(n) < 0.8, 0.98, 0.02)
        pb = np.where(rng.random(n) < 0.8, 0.98, 0.02)
        a, b = rng.random((5, n)) < pa, rng.random((5, n)) < pb
        wins += compare(a, b).winner is not None
        welch_wins += sps.ttest_ind(b.mean(1), a.mean(1), equal_var=False).pvalue < 0.05
    assert wins <= 0.05 * 200 + 2 * math.sqrt(0.05 * 0.95 * 200)  # at most alpha, within noise
    assert welch_wins > 100  # Welch's t takes this test set's luck for a difference


def test_one_seed_a_side_names_no_winner_without_a_seed_spread() -> None:
    a, b = np.ones((1, 10_000), bool), np.ones((1, 10_000), bool)
    a[0, :3000], b[0, :1000] = False, False  # 0.70 against 0.90 on 10,000 examples: test noise says "b"
    v = compare(a, b)
    assert v.winner is None and not v.testable and math.isnan(v.p_value) and v.seeds_needed is None
    assert v.reason.startswith("one seed a side: seed variance unknown")
    assert compare([0.70], [0.90]).winner is None


def test_one_seed_with_a_given_seed_sd() -> None:
    v = compare([0.80], [0.83], seed_sd=0.01)  # known exactly: the normal
    z = 0.03 / math.sqrt(2 * 0.01**2)
    assert v.p_value == pytest.approx(2 * sps.norm.sf(z), rel=1e-9) and v.winner == "b" and math.isinf(v.df)
    est = compare([0.80], [0.83], seed_sd=0.01, seed_df=4)  # estimated from 4 degrees of freedom: Student's t
    assert est.p_value == pytest.approx(2 * sps.t.sf(z, 4), rel=1e-8) and "seed sd 0.01 taken as given" in est.reason
    assert compare([0.80], [0.83], seed_sd=0.05).winner is None


def test_one_seed_against_many_borrows_the_other_sides_spread() -> None:
    b = np.array([0.84, 0.85, 0.86, 0.85, 0.85])
    v = compare([0.80], b)
    var = b.var(ddof=1)
    se = math.sqrt(var / 1 + var / 5)
    assert v.se == pytest.approx(se) and v.df == pytest.approx(4.0)  # both parts with b's 4 df
    assert v.p_value == pytest.approx(2 * sps.t.sf(0.05 / se, 4), rel=1e-8)
    assert "taken from the other side's" in v.reason


def test_zero_spread_is_not_certainty() -> None:
    v = compare([0.80, 0.80, 0.80], [0.805, 0.805, 0.805])
    assert v.winner is None and not v.testable and "no spread" in v.reason
    one_side = compare([0.80, 0.80, 0.80], [0.80, 0.82, 0.81])
    c = np.array([0.80, 0.82, 0.81])
    se = math.sqrt(2 * c.var(ddof=1) / 3)
    # the other side's estimate serves both: its 2 degrees of freedom, once
    assert one_side.se == pytest.approx(se) and one_side.p_value == pytest.approx(2 * sps.t.sf(0.01 / se, 2), rel=1e-8)
    # seeds that tie on the score but disagree on examples: the disagreements give the spread
    a = np.ones((2, 100), bool)
    a[0, :10], a[1, 10:20] = False, False  # both 0.90, on different examples
    b = np.ones((2, 100), bool)
    b[:, :5] = False  # both 0.95, the same examples
    tied = compare(a, b)
    assert tied.testable and tied.se > 0 and tied.winner is None  # 0.05 on 100 examples, 2 seeds: not decided


def test_ties_a_collapsed_seed_and_ten_examples() -> None:
    same = compare([0.80, 0.82, 0.81], [0.81, 0.80, 0.82])
    assert same.diff == pytest.approx(0.0, abs=1e-12) and same.winner is None and same.p_value == pytest.approx(1.0)
    collapsed = compare([0.85, 0.86, 0.84], [0.88, 0.89, 0.50])  # one seed of b at chance
    assert collapsed.winner is None and collapsed.high - collapsed.low > 0.5
    rng = np.random.default_rng(1)
    tiny = compare(rng.random((3, 10)) < 0.8, rng.random((3, 10)) < 0.9)
    assert tiny.examples == 10 and tiny.winner is None and tiny.testable


def test_bad_input_is_refused_naming_what() -> None:
    with pytest.raises(ValueError, match="finite"):
        compare([0.8, float("nan")], [0.9, 0.8])
    with pytest.raises(ValueError, match="one kind"):
        compare([0.8, 0.9], np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="same examples"):
        compare(np.ones((2, 5), bool), np.ones((2, 6), bool))
    with pytest.raises(ValueError, match="right/wrong"):
        compare(np.full((2, 5), 0.5), np.ones((2, 5)))
    with pytest.raises(ValueError, match="no runs"):
        compare([], [0.8])
    with pytest.raises(ValueError, match="alpha"):
        compare([0.8, 0.9], [0.8, 0.9], alpha=1.5)


def test_seeds_needed_is_80_percent_power_by_hand() -> None:
    for var_a, var_b, test_var, diff in [(1e-4, 1e-4, 0.0, 0.01), (4e-5, 9e-5, 1e-6, 0.006), (1e-4, 1e-4, 1e-5, 0.02)]:
        expected = next(n for n in range(2, 1001) if (sps.t.ppf(0.975, 2 * n - 2) + sps.t.ppf(0.8, 2 * n - 2))
                        * math.sqrt((var_a + var_b) / n + test_var) <= diff)
        assert seeds_needed(var_a, var_b, test_var, diff) == expected
        assert seeds_needed(var_a, var_b, test_var, -diff) == expected
    assert seeds_needed(1e-4, 1e-4, 1e-4, 0.01) is None  # the test set alone is too small to see it
    assert seeds_needed(1e-4, 1e-4, 0.0, 0.0) is None
    v = compare([0.80, 0.81, 0.79], [0.81, 0.82, 0.80])  # cannot tell: says how many would decide
    assert v.winner is None and v.seeds_needed is not None and f"about {v.seeds_needed} seeds a side" in v.reason


def test_adjust_is_holm_and_drops_winners_it_no_longer_supports() -> None:
    verdicts = [compare([0.80, 0.81, 0.79, 0.80], [b, b + 0.01, b - 0.01, b]) for b in (0.815, 0.83, 0.90)]
    verdicts.append(compare([0.8], [0.9]))  # untestable: not in the family
    out = adjust(verdicts)
    expected = holm([v.p_value for v in verdicts[:3]])
    assert [v.p_adjusted for v in out[:3]] == pytest.approx(expected) and out[3].p_adjusted is None
    for before, after in zip(verdicts, out, strict=True):
        assert after.winner == (before.winner if (after.p_adjusted or 1.0) < 0.05 else None)
    lost = [(b, a) for b, a in zip(verdicts, out, strict=True) if b.winner and not a.winner]
    assert all("after Holm over 3 comparisons" in a.reason for _, a in lost)
    assert isinstance(out[0], Verdict) and out[0].diff == verdicts[0].diff


def _same(x: Verdict, y: Verdict) -> bool:
    """Field by field, nan equal to nan, arrays by value."""
    for f in dataclasses.fields(Verdict):
        u, v = getattr(x, f.name), getattr(y, f.name)
        if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
            continue
        if (isinstance(u, tuple) and all(isinstance(e, float) for e in u + v)
                and all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(u, v, strict=True))):
            continue
        if u != v:
            return False
    return True


@pytest.mark.parametrize("seeds_a, seeds_b", [(5, 5), (1, 5), (5, 1), (1, 1), (3, 2)])
@pytest.mark.parametrize("seed_sd", [None, 0.01])
def test_compare_many_gives_compares_verdicts_exactly(seeds_a: int, seeds_b: int, seed_sd: float | None) -> None:
    """The report compares thousands of rows with `compare_many`: every field as `compare` gives it,
    bit for bit, right/wrong and scores, over the edge cases (ties, zero spread, one seed)."""
    rng = np.random.default_rng(seeds_a * 10 + seeds_b)
    examples = 400
    a = rng.random((seeds_a, examples)) < 0.8
    bs = rng.random((12, seeds_b, examples)) < rng.uniform(0.7, 0.9, (12, 1, 1))
    bs[0] = a[:1].repeat(seeds_b, 0) if seeds_a else bs[0]  # the baseline's first seed, every seed: no spread
    bs[1] = bs[1][:1]  # every seed the same run
    bs[2, :, : examples // 2] = ~bs[2, :, : examples // 2]  # the same score by chance, other examples
    many = compare_many(a, bs, seed_sd=seed_sd)
    assert len(many) == len(bs)
    for b, got in zip(bs, many, strict=True):
        assert _same(got, compare(a, b, seed_sd=seed_sd)), (got, compare(a, b, seed_sd=seed_sd))
    scores_a, scores_b = a.mean(1), bs.mean(2)
    for b, got in zip(scores_b, compare_many(scores_a, scores_b, seed_sd=seed_sd), strict=True):
        assert _same(got, compare(scores_a, b, seed_sd=seed_sd))


def test_compare_many_refuses_mixed_kinds() -> None:
    with pytest.raises(ValueError, match="one kind"):
        compare_many(np.ones((2, 10), bool), np.ones((3, 2, 11), bool))
    with pytest.raises(ValueError, match="one kind"):
        compare_many([0.8, 0.81], np.ones((3, 2, 10), bool))
    with pytest.raises(ValueError, match="dimensions"):
        compare_many([0.8, 0.81], np.ones(3))


def test_paired_moments_and_mcnemar_counts_match_the_one_pair_functions() -> None:
    rng = np.random.default_rng(3)
    a = rng.random(2000) < 0.8
    bs = rng.random((6, 2000)) < 0.8
    bs[0] = a  # no informative example
    bs[1] = a
    bs[1][:10] = ~bs[1][:10]  # few informative examples: their patterns kept
    for b, got in zip(bs, paired_moments(a, bs), strict=True):
        want = moments(a[None], b[None])
        assert (got.sa, got.sb, got.n) == (want.sa, want.sb, want.n)
        assert np.array_equal(got.mean, want.mean) and np.array_equal(got.cov, want.cov)
        assert (got.informative is None) == (want.informative is None)
        if want.informative is not None:
            assert np.array_equal(got.informative, want.informative)
        assert mcnemar_p_counts(int(np.sum(a & ~b)), int(np.sum(~a & b))) == mcnemar_p(a, b)
