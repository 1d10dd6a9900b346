"""Student's t without scipy: a report computes thousands of p-values and quantiles, and
importing scipy.stats would cost it more than computing them. tests/reports/test_verdict.py
checks both against scipy."""

from __future__ import annotations

import functools
import math
from statistics import NormalDist


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if d > tiny or d < -tiny else tiny)
        c = 1 + aa / c
        if -tiny <= c <= tiny:
            c = tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if d > tiny or d < -tiny else tiny)
        c = 1 + aa / c
        if -tiny <= c <= tiny:
            c = tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta function I_x(a, b); y = 1 - x, given apart (no cancellation)."""
    if x <= 0:
        return 0.0
    if y <= 0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1 - math.exp(log_front) * _betacf(b, a, y) / b


NORMAL = NormalDist()


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (any real df > 0; inf: the normal)."""
    if math.isinf(df) or df > 1e7:
        return 1 - NORMAL.cdf(t) if t < 5 else 0.5 * math.erfc(t / math.sqrt(2))
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t >= 0 else 1 - tail


@functools.lru_cache(maxsize=4096)  # seeds_needed asks for the same integer df over and over
def t_ppf(q: float, df: float) -> float:
    """The q quantile of Student's t: Newton's method on `t_sf`, from Hill (1970)'s expansion in
    1/df, inside the bracket [the normal's quantile, the Cauchy's] (df >= 1)."""
    if math.isinf(df) or df > 1e7:
        return NORMAL.inv_cdf(q)
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1 - q, df)
    if df == 1:
        return math.tan(math.pi * (q - 0.5))
    if df == 2:
        return (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    z = NORMAL.inv_cdf(q)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    lo, hi = z, (math.tan(math.pi * (q - 0.5)) if df >= 1 else 1e12)
    x = min(max(z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4, lo), hi)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(100):
        f = (1 - t_sf(x, df)) - q
        if f > 0:
            hi = x
        else:
            lo = x
        dens = math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))
        step = x - f / dens if dens > 0 else (lo + hi) / 2
        if abs(step - x) <= 1e-12 * max(1.0, abs(x)):
            return step
        x = step if lo < step < hi else (lo + hi) / 2
    return x
