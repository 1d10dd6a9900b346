"""A grid's jobs as a scheduler source: claim pre-expanded jobs from the storage, record results.

Every orchestrator on the same storage and runs directory runs the same loop over the same jobs;
the storage's atomic claims (sweeper/store.py) make each job run once. A job whose worker is
gone (`store.owner_gone`) is taken over and resumes from its last epoch in the same directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.scheduler import Progress, Ticket
from sweeper.spec import Grid, Job
from sweeper.store import SweepStore, lost_lately, owner_gone, param_choice
from sweeper.trial_view import ID_SLACK, TrialView
from trainer.config import ConfigError, JobConfig, build_job
from trainer.jobdir import EVENTS_FILE, FAILED, FINISHED, INTERRUPTED, JOB_FILE, LOST, RUNNING, SURPLUS, WAITING, progress

log = logging.getLogger(__name__)


def distributions(grid: Grid) -> dict[str, CategoricalDistribution]:
    """Each swept key (seed included) as a categorical distribution over the grid's values."""
    values: dict[str, dict[Any, None]] = {}  # each key's choices, in order of first use
    for job in grid.jobs:
        for key, value in job.point.items():
            values.setdefault(key, {})[param_choice(value)] = None
    return {key: CategoricalDistribution(list(choices)) for key, choices in values.items()}


# A take that loses this many claims to other workers stops; the next turn reads again.
LOST_RACES = 3


class GridSource:
    def __init__(self, grid: Grid, store: SweepStore, *, runs_dir: Path, wandb_env: dict[str, str] | None = None) -> None:
        self.grid = grid
        self.store = store
        self.name = grid.name
        self.progress = {job.id: Progress(job) for job in grid.jobs}
        self.distributions = distributions(grid)
        self.wandb_env = wandb_env or {}
        self.mine: set[str] = set()  # job ids running here
        self.gave_up: set[str] = set()  # failed here after their retries: not again in this run
        self.remaining: list[Job] = []
        self.runs_dir = runs_dir
        self.view = TrialView(store, [job.id for job in grid.jobs])
        self.view.load(store.sync(grid.jobs, self.distributions))
        self.view.drain_changed()
        for job in grid.jobs:
            self._judge(job)
        self._remaining()

    @property
    def by_job(self) -> dict[str, list[FrozenTrial]]:
        return self.view.by_job

    # -- reading the storage ----------------------------------------------------------------------

    def tick(self) -> None:
        """Read this turn's trials (sweeper/trial_view.py: all of them in a small sweep, a sample in
        a big one) and judge the jobs read."""
        waiting = [job.id for job in self.remaining if self.progress[job.id].state != RUNNING]
        running = [job.id for job in self.remaining if self.progress[job.id].state == RUNNING]
        self.view.refresh(waiting, running)
        for job_id in self.view.drain_changed():
            if job_id not in self.mine:
                self._judge(self.progress[job_id].job)
            self._drop_duplicates(job_id)
        self._remaining()

    def _drop_duplicates(self, job_id: str) -> None:
        """A finished job's WAITING trials (queued twice: two workers found its trial failed at once)
        end SURPLUS: never run, and out of every worker's open sample."""
        trials = self.by_job.get(job_id, [])
        first = self.store.canonical(trials)
        if first is None or first.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        for trial in trials:
            if trial.state == TrialState.WAITING:
                self.store.fail(self.store.trial_id(trial), f"queued twice: job {job_id} ran as trial {first.number}",
                                status=SURPLUS)

    def _judge(self, job: Job) -> None:
        """The job's progress, as its trials say."""
        p = self.progress[job.id]
        state = self.store.state(self.by_job.get(job.id, []))
        p.state, p.note = state.status, state.note
        if state.result is not None:
            p.val_acc, p.seconds = state.result.get("val_acc"), state.result.get("runtime_s")
            p.epoch = len(state.result.get("epochs") or [])
        if state.status == RUNNING:
            p.note = f"on {state.owner}"
            p.epoch, p.val_acc = progress(self.runs_dir / self.name / job.id / EVENTS_FILE)
        if state.status == FAILED and state.trial is not None:
            p.note = str(state.trial.user_attrs.get("reason", ""))

    def _remaining(self) -> None:
        self.remaining = [job for job in self.grid.jobs if job.id not in self.mine and job.id not in self.gave_up
                          and self.progress[job.id].state not in FINISHED]

    def exhausted(self) -> bool:
        return not self.remaining

    def waiting(self) -> int:
        return sum(job.id not in self.mine and self.progress[job.id].state != RUNNING for job in self.remaining)

    # -- handing out jobs -------------------------------------------------------------------------

    def take(self) -> Ticket | None:
        self.view.races = 0
        candidates = [job for job in self.remaining if job.id not in self.mine and job.id in self.view.fresh]
        if self.view.sampled:  # a crowd of workers: in grid order, all would race for the same first jobs
            self.view.rng.shuffle(candidates)
        for job in candidates:
            trial = self.store.canonical(self.by_job.get(job.id, []))
            took_over = False
            if trial is not None and trial.state == TrialState.RUNNING and owner_gone(trial, me=self.store.pid):
                owner = f"{trial.user_attrs.get('host')}:{trial.user_attrs.get('pid')}"
                if not self.store.fail(self.store.trial_id(trial), f"worker {owner} lost", status=LOST):
                    continue  # another worker took it over first, and queues it again: not a second time
                log.warning("job %s: its worker %s is gone; running it again (it resumes)", job.id, owner)
                trial, took_over = None, True
            if trial is None and not took_over and lost_lately(self.by_job.get(job.id, [])):
                continue  # the worker that took it over queues it again
            if trial is None:  # never enqueued, or its last trial failed (an earlier run's): again
                known = [t._trial_id for t in self.by_job.get(job.id, [])]  # and those newer: not the whole sweep
                self.view.load(self.store.sync([job], self.distributions, grace=not took_over, ids=known,
                                               newer_than=max(-1, self.view.newest - ID_SLACK)))
                self.view.read_new()
                trial = self.store.canonical(self.by_job.get(job.id, []))
            if trial is None or trial.state != TrialState.WAITING:
                continue  # another worker has it
            if not self.store.claim(trial):
                if self.view.lost_race() >= LOST_RACES:
                    return None  # crowded: read again (a new sample) before trying more
                continue
            self.mine.add(job.id)
            trial_id = self.store.trial_id(trial)
            env = {**self.wandb_env, "WANDB_RUN_GROUP": self.name, "WANDB_NAME": f"{self.name}/{job.id}",
                   "WANDB_RUN_ID": job.id}
            return Ticket(job=job, config=self._config(job), handle=trial_id, env=env)
        return None

    def _config(self, job: Job) -> JobConfig:
        """The job's configuration, or the smaller micro-batch an out-of-memory retry ran it with."""
        try:
            stored = build_job(json.loads((self.runs_dir / self.name / job.id / JOB_FILE).read_text()))
        except (OSError, ValueError, ConfigError):
            return job.config
        return stored if stored.job_id() == job.id else job.config

    # -- what the jobs ended with ------------------------------------------------------------------

    def heartbeat(self, ticket: Ticket) -> None:
        self.store.heartbeat(ticket.handle)

    def report(self, ticket: Ticket, epochs: list[dict[str, Any]]) -> str | None:
        return None  # grid jobs run to their end

    def finish(self, ticket: Ticket, result: dict[str, Any]) -> None:
        if ticket.config.micro_batch != ticket.job.config.micro_batch:
            self.store.set_attr(ticket.handle, "micro_batch_adjusted",
                                {"micro_batch_size": ticket.config.micro_batch, "accumulation": ticket.config.accumulation})
        self.store.finish(ticket.handle, result)
        self.mine.discard(ticket.job.id)
        p = self.progress[ticket.job.id]
        p.state, p.val_acc, p.seconds, p.note = result["status"], result.get("val_acc"), result.get("runtime_s"), ""

    def retrying(self, ticket: Ticket, attempt: int, reason: str, tail: list[str]) -> None:
        self.store.set_attr(ticket.handle, f"attempt_{attempt}_failure", {"reason": reason, "log_tail": tail})

    def fail(self, ticket: Ticket, reason: str, tail: list[str]) -> None:
        self.store.fail(ticket.handle, reason, tail)
        self.mine.discard(ticket.job.id)
        self.gave_up.add(ticket.job.id)
        p = self.progress[ticket.job.id]
        p.state, p.note = FAILED, reason

    def stopped(self, ticket: Ticket, reason: str) -> None:  # pragma: no cover - grids never stop a job
        self.interrupt(ticket)

    def interrupt(self, ticket: Ticket) -> None:
        """Back in the queue at once: its trial ends `interrupted` and a fresh one waits for it."""
        self.store.fail(ticket.handle, f"interrupted at {time.strftime('%F %T')}", status=INTERRUPTED)
        self.store.sync([ticket.job], self.distributions)
        self.mine.discard(ticket.job.id)
        p = self.progress[ticket.job.id]
        p.state, p.note = WAITING, "interrupted, queued (resumes from its last epoch)"
