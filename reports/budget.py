"""Expected validation performance against budget (Dodge et al. 2019, "Show your work").

Given the N validation scores a sweep or study produced, the expected best score among k
trials drawn from the same distribution (the empirical one, with replacement), k = 1..N:

    E[max_k] = sum_i v_(i) * ((i/N)^k - ((i-1)/N)^k),    v_(1) <= ... <= v_(N)

and its spread, from E[max_k^2] likewise. For a lower-is-better metric the same of the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    label: str  # "all", or the model the curve is for
    n: int  # trials behind it
    ks: np.ndarray  # budgets: every k up to 500 trials, then ~200 log-spaced ones (n included)
    mean: np.ndarray  # expected best after k trials
    std: np.ndarray


def default_ks(n: int) -> np.ndarray:
    if n <= 500:
        return np.arange(1, n + 1)
    return np.unique(np.concatenate([np.arange(1, 21), np.geomspace(1, n, 200).round().astype(int), [n]]))


def expected_best(values: list[float] | np.ndarray, *, maximize: bool = True,
                  ks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(E[best of k], its standard deviation) for k in `ks` (default k = 1..len(values))."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if not maximize:
        v = np.sort(-v)  # the min of v is minus the max of -v
    n = len(v)
    if n == 0:
        return np.empty(0), np.empty(0)
    k = (np.arange(1, n + 1) if ks is None else np.asarray(ks)).astype(np.float64)[:, None]
    # (i/N)^k as exp(k log(i/N)): a fifth of np.power's time on a k x N matrix
    powers = np.exp(k * np.log(np.arange(1, n + 1) / n)[None, :])
    weights = np.diff(powers, axis=1, prepend=0.0)  # P(max_k = v_(i)), k x n
    mean = weights @ v
    std = np.sqrt(np.clip(weights @ v**2 - mean**2, 0, None))
    return (mean if maximize else -mean), std


def curves(scores: dict[str, list[float]], *, maximize: bool = True) -> list[Curve]:
    out = []
    for label, values in scores.items():
        if values:
            ks = np.union1d(default_ks(len(values)), budget_points(len(values)))
            mean, std = expected_best(values, maximize=maximize, ks=ks)
            out.append(Curve(label, len(values), ks, mean, std))
    return out


def budget_points(n: int) -> list[int]:
    """The k shown in a table: 1, 2, 3, 5, 10, 20, 50, ... up to n, and n."""
    ks = [k for k in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if k < n]
    return [*ks, n]
