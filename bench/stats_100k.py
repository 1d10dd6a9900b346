"""How long the reporter's test-set statistics take at 100,000 disagreements (target: < 0.1 s
each): McNemar's exact test and the paired bootstrap (the two-level bootstrap with one run a
side, 10,000 replicates) on 300,000 shared test examples where two models disagree on 100,000,
and the two-level bootstrap over 5 + 5 seeds of them. Best of 5 runs each (the machine is
shared).

    python bench/stats_100k.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from reports.bootstrap import two_level_bootstrap  # noqa: E402
from reports.stats import mcnemar_p  # noqa: E402


def best_of(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    n, disagree = 300_000, 100_000
    a = rng.random(n) < 0.8
    b = a.copy()
    flip = rng.permutation(n)[:disagree]
    b[flip] = ~b[flip]
    assert int((a != b).sum()) == disagree
    runs_a = np.stack([a ^ (rng.random(n) < 0.02) for _ in range(5)])
    runs_b = np.stack([b ^ (rng.random(n) < 0.02) for _ in range(5)])
    rows = [("McNemar exact test", lambda: mcnemar_p(a, b)),
            ("paired bootstrap, 10,000 resamples", lambda: two_level_bootstrap(a[None], b[None])),
            ("two-level bootstrap, 5 + 5 seeds, 10,000 replicates", lambda: two_level_bootstrap(runs_a, runs_b))]
    for name, fn in rows:
        print(f"| {name} | {n:,} examples, {disagree:,} disagreements | {best_of(fn) * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
