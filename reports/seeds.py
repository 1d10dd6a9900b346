"""Describing two configurations' seeds beside the verdict (`reports.verdict`).

Each configuration is a set of runs (seeds), each scored on the same test examples. The
questions are about the configurations, not about one seed or a seed ensemble, so both sources
of variance count: the seeds (training randomness) and the test examples (a finite test set).

- `aso`: Almost Stochastic Order's eps_min (Dror et al. 2019), computed as `deepsig.aso` does
  but for two things deepsig gets wrong (see `_violation` and `aso_many`).
- `prob_better`: P(A > B) over seed pairs (Bouthillier et al. 2021).
- `holm`: Holm-Bonferroni adjusted p-values over the rows of a table.

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
        # clipped as whole arrays: np.clip on each scalar cost a 10,000-trial report 0.15 s
        upper = np.clip(ratio + margin, 0, 1).tolist()
        lower = np.clip(reverse + margin, 0, 1).tolist()
        out += [Aso(r, v) for r, v in zip(upper, lower, strict=True)]
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
