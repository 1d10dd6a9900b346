"""The two-level bootstrap of the difference in mean per-seed test accuracy of two
configurations, with the variance of both the seeds and the test examples. The report's verdicts
are `reports.verdict` (with two to four seeds a side a bootstrap over seeds is too narrow); the
report uses this for the seed ensembles' paired bootstrap (one run a side).

- `two_level_bootstrap_many`: for each pair of (seeds x examples) right/wrong matrices on the
  same test examples, resample the seeds of each configuration, then the shared test examples
  (one resample of the examples for every run: all were scored on the same set).

How it stays fast and exact enough over thousands of rows:

- Given a seed resample, the difference is a linear function of the runs' accuracies, which
  depends on the examples only through the examples where the runs disagree ("informative":
  an example every run gets right, or every run gets wrong, adds 0 to the difference).
  With few informative examples (<= EXACT_INFORMATIVE) those are resampled exactly; with more,
  the example level is its normal limit, N(w.mu, w'Sigma w / n) for the seed weights w, with
  the resample's exact mean and covariance (as good as drawing n indices at that size).
- The p-value is the bootstrap's own tail probability P*(diff <= 0), P*(diff >= 0), computed
  without a floor of 1/replicates, so that Holm over thousands of rows can still find a
  difference: under the normal limit it is the mean over the seed resamples of the normal
  tail (a Rao-Blackwellised estimate), with a continuity correction of half a lattice step (a
  difference of exactly 0 counts on both sides, as resampling counts it). Where the few informative
  examples are resampled exactly, p is that resampling's own tail, by a saddlepoint
  approximation of the multinomial sum (Lugannani-Rice, within a few % of exact enumeration,
  deep tails included) averaged over the seed resamples.
- One set of seed resamples and normal draws serves every row with the same seed counts: each
  row's result is the one it gets on its own, and rows cost matrix products.

numpy only; tests/reports/test_bootstrap.py checks all of it against resampling by hand,
exact enumeration and scipy.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from reports.multinomial import draw_tails, normal_cdf

SAMPLES = 10_000  # replicates
SEED = 0
ALPHA = 0.05
EXACT_INFORMATIVE = 64  # at most this many informative examples: resampled exactly, not by the normal limit
_BLOCK = 256  # rows per matrix product (bounds the memory to samples x _BLOCK floats)
_Z = NormalDist().inv_cdf(1 - ALPHA / 2)


@dataclass(frozen=True)
class Bootstrap:
    diff: float  # mean over B's seeds minus mean over A's seeds
    low: float
    high: float
    p_value: float  # two-sided: twice the smaller bootstrap tail probability on either side of 0
    test_sd: float  # the spread of the difference from the test examples alone (seeds fixed)
    exact: bool  # True: the example level resampled exactly (few informative examples, or none to resample)
    replicates: int = SAMPLES


def _p_value(below: np.ndarray | float, above: np.ndarray | float) -> np.ndarray:
    """Two-sided p from the tail probabilities P(diff <= 0) and P(diff >= 0)."""
    return np.minimum(1.0, 2 * np.minimum(below, above))


def _weights(s: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """samples x s: how often each of s seeds is drawn in a resample of s, over s."""
    picks = rng.integers(0, s, size=(samples, s))
    counts = np.zeros((samples, s))
    np.add.at(counts, (np.arange(samples)[:, None], picks), 1.0)
    return counts / s


def _compositions(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Every resample of s seeds as weights (compositions x s, count / s) and its probability."""
    rows, probs = [], []
    log_fact = [math.lgamma(k + 1) for k in range(s + 1)]
    for combo in itertools.combinations_with_replacement(range(s), s):
        counts = np.bincount(combo, minlength=s)
        rows.append(counts / s)
        probs.append(math.exp(log_fact[s] - sum(log_fact[c] for c in counts) - s * math.log(s)))
    return np.array(rows), np.array(probs)


def _n_compositions(s: int) -> int:
    return math.comb(2 * s - 1, s)


# -- both levels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """What the two-level bootstrap needs of one pair of right/wrong matrices."""

    sa: int
    sb: int
    n: int  # shared examples
    mean: np.ndarray  # per-run accuracy, A's runs then B's
    cov: np.ndarray  # per-example covariance of the runs' right/wrong (population), runs x runs
    informative: np.ndarray | None  # the informative examples' patterns (m x runs), when few

    @property
    def observed(self) -> float:
        """Mean accuracy over B's runs minus over A's."""
        return float(self.mean[self.sa:].mean() - self.mean[:self.sa].mean())


def moments(correct_a: np.ndarray, correct_b: np.ndarray) -> Moments:
    """The moments of (seeds x examples) right/wrong matrices of A and B on the same examples."""
    a, b = np.atleast_2d(correct_a), np.atleast_2d(correct_b)
    runs = np.concatenate([a, b]).astype(np.float32)
    n = runs.shape[1]
    mean = runs.mean(1, dtype=np.float64)
    cov = (runs @ runs.T).astype(np.float64) / n - np.outer(mean, mean)
    total = runs.sum(0)
    informative = (total > 0) & (total < len(runs))
    few = int(informative.sum()) <= EXACT_INFORMATIVE
    return Moments(len(a), len(b), n, mean, cov, runs[:, informative].T.astype(np.float64) if few else None)


def paired_moments(correct_a: np.ndarray, correct_b: np.ndarray) -> list[Moments]:
    """`moments(correct_a[None], b[None])` for each row b of `correct_b` (configurations x
    examples; one run a side, as the seed ensembles are), from counts in one pass: the same
    numbers (each entry of `moments`' float32 product is an exact count)."""
    n = correct_a.shape[0]
    count_a = int(np.count_nonzero(correct_a))
    count_b = np.count_nonzero(correct_b, axis=1).tolist()
    both = np.count_nonzero(correct_b & correct_a, axis=1).tolist()
    mean_a = count_a / n
    out = []
    for i, (cb, ab) in enumerate(zip(count_b, both, strict=True)):
        if (count_a - ab) + (cb - ab) <= EXACT_INFORMATIVE:  # few informative examples: their patterns too
            out.append(moments(correct_a[None], correct_b[i][None]))
            continue
        mean_b = cb / n
        mean = np.array([mean_a, mean_b])
        cov = np.array([[count_a / n - mean_a * mean_a, ab / n - mean_a * mean_b],
                        [ab / n - mean_b * mean_a, cb / n - mean_b * mean_b]])
        out.append(Moments(1, 1, n, mean, cov, None))
    return out


def two_level_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, samples: int = SAMPLES,
                        seed: int = SEED) -> Bootstrap:
    """Difference in mean per-seed accuracy, B minus A, with both levels resampled.

    `correct_a`, `correct_b`: seeds x examples booleans on the same examples (columns aligned)."""
    return two_level_bootstrap_many([moments(correct_a, correct_b)], samples=samples, seed=seed)[0]


def two_level_bootstrap_many(pairs: list[Moments], *, samples: int = SAMPLES, seed: int = SEED) -> list[Bootstrap]:
    """`two_level_bootstrap` of each pair (its `moments`); each pair's result is the one it gets alone."""
    out: list[Bootstrap | None] = [None] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(pairs):
        if m.informative is not None:
            out[i] = _exact(m, samples, seed)
        else:
            groups.setdefault((m.sa, m.sb), []).append(i)
    for (sa, sb), members in groups.items():
        for i, result in zip(members, _normal([pairs[i] for i in members], sa, sb, samples, seed), strict=True):
            out[i] = result
    return [r for r in out if r is not None]


@functools.lru_cache(maxsize=16)  # every row with these seed counts uses the same resamples
def _seed_draws(sa: int, sb: int, samples: int, seed: int) -> np.ndarray:
    """samples x (sa + sb) signed weights: minus A's resample, plus B's (each row sums to 0)."""
    rng = np.random.default_rng(seed)
    w = np.concatenate([-_weights(sa, samples, rng), _weights(sb, samples, rng)], axis=1)
    w.setflags(write=False)
    return w


def _even(sa: int, sb: int) -> np.ndarray:
    return np.concatenate([np.full(sa, -1.0 / sa), np.full(sb, 1.0 / sb)])


def _exact(m: Moments, samples: int, seed: int) -> Bootstrap:
    """Few informative examples: resample them exactly. The number drawn in a resample of n is
    binomial(n, k/n), each uniform over the k; the others add nothing to the difference. The
    interval is from those resamples; p from `_exact_tails` (no floor of 1/replicates)."""
    w = _seed_draws(m.sa, m.sb, samples, seed)
    rng = np.random.default_rng([seed, 1])  # the examples' draws: a stream of their own
    patterns = m.informative
    assert patterns is not None
    k = len(patterns)
    observed = m.observed
    if k == 0:  # every run agrees on every example: no difference, and no evidence of one
        return Bootstrap(observed, observed, observed, 1.0, 0.0, True, samples)
    drawn = rng.binomial(m.n, k / m.n, size=samples)
    which = np.repeat(np.arange(samples), drawn)
    picks = rng.integers(0, k, size=len(which))
    diffs = np.bincount(which, weights=(w @ patterns.T)[which, picks], minlength=samples) / m.n
    test_only = np.bincount(which, weights=(patterns @ _even(m.sa, m.sb))[picks], minlength=samples) / m.n
    low, high = np.quantile(diffs, [ALPHA / 2, 1 - ALPHA / 2])
    below, above = _exact_tails(m, w)
    return Bootstrap(observed, float(low), float(high), float(_p_value(below, above)), float(test_only.std()), True,
                     samples)


_TAIL_RESAMPLES = 2_000  # seed resamples the exact path's tail is averaged over (all of them, where fewer)


def _exact_tails(m: Moments, w: np.ndarray) -> tuple[float, float]:
    """P*(diff <= 0) and P*(diff >= 0) with the few informative examples resampled exactly:
    over the seed resamples (every composition where there are at most _TAIL_RESAMPLES, else
    that many of the drawn ones), the tail of n x diff = sum of n draws, each an informative
    example's w . pattern with probability 1/n or 0, from `draw_tails`."""
    assert m.informative is not None
    if _n_compositions(m.sa) * _n_compositions(m.sb) <= _TAIL_RESAMPLES:
        wa, pa = _compositions(m.sa)
        wb, pb = _compositions(m.sb)
        w = np.concatenate([np.repeat(-wa, len(wb), 0), np.tile(wb, (len(wa), 1))], axis=1)
        probs = np.outer(pa, pb).reshape(-1)
    else:
        w = w[:_TAIL_RESAMPLES]
        probs = np.full(len(w), 1.0 / len(w))
    patterns, counts = np.unique(m.informative, axis=0, return_counts=True)
    below, above = draw_tails(w @ patterns.T, counts.astype(float), m.n, _lattice(w, m.sa, m.sb))
    return float(probs @ below), float(probs @ above)


def _lattice(w: np.ndarray, sa: int, sb: int) -> np.ndarray:
    """Per seed resample, the step n x difference moves in: each example adds w . pattern, a
    multiple of gcd(A's counts)/sa and of gcd(B's counts)/sb, so of their rational gcd. A
    difference of exactly 0 counts on both sides, as the exact resamples count it: the normal
    tails get half a step each way (a continuity correction)."""
    counts_a = np.rint(-w[:, :sa] * sa).astype(np.int64)
    counts_b = np.rint(w[:, sa:] * sb).astype(np.int64)
    g_a, g_b = np.gcd.reduce(counts_a, axis=1), np.gcd.reduce(counts_b, axis=1)
    return np.gcd(g_a * sb, g_b * sa) / (sa * sb)


def _normal(group: list[Moments], sa: int, sb: int, samples: int, seed: int) -> list[Bootstrap]:
    """The example level in its normal limit, for rows with the same seed counts."""
    w = _seed_draws(sa, sb, samples, seed)
    z = np.random.default_rng([seed, 2]).standard_normal(samples)
    if sa == sb == 1:  # one seed a side: the weights never change, the distribution is N(centre, sd^2)
        w = w[:1]
    runs = sa + sb
    # w_i w_j for every replicate, so that a block's quadratic forms are one product; past 16 runs
    # (samples x runs^2 floats: 20 MB) a row at a time instead
    pairs = (w[:, :, None] * w[:, None, :]).reshape(len(w), runs * runs) if runs <= 16 else None
    unit = _lattice(w, sa, sb)
    even = _even(sa, sb)
    out = []
    for start in range(0, len(group), _BLOCK):
        block = group[start:start + _BLOCK]
        mean = np.stack([g.mean for g in block])  # rows x runs
        cov = np.stack([g.cov.reshape(-1) / g.n for g in block])  # rows x runs^2, the accuracies' covariance
        centre = w @ mean.T  # samples x rows
        quadratic = (pairs @ cov.T if pairs is not None else
                     np.stack([((w @ c.reshape(runs, runs)) * w).sum(1) for c in cov], axis=1))
        sd = np.sqrt(np.maximum(quadratic, 0.0))
        if len(w) == 1:  # the normal's own quantiles
            half = _Z * sd[0]
            lows, highs = centre[0] - half, centre[0] + half
        else:
            diffs = (centre + sd * z[:, None]).astype(np.float32)  # float32: half the partition's work
            lows, highs = np.quantile(diffs, [ALPHA / 2, 1 - ALPHA / 2], axis=0)
        half_step = unit[:, None] / (2 * np.array([g.n for g in block]))[None, :]
        spread = sd > 1e-12
        safe = np.where(spread, sd, 1.0)
        below = np.where(spread, normal_cdf((half_step - centre) / safe), centre <= 1e-12).mean(0)
        above = np.where(spread, normal_cdf((centre + half_step) / safe), centre >= -1e-12).mean(0)
        p = _p_value(below, above)
        test_sd = np.sqrt(np.maximum(cov @ np.outer(even, even).reshape(-1), 0.0))
        out += [Bootstrap(block[i].observed, float(lows[i]), float(highs[i]), float(p[i]), float(test_sd[i]), False,
                          samples)
                for i in range(len(block))]
    return out
