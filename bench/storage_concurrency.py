"""Which embedded Optuna storage holds up as a sweep's job list: journal file or SQLite?

Several worker processes share one sweep of N jobs the way `sweep grid` does (enqueue every
job idempotently, then claim canonical trials WAITING -> RUNNING and finish them), while one
worker is killed with SIGKILL mid-way; a last worker then takes over the dead worker's jobs.
Counted: errors raised by the storage, jobs completed more than once, jobs never completed,
and wall time.

    python bench/storage_concurrency.py --jobs 200 --workers 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optuna.trial import TrialState  # noqa: E402

from sweeper.spec import Job  # noqa: E402
from sweeper.storage import open_storage  # noqa: E402
from sweeper.store import SweepStore, owner_gone  # noqa: E402
from trainer.config import build_job  # noqa: E402


def jobs(n: int) -> list[Job]:
    return [Job(config=build_job({"seed": i}), point={"seed": i}) for i in range(n)]


def worker(url: str, n: int, work_s: float, out: str) -> None:
    errors, done = 0, 0
    store = SweepStore(open_storage(url), "bench", lock_dir=Path(out).parent)
    all_jobs = jobs(n)
    store.sync(all_jobs)
    while True:
        try:
            by_job = store.trials_by_job()
            todo = [j for j in all_jobs if store.state(by_job.get(j.id, [])).status in ("waiting", "failed", "running")]
            if not todo:
                break
            progressed = False
            for job in todo:
                trial = store.canonical(by_job.get(job.id, []))
                if trial is not None and trial.state == TrialState.RUNNING and owner_gone(trial, me=store.pid):
                    store.fail(store.trial_id(trial), "worker lost")
                    trial = None
                if trial is None:
                    store.sync([job])
                    trial = store.canonical(store.trials_by_job().get(job.id, []))
                if trial is None or trial.state != TrialState.WAITING or not store.claim(trial):
                    continue
                time.sleep(work_s)
                store.finish(store.trial_id(trial), {"status": "completed", "val_acc": 0.5})
                done += 1
                progressed = True
                break
            if not progressed:
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 - counted, that is the point
            errors += 1
            print(f"{os.getpid()}: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
            time.sleep(0.05)
    Path(out).write_text(json.dumps({"errors": errors, "done": done}))


def run(kind: str, n: int, workers: int, work_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/s.db" if kind == "sqlite" else f"{tmp}/s.journal"
        t0 = time.perf_counter()
        procs = [mp.Process(target=worker, args=(url, n, work_s, f"{tmp}/w{i}.json")) for i in range(workers)]
        for p in procs:
            p.start()
        time.sleep(n * work_s / workers / 3)
        os.kill(procs[0].pid, signal.SIGKILL)  # a worker dies mid-sweep
        for p in procs:
            p.join()
        crashed = sum(p.exitcode not in (0, -signal.SIGKILL) for p in procs)
        rescue = mp.Process(target=worker, args=(url, n, work_s, f"{tmp}/rescue.json"))
        rescue.start()
        rescue.join()
        seconds = time.perf_counter() - t0
        store = SweepStore(open_storage(url), "bench")
        by_job = store.trials_by_job()
        completes = [sum(t.state == TrialState.COMPLETE for t in ts) for ts in by_job.values()]
        reports = [json.loads(Path(f).read_text()) for f in Path(tmp).glob("*.json") if f.name != "s.json"]
        return {"storage": kind, "jobs": n, "workers": workers, "seconds": round(seconds, 1),
                "errors": sum(r["errors"] for r in reports), "crashed": crashed,
                "completed_twice": sum(c > 1 for c in completes),
                "never_completed": n - sum(c >= 1 for c in completes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--work-s", type=float, default=0.1, help="seconds each job 'runs'")
    args = parser.parse_args()
    print("| storage | jobs | workers (one killed) | seconds | storage errors | workers crashed | completed twice "
          "| never completed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in ("journal", "sqlite"):
        r = run(kind, args.jobs, args.workers, args.work_s)
        print(f"| {r['storage']} | {r['jobs']} | {r['workers']} | {r['seconds']} | {r['errors']} | {r['crashed']} | "
              f"{r['completed_twice']} | {r['never_completed']} |", flush=True)


if __name__ == "__main__":
    main()
