"""Is `reports.verdict.compare` right as often as it claims? A simulation over seeds a side x
test-set size x error correlation, scores only and with per-example predictions, with A and B
the same in truth (every winner is a false one) and B better by one accuracy point (power),
beside Welch's t on the seed means (scipy) on the same draws.

The model of a run (one seed of one configuration) on a test set drawn anew each repetition:
example j has a difficulty z_j ~ N(0, 1); seed i a shift u_i ~ N(0, tau^2) (training luck that
moves every example: tau is set so that it alone moves accuracy by --seed-sd, 0.5 points by
default); the run gets example j right when mu + u_i + sqrt(rho) z_j + sqrt(1 - rho) e_ij > 0,
e_ij ~ N(0, 1) afresh per run. rho is the correlation of two runs' latent errors (0: independent,
0.97: two runs fail on nearly the same examples, as real fine-tunes of one model do). A's
accuracy is 0.85 over the population of texts; B's the same or 0.86. The per-seed spread of a
score then is tau's 0.5 points plus each run's own example-level noise (large on small test sets).

Cells with one seed a side: `compare` without `seed_sd` never names a winner; the row
"1 (pooled)" gives it the seed sd pooled from 5 other seeds of A (as `sweep report` pools it
from a sweep's configurations with several seeds).

    python bench/verdict_calibration.py [--reps 1000] [--json bench/results/verdict_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.special import ndtr, ndtri  # noqa: E402
from scipy.stats import ttest_ind  # noqa: E402

from reports.verdict import compare  # noqa: E402

SEEDS = [1, 2, 3, 5, 10]
EXAMPLES = [100, 1_000, 10_000]
RHOS = [0.0, 0.9, 0.97]
BASE_ACC, EFFECT = 0.85, 0.01
POOL_SEEDS = 5
AGREE = 0.7  # "other": how much B's example difficulties agree with A's
SCENARIOS = ["same", "better", "other"]
TITLES = {"same": "false winners: A and B the same in truth (alpha 0.05)",
          "better": f"power: B better by {EFFECT:g} (the share of repetitions that name B)",
          "other": f"false winners: B another model of the same accuracy, erring on other examples (difficulties "
                   f"correlated {AGREE} with A's; alpha 0.05)"}


def _runs(rng: np.random.Generator, mu: float, tau: float, z: np.ndarray, seeds: int, rho: float) -> np.ndarray:
    """seeds x examples right/wrong."""
    u = rng.normal(0.0, tau, size=(seeds, 1))
    if rho == 0:
        p = np.broadcast_to(ndtr(mu + u), (seeds, len(z)))
    else:
        p = ndtr((mu + u + math.sqrt(rho) * z[None, :]) / math.sqrt(1 - rho))
    return rng.random(p.shape) < p


def _mu(acc: float, tau: float) -> float:
    """The latent mean that gives `acc` over texts and seeds: P(mu + u + N(0, 1) > 0)."""
    return float(ndtri(acc) * math.sqrt(1 + tau**2))


def cell(args: tuple[str, int, int, float, int, float, int]) -> dict[str, object]:
    scenario, seeds, n, rho, reps, seed_sd, seed = args
    effect = EFFECT if scenario == "better" else 0.0
    tau = seed_sd / float(np.exp(-ndtri(BASE_ACC) ** 2 / 2) / math.sqrt(2 * math.pi))
    mu_a, mu_b = _mu(BASE_ACC, tau), _mu(BASE_ACC + effect, tau)
    rng = np.random.default_rng([seed, seeds, n, int(rho * 100), SCENARIOS.index(scenario)])
    wins = {"predictions": 0, "scores": 0, "welch": 0, "pooled": 0}
    right = dict.fromkeys(wins, 0)  # winners on the right side (b, when effect > 0)
    for _ in range(reps):
        z = rng.standard_normal(n)
        a = _runs(rng, mu_a, tau, z, seeds, rho)
        zb = z if scenario != "other" else AGREE * z + math.sqrt(1 - AGREE**2) * rng.standard_normal(n)
        b = _runs(rng, mu_b, tau, zb, seeds, rho)
        verdicts = {"predictions": compare(a, b), "scores": compare(a.mean(1), b.mean(1))}
        if seeds == 1:
            others = _runs(rng, mu_a, tau, z, POOL_SEEDS, rho).mean(1)
            verdicts["pooled"] = compare(a, b, seed_sd=float(others.std(ddof=1)), seed_df=POOL_SEEDS - 1)
        for name, v in verdicts.items():
            wins[name] += v.winner is not None
            right[name] += v.winner == "b"
        if seeds > 1:
            sa, sb = a.mean(1), b.mean(1)
            if sa.var() + sb.var() > 0:
                t = ttest_ind(sb, sa, equal_var=False)
                wins["welch"] += bool(t.pvalue < 0.05)
                right["welch"] += bool(t.pvalue < 0.05 and t.statistic > 0)
    rate = right if effect > 0 else wins
    return {"scenario": scenario, "seeds": seeds, "examples": n, "rho": rho, "effect": effect, "reps": reps,
            **{k: rate[k] / reps for k in rate}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000, help="repetitions a cell (default 1000)")
    parser.add_argument("--seed-sd", type=float, default=0.005, help="seed-level spread of accuracy (default 0.005)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the cells here")
    args = parser.parse_args()
    start = time.perf_counter()
    jobs = [(scenario, s, n, rho, args.reps, args.seed_sd, 0) for scenario in SCENARIOS for n in EXAMPLES[::-1]
            for s in SEEDS[::-1] for rho in RHOS if scenario != "other" or (rho > 0 and s > 1)]
    with Pool(args.processes) as pool:
        cells = pool.map(cell, jobs, chunksize=1)
    took = time.perf_counter() - start
    noise = math.sqrt(0.05 * 0.95 / args.reps)
    for scenario in SCENARIOS:
        print(f"\n{TITLES[scenario]}\n")
        print("| seeds a side | test examples | rho | compare, predictions | compare, scores | Welch's t | "
              "1 seed, pooled sd |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in sorted((c for c in cells if c["scenario"] == scenario),
                        key=lambda c: (c["seeds"], c["examples"], c["rho"])):  # type: ignore[arg-type,return-value]
            welch = "–" if c["seeds"] == 1 else f"{c['welch']:.3f}"
            pooled = f"{c['pooled']:.3f}" if c["seeds"] == 1 else "–"
            print(f"| {c['seeds']} | {c['examples']:,} | {c['rho']} | {c['predictions']:.3f} | {c['scores']:.3f} | "
                  f"{welch} | {pooled} |")
    print(f"\n{args.reps} repetitions a cell (a rate's standard error at 0.05: {noise:.3f}); {took:.0f} s on "
          f"{args.processes} processes")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"reps": args.reps, "seed_sd": args.seed_sd, "seconds": round(took, 1),
                                         "cells": cells}, indent=1) + "\n")


if __name__ == "__main__":
    main()
