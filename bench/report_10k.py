"""How long `sweep report` takes over 10,000 stored trials (target: under 2 s).

Builds a journal storage (the default backend) holding one sweep of 10,000 finished jobs, as
2,000 configurations x 5 seeds, with results on the trials and per-example test predictions
(5,000 test rows) for the first 20 configurations, then times `reports.build.generate` on it
(reading the storage, the table, every row against the baseline across seeds, the budget
curve, the plots, report.md and report.html), in a fresh process so nothing is cached; wall
and CPU seconds (user + system, less disturbed by other work on a shared machine), best of
--repeat runs.

    python bench/report_10k.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from sweeper.store import open_storage  # noqa: E402
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
                probs = np.zeros((5000, 2))
                probs[np.arange(5000), np.where(right, labels, 1 - labels)] = 0.9
                probs[np.arange(5000), np.where(right, 1 - labels, labels)] = 0.1
                np.savez(job_dir / "test_predictions.npz", rows=rows, labels=labels, probs=probs)
    study.add_trials(trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--with-predictions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        t0 = time.perf_counter()
        build(runs / "sweeps.journal", runs, args.configs, args.seeds, args.with_predictions)
        print(f"built {args.configs * args.seeds} trials in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for plots in (False, True):
            code = ("import resource, time; from pathlib import Path; t=time.perf_counter();"
                    "from reports.build import generate;"
                    f"r=generate(storage={str(runs / 'sweeps.journal')!r}, runs_dir=Path({str(runs)!r}), plots={plots});"
                    "u=resource.getrusage(resource.RUSAGE_SELF);"
                    "print(f'{time.perf_counter()-t:.2f}', f'{u.ru_utime+u.ru_stime:.2f}', len(r[0].rows),"
                    "sum(x.headline is not None and x.headline.examples > 0 for x in r[0].rows))")
            best = None
            for _ in range(args.repeat):
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                     cwd=Path(__file__).resolve().parents[1]).stdout.split()
                if best is None or float(out[0]) < float(best[0]):
                    best = out
            assert best is not None
            print(f"| {args.configs * args.seeds:,} trials ({args.configs:,} configurations x {args.seeds} seeds) | "
                  f"{'with' if plots else 'without'} plots | {best[0]} s | {best[1]} s | {best[2]} rows, "
                  f"{best[3]} compared on seeds and test examples, the rest on seeds |")

if __name__ == "__main__":
    main()
