"""Statistics for comparing configurations: seed means, paired bootstrap, McNemar's test.

Pure functions on numpy arrays; no scipy needed at run time (the tests check these against
scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
ALPHA = 0.05


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value). Plain Python: a
    report computes thousands of these over a handful of seeds, where numpy's overhead dominates."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return float(mean), None
    return float(mean), math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar test: a binomial test on the discordant pairs."""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    n = b + c
    if n == 0:
        return 1.0
    # log C(n, k) by a running sum of log((n - k + 1) / k): vectorised, and no 2**n integers
    k = np.arange(1, min(b, c) + 1)
    log_pmf = np.concatenate([[0.0], np.cumsum(np.log((n - k + 1) / k))]) - n * math.log(2)
    top = log_pmf.max()
    tail = math.exp(top) * float(np.exp(log_pmf - top).sum())
    return min(1.0, 2 * tail)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Accuracy difference b - a and its 95% percentile interval, resampling the shared
    examples with replacement (the same resample for both, hence paired).

    Each example's difference is +1 (only b right), -1 (only a right) or 0, so a resample's
    mean is (#(+1) - #(-1)) / n with the counts multinomial(n; p+, p-, p0): drawing the counts
    is the same bootstrap as drawing n indices, in O(samples) instead of O(samples x n).
    """
    n = len(correct_a)
    plus = int(np.sum(~correct_a & correct_b))
    minus = int(np.sum(correct_a & ~correct_b))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [plus / n, minus / n, (n - plus - minus) / n], size=samples)
    means = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return (plus - minus) / n, float(lo), float(hi)


@dataclass(frozen=True)
class Comparison:
    diff: float
    low: float
    high: float
    p_value: float
    n: int  # shared test examples

    @property
    def significant(self) -> bool:
        """Both say so: the interval excludes 0 and McNemar's p < 0.05."""
        return (self.low > 0 or self.high < 0) and self.p_value < ALPHA


def compare(correct_a: np.ndarray, correct_b: np.ndarray) -> Comparison:
    diff, low, high = paired_bootstrap(correct_a, correct_b)
    return Comparison(diff, low, high, mcnemar_p(correct_a, correct_b), len(correct_a))
