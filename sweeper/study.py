"""Optuna studies: ask for a trial, run it as a job (the same subprocess core, directory and
W&B run as a grid job), report each epoch's validation accuracy, prune, tell.

`--trials N` is the study's total of finished (complete or pruned) trials, shared by every
worker on the storage. A trial number decides who runs: a trial asked when N trials are
already finished or under way is dropped (failed as `surplus`), so workers never overshoot.
A worker that dies leaves its trial RUNNING: on PostgreSQL/SQLite, Optuna's heartbeat
(`heartbeat_interval`, `grace_period`) fails it and `RetryHeartbeatStaleTrialCallback` enqueues a
retry; on the journal file (no heartbeat there) a dead pid on this host does the same. A retry
has the same parameters, hence the same job directory, and resumes from its last epoch. A
trial asked by a worker stopped before it could record its pid is failed after the grace
period (`orphaned`), so no study waits on it for ever.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeper.process import WarmPool, wait_for_exit
from sweeper.runner import (
    EXIT_BUSY,
    EXIT_CONFIG,
    Progress,
    Slot,
    _read_result,
    interrupt_guard,
    launch_job,
    log_tail,
    read_event_stream,
    read_events,
)
from sweeper.search import Space, suggest
from sweeper.spec import Job
from sweeper.store import FINISHED, RESULT_KEYS, _alive

log = logging.getLogger(__name__)

# Heartbeat every 10 s, a trial silent for 60 s is failed and retried (env overrides for tests).
HEARTBEAT_S = int(os.environ.get("SWEEP_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("SWEEP_GRACE_S", "60"))
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def open_study_storage(url: str, *, retries: int) -> optuna.storages.BaseStorage:
    """Like sweeper.store.open_storage, with Optuna's heartbeat and retry callback on RDB storages
    (`RetryFailedTrialCallback` is deprecated since Optuna 4.9 for `RetryHeartbeatStaleTrialCallback`)."""
    from sweeper.store import open_storage

    if "://" not in url:
        return open_storage(url)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries),
            )
        except Exception as exc:  # two workers creating the schema at once: one loses, then finds it
            if attempt == 4 or "already exists" not in str(exc):
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


@dataclass
class TrialRun:
    trial: optuna.Trial
    job: Job
    slot: Slot
    proc: subprocess.Popen[bytes] | None
    attempt: int
    reported: int = 0
    last_beat: float = 0.0
    retry_at: float = 0.0  # a busy job directory: try again then


class StudyRunner:
    def __init__(self, space: Space, study: optuna.Study, *, runs_dir: Path, slots: list[Slot], trials: int,
                 retries: int, cache_dir: Path | None = None, poll_s: float = 0.5, warm: bool = True) -> None:
        self.space = space
        self.study = study
        self.storage: Any = study._storage
        self.dir = runs_dir / study.study_name
        self.slots = slots
        self.total = trials
        self.retries = retries
        self.cache_dir = cache_dir
        self.poll_s = poll_s
        self.running: dict[int, TrialRun] = {}
        self.progress: dict[int, Progress] = {}
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.asking: optuna.trial.Trial | None = None  # between ask() and its launch
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        self.exhausted = False
        self.warm = WarmPool(self.dir / ".warm", enabled=warm)
        # Optuna wraps an RDB storage in a cache; the heartbeat lives on the RDB storage.
        self.heartbeats = isinstance(getattr(self.storage, "_backend", self.storage), optuna.storages.RDBStorage)

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=DONE))

    def run(self, on_tick: Callable[[StudyRunner], None] | None = None) -> None:
        with interrupt_guard() as check_interrupt:
            try:
                while True:
                    check_interrupt()
                    self._poll()
                    self._fail_stale()
                    finished = self.finished()
                    if finished >= self.total and not self.running:
                        break
                    self._start()
                    self._prime(finished)
                    if self.exhausted and not self.running:
                        # Everything left is under way on other workers: wait for them (or their failure).
                        time.sleep(self.poll_s)
                        self.exhausted = False
                    if on_tick is not None:
                        on_tick(self)
                    wait_for_exit((run.proc for run in self.running.values() if run.proc is not None), self.poll_s)
                check_interrupt()
            except BaseException:
                self._stop_all()
                raise
            finally:
                self.warm.close()
        if on_tick is not None:
            on_tick(self)

    # -- starting -------------------------------------------------------------------------------

    def _budget_left(self, number: int) -> bool:
        """True while fewer than N trials numbered before this one are finished or under way."""
        ahead = [t for t in self.study.get_trials(deepcopy=False)
                 if t.number < number and t.state in (*DONE, TrialState.RUNNING, TrialState.WAITING)]
        return len(ahead) < self.total

    def _start(self) -> None:
        busy = {r.slot.name for r in self.running.values()}
        free = [s for s in self.slots if s.name not in busy]
        for run in self.running.values():  # busy directories waiting for another try
            if run.proc is None and time.time() >= run.retry_at:
                self._launch(run)
        while free and not self.exhausted:
            under_way = len(self.study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING)))
            if under_way >= self.total:
                self.exhausted = True
                return
            self.asking = trial = self.study.ask()
            if self.heartbeats:  # at once: a trial with no heartbeat at all is never found stale
                self.storage.record_heartbeat(trial._trial_id)
            if not self._budget_left(trial.number):
                self.storage.set_trial_user_attr(trial._trial_id, "status", "surplus")
                self.study.tell(trial, state=TrialState.FAIL)
                self.asking = None
                self.exhausted = True
                return
            values = suggest(trial, self.space)
            config = self.space.config(values)
            job = Job(config=config, point=values)
            for key, value in (("job_id", job.id), ("config", config.to_dict()), ("point", values),
                               ("host", self.host), ("pid", self.pid), ("reason", "")):
                self.storage.set_trial_user_attr(trial._trial_id, key, value)
            run = TrialRun(trial, job, free.pop(0), None, attempt=1)
            self.running[trial.number] = run
            self.progress[trial.number] = Progress(job, state="running", started=time.time(), note=f"#{trial.number}")
            self.asking = None
            self._launch(run)

    def _prime(self, finished: int) -> None:
        """Warm processes for the busy slots, as many as trials are still to start."""
        left = 0 if self.exhausted else max(0, self.total - finished - len(self.running))
        self.warm.release(keep=left)
        self.warm.prime([run.slot for run in self.running.values() if run.proc is not None][:left])

    def _launch(self, run: TrialRun) -> None:
        env = {"WANDB_RUN_GROUP": self.study.study_name, "WANDB_NAME": f"{self.study.study_name}/{run.trial.number}",
               "WANDB_RUN_ID": f"{run.job.id}-t{run.trial.number}"}
        run.proc = launch_job(self.dir / run.job.id, run.job.config.to_dict(), run.slot, attempt=run.attempt,
                              cache_dir=self.cache_dir, env=env, warm=self.warm)
        run.last_beat = 0.0

    # -- watching -------------------------------------------------------------------------------

    def _poll(self) -> None:
        for number, run in list(self.running.items()):
            if run.proc is None:
                continue
            job_dir = self.dir / run.job.id
            p = self.progress[number]
            p.epoch, p.val_acc = read_events(job_dir / "events.jsonl")
            self._heartbeat(run)
            if self._report_and_prune(run, job_dir):
                continue
            code = run.proc.poll()
            if code is None:
                continue
            result = _read_result(job_dir / "result.json")
            if code == 0 and result is not None and result.get("status") in FINISHED:
                self._finish(run, result)
            elif code == EXIT_BUSY:  # the same configuration runs on another worker: wait for it
                run.proc, run.retry_at = None, time.time() + 5
            elif code != EXIT_CONFIG and run.attempt <= self.retries:
                run.attempt += 1
                self._launch(run)
            else:
                self._fail(run, f"exit code {code}", log_tail(job_dir / "job.log"))

    def _report_and_prune(self, run: TrialRun, job_dir: Path) -> bool:
        epochs = _epoch_rows(job_dir / "events.jsonl")
        for row in epochs[run.reported:]:
            run.trial.report(row.get(self.space.metric, row["val_acc"]), step=row["epoch"])
            run.reported += 1
            if row["epoch"] < run.job.config.epochs and run.trial.should_prune():
                assert run.proc is not None
                run.proc.send_signal(signal.SIGINT)  # it keeps its last epoch's state
                try:
                    run.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                self.storage.set_trial_user_attr(run.trial._trial_id, "status", "pruned")
                self.storage.set_trial_user_attr(run.trial._trial_id, "result", {"status": "pruned", "epochs": epochs})
                self.storage.set_trial_user_attr(run.trial._trial_id, "reason", f"pruned after epoch {row['epoch']}")
                self.study.tell(run.trial, state=TrialState.PRUNED)
                self._done(run, "pruned", f"after epoch {row['epoch']}")
                return True
        return False

    def _finish(self, run: TrialRun, result: dict[str, Any]) -> None:
        self.storage.set_trial_user_attr(run.trial._trial_id, "result", {k: result.get(k) for k in RESULT_KEYS})
        self.storage.set_trial_user_attr(run.trial._trial_id, "status", result["status"])
        if result["status"] == "diverged" or result.get("val_acc") is None:
            self.study.tell(run.trial, state=TrialState.PRUNED)
        else:
            self.study.tell(run.trial, _metric(result, self.space.metric))
        p = self.progress[run.trial.number]
        p.seconds = result.get("runtime_s")
        self._done(run, result["status"], "")

    def _fail(self, run: TrialRun, reason: str, tail: list[str]) -> None:
        self.storage.set_trial_user_attr(run.trial._trial_id, "status", "failed")
        self.storage.set_trial_user_attr(run.trial._trial_id, "reason", reason)
        self.storage.set_trial_user_attr(run.trial._trial_id, "log_tail", tail)
        self.study.tell(run.trial, state=TrialState.FAIL)
        self._done(run, "failed", reason)

    def _done(self, run: TrialRun, state: str, note: str) -> None:
        del self.running[run.trial.number]
        p = self.progress[run.trial.number]
        p.state, p.note = state, note or p.note

    def _heartbeat(self, run: TrialRun) -> None:
        if self.heartbeats and time.time() - run.last_beat >= HEARTBEAT_S:
            self.storage.record_heartbeat(run.trial._trial_id)
            run.last_beat = time.time()

    def _fail_stale(self) -> None:
        """Fail the trials of dead workers and enqueue their retries."""
        if self.heartbeats:
            optuna.storages.fail_stale_trials(self.study)  # heartbeat + RetryHeartbeatStaleTrialCallback
        mine = {run.trial.number for run in self.running.values()}
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = trial.user_attrs
            dead = (not self.heartbeats and attrs.get("host") == self.host and attrs.get("pid") not in (None, self.pid)
                    and not _alive(attrs["pid"]))
            # A worker records its pid within milliseconds of ask(); a trial still without one after
            # the grace period was asked by a worker stopped in between (e.g. Ctrl-C): nobody runs it.
            started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
            orphan = "pid" not in attrs and trial.number not in mine and time.time() - started > GRACE_S
            if dead or orphan:
                try:
                    self.storage.set_trial_user_attr(trial._trial_id, "reason", "worker lost" if dead else "orphaned")
                    self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                except RuntimeError:  # UpdateFinishedTrialError: another worker got there first
                    continue
                if dead:
                    self.retry(self.study, self.storage.get_trial(trial._trial_id))

    def _stop_all(self) -> None:
        """Ctrl-C: stop the jobs, fail their trials and enqueue retries (the next run resumes them)."""
        if self.asking is not None:  # asked, not yet launched: nothing to resume, just not left RUNNING
            self.storage.set_trial_user_attr(self.asking._trial_id, "reason", "interrupted before it started")
            self.storage.set_trial_state_values(self.asking._trial_id, TrialState.FAIL)
            self.asking = None
        for run in self.running.values():
            if run.proc is not None and run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
        for run in list(self.running.values()):
            if run.proc is not None:
                try:
                    run.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
            self.storage.set_trial_user_attr(run.trial._trial_id, "reason", "interrupted")
            self.study.tell(run.trial, state=TrialState.FAIL)
            self.retry(self.study, self.storage.get_trial(run.trial._trial_id))
        self.running.clear()


def _epoch_rows(path: Path) -> list[dict[str, Any]]:
    """The job's finished epochs, in order (a resumed run repeats none, but be exact)."""
    rows: list[dict[str, Any]] = []
    for event in read_event_stream(path):
        if event.get("event") == "epoch":
            rows.append(event)
        elif event.get("event") == "start" and event.get("resumed_from_epoch", 0) < len(rows):
            rows = rows[: event["resumed_from_epoch"]]
    return rows


def _metric(result: dict[str, Any], metric: str) -> float:
    """The result's value of the space's metric; a result without it (jobs that select by val_acc)
    gives the metric's value at its best epoch, and val_acc when its rows lack the metric too."""
    if result.get(metric) is not None:
        return float(result[metric])
    best = [row for row in result.get("epochs") or [] if row.get("epoch") == result.get("best_epoch")]
    return float(best[0][metric] if best and best[0].get(metric) is not None else result["val_acc"])
