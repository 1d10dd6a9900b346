"""Is B better than A? One answer for every table, page and notebook: `compare(a, b)`.

`a` (the baseline) and `b` are a configuration's runs: per-seed scores (a sequence of floats),
or per-seed right/wrong on the same test examples in the same order (seeds x examples booleans).

The difference of the means of b and a is judged against two sources of variance
(Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks"):

- **the seeds**: each side's per-seed scores on the test set vary with training randomness.
  Their variance is each side's sample variance (n - 1 degrees of freedom), the quantity
  Welch's t uses.
- **the test set**: the test examples are a sample of the task. With predictions, the
  variance over examples of the per-example difference of the two sides' means, less what the
  seeds' own per-example noise contributes to it (counted with the seeds already), over the
  number of examples, estimates how the true difference would move on another test set of that
  size: two models of equal accuracy that err on different examples differ on any one test
  set, by more than their seeds do. Without predictions it cannot be estimated, and the
  comparison is about this test set (the reason says so).

The difference over its standard error is referred to Student's t with Welch-Satterthwaite's
degrees of freedom over those components: exactly Welch's t on scores alone. A side with one
seed has no variance of its own: it takes `seed_sd` (given, or pooled by the report over the
sweep's configurations with several seeds) or else the other side's (the same configuration
under the null); one seed a side without `seed_sd` gives no winner. Zero spread is not
certainty: seeds that tie on their score but disagree on examples take the variance those
disagreements imply; a side without any spread takes the other side's; two sides without any
give no winner.

`bench/verdict_calibration.py` shows the false-winner rate and the power of this test beside
Welch's t over seeds a side x test-set size x error correlation; tests/reports/test_verdict.py
checks it against scipy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reports.seeds import holm
from reports.tdist import NORMAL, t_ppf, t_sf

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # seeds_needed looks no further


@dataclass(frozen=True)
class Verdict:
    """B (the row) against A (the baseline)."""

    diff: float  # mean of b minus mean of a
    low: float  # its 1 - alpha interval (nan when there is nothing to test against)
    high: float
    p_value: float  # two-sided (nan when there is nothing to test against)
    winner: str | None  # "a", "b", or None: cannot tell
    seeds_needed: int | None  # seeds a side for the observed difference to be decided at 80% power
    reason: str  # one sentence a person reads
    seeds: tuple[int, int] = (0, 0)  # (a, b) seeds compared
    examples: int = 0  # shared test examples (0: scores only)
    se: float = math.nan  # standard error of diff
    df: float = math.inf  # degrees of freedom of the t reference
    test_sd: float = 0.0  # the test set's share of the standard error (0 on scores alone)
    p_adjusted: float | None = None  # Holm-adjusted over a family of comparisons (`adjust`)
    alpha: float = ALPHA
    seed_vars: tuple[float, float] = (math.nan, math.nan)  # the per-seed variances used for (a, b)

    @property
    def testable(self) -> bool:
        return not math.isnan(self.p_value)

    @property
    def word(self) -> str:
        """'better' / 'worse' (b against a), or 'cannot tell'."""
        return {"b": "better", "a": "worse"}.get(self.winner or "", "cannot tell")


@dataclass(frozen=True)
class Runs:
    """What `compare` needs of one side's runs (`runs(x)`): build it once to compare one baseline
    with many configurations."""

    n: int  # seeds
    mean: float
    scores: np.ndarray  # per seed
    var: float | None  # per-seed variance (None: one seed)
    df: float  # its degrees of freedom
    p: np.ndarray | None  # per-example share of seeds right (predictions)
    noise: float | None  # mean over examples of the per-example seed variance (predictions, two or more seeds)


def runs(x: Sequence[float] | np.ndarray | Runs, name: str = "runs") -> Runs:
    """A side's summary: per-seed scores (1-D), or per-seed right/wrong (seeds x examples)."""
    if isinstance(x, Runs):
        return x
    x = _as_runs(x, name)
    if x.ndim == 2:
        return _runs_many((np.count_nonzero(x, axis=1) / x.shape[1])[None], (np.count_nonzero(x, axis=0) / len(x))[None])[0]
    return _runs_many(x[None], None)[0]


def _runs_many(scores: np.ndarray, p: np.ndarray | None) -> list[Runs]:
    """`runs` of each configuration: `scores` configurations x seeds, `p` configurations x
    examples (the share of seeds right), or None for scores alone."""
    k, n = scores.shape
    means = scores.mean(1)
    if n < 2:
        return [Runs(n, m, scores[i], None, math.inf, None if p is None else p[i], None)
                for i, m in enumerate(means.tolist())]
    var = scores.var(axis=1, ddof=1)
    var[var <= (1e-12 * np.maximum(1.0, np.abs(means))) ** 2] = 0.0  # equal scores, up to rounding
    noise = None
    if p is not None:
        noise = (p * (1 - p)).mean(1) * n / (n - 1)  # unbiased per-example variance of a 0/1 over seeds
        # seeds that tie on the score by chance: their disagreements still show a spread
        var = np.where(var == 0, noise / p.shape[1], var)
    noises = [None] * k if noise is None else noise.tolist()
    return [Runs(n, m, scores[i], v, n - 1.0, None if p is None else p[i], e)
            for i, (m, v, e) in enumerate(zip(means.tolist(), var.tolist(), noises, strict=True))]


def _as_runs(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: scores must be finite (a diverged run has no test score: leave it out and say so)")
    elif arr.ndim == 2:
        if arr.dtype != bool:
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name}: a 2-D array must hold right/wrong (booleans or 0/1), seeds x examples")
            arr = arr.astype(bool)
    else:
        raise ValueError(f"{name}: expected per-seed scores (1-D) or per-seed right/wrong (seeds x examples), "
                         f"got {arr.ndim} dimensions")
    if arr.shape[0] == 0 or arr.size == 0:
        raise ValueError(f"{name}: no runs")
    return arr


def compare(a: Sequence[float] | np.ndarray | Runs, b: Sequence[float] | np.ndarray | Runs, *, alpha: float = ALPHA,
            seed_sd: float | None = None, seed_df: float | None = None) -> Verdict:
    """B against A (the baseline): the difference of means, its interval, p, the winner or None.

    `seed_sd`: the per-seed standard deviation of a score, for a side with one seed (known
    exactly unless `seed_df` gives the degrees of freedom it was estimated with)."""
    _check(alpha, seed_sd)
    sa, sb = runs(a, "a"), runs(b, "b")
    if (sa.p is None) != (sb.p is None) or (sa.p is not None and sb.p is not None and len(sa.p) != len(sb.p)):
        shapes = [("scores" if s.p is None else f"{s.n} x {len(s.p)}") for s in (sa, sb)]
        raise ValueError(f"a and b must be of one kind: scores, or right/wrong on the same examples "
                         f"(got {shapes[0]} and {shapes[1]})")
    examples = len(sa.p) if sa.p is not None else 0
    test_var = _test_var(sa, sb) if examples else 0.0
    return _decide(sa, sb, test_var, examples, alpha=alpha, seed_sd=seed_sd,
                   seed_df=math.inf if seed_df is None else float(seed_df))


def compare_many(a: Sequence[float] | np.ndarray | Runs, bs: np.ndarray, *, alpha: float = ALPHA,
                 seed_sd: float | None = None, seed_df: float | None = None) -> list[Verdict]:
    """`[compare(a, b, ...) for b in bs]`, with the arrays summed in one pass: `bs` is
    configurations x seeds x examples right/wrong (on `a`'s examples), or configurations x seeds
    scores. The same verdicts, in a fraction of the time: a report compares thousands of rows."""
    _check(alpha, seed_sd)
    sa = runs(a, "a")
    bs = np.asarray(bs)
    if bs.ndim == 3:
        k, n, examples = bs.shape
        if sa.p is None or examples != len(sa.p):
            raise ValueError(f"a and bs must be of one kind: bs is right/wrong on {examples} examples, a "
                             + ("scores" if sa.p is None else f"on {len(sa.p)}"))
        right_wrong = _as_runs(bs.reshape(k * n, examples), "bs").reshape(k, n, examples)
        # counts (count_nonzero: a fraction of a boolean sum's time), then shares, as `runs` takes them
        share = np.count_nonzero(right_wrong, axis=1) / n  # configurations x examples: the share of seeds right
        side_b = _runs_many(np.count_nonzero(right_wrong, axis=2) / examples, share)
        # the test set's share: the expensive part of `_test_var` (a variance over the examples), at once
        diff_vars = (share - sa.p).var(axis=1, ddof=1).tolist() if examples > 1 else [0.0] * k
        test_vars = [_test_var(sa, sb, dv) for sb, dv in zip(side_b, diff_vars, strict=True)]
    elif bs.ndim == 2:
        if sa.p is not None:
            raise ValueError("a and bs must be of one kind: bs holds scores, a right/wrong")
        side_b = _runs_many(_as_runs(bs.reshape(-1), "bs").reshape(bs.shape), None)
        test_vars = [0.0] * len(side_b)
    else:
        raise ValueError(f"bs: expected configurations x seeds (scores) or configurations x seeds x examples "
                         f"(right/wrong), got {bs.ndim} dimensions")
    examples = len(sa.p) if sa.p is not None else 0
    df = math.inf if seed_df is None else float(seed_df)
    return [_decide(sa, sb, tv, examples, alpha=alpha, seed_sd=seed_sd, seed_df=df)
            for sb, tv in zip(side_b, test_vars, strict=True)]


def _check(alpha: float, seed_sd: float | None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: {alpha!r}; expected 0 < alpha < 1")
    if seed_sd is not None and not (math.isfinite(seed_sd) and seed_sd >= 0):
        raise ValueError(f"seed_sd: {seed_sd!r}; expected a finite standard deviation >= 0")


def _test_var(sa: Runs, sb: Runs, diff_var: float | None = None) -> float:
    """The test set's share of var(diff), unbiased: the variance over examples of the per-example
    difference of the sides' means (`diff_var`, when computed already), less the seeds' own
    per-example noise in it (counted with the seeds), over the number of examples. Not clipped
    at 0: under the null of two equal configurations its expectation is 0, and a clipped
    estimate would be biased up. A side with one seed has no noise estimate: nothing is taken
    off for it (conservative)."""
    assert sa.p is not None and sb.p is not None
    n = len(sa.p)
    if n < 2:
        return 0.0
    own = sum(s.noise / s.n for s in (sa, sb) if s.noise is not None)
    if diff_var is None:
        diff_var = float((sb.p - sa.p).var(ddof=1))
    return (diff_var - own) / n


def _decide(sa: Runs, sb: Runs, test_var: float, examples: int, *, alpha: float, seed_sd: float | None,
            seed_df: float) -> Verdict:
    diff = sb.mean - sa.mean
    seeds = (sa.n, sb.n)
    parts: list[str] = []
    var_a, df_a, var_b, df_b = sa.var, sa.df, sb.var, sb.df
    shared = False  # one estimate of the seed variance serves both sides: one component, its df once
    if var_a is None or var_b is None:  # one seed on a side
        if seed_sd is not None:
            fill, fill_df = seed_sd**2, seed_df
            parts.append(f"one seed on {'a side' if (var_a is None) != (var_b is None) else 'each side'}: "
                         f"seed sd {seed_sd:.4g} taken as given")
        elif var_a is None and var_b is None:
            return _undecided(diff, seeds, examples, alpha, "one seed a side: seed variance unknown (give seed_sd, or "
                              "run more seeds)")
        else:
            fill, fill_df = (var_b, df_b) if var_b is not None else (var_a, df_a)  # type: ignore[assignment]
            parts.append("one seed on a side: its seed variance taken from the other side's")
        if var_a is None:
            var_a, df_a = fill, fill_df
        if var_b is None:
            var_b, df_b = fill, fill_df
        shared = seed_sd is None or (sa.var is None and sb.var is None)
    assert var_a is not None and var_b is not None
    if var_a == 0 or var_b == 0:  # zero spread is not certainty
        if var_a == var_b == 0:
            if test_var <= 0:
                return _undecided(diff, seeds, examples, alpha,
                                  "no spread between seeds on either side: their variance cannot be estimated")
        else:
            var_a, df_a, var_b, df_b = (var_b, df_b, var_b, df_b) if var_a == 0 else (var_a, df_a, var_a, df_a)
            shared = True
            parts.append("a side without spread between its seeds: its variance taken from the other side's")
    comps = [(var_a / sa.n + var_b / sb.n, df_a)] if shared else [(var_a / sa.n, df_a), (var_b / sb.n, df_b)]
    if examples:
        # an estimate of the test set's share below 0 (the seeds' noise over-subtracted by
        # chance) lowers the total only so far: never below the seeds' share alone, halved
        test_var = max(test_var, -sum(v for v, _ in comps) / 2)
        comps.append((test_var, examples - 1.0))
    se2 = sum(v for v, _ in comps)
    if se2 <= 0:
        return _undecided(diff, seeds, examples, alpha, "no spread between seeds or test examples to test against")
    se = math.sqrt(se2)
    denom = sum(v * v / df for v, df in comps if v > 0 and math.isfinite(df))  # Welch-Satterthwaite
    df = se2 * se2 / denom if denom > 0 else math.inf
    p = 2 * t_sf(abs(diff) / se, df)
    q = t_ppf(1 - alpha / 2, df)
    winner = None if p >= alpha or diff == 0 else ("b" if diff > 0 else "a")
    needed = seeds_needed(var_a, var_b, max(test_var, 0.0), diff, alpha=alpha)
    scope = "seeds and test examples" if examples else "seeds (scores only: this test set's examples not resampled)"
    reason = (f"{'b' if diff > 0 else 'a'} is better" if winner else "cannot tell") + f" over {scope}"
    if parts:
        reason += "; " + "; ".join(parts)
    if winner is None:
        reason += (f"; about {needed} seeds a side would decide at 80% power" if needed is not None else
                   "; more seeds alone would not decide it" if diff != 0 else "")
    return Verdict(diff, diff - q * se, diff + q * se, p, winner, needed, reason, seeds, examples, se, df,
                   math.sqrt(max(test_var, 0.0)), alpha=alpha, seed_vars=(var_a, var_b))


def _undecided(diff: float, seeds: tuple[int, int], examples: int, alpha: float, reason: str) -> Verdict:
    return Verdict(diff, math.nan, math.nan, math.nan, None, None, reason, seeds, examples, alpha=alpha)


def seeds_needed(var_a: float, var_b: float, test_var: float, diff: float, *, alpha: float = ALPHA,
                 power: float = POWER, limit: int = MAX_SEEDS) -> int | None:
    """Seeds a side (both sides alike) for a true difference `diff` to be decided at `power`,
    at these per-seed variances and the test set's own (which more seeds do not shrink):
    (t_{1-alpha/2} + t_power) x se(n) <= |diff|, t with 2n - 2 degrees of freedom. None: no
    number up to `limit` does."""
    if diff == 0 or not math.isfinite(diff):
        return None

    def enough(n: int) -> bool:
        df = 2 * n - 2
        return (t_ppf(1 - alpha / 2, df) + t_ppf(power, df)) * math.sqrt((var_a + var_b) / n + test_var) <= abs(diff)

    if not enough(limit):
        return None
    # t quantiles exceed the normal's, so the normal's n is a lower bound: start the search there
    # (a report asks this for every row; a bisection from 2 cost ten t evaluations a row)
    z = NORMAL.inv_cdf(1 - alpha / 2) + NORMAL.inv_cdf(power)
    room = (diff / z) ** 2 - test_var
    lo, hi = (max(2, min(limit, math.ceil((var_a + var_b) / room - 1e-9))) if room > 0 else 2), limit
    for _ in range(3):  # usually within a step or two of the bound
        if enough(lo):
            return lo
        lo += 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def adjust(verdicts: list[Verdict]) -> list[Verdict]:
    """Holm-Bonferroni over a family of comparisons (the rows of a table against one baseline):
    each testable verdict's `p_adjusted`, and its winner kept only where that is below alpha."""
    tested = [i for i, v in enumerate(verdicts) if v.testable]
    out = list(verdicts)
    for i, p in zip(tested, holm([verdicts[i].p_value for i in tested]), strict=True):
        v = verdicts[i]
        winner = v.winner if p < v.alpha else None
        reason = v.reason if winner == v.winner else (
            v.reason.replace(f"{v.winner} is better", "cannot tell", 1) + f" (p {v.p_value:.3g}, {p:.3g} after Holm "
            f"over {len(tested)} comparisons)")
        out[i] = dataclasses.replace(v, p_adjusted=p, winner=winner, reason=reason)
    return out
