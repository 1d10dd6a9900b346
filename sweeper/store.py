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

Opening a storage is sweeper/storage.py; riding out a network storage's outages,
sweeper/reconnect.py.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Collection, Iterable, Iterator
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
from sweeper.trial_reads import read_trials
from trainer.jobdir import COMPLETED, DIVERGED, FAILED, INTERRUPTED, LOST, RESULT_KEYS, RUNNING, WAITING

log = logging.getLogger(__name__)

# A busy worker writes a heartbeat every HEARTBEAT_S; a trial silent for STALE_S is taken over
# (environment overrides, for tests and for clusters with slow shared storage).
HEARTBEAT_S = float(os.environ.get("SWEEP_HEARTBEAT_S", "10"))
STALE_S = float(os.environ.get("SWEEP_STALE_S", "120"))
# Who a worker is: its host (SWEEP_HOST overrides: containers that share a host name) and pid.
HOST = os.environ.get("SWEEP_HOST") or socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class JobState:
    """What the storage says of one job."""

    status: str  # waiting, running, completed, collapsed, diverged, failed
    trial: FrozenTrial | None
    result: dict[str, Any] | None = None
    owner: str = ""
    note: str = ""  # e.g. "interrupted, queued", "worker gone"


# User attributes a worker never reads (it has the grid's configurations), left out of its reads.
WORKER_SKIPS = ("config", "log_tail", "point")

# What `fail` writes; found on a COMPLETE or PRUNED trial only when it lost a race to a finish.
FAILED_STATUSES = (FAILED, LOST, INTERRUPTED)


# A job whose last trial was taken over (LOST) this recently is queued again by the worker that
# took it over, not by one that reads the failure: a thousand idle workers that read it at once
# queued one job fifty times (issue 28). Past it (the taker died in between), anyone does.
REQUEUE_GRACE_S = float(os.environ.get("SWEEP_REQUEUE_GRACE_S", "30"))


def lost_lately(trials: list[FrozenTrial]) -> bool:
    last = trials[-1] if trials else None
    if last is None or last.state != TrialState.FAIL or last.user_attrs.get("status") != LOST:
        return False
    return last.datetime_complete is not None and time.time() - last.datetime_complete.timestamp() < REQUEUE_GRACE_S


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
        """The storage's id of a trial: the one it was read with (Optuna's trials carry it), else
        through the storage's public API (cached: ids never change)."""
        known = getattr(trial, "_trial_id", None)
        if isinstance(known, int):
            return known
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
        return self.group(self.study.get_trials(deepcopy=False))

    def read(self, ids: Collection[int] = (), newer_than: int = -1,
             open_sample: tuple[int, int] | None = None) -> list[FrozenTrial]:
        """The trials with these storage ids, those newer than `newer_than` (by default: all) and an
        open sample (sweeper/trial_reads.py), fresh from the storage, without what a worker never
        reads (WORKER_SKIPS)."""
        return read_trials(self.storage, self.study_id, ids=ids, newer_than=newer_than, skip_attrs=WORKER_SKIPS,
                           open_sample=open_sample)

    @staticmethod
    def group(trials: Iterable[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
        """Trials by job id, each job's by number."""
        by_job: dict[str, list[FrozenTrial]] = {}
        for trial in trials:
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
            if last is not None and last.user_attrs.get("status") == INTERRUPTED:
                return JobState(WAITING, last, note="interrupted; runs again (resumes) with the next sweep command")
            return JobState(FAILED if last else WAITING, last, None)
        if trial.state == TrialState.WAITING:
            earlier = [t for t in trials if t.number < trial.number]
            if earlier and earlier[-1].user_attrs.get("status") == INTERRUPTED:
                return JobState(WAITING, trial, note="interrupted, queued (resumes from its last epoch)")
            return JobState(WAITING, trial)
        if trial.state == TrialState.RUNNING:
            owner = f"{trial.user_attrs.get('host', '?')}:{trial.user_attrs.get('pid', '?')}"
            if owner_gone(trial):
                return JobState(WAITING, trial, owner=owner,
                                note=f"its worker {owner} is gone; the next sweep command resumes it")
            return JobState(RUNNING, trial, None, owner)
        result = trial.user_attrs.get("result")
        status = trial.user_attrs.get("status", COMPLETED)
        if status in FAILED_STATUSES:
            # A worker that took the trial over wrote "lost" just before its owner finished it (the
            # owner's state change won, Optuna takes no attribute after it): the result says.
            status = (result or {}).get("status") or (COMPLETED if trial.state == TrialState.COMPLETE else DIVERGED)
        return JobState(status, trial, result)

    # -- writing ------------------------------------------------------------------------------

    def sync(self, jobs: list[Job], distributions: dict[str, CategoricalDistribution] | None = None, *,
             grace: bool = True, ids: Collection[int] = (), newer_than: int = -1) -> dict[str, list[FrozenTrial]]:
        """Enqueue every job that has no live trial yet (with its swept values as parameters, where
        `distributions` has them), but one just taken over (`lost_lately`) unless `grace` is off: the
        caller took it over. It decides on a fresh `read(ids, newer_than)` (by default every trial:
        a caller that knows the jobs' trials names them, and the newest it has seen), which it
        returns: the trials it enqueued are newer than any of them."""
        with self._local_lock():
            by_job = self.group(self.read(ids, newer_than))
            for job in jobs:
                trials = by_job.get(job.id, [])
                if self.canonical(trials) is None and not (grace and lost_lately(trials)):
                    self.enqueue(job, attempt=len(trials) + 1, distributions=distributions)
            return by_job

    def enqueue(self, job: Job, *, attempt: int = 1, distributions: dict[str, CategoricalDistribution] | None = None) -> None:
        """A WAITING trial for the job. Its swept values are its parameters from the start (so
        `trials_dataframe()` and optuna-dashboard show them, and a claim need not write them:
        one call per swept key fewer for each job, issue 28)."""
        attrs = {"job_id": job.id, "point": job.point, "config": job.config.to_dict(), "attempt": attempt}
        params: dict[str, Any] = {}
        dists: dict[str, optuna.distributions.BaseDistribution] = {}
        for key, value in job.point.items():
            dist, choice = (distributions or {}).get(key), param_choice(value)
            if dist is not None and choice in dist.choices:
                params[key], dists[key] = choice, dist
        try:
            self._add_waiting(attrs, params, dists)
        except ValueError:  # the grid file's values changed since earlier trials: Optuna wants one space
            log.debug("job %s: its swept values are not parameters (they differ from earlier trials')", job.id)
            self._add_waiting(attrs, {}, {})

    def _add_waiting(self, attrs: dict[str, Any], params: dict[str, Any],
                     dists: dict[str, optuna.distributions.BaseDistribution]) -> None:
        self.study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=params, distributions=dists,
                                                       user_attrs=attrs, system_attrs={"fixed_params": {}}))

    def claim(self, trial: FrozenTrial, distributions: dict[str, CategoricalDistribution] | None = None) -> bool:
        """WAITING -> RUNNING, atomically; False when another worker got there first. The winner
        records its owner, a first heartbeat and, where `distributions` are given, the trial's swept
        values as parameters (a grid's trials have them from `enqueue` on)."""
        trial_id = self.trial_id(trial)
        try:
            won = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        if not won:
            return False
        try:
            self.mark_owner(trial_id)
            self._record_params(trial, trial_id, distributions or {})
        except optuna.exceptions.UpdateFinishedTrialError:
            # The storage was unreachable between the claim and its owner's name for longer than
            # STALE_S, and another worker took the owner-less trial over: it is theirs now.
            log.warning("trial %d: claimed, then taken over while the storage was unreachable; leaving it", trial_id)
            return False
        return True

    def _record_params(self, trial: FrozenTrial, trial_id: int, distributions: dict[str, CategoricalDistribution]) -> None:
        for key, value in (trial.user_attrs.get("point") or {}).items():
            dist = distributions.get(key)
            choice = param_choice(value)
            if dist is None or choice not in dist.choices:
                continue
            try:
                self.storage.set_trial_param(trial_id, key, dist.to_internal_repr(choice), dist)
            except ValueError:  # the grid file's values changed since earlier trials: Optuna wants one space
                log.debug("trial %d: %s not recorded as a parameter (its values differ from earlier trials')",
                          trial.number, key)

    def mark_owner(self, trial_id: int) -> None:
        for key, value in (("host", self.host), ("pid", self.pid), ("heartbeat", time.time())):
            self.storage.set_trial_user_attr(trial_id, key, value)

    def heartbeat(self, trial_id: int) -> bool:
        """False when the trial has finished meanwhile: another worker took it over (this one was
        silent for longer than STALE_S) and failed it as lost."""
        try:
            self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was taken over by another worker (no heartbeat from here for %.0f s)", trial_id, STALE_S)
            return False
        return True

    def set_attr(self, trial_id: int, key: str, value: Any) -> None:
        try:
            self.storage.set_trial_user_attr(trial_id, key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was taken over by another worker; %s not recorded", trial_id, key)

    def finish(self, trial_id: int, result: dict[str, Any]) -> bool:
        """Store the job's result with its trial: COMPLETE (value val_acc), or PRUNED when it
        diverged (no value). True when this call recorded it (or a first try of it whose answer was
        lost did); False when the trial was taken over meanwhile (the job's result stays in its job
        directory and the other worker's trial records it): never an error (optuna#5582)."""
        stored = {k: result.get(k) for k in RESULT_KEYS}
        try:
            self.storage.set_trial_user_attr(trial_id, "result", stored)
            self.storage.set_trial_user_attr(trial_id, "status", result["status"])
            if result["status"] == DIVERGED or result.get("val_acc") is None:
                self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
            else:
                self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(result["val_acc"])])
        except optuna.exceptions.UpdateFinishedTrialError:
            trial = self.storage.get_trial(trial_id)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.user_attrs.get("result") == stored:
                return True  # our own first try, whose answer a dropped connection lost
            log.warning("trial %d was taken over by another worker (no heartbeat from here for %.0f s); its result "
                        "is not recorded twice", trial_id, STALE_S)
            return False
        return True

    def fail(self, trial_id: int, reason: str, log_tail: list[str] | None = None, *, status: str = FAILED) -> bool:
        """FAIL the trial (False when it had finished already: another worker got there first)."""
        try:  # two workers that both found its owner gone: the second finds it failed already
            self.storage.set_trial_user_attr(trial_id, "status", status)
            self.storage.set_trial_user_attr(trial_id, "reason", reason)
            if log_tail is not None:
                self.storage.set_trial_user_attr(trial_id, "log_tail", log_tail)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True


def param_choice(value: Any) -> Any:
    """A swept value as an Optuna categorical choice (lists and mappings as JSON text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)
