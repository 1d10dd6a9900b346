"""A sweep's jobs and their states, kept in an Optuna storage (one study per sweep).

Each job (grid point x seed) is a trial, enqueued once with its job id, configuration and
swept values as user attributes. Who runs a job is decided per job id, not per trial:
- the job's *canonical* trial is its lowest-numbered trial that did not fail; every worker
  computes the same one, so a point that two workers enqueued at once still runs once;
- a worker claims a job by moving its canonical trial from WAITING to RUNNING, which Optuna's
  storages do atomically (the second claimant gets False and moves on);
- a claimed trial records its owner (host, pid) and a heartbeat; a trial whose owner is gone
  (a dead pid on this host, or no heartbeat for STALE_S) is failed and the job enqueued again.
Results (the metrics of `result.json`) are stored with the trial, so a report needs only the
storage.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal
from optuna.trial import FrozenTrial, TrialState

from sweeper.spec import Job
from trainer.jobdir import FINISHED, RESULT_KEYS  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_S = 120.0

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_storage(runs_dir: Path) -> str:
    return str(runs_dir / "sweeps.journal")


def missing_storage(url: str) -> str | None:
    """Why `url` holds no sweeps yet (a journal file that does not exist), or None."""
    if "://" not in url and not Path(url.removeprefix("journal:")).exists():
        return f"no sweep storage at {url}; run `sweep grid` first or pass --storage"
    return None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage URL (sqlite:///…, postgresql://…) or a journal file path (the default)."""
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


@dataclass
class JobState:
    """What the storage says of one job."""

    status: str  # waiting, running, completed, collapsed, diverged, failed
    trial: FrozenTrial | None
    result: dict[str, Any] | None = None
    owner: str = ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepStore:
    def __init__(self, storage: optuna.storages.BaseStorage, sweep: str, *, lock_dir: Path | None = None) -> None:
        self.storage = storage
        self.sweep = sweep
        self.study = optuna.create_study(study_name=sweep, storage=storage, direction="maximize", load_if_exists=True)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.lock_dir = lock_dir

    @contextmanager
    def _local_lock(self) -> Iterator[None]:
        """Serialises enqueueing among processes of this machine (others are covered by the
        canonical-trial rule)."""
        if self.lock_dir is None:
            yield
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f".{self.sweep}.enqueue.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- reading ------------------------------------------------------------------------------

    def trials_by_job(self) -> dict[str, list[FrozenTrial]]:
        by_job: dict[str, list[FrozenTrial]] = {}
        for trial in self.study.get_trials(deepcopy=False):
            job_id = trial.user_attrs.get("job_id")
            if job_id:
                by_job.setdefault(job_id, []).append(trial)
        for trials in by_job.values():
            trials.sort(key=lambda t: t.number)
        return by_job

    @staticmethod
    def canonical(trials: list[FrozenTrial]) -> FrozenTrial | None:
        live = [t for t in trials if t.state != TrialState.FAIL]
        return live[0] if live else None

    def state(self, trials: list[FrozenTrial]) -> JobState:
        trial = self.canonical(trials)
        if trial is None:
            last = trials[-1] if trials else None
            return JobState("failed" if last else "waiting", last, None)
        if trial.state == TrialState.WAITING:
            return JobState("waiting", trial)
        if trial.state == TrialState.RUNNING:
            owner = f"{trial.user_attrs.get('host', '?')}:{trial.user_attrs.get('pid', '?')}"
            return JobState("running", trial, None, owner)
        result = trial.user_attrs.get("result")
        return JobState(trial.user_attrs.get("status", "completed"), trial, result)

    def is_stale(self, trial: FrozenTrial) -> bool:
        attrs = trial.user_attrs
        if attrs.get("host") == self.host and isinstance(attrs.get("pid"), int):
            return attrs["pid"] != self.pid and not _alive(attrs["pid"])
        beat = attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else 0)
        return time.time() - float(beat) > STALE_S

    # -- writing ------------------------------------------------------------------------------

    def sync(self, jobs: list[Job]) -> int:
        """Enqueue every job that has no live trial yet; returns how many were enqueued."""
        with self._local_lock():
            by_job = self.trials_by_job()
            added = 0
            for job in jobs:
                if self.canonical(by_job.get(job.id, [])) is None:
                    self.enqueue(job, attempt=len(by_job.get(job.id, [])) + 1)
                    added += 1
            return added

    def enqueue(self, job: Job, *, attempt: int = 1) -> None:
        self.study.enqueue_trial(
            {},
            user_attrs={"job_id": job.id, "point": job.point, "config": job.config.to_dict(), "attempt": attempt},
        )

    def claim(self, trial: FrozenTrial) -> bool:
        """WAITING -> RUNNING, atomically; False when another worker got there first."""
        try:
            won = self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        if won:
            for key, value in (("host", self.host), ("pid", self.pid), ("heartbeat", time.time())):
                self.storage.set_trial_user_attr(trial._trial_id, key, value)
        return bool(won)

    def heartbeat(self, trial_id: int) -> None:
        self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())

    def set_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(trial_id, key, value)

    def finish(self, trial_id: int, result: dict[str, Any]) -> None:
        """Store the job's result with its trial: COMPLETE (value val_acc), or PRUNED when it
        diverged (no value)."""
        stored = {k: result.get(k) for k in RESULT_KEYS}
        self.storage.set_trial_user_attr(trial_id, "result", stored)
        self.storage.set_trial_user_attr(trial_id, "status", result["status"])
        if result["status"] == "diverged" or result.get("val_acc") is None:
            self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        else:
            self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(result["val_acc"])])

    def fail(self, trial_id: int, reason: str, log_tail: list[str] | None = None) -> None:
        self.storage.set_trial_user_attr(trial_id, "status", "failed")
        self.storage.set_trial_user_attr(trial_id, "reason", reason)
        if log_tail is not None:
            self.storage.set_trial_user_attr(trial_id, "log_tail", log_tail)
        with suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)


def sweep_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(optuna.study.get_all_study_names(storage))
