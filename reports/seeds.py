"""Comparing configurations across seeds: what the headline of a report rests on.

Each configuration is a set of runs (seeds), each scored on the same test examples. The
questions are about the configurations, not about one seed or a seed ensemble, so both sources
of variance count: the seeds (training randomness) and the test examples (a finite test set).

- `reports.bootstrap`: the mean difference of per-seed test accuracy, its 95% interval and p
  from a two-level bootstrap (the seeds of each configuration, then the shared test examples).
- `aso`: Almost Stochastic Order's eps_min (Dror et al. 2019), computed as `deepsig.aso` does
  but for two things deepsig gets wrong (see `_violation` and `aso_many`).
- `prob_better`: P(A > B) over seed pairs (Bouthillier et al. 2021).
- `holm`: Holm-Bonferroni adjusted p-values over the rows of a table.
- `seeds_needed`: seeds per configuration for the interval of a difference to exclude 0.

numpy only; the tests check these against scipy, deepsig and the paper's definitions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

ASO_SAMPLES = 1_000  # deepsig's default num_bootstrap_iterations
ASO_DT = 0.005  # deepsig's default dt
ASO_TAU = 0.5  # Dror et al.: eps_min < 0.5 means A is almost stochastically better
ALPHA = 0.05
SEED = 0


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
    """Violation ratio eps_W2 (Dror et al. eq. 4-5) of 'A dominates B', per row of the inputs,
    on deepsig's grid. deepsig 1.2.8 leaves the first grid point (t = dt) out of the numerator
    (`diff[1:]`, meant to skip t = 0, which its grid does not hold) but not the denominator; here
    both sums run over the same points, as the paper's integrals do. The two differ when
    min(A) < min(B), by up to a few hundredths."""
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
    ratio plus a bootstrap bound at `confidence`, Bonferroni-adjusted over `comparisons`
    (confidence 1 - (1 - confidence) / comparisons)."""
    return aso_many(scores_a, np.asarray(scores_b, dtype=float)[None], confidence=confidence,
                    comparisons=comparisons, samples=samples, dt=dt, seed=seed)[0]


def aso_many(scores_a: np.ndarray, scores_b: np.ndarray, *, confidence: float = 0.95, comparisons: int = 1,
             samples: int = ASO_SAMPLES, dt: float = ASO_DT, seed: int = SEED) -> list[Aso]:
    """`aso` of A against each row of `scores_b` (rows x seeds, equal seed counts)."""
    a = np.sort(np.asarray(scores_a, dtype=float))
    b = np.sort(np.atleast_2d(np.asarray(scores_b, dtype=float)), axis=1)
    na, nb = len(a), b.shape[1]
    # Bonferroni: each of m comparisons at 1 - alpha / m. deepsig 1.2.8 computes
    # confidence + (1 - confidence) / m = 1 - alpha (1 - 1/m) instead, which loosens as m grows.
    confidence = 1 - (1 - confidence) / max(1, comparisons)
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
    the true difference is `effect`, at the observed seed spreads (equal seed counts, a t
    interval with 2n - 2 degrees of freedom), plus the test set's own spread of the difference
    (which more seeds do not shrink). The interval is centred on the estimate, so at this n a
    new experiment excludes 0 about half the time (for 80% power, about twice the seeds).
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
