"""Statistics for comparing configurations: seed means, McNemar's test, and the secondary
comparison of two seed ensembles (McNemar's p with the paired bootstrap's interval, which is
`reports.bootstrap` with one run a side).

Pure functions on numpy arrays; no scipy needed at run time (the tests check these against
scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
    return mcnemar_p_counts(int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b)))


def mcnemar_p_counts(b: int, c: int) -> float:
    """`mcnemar_p` from the discordant counts: b examples only A gets right, c only B."""
    n = b + c
    if n == 0:
        return 1.0
    # log C(n, k) by a running sum of log((n - k + 1) / k): vectorised, and no 2**n integers
    k = np.arange(1, min(b, c) + 1)
    log_pmf = np.concatenate([[0.0], np.cumsum(np.log((n - k + 1) / k))]) - n * math.log(2)
    top = log_pmf.max()
    tail = math.exp(top) * float(np.exp(log_pmf - top).sum())
    return min(1.0, 2 * tail)


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
