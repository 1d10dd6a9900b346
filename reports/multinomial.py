"""Tail probabilities of the sum of a multinomial resample of n examples (`draw_tails`), by the
saddlepoint (Lugannani-Rice) where 0 is inside the support, exactly at its edges; and the normal
CDF, vectorised. numpy only; tests/reports/test_bootstrap.py checks them against exact
enumeration and scipy."""

from __future__ import annotations

import math

import numpy as np


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x), vectorised without scipy: erfc by Numerical Recipes' Chebyshev fit (`erfcc`,
    fractional error < 1.2e-7 everywhere, tails included)."""
    z = np.abs(x) / math.sqrt(2)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    upper = 0.5 * t * np.exp(-z * z + poly)  # 1 - Phi(|x|)
    return np.where(x >= 0, 1.0 - upper, upper)


def draw_tails(v: np.ndarray, counts: np.ndarray, n: int, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(S <= 0) and P(S >= 0) per row of `v` (resamples x distinct values), where S is the sum
    of n independent draws, each v[j] with probability counts[j]/n and 0 otherwise (a multinomial
    resample of n examples). At the edge of the support exactly: when no value is negative,
    P(S <= 0) is the chance that no positive one is drawn. Inside it, by the saddlepoint
    (Lugannani-Rice, with Daniels' continuity correction for a lattice of step `span`): the
    exact cumulant generating function K(t) = n log(1 - k/n + sum_j counts_j e^(t v_j) / n)."""
    eps = 1e-12
    span = unit * np.gcd.reduce(np.abs(np.rint(v / unit[:, None])).astype(np.int64), axis=1)
    positive = (counts * (v > eps)).sum(1)
    negative = (counts * (v < -eps)).sum(1)
    with np.errstate(divide="ignore"):
        none_positive = np.exp(n * np.log1p(-np.minimum(positive / n, 1.0)))
        none_negative = np.exp(n * np.log1p(-np.minimum(negative / n, 1.0)))
    below = np.where(negative == 0, none_positive, 1.0)
    above = np.where(positive == 0, none_negative, 1.0)
    mixed = (positive > 0) & (negative > 0)
    if mixed.any():
        b, a = _saddlepoint(v[mixed], counts, n, span[mixed])
        below[mixed], above[mixed] = b, a
    return below, above


def _saddlepoint(v: np.ndarray, counts: np.ndarray, n: int, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`draw_tails` where 0 lies inside the support (values of both signs in every row)."""
    k = counts.sum()
    log_c = np.log(counts)[None, :]
    pos, neg = v > 1e-12, v < -1e-12
    log_abs = np.log(np.where(pos | neg, np.abs(v), 1.0))

    def side(t: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log sum over the masked values of c |v| e^(t v), and the weighted mean of v there."""
        x = np.where(mask, log_c + log_abs + t[:, None] * v, -np.inf)
        top = x.max(1, keepdims=True)
        weights = np.exp(x - top)
        total = weights.sum(1)
        return top[:, 0] + np.log(total), (weights * v).sum(1) / total

    # K'(t) = 0 <=> sum c v e^(tv) = 0 <=> h(t) = log(positive side) - log(negative side) = 0;
    # h increases (h' = the two sides' weighted means of v, subtracted): Newton, kept in a bracket
    t = np.zeros(len(v))
    lo, hi = np.full(len(v), -1e4), np.full(len(v), 1e4)
    for _ in range(60):
        up, mean_up = side(t, pos)
        down, mean_down = side(t, neg)
        h = up - down
        lo, hi = np.where(h < 0, t, lo), np.where(h > 0, t, hi)
        step = t - h / np.maximum(mean_up - mean_down, 1e-300)
        inside = (step > lo) & (step < hi)
        new = np.where(inside, step, (lo + hi) / 2)
        if np.all(np.abs(new - t) <= 1e-12 * np.maximum(1.0, np.abs(t))):
            t = new
            break
        t = new
    # log M(t) = log(1 - k/n + sum c e^(tv) / n); K = n log M; K'' = n (sum c v^2 e^(tv) / n) / M
    terms = np.concatenate([np.full((len(v), 1), np.log1p(-k / n) if k < n else -np.inf),
                            log_c + t[:, None] * v - np.log(n)], axis=1)
    top = terms.max(1, keepdims=True)
    log_m = top[:, 0] + np.log(np.exp(terms - top).sum(1))
    second = (np.exp(log_c + t[:, None] * v - np.log(n) - log_m[:, None]) * v * v).sum(1)
    k_t, k2 = n * log_m, n * second
    w_hat = np.sign(t) * np.sqrt(np.maximum(-2.0 * k_t, 0.0))
    sd = np.sqrt(k2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u_up = (1 - np.exp(-span * t)) * sd / span  # P(S >= 0)
        u_down = (1 - np.exp(span * t)) * sd / span  # P(-S >= 0)
        density = np.exp(-w_hat**2 / 2) / math.sqrt(2 * math.pi)
        above = 1 - normal_cdf(w_hat) - density * (1 / w_hat - 1 / u_up)
        below = normal_cdf(w_hat) - density * (1 / -w_hat - 1 / u_down)
    # where t is ~0 (0 at the mean) the formula is 0/0: the continuity-corrected normal there
    near = np.abs(w_hat) < 1e-4
    if near.any():
        mean = (counts * v[near]).sum(1)
        var = (counts * v[near] ** 2).sum(1) - mean**2 / n
        half = span[near] / 2
        above[near] = normal_cdf((mean + half) / np.sqrt(var))
        below[near] = normal_cdf((half - mean) / np.sqrt(var))
    return np.clip(below, 0.0, 1.0), np.clip(above, 0.0, 1.0)
