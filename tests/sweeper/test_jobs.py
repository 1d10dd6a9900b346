"""Which job a command names (sweeper/jobs.py): `best:<sweep>` when nothing completed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.jobs import JobRefError, resolve
from sweeper.spec import Job
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from trainer.config import build_job


def _sweep(runs: Path, states: list[str]) -> None:
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "g")
    for i, state in enumerate(states):
        job = Job(config=build_job({"seed": i}), point={"seed": i})
        store.enqueue(job)
        if state == "waiting":
            continue
        trial = store.canonical(store.trials_by_job()[job.id])
        assert trial is not None and store.claim(trial)
        store.finish(trial._trial_id, {"status": state, "val_acc": 0.5, "metric": "val_acc"})


def test_best_of_a_finished_sweep_whose_jobs_all_collapsed_says_so(tmp_path: Path) -> None:
    _sweep(tmp_path, ["collapsed", "collapsed"])
    with pytest.raises(JobRefError) as finished:
        resolve("best:g", runs_dir=tmp_path)
    assert "finished with no completed job (its jobs: 2 collapsed)" in str(finished.value)  # before: "yet"


def test_best_of_a_sweep_still_running_says_yet(tmp_path: Path) -> None:
    _sweep(tmp_path, ["collapsed", "waiting"])
    with pytest.raises(JobRefError) as waiting:
        resolve("best:g", runs_dir=tmp_path)
    assert "has no completed job yet (its jobs: 1 collapsed, 1 waiting)" in str(waiting.value)
