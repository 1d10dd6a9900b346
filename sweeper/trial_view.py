"""What one worker knows of its sweep's trials, kept up to date at a bounded cost per turn.

A sweep with up to READ_ALL unfinished jobs has their trials read whole each turn: what the worker knows is
what the storage holds. Past that (a big sweep, many workers: issue 28, where a thousand workers
each reading 5,000 trials each turn swamped the storage), a turn reads every trial newer than the
newest it has seen, and a sample of the unfinished ones:
- of the jobs it believes waiting, SAMPLE drawn from the first 2 x (running + SAMPLE) in grid
  order, a window that doubles each time a claim is lost to another worker and halves after a
  claim won at once: claims stay near grid order, and a thousand workers starting together
  spread over the queue instead of all racing for the same few;
- of the jobs it believes running, SAMPLE at random: their owners' heartbeats, so that a gone
  worker's job is found and taken over.
A finished trial never changes (Optuna refuses any write to one), so it is read once. What the
worker believes of a job it did not read this turn may be stale: it acts only on the jobs read
this turn (`fresh`), and a claim is atomic in the storage, so staleness costs a lost race at
worst, never a job run twice. A job with no unfinished trial is fresh as it is (nothing of it
can change but a new trial, and every turn reads those).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from optuna.trial import FrozenTrial

from sweeper.store import SweepStore

READ_ALL = 256
SAMPLE = 16
# Trials that others create while we read may commit out of id order: each turn reads back this
# many ids below the newest seen, so that one committed late is not missed for good.
ID_SLACK = 16


class TrialView:
    def __init__(self, store: SweepStore, job_ids: list[str], *, rng: random.Random | None = None) -> None:
        self.store = store
        self.jobs = set(job_ids)
        self.by_job: dict[str, list[FrozenTrial]] = {}
        self.newest = -1
        self.fresh: set[str] = set()
        self.changed: set[str] = set()  # jobs whose trials were read since `drain_changed`
        self.spread = 1  # the waiting sample's window, in units of its narrowest: see `lost_race`
        self.races = 0  # claims lost in this take
        self.rng = rng or random.Random()

    def merge(self, trials: Iterable[FrozenTrial]) -> set[str]:
        """Take in trials just read (a newer copy replaces the one held); returns their jobs."""
        touched = set()
        for trial in trials:
            self.newest = max(self.newest, trial._trial_id)
            job_id = trial.user_attrs.get("job_id")
            if job_id not in self.jobs:  # not this grid's (its file changed since)
                continue
            held = self.by_job.setdefault(job_id, [])
            at = next((i for i, t in enumerate(held) if t.number == trial.number), None)
            if at is None:
                held.append(trial)
                held.sort(key=lambda t: t.number)
            else:
                held[at] = trial
            touched.add(job_id)
        self.changed |= touched
        return touched

    def drain_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    def load(self, by_job: dict[str, list[FrozenTrial]]) -> set[str]:
        """Take in a whole reading (SweepStore.sync's); every job in it is fresh."""
        touched = self.merge(t for trials in by_job.values() for t in trials)
        self.fresh |= touched
        return touched

    def read_new(self) -> set[str]:
        """Read the trials created since the newest seen; returns their jobs."""
        touched = self.merge(self.store.read((), newer_than=self.newest - ID_SLACK))
        self.fresh |= touched
        return touched

    def refresh(self, waiting: list[str], running: list[str]) -> set[str]:
        """This turn's reading: `waiting` and `running` are the jobs believed so (in grid order,
        none finished, none this worker's); returns the jobs whose trials were read."""
        if len(waiting) + len(running) <= READ_ALL:
            picked = [*waiting, *running]
        else:
            window = waiting[:self.spread * 2 * (len(running) + SAMPLE)]
            picked = [*self.rng.sample(window, min(SAMPLE, len(window))),
                      *self.rng.sample(running, min(SAMPLE, len(running)))]
        ids = [t._trial_id for job_id in picked for t in self.by_job.get(job_id, []) if not t.state.is_finished()]
        read = self.store.read(ids, newer_than=self.newest - ID_SLACK)
        touched = self.merge(read)
        self.fresh = set(picked) | touched
        return touched

    def lost_race(self) -> int:
        """Another worker claimed a job first: the waiting sample's window doubles (a crowd of
        workers spreads over the queue); returns the races lost in this take."""
        self.spread = min(self.spread * 2, 1 << 16)
        self.races += 1
        return self.races

    def won(self) -> None:
        """A claim won at the first try narrows the window again (back towards grid order)."""
        if not self.races:
            self.spread = max(1, self.spread // 2)
