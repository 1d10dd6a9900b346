"""An Optuna study as a scheduler source: ask for a trial, run it as jobs (one per seed of the
space: the same subprocess core, directory and W&B run as a grid job), report each epoch's
selection metric (the mean over the seeds that have reached it), prune, tell.

`--trials N` is the study's total of finished (complete or pruned) trials, shared by every
worker on the storage. A trial number decides who runs: a trial asked when N trials are
already finished or under way is dropped (failed as `surplus`), so workers never overshoot.

No configuration is evaluated twice:
- a seeded sampler is made again for every trial, seeded from the space's seed and the trial's
  number (`sweeper.samplers.PerTrialSeeded`; the seed is recorded on the trial), so two workers of one study never
  draw the same values, and a study is reproducible whatever the number of workers;
- a suggested configuration that the study has already completed reuses that result instead of
  running (said in the log; the trial records `reused_from`).

A worker that dies leaves its trial RUNNING: `store.owner_gone` (a dead pid on this host, or no
heartbeat for STALE_S: the same rule as grids) lets a survivor fail it and queue a retry with the
same parameters, which resumes from the dead trial's last epoch (same job directories).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeper.samplers import PerTrialSeeded
from sweeper.search import Space, suggest
from sweeper.source import Progress, Ticket
from sweeper.spec import Job
from sweeper.store import SweepStore, owner_gone
from trainer.jobdir import COMPLETED, DIVERGED, FAILED, INTERRUPTED, LOST, METRICS, PRUNED, RESULT_KEYS, RUNNING, SURPLUS, WAITING

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class TrialGroup:
    """One trial of this worker: its jobs (one per seed), their epochs and results."""

    trial: optuna.Trial
    trial_id: int
    point: dict[str, Any]
    jobs: dict[int, Job]  # by seed
    pending: list[int]  # seeds not handed out yet
    epochs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    reported: int = 0  # epochs reported to Optuna
    ended: str | None = None  # pruned / failed / interrupted: its other jobs stop


class StudySource:
    def __init__(self, space: Space, store: SweepStore, *, runs_dir: Path, trials: int, retries: int,
                 wandb_env: dict[str, str] | None = None) -> None:
        self.space = space
        self.store = store
        self.study = store.study
        self.name = store.sweep
        self.runs_dir = runs_dir
        self.total = trials
        self.retries = retries
        self.metric = space.metric
        self.seeds: list[int] = list(getattr(space, "seeds", None) or [space.config({}).seed])
        self.several_seeds = bool(getattr(space, "seeds", None))
        self.target: float | None = getattr(space, "target", None)
        self.wandb_env = wandb_env or {}
        self.groups: dict[int, TrialGroup] = {}  # my open trials, by number
        self.progress: dict[str, Progress] = {}
        self.trials: list[FrozenTrial] = []
        self.stop_asking = ""  # why this worker asks for no more trials (target reached, space exhausted)

    # -- reading the storage ----------------------------------------------------------------------

    def tick(self) -> None:
        self.trials = self.study.get_trials(deepcopy=False)
        mine = {g.trial.number for g in self.groups.values()}
        for trial in self.trials:
            if trial.state == TrialState.RUNNING and trial.number not in mine and owner_gone(trial, me=self.store.pid):
                self._take_over(trial)
        if self.target is not None and not self.stop_asking:
            best = self._best_value()
            if best is not None and not self._better(self.target, best):
                self.stop_asking = f"target {self.metric} {self.target:g} reached ({best:.4g})"
                log.info("%s: %s; no new trials", self.name, self.stop_asking)

    def finished(self) -> int:
        return sum(t.state in DONE for t in self.trials)

    def exhausted(self) -> bool:
        return bool(self.stop_asking) or self.finished() >= self.total

    def waiting(self) -> int:
        if self.exhausted():
            return 0
        pending = sum(len(g.pending) for g in self.groups.values())
        return pending + max(0, self.total - self.finished() - len(self.groups)) * len(self.seeds)

    def _best_value(self) -> float | None:
        values = [t.value for t in self.trials if t.state == TrialState.COMPLETE and t.value is not None]
        if not values:
            return None
        return min(values) if METRICS.get(self.metric) == "minimize" else max(values)

    def _better(self, a: float, b: float) -> bool:
        return a < b if METRICS.get(self.metric) == "minimize" else a > b

    def _take_over(self, trial: FrozenTrial) -> None:
        """A dead worker's trial: fail it (one survivor wins) and queue a retry with its parameters."""
        attrs = trial.user_attrs
        owner = f"{attrs.get('host', '?')}:{attrs.get('pid', '?')}"
        if not self.store.fail(self.store.trial_id(trial), f"worker {owner} lost", status=LOST):
            return  # another survivor got there first
        retries = int(attrs.get("retries", 0))
        if not trial.params or len(trial.params) < len(self.space.params) or retries >= max(self.retries, 1):
            log.warning("trial #%d: its worker %s is gone; not retried", trial.number, owner)
            return
        log.warning("trial #%d: its worker %s is gone; queued again with the same parameters", trial.number, owner)
        self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries + 1})

    # -- handing out jobs -------------------------------------------------------------------------

    def take(self) -> Ticket | None:
        for group in self.groups.values():
            if group.pending and group.ended is None:
                return self._ticket(group, group.pending.pop(0))
        while not self.exhausted():
            under_way = sum(t.state in (*DONE, TrialState.RUNNING) for t in self.study.get_trials(deepcopy=False))
            if under_way >= self.total:
                return None  # the rest is under way on other workers: wait for them (or their loss)
            asked = self._ask()
            if asked == SURPLUS:
                return None  # workers asked at once; the next tick looks again
            if isinstance(asked, TrialGroup):
                return self._ticket(asked, asked.pending.pop(0))
        return None

    def _ask(self) -> TrialGroup | str:
        """A new trial, with its jobs; or why none runs ("surplus", "reused")."""
        trial = self.study.ask()
        trial_id = self.store.trial_id(trial)
        try:
            self.store.mark_owner(trial_id)  # at once: a trial without an owner is taken over
            if not self._budget_left(trial.number):
                self.store.fail(trial_id, "asked past the study's total of trials", status=SURPLUS)
                return SURPLUS
            values = suggest(trial, self.space)
            config = self.space.config(values)
            jobs = {seed: Job(config=replace(config, seed=seed), point={**values, "seed": seed}) for seed in self.seeds}
            first = jobs[self.seeds[0]]
            attrs: dict[str, Any] = {"job_id": first.id, "config": first.config.to_dict(), "point": values, "reason": ""}
            if isinstance(self.study.sampler, PerTrialSeeded):
                attrs["sampler_seed"] = self.study.sampler.trial_seed(trial.number)
            if self.several_seeds:
                attrs["seeds"] = [{"job_id": j.id, "seed": s, "status": WAITING, "result": None} for s, j in jobs.items()]
            for key, value in attrs.items():
                self.store.set_attr(trial_id, key, value)
            if self._reuse(trial, trial_id, first.id):
                return "reused"
        except BaseException:
            self.store.fail(trial_id, "stopped before it started", status=INTERRUPTED)
            raise
        group = TrialGroup(trial, trial_id, values, jobs, pending=list(self.seeds))
        self.groups[trial.number] = group
        for job in jobs.values():
            self.progress[job.id] = Progress(job, state=WAITING, note=f"#{trial.number}")
        return group

    def _budget_left(self, number: int) -> bool:
        """True while fewer than N trials numbered before this one are finished or under way."""
        ahead = [t for t in self.study.get_trials(deepcopy=False)
                 if t.number < number and t.state in (*DONE, TrialState.RUNNING, TrialState.WAITING)]
        return len(ahead) < self.total

    def _reuse(self, trial: optuna.Trial, trial_id: int, job_id: str) -> bool:
        """A configuration the study has completed already: tell its value again, run nothing."""
        for done in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.user_attrs.get("job_id") == job_id and done.value is not None:
                log.info("trial #%d: the same configuration as trial #%d (job %s), which is complete: its result is "
                         "reused, nothing runs", trial.number, done.number, job_id)
                for key in ("result", "status", "seeds"):
                    if key in done.user_attrs:
                        self.store.set_attr(trial_id, key, done.user_attrs[key])
                self.store.set_attr(trial_id, "reused_from", done.number)
                for step, value in sorted(done.intermediate_values.items()):
                    trial.report(value, step)
                _tell(self.study, trial, done.value)
                return True
        return False

    def _ticket(self, group: TrialGroup, seed: int) -> Ticket:
        job = group.jobs[seed]
        number = group.trial.number
        suffix = f"/seed{seed}" if self.several_seeds else ""
        env = {**self.wandb_env, "WANDB_RUN_GROUP": self.name, "WANDB_NAME": f"{self.name}/{number}{suffix}",
               "WANDB_RUN_ID": f"{job.id}-t{number}"}
        return Ticket(job=job, config=job.config, handle=(number, seed), env=env)

    def _group(self, ticket: Ticket) -> TrialGroup:
        return self.groups[ticket.handle[0]]

    # -- what the jobs ended with ------------------------------------------------------------------

    def heartbeat(self, ticket: Ticket) -> None:
        self.store.heartbeat(self._group(ticket).trial_id)

    def report(self, ticket: Ticket, epochs: list[dict[str, Any]]) -> str | None:
        group = self._group(ticket)
        if group.ended is not None:
            return group.ended
        group.epochs[ticket.handle[1]] = epochs
        last = ticket.job.config.epochs
        while True:
            step = group.reported + 1
            reached = [rows[step - 1].get(self.metric) for rows in group.epochs.values() if len(rows) >= step]
            values = [float(v) for v in reached if v is not None]
            if not values:
                return None
            try:
                group.trial.report(sum(values) / len(values), step=step)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker judged it lost
                group.ended = "taken over by another worker"
                return group.ended
            group.reported = step
            if step < last and group.trial.should_prune():
                self.store.set_attr(group.trial_id, "status", PRUNED)
                self.store.set_attr(group.trial_id, "reason", f"pruned after epoch {step}")
                self.store.set_attr(group.trial_id, "result", {"status": PRUNED, "epochs": epochs})
                _tell(self.study, group.trial, state=TrialState.PRUNED)
                group.ended = f"pruned after epoch {step}"
                self._record_seeds(group, PRUNED)
                return group.ended

    def finish(self, ticket: Ticket, result: dict[str, Any]) -> None:
        group = self._group(ticket)
        seed = ticket.handle[1]
        group.results[seed] = {k: result.get(k) for k in RESULT_KEYS}
        p = self.progress[ticket.job.id]
        p.state, p.seconds, p.val_acc = result["status"], result.get("runtime_s"), result.get("val_acc")
        self._record_seeds(group)
        if group.ended is not None:
            self._close_if_idle(group)
            return
        if len(group.results) < len(group.jobs):
            return
        values = [r[self.metric] for r in group.results.values()
                  if r.get(self.metric) is not None and r.get("status") != DIVERGED]
        statuses = [r["status"] for r in group.results.values()]
        status = next((s for s in statuses if s != COMPLETED), COMPLETED)
        summary = group.results[self.seeds[0]] if not self.several_seeds else _mean_result(list(group.results.values()))
        self.store.set_attr(group.trial_id, "result", {**summary, "status": status})
        self.store.set_attr(group.trial_id, "status", status)
        if values:
            _tell(self.study, group.trial, sum(values) / len(values))
        else:
            _tell(self.study, group.trial, state=TrialState.PRUNED)
        self._close(group)

    def _record_seeds(self, group: TrialGroup, unfinished: str | None = None) -> None:
        """The trial's `seeds` attribute (a space with seeds): each seed's job, status and result;
        the seeds without a result get `unfinished` (pruned, failed) when the trial has ended."""
        if not self.several_seeds:
            return
        rows = []
        for seed, job in group.jobs.items():
            result = group.results.get(seed)
            status = result["status"] if result else unfinished or self.progress[job.id].state
            rows.append({"job_id": job.id, "seed": seed, "status": status, "result": result})
        self.store.set_attr(group.trial_id, "seeds", rows)

    def retrying(self, ticket: Ticket, attempt: int, reason: str, tail: list[str]) -> None:
        self.store.set_attr(self._group(ticket).trial_id, f"attempt_{attempt}_failure",
                            {"reason": reason, "log_tail": tail, "seed": ticket.handle[1]})

    def fail(self, ticket: Ticket, reason: str, tail: list[str]) -> None:
        group = self._group(ticket)
        self.progress[ticket.job.id].state = FAILED
        self.progress[ticket.job.id].note = reason
        if group.ended is None:
            group.ended = f"failed: {reason}"
            self.store.fail(group.trial_id, reason, tail)
            self._record_seeds(group, FAILED)
        self._close_if_idle(group)

    def stopped(self, ticket: Ticket, reason: str) -> None:
        group = self._group(ticket)
        p = self.progress[ticket.job.id]
        p.state, p.note = (PRUNED if reason.startswith(PRUNED) else "stopped"), reason
        self._close_if_idle(group)

    def interrupt(self, ticket: Ticket) -> None:
        """Ctrl-C / SIGTERM: the trial ends `interrupted` and a retry with its parameters is queued."""
        group = self._group(ticket)
        p = self.progress[ticket.job.id]
        p.state, p.note = WAITING, "interrupted, queued (resumes from its last epoch)"
        if group.ended is None:
            group.ended = INTERRUPTED
            if self.store.fail(group.trial_id, f"interrupted at {time.strftime('%F %T')}", status=INTERRUPTED):
                self.study.enqueue_trial(group.trial.params, user_attrs={"retry_of": group.trial.number})

    def _close_if_idle(self, group: TrialGroup) -> None:
        """Forget a trial once none of its jobs is still being handed out or run here."""
        busy = any(self.progress[j.id].state == RUNNING for j in group.jobs.values())
        if not busy:
            self._close(group)

    def _close(self, group: TrialGroup) -> None:
        self.groups.pop(group.trial.number, None)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None, *,
          state: TrialState | None = None) -> None:
    """Tell, unless the trial has been finished by another worker (which judged this one lost)."""
    study.tell(trial, value, state=state, skip_if_finished=True)


def _mean_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of each numeric result key (the per-seed results stay under `seeds`)."""
    mean: dict[str, Any] = {}
    for key in RESULT_KEYS:
        values = [r.get(key) for r in results]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            mean[key] = sum(numbers) / len(numbers)
    mean["seeds"] = len(results)
    return mean
