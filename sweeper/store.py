"""A sweep's jobs and their states, kept in an Optuna storage (one study per sweep).

Each job (grid point x seed) is a trial, enqueued once with its job id, configuration and
swept values as user attributes. Who runs a job is decided per job id, not per trial:
- the job's *canonical* trial is its lowest-numbered trial that did not fail; every worker
  computes the same one, so a point that two workers enqueued at once still runs once;
- a worker claims a job by moving its canonical trial from WAITING to RUNNING, which Optuna's
  storages do atomically (the second claimant gets False and moves on); the claim also records
  the swept values as the trial's parameters (so `trials_dataframe()` and optuna-dashboard show
  them), its owner (host, pid) and a heartbeat;
- liveness is one rule for grids and studies (`owner_gone`): a RUNNING trial whose owner is a
  dead pid on this host, or whose heartbeat is older than STALE_S, belongs to nobody.
Results (the metrics of `result.json`) are stored with the trial, so a report needs only the
storage.

The journal file (the default storage) is repaired when it is opened for writing: a crash in the
middle of a write leaves a torn last line, which Optuna would glue the next record onto, breaking
every later read. Reading needs no write access (`sweep status`, `report` on a read-only copy).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.process import pid_alive
from sweeper.spec import Job
from trainer.jobdir import FINISHED, RESULT_KEYS  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

# A busy worker writes a heartbeat every HEARTBEAT_S; a trial silent for STALE_S is taken over
# (environment overrides, for tests and for clusters with slow shared storage).
HEARTBEAT_S = float(os.environ.get("SWEEP_HEARTBEAT_S", "10"))
STALE_S = float(os.environ.get("SWEEP_STALE_S", "120"))
# Who a worker is: its host (SWEEP_HOST overrides: containers that share a host name) and pid.
HOST = os.environ.get("SWEEP_HOST") or socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_storage(runs_dir: Path) -> str:
    return str(runs_dir / "sweeps.journal")


def _journal_path(url: str) -> Path:
    return Path(url.removeprefix("journal:"))


def missing_storage(url: str) -> str | None:
    """Why `url` holds no sweeps yet (a journal file that does not exist), or None."""
    if "://" not in url and not _journal_path(url).exists():
        return f"no sweep storage at {url}; run `sweep grid` first or pass --storage"
    return None


def open_storage(url: str, *, readonly: bool = False) -> optuna.storages.BaseStorage:
    """A storage URL (sqlite:///…, postgresql://…) or a journal file path (the default).

    `readonly`: for commands that only read (status, report, a job lookup): nothing is created,
    locked or repaired, so a read-only runs directory works."""
    if "://" in url:
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url)
            except Exception as exc:  # two workers creating the schema at once: one loses, then finds it
                if attempt == 4 or "already exists" not in str(exc):
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")
    path = _journal_path(url)
    if not readonly:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            repair_journal(path)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


def repair_journal(path: Path) -> str | None:
    """Cut a journal file back to its last whole record, keeping the damaged bytes beside it
    (`NAME.damaged-<time>`), under the journal's own lock (a writer mid-append holds it).

    Damage is what a crash during a write leaves: a last line without its newline, or (written
    by an earlier version that did not repair) such a line with the next record glued onto it;
    a glued record is recovered. Returns what was done, or None when the file was whole."""
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept, damaged = _whole_records(data)
        if not damaged:
            return None
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        aside.write_bytes(b"".join(damaged))
        tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
    finally:
        lock.release()
    message = (f"{path}: the journal had {sum(len(d) for d in damaged)} damaged byte(s) (a write cut short); "
               f"cut back to its last whole record, the damaged bytes kept in {aside.name}")
    log.warning("%s", message)
    return message


def _whole_records(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The journal's lines split into whole records (each ending in a newline) and damage."""
    kept: list[bytes] = []
    damaged: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.endswith(b"\n") and _record(line):
            kept.append(line)
            continue
        # A torn record with the next one glued on: the last '{' that starts a whole record.
        body = line.rstrip(b"\n")
        for start in (i for i in range(len(body) - 1, 0, -1) if body[i:i + 1] == b"{"):
            if line.endswith(b"\n") and _record(body[start:]):
                damaged.append(body[:start])
                kept.append(body[start:] + b"\n")
                break
        else:
            damaged.append(line)
    return kept, damaged


def _record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@dataclass
class JobState:
    """What the storage says of one job."""

    status: str  # waiting, running, completed, collapsed, diverged, failed
    trial: FrozenTrial | None
    result: dict[str, Any] | None = None
    owner: str = ""
    note: str = ""  # e.g. "interrupted, queued", "worker gone"


def owner_gone(trial: FrozenTrial, *, me: int | None = None) -> bool:
    """The one liveness rule: a RUNNING trial's owner is gone when it is a dead pid on this host,
    or when its heartbeat (or, before the first one, its start) is older than STALE_S."""
    attrs = trial.user_attrs
    pid = attrs.get("pid")
    if attrs.get("host") == HOST and isinstance(pid, int) and pid != me:
        return not pid_alive(pid)
    beat = attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else 0)
    return time.time() - float(beat) > STALE_S


class SweepStore:
    """One sweep's study. `create=False` opens an existing one without writing (read-only use)."""

    def __init__(self, storage: optuna.storages.BaseStorage, sweep: str, *, lock_dir: Path | None = None,
                 create: bool = True, sampler: Any = None, pruner: Any = None, direction: Any = "maximize") -> None:
        self.storage = storage
        self.sweep = sweep
        if create:
            self.study = optuna.create_study(study_name=sweep, storage=storage, direction=direction,
                                             sampler=sampler, pruner=pruner, load_if_exists=True)
        else:
            self.study = optuna.load_study(study_name=sweep, storage=storage, sampler=sampler, pruner=pruner)
        self.study_id = storage.get_study_id_from_name(sweep)
        self.host = HOST
        self.pid = os.getpid()
        self.lock_dir = lock_dir
        self._ids: dict[int, int] = {}

    def trial_id(self, trial: FrozenTrial | optuna.Trial) -> int:
        """The storage's id of a trial, through the storage's public API (cached: ids never change)."""
        if trial.number not in self._ids:
            self._ids[trial.number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        return self._ids[trial.number]

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
        last = trials[-1] if trials else None
        if trial is None:
            if last is not None and last.user_attrs.get("status") == "interrupted":
                return JobState("waiting", last, note="interrupted; runs again (resumes) with the next sweep command")
            return JobState("failed" if last else "waiting", last, None)
        if trial.state == TrialState.WAITING:
            earlier = [t for t in trials if t.number < trial.number]
            if earlier and earlier[-1].user_attrs.get("status") == "interrupted":
                return JobState("waiting", trial, note="interrupted, queued (resumes from its last epoch)")
            return JobState("waiting", trial)
        if trial.state == TrialState.RUNNING:
            owner = f"{trial.user_attrs.get('host', '?')}:{trial.user_attrs.get('pid', '?')}"
            if owner_gone(trial):
                return JobState("waiting", trial, owner=owner,
                                note=f"its worker {owner} is gone; the next sweep command resumes it")
            return JobState("running", trial, None, owner)
        result = trial.user_attrs.get("result")
        return JobState(trial.user_attrs.get("status", "completed"), trial, result)

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

    def claim(self, trial: FrozenTrial, distributions: dict[str, CategoricalDistribution] | None = None) -> bool:
        """WAITING -> RUNNING, atomically; False when another worker got there first. The winner
        records its owner, a first heartbeat and the trial's swept values as parameters."""
        trial_id = self.trial_id(trial)
        try:
            won = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        if not won:
            return False
        self.mark_owner(trial_id)
        for key, value in (trial.user_attrs.get("point") or {}).items():
            dist = (distributions or {}).get(key)
            choice = param_choice(value)
            if dist is None or choice not in dist.choices:
                continue
            try:
                self.storage.set_trial_param(trial_id, key, dist.to_internal_repr(choice), dist)
            except ValueError:  # the grid file's values changed since earlier trials: Optuna wants one space
                log.debug("trial %d: %s not recorded as a parameter (its values differ from earlier trials')",
                          trial.number, key)
        return True

    def mark_owner(self, trial_id: int) -> None:
        for key, value in (("host", self.host), ("pid", self.pid), ("heartbeat", time.time())):
            self.storage.set_trial_user_attr(trial_id, key, value)

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

    def fail(self, trial_id: int, reason: str, log_tail: list[str] | None = None, *, status: str = "failed") -> bool:
        """FAIL the trial (False when it had finished already: another worker got there first)."""
        self.storage.set_trial_user_attr(trial_id, "status", status)
        self.storage.set_trial_user_attr(trial_id, "reason", reason)
        if log_tail is not None:
            self.storage.set_trial_user_attr(trial_id, "log_tail", log_tail)
        try:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True


def param_choice(value: Any) -> Any:
    """A swept value as an Optuna categorical choice (lists and mappings as JSON text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)


def sweep_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(optuna.study.get_all_study_names(storage))

