"""`sweep status`'s table (sweeper/view.py) from a storage alone."""

from __future__ import annotations

import datetime
from pathlib import Path

from sweeper.spec import Job
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from sweeper.view import status_rows
from trainer.config import build_job


def test_sweep_status_shows_a_failed_jobs_time(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "g")
    job = Job(config=build_job({"lr": 1e-3}), point={"lr": 1e-3})
    store.enqueue(job)
    trial = store.canonical(store.trials_by_job()[job.id])
    assert trial is not None and store.claim(trial)
    store.fail(trial._trial_id, "exit code 1: RuntimeError: boom")
    _, (row,) = status_rows(store, runs)
    (stored,) = store.trials_by_job()[job.id]
    assert stored.datetime_complete is not None and stored.datetime_start is not None
    expected = (stored.datetime_complete - stored.datetime_start) / datetime.timedelta(seconds=1)
    assert row.state == "failed" and row.seconds == expected  # before: None, a blank time column
