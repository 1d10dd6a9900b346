"""Comparing configurations across seeds: what the headline of a report rests on.

Each configuration is a set of runs (seeds), each scored on the same test examples. The
questions are about the configurations, not about one seed or a seed ensemble, so both sources
of variance count: the seeds (training randomness) and the test examples (a finite test set).

- `two_level_bootstrap`: the mean difference of per-seed test accuracy and its 95% percentile
  interval, resampling the seeds of each configuration, then the test examples (one resample
  of the shared examples per replicate, applied to every run: all were scored on the same set).
- `aso`: Almost Stochastic Order's eps_min (Dror et al. 2019, as `deepsig.aso` computes it).
- `prob_better`: P(A > B) over seed pairs (Bouthillier et al. 2021).
- `holm`: Holm-Bonferroni adjusted p-values over the rows of a table.
- `seeds_needed`: seeds per configuration for the interval of a difference to exclude 0.

numpy only; the tests check these against scipy, deepsig and direct resampling.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

SAMPLES = 10_000  # two-level bootstrap replicates
ASO_SAMPLES = 1_000  # deepsig's default num_bootstrap_iterations
ASO_DT = 0.005  # deepsig's default dt
ASO_TAU = 0.5  # Dror et al.: eps_min < 0.5 means A is almost stochastically better
ALPHA = 0.05
EXACT_PATTERNS = 64  # beyond this many distinct correctness patterns, the example level is drawn from its normal limit
SEED = 0


def _example_level(correct: np.ndarray, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Accuracy of every run (rows of `correct`, runs x examples) on `samples` bootstrap
    resamples of the examples, the same resample for every run: (samples x runs, exact?).

    Examples with the same pattern of right/wrong over the runs are interchangeable, so a
    resample is the multinomial count of each pattern (as good as drawing n indices). With
    many distinct patterns that costs samples x patterns draws; there the per-run accuracies
    are drawn from the multinomial's normal limit instead (its exact mean and covariance).
    """
    runs, n = correct.shape
    if runs <= 62:  # one int64 key per example is faster than np.unique over rows
        bits = np.left_shift(np.ones(runs, dtype=np.int64), np.arange(runs))
        keys, counts = np.unique(bits @ correct.astype(np.int64), return_counts=True)
        patterns = ((keys[:, None] >> np.arange(runs)) & 1).astype(np.int8)
    else:
        patterns, counts = np.unique(correct.T, axis=0, return_counts=True)  # patterns x runs
    p = counts / n
    if len(patterns) <= EXACT_PATTERNS:
        out = np.empty((samples, runs))
        for start in range(0, samples, 2_000):
            draws = rng.multinomial(n, p, size=min(2_000, samples - start))
            out[start:start + len(draws)] = draws @ patterns / n
        return out, True
    mean = p @ patterns
    centred = patterns - mean
    cov = (centred.T * p) @ centred / n
    return rng.multivariate_normal(mean, cov, size=samples, method="eigh"), False


@dataclass(frozen=True)
class Bootstrap:
    diff: float  # mean over B's seeds minus mean over A's seeds
    low: float
    high: float
    p_value: float  # two-sided: twice the smaller share of replicates on either side of 0
    test_sd: float  # the spread of the difference from the test examples alone (seeds fixed)
    exact: bool  # False: the example level was drawn from its normal limit


def two_level_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, samples: int = SAMPLES,
                        seed: int = SEED) -> Bootstrap:
    """Difference in mean per-seed accuracy, B minus A, with both levels resampled.

    `correct_a`, `correct_b`: seeds x examples booleans on the same examples (columns aligned).
    Without per-example predictions, pass scores to `seed_bootstrap` instead.
    """
    correct_a, correct_b = np.atleast_2d(correct_a), np.atleast_2d(correct_b)
    sa, sb = len(correct_a), len(correct_b)
    rng = np.random.default_rng(seed)
    acc, exact = _example_level(np.concatenate([correct_a, correct_b]).astype(np.int8), samples, rng)
    acc_a, acc_b = acc[:, :sa], acc[:, sa:]
    pick_a = rng.integers(0, sa, size=(samples, sa))
    pick_b = rng.integers(0, sb, size=(samples, sb))
    diffs = np.take_along_axis(acc_b, pick_b, 1).mean(1) - np.take_along_axis(acc_a, pick_a, 1).mean(1)
    observed = float(correct_b.mean(1).mean() - correct_a.mean(1).mean())
    test_only = acc_b.mean(1) - acc_a.mean(1)
    return _summary(observed, diffs, test_sd=float(test_only.std()), exact=exact)


def seed_bootstrap(scores_a: np.ndarray, scores_b: np.ndarray, *, samples: int = SAMPLES, seed: int = SEED) -> Bootstrap:
    """The seed level alone, on per-seed scores (no per-example predictions to resample)."""
    return seed_bootstrap_many(scores_a, np.asarray(scores_b, dtype=float)[None], samples=samples, seed=seed)[0]


def seed_bootstrap_many(scores_a: np.ndarray, scores_b: np.ndarray, *, samples: int = SAMPLES,
                        seed: int = SEED) -> list[Bootstrap]:
    """`seed_bootstrap` of A against each row of `scores_b` (rows x seeds, equal seed counts),
    with one set of resampled seed indices for all rows: each row's interval is the same as on
    its own, and thousands of rows cost a few matrix products."""
    a, b = np.asarray(scores_a, dtype=float), np.atleast_2d(np.asarray(scores_b, dtype=float))
    rng = np.random.default_rng(seed)
    mean_a = a[rng.integers(0, len(a), size=(samples, len(a)))].mean(1)
    picks = rng.integers(0, b.shape[1], size=(samples, b.shape[1]))
    weights = np.zeros((samples, b.shape[1]))
    np.add.at(weights, (np.arange(samples)[:, None], picks), 1.0 / b.shape[1])
    out = []
    for start in range(0, len(b), 256):
        block = b[start:start + 256]
        diffs = (block @ weights.T - mean_a[None, :]).astype(np.float32)  # float32: half the partition's work
        lows, highs = np.quantile(diffs, [ALPHA / 2, 1 - ALPHA / 2], axis=1)
        below, above = np.sum(diffs <= 0, axis=1), np.sum(diffs >= 0, axis=1)
        observed = block.mean(1) - a.mean()
        for i in range(len(block)):
            p = min(1.0, 2 * (min(below[i], above[i]) + 1) / (samples + 1))
            out.append(Bootstrap(float(observed[i]), float(lows[i]), float(highs[i]), p, 0.0, True))
    return out


def _summary(observed: float, diffs: np.ndarray, *, test_sd: float, exact: bool) -> Bootstrap:
    low, high = np.quantile(diffs, [ALPHA / 2, 1 - ALPHA / 2])
    below, above = np.sum(diffs <= 0), np.sum(diffs >= 0)
    p = min(1.0, 2 * (min(below, above) + 1) / (len(diffs) + 1))
    return Bootstrap(observed, float(low), float(high), p, test_sd, exact)


# -- Almost Stochastic Order ------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _segments(na: int, nb: int, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """deepsig integrates over t = dt, 2dt, ... < 1 on the empirical quantile functions, which
    are step functions: group the grid points by the (A index, B index) they read."""
    t = np.arange(dt, 1, dt)
    ia = np.clip(np.ceil(na * t).astype(int) - 1, 0, na - 1)
    ib = np.clip(np.ceil(nb * t).astype(int) - 1, 0, nb - 1)
    pairs, weights = np.unique(np.stack([ia, ib], 1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], weights * dt


def _violation(sorted_a: np.ndarray, sorted_b: np.ndarray, ia: np.ndarray, ib: np.ndarray,
               w: np.ndarray) -> np.ndarray:
    """Violation ratio eps_W2 (Dror et al. eq. 4-5) of 'A dominates B', per row of the inputs."""
    f, g = sorted_a[..., ia], sorted_b[..., ib]
    sq = (g - f) ** 2 * w
    total = sq.sum(-1)
    violated = np.where(f < g, sq, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, violated / np.where(total > 0, total, 1.0), 0.5)


@dataclass(frozen=True)
class Aso:
    eps_a_over_b: float  # < tau: A almost stochastically dominates B
    eps_b_over_a: float


def aso(scores_a: np.ndarray, scores_b: np.ndarray, *, confidence: float = 0.95, comparisons: int = 1,
        samples: int = ASO_SAMPLES, dt: float = ASO_DT, seed: int = SEED) -> Aso:
    """eps_min of A over B and of B over A (higher scores better), as `deepsig.aso`: the violation
    ratio plus a bootstrap bound at `confidence`, Bonferroni-adjusted over `comparisons`."""
    return aso_many(scores_a, np.asarray(scores_b, dtype=float)[None], confidence=confidence,
                    comparisons=comparisons, samples=samples, dt=dt, seed=seed)[0]


def aso_many(scores_a: np.ndarray, scores_b: np.ndarray, *, confidence: float = 0.95, comparisons: int = 1,
             samples: int = ASO_SAMPLES, dt: float = ASO_DT, seed: int = SEED) -> list[Aso]:
    """`aso` of A against each row of `scores_b` (rows x seeds, equal seed counts)."""
    a = np.sort(np.asarray(scores_a, dtype=float))
    b = np.sort(np.atleast_2d(np.asarray(scores_b, dtype=float)), axis=1)
    na, nb = len(a), b.shape[1]
    if comparisons > 1:
        confidence += (1 - confidence) / comparisons
    z = -NormalDist().inv_cdf(1 - confidence)
    const = math.sqrt(na * nb / (na + nb))
    ia, ib, w = _segments(na, nb, dt)
    rng = np.random.default_rng(seed)
    # resampling sorted scores at sorted positions gives sorted resamples: no sort per row
    boot_a = a[np.sort(rng.integers(0, na, size=(samples, na)), axis=1)][None]
    picks = np.sort(rng.integers(0, nb, size=(samples, nb)), axis=1)
    out = []
    for start in range(0, len(b), 64):
        block = b[start:start + 64]
        ratio = _violation(a[None], block, ia, ib, w)
        reverse = _violation(block, a[None], ib, ia, w)  # 1 - ratio, or 0.5 for both when A and B coincide
        boot = _violation(boot_a, block[:, picks], ia, ib, w)
        margin = np.std(const * (boot - ratio[:, None]), axis=1) / const * z
        out += [Aso(float(np.clip(r + m, 0, 1)), float(np.clip(v + m, 0, 1)))
                for r, v, m in zip(ratio, reverse, margin, strict=True)]
    return out


# -- the rest -----------------------------------------------------------------------------------


def prob_better(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """P(A > B): the share of (seed of A, seed of B) pairs where A scores higher, ties half."""
    a, b = np.asarray(scores_a, dtype=float)[:, None], np.asarray(scores_b, dtype=float)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


@functools.lru_cache(maxsize=4096)  # seeds_needed bisects over the same few dozen df for every row
def t_quantile(q: float, df: int) -> float:
    """Student's t quantile: exact for df 1 and 2, Hill (1970)'s expansion above (within 0.2%)."""
    if df == 1:
        return math.tan(math.pi * (q - 0.5))
    if df == 2:
        return (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    z = NormalDist().inv_cdf(q)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def seeds_needed(sd_a: float | None, sd_b: float | None, effect: float, *, test_sd: float = 0.0,
                 limit: int = 1000) -> int | None:
    """Seeds per configuration for a 95% interval of the difference of means to exclude 0 when
    the true difference is `effect`, at the observed seed spreads (Welch, equal seed counts),
    plus the test set's own spread of the difference (which more seeds do not shrink).
    None: no number up to `limit` does (or no spread to go on)."""
    if sd_a is None or sd_b is None or effect == 0:
        return None
    var = sd_a**2 + sd_b**2

    def enough(n: int) -> bool:  # the half-width shrinks as n grows: bisect
        return t_quantile(1 - ALPHA / 2, max(1, 2 * n - 2)) * math.sqrt(var / n + test_sd**2) < abs(effect)

    if not enough(limit):
        return None
    lo, hi = 2, limit
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo
