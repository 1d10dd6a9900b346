"""How long `sweep report` takes over 10,000 stored trials (target: under 2 s).

Builds a journal storage (the default backend) holding one sweep of 10,000 finished jobs, as
2,000 configurations x 5 seeds, with results on the trials and per-example test predictions
(5,000 test rows, float32 probabilities as the trainer writes them) for the first 20
configurations (`--with-predictions`; `all`: every job, as a real sweep keeps them), then times
`reports.build.generate` on it
(reading the storage, the table, every row against the baseline across seeds, the budget
curve, the plots, report.md and report.html), in a fresh process so nothing is cached; wall
and CPU seconds (user + system, less disturbed by other work on a shared machine), best of
--repeat runs.

With `--cache cold` each timed report starts without the sweep's `report-cache.npz` (every
job's predictions read, as the first report of a sweep does); with `warm` (the default) the
cache a first, untimed report wrote is there, as for every report after the first.

    python bench/report_10k.py
    python bench/report_10k.py --with-predictions all --repeat 3 --cache cold
    python bench/report_10k.py --with-predictions all --repeat 3 --cache warm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from sweeper.storage import open_storage  # noqa: E402
from trainer.config import build_job  # noqa: E402


def build(storage_path: Path, runs: Path, configs: int, seeds: int, with_predictions: int) -> None:
    storage = open_storage(str(storage_path))
    study = optuna.create_study(study_name="big", storage=storage, direction="maximize")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000)
    rows = np.arange(5000)
    trials = []
    for c in range(configs):
        lr = float(f"{1e-5 * (1 + c):.6g}")
        for seed in range(seeds):
            cfg = build_job({"lr": lr, "seed": seed})
            val = float(0.85 + 0.05 * rng.random())
            result = {"status": "completed", "val_acc": val, "test_acc": val - 0.01, "test_loss": 0.3,
                      "test_ece": 0.02, "best_epoch": 3, "runtime_s": 600.0, "train_samples_per_s": 120.0,
                      "epochs": [{"epoch": e, "val_acc": val - 0.01 * (3 - e)} for e in (1, 2, 3)]}
            trials.append(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=val, params={}, distributions={},
                user_attrs={"job_id": cfg.job_id(), "point": {"lr": lr, "seed": seed}, "config": cfg.to_dict(),
                            "status": "completed", "result": result}))
            if c < with_predictions:
                job_dir = runs / "big" / cfg.job_id()
                job_dir.mkdir(parents=True)
                right = rng.random(5000) < val
                probs = np.zeros((5000, 2), dtype=np.float32)
                probs[np.arange(5000), np.where(right, labels, 1 - labels)] = 0.9
                probs[np.arange(5000), np.where(right, 1 - labels, labels)] = 0.1
                np.savez(job_dir / "test_predictions.npz", rows=rows, labels=labels, probs=probs)
                (job_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    study.add_trials(trials)


def _time(tree: Path, runs: Path, plots: bool) -> list[str]:
    """One `generate` in a fresh process from `tree`: wall s, CPU s, rows, peak RSS MB, rows on examples."""
    code = ("import resource, time; from pathlib import Path; t=time.perf_counter();"
            "from reports.build import generate;"
            f"r=generate(storage={str(runs / 'sweeps.journal')!r}, runs_dir=Path({str(runs)!r}), plots={plots});"
            "u=resource.getrusage(resource.RUSAGE_SELF);"
            "print(f'{time.perf_counter()-t:.2f}', f'{u.ru_utime+u.ru_stime:.2f}', len(r[0].rows), "
            "f'{u.ru_maxrss/1024:.0f}',"
            "sum(x.headline is not None and x.headline.examples > 0 for x in r[0].rows))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tree).stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--with-predictions", default="20", help="configurations with predictions, or 'all'")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", choices=["cold", "warm"], default="warm",
                        help="time reports without the sweep's report cache, or with it (default)")
    parser.add_argument("--against", metavar="REV", help="also time the tree at this git revision, alternating "
                        "with this one in each round (same storage, same machine state)")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.perf_counter()
        with_predictions = args.configs if args.with_predictions == "all" else int(args.with_predictions)
        build(runs / "sweeps.journal", runs, args.configs, args.seeds, with_predictions)
        print(f"built {args.configs * args.seeds} trials in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        trees = {"this tree": here}
        if args.against:
            old = Path(tmp) / "against"
            old.mkdir()
            archive = subprocess.run(["git", "archive", args.against], cwd=here, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            trees = {args.against: old, **trees}
        cache = runs / "big" / "report-cache.npz"
        if args.cache == "warm":
            _time(here, runs, False)  # the first report writes the cache
        for plots in (False, True):
            runs_of: dict[str, list[list[str]]] = {name: [] for name in trees}
            for _ in range(args.repeat):
                for name, tree in trees.items():  # alternating: each round runs every tree once
                    if args.cache == "cold":
                        cache.unlink(missing_ok=True)
                    runs_of[name].append(_time(tree, runs, plots))
            for name, outs in runs_of.items():
                best = min(outs, key=lambda out: float(out[0]))
                walls = sorted(float(out[0]) for out in outs)
                print(f"| {name} | cache {args.cache} | {args.configs * args.seeds:,} trials ({args.configs:,} configurations x "
                      f"{args.seeds} seeds) | {'with' if plots else 'without'} plots | {best[0]} s (median "
                      f"{walls[len(walls) // 2]:.2f} s) | {best[1]} s | {best[2]} rows, {best[4]} compared on seeds "
                      f"and test examples, the rest on seeds | {best[3]} MB |")


if __name__ == "__main__":
    main()
