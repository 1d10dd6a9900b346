"""What one worker knows of its sweep's trials, kept up to date at a bounded cost per turn.

A sweep with up to READ_ALL unfinished jobs has their trials read whole each turn: what the
worker knows is what the storage holds. Past that (a big sweep, many workers: issue 28, where a
thousand workers each reading 5,000 trials each turn swamped the storage), a turn reads every
trial newer than the newest it has seen, and an open sample (sweeper/trial_reads.py): SAMPLE
of the trials WAITING now and SAMPLE of those RUNNING now, the first of each by id from a random
point, as the storage has them. What a worker believes of a job it did not read this turn may be
stale; it acts only on the jobs read this turn (`fresh`), and a claim is atomic in the storage,
so staleness costs a lost race at worst, never a job run twice. Asking the storage what is open,
rather than sampling its own beliefs, keeps a thousand workers' claims on jobs that are waiting,
spread over the queue, without each worker reading every other's every finish: an earlier view
that sampled its beliefs spent the second half of a 5,000-job sweep reading jobs long finished.
A job with no unfinished trial is fresh as it is (nothing of it can change but a new trial, and
every turn reads those). A job read this turn is read whole: its trials believed unfinished
that the sample lacks are read too. When the sample holds fewer than SAMPLE of each state, it is
every open trial: the trials believed open that it lacks have finished, and are read (once, at
the end of a sweep: what ends the worker's loop).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from optuna.trial import FrozenTrial

from sweeper.store import SweepStore
from sweeper.trial_reads import OPEN

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
        self.settled = set(job_ids)  # jobs without an unfinished trial (kept by `merge`: a turn costs no pass over every job)
        self.newest = -1  # the highest and lowest trial ids seen (an open sample starts between)
        self.oldest: int | None = None
        self.fresh: set[str] = set()
        self.changed: set[str] = set()  # jobs whose trials were read since `drain_changed`
        self.races = 0  # claims lost in this take
        self.sampled = False  # the last turn read a sample (a big sweep), not every unfinished trial
        self.rng = rng or random.Random()

    def merge(self, trials: Iterable[FrozenTrial]) -> set[str]:
        """Take in trials just read (a newer copy replaces the one held); returns their jobs."""
        touched = set()
        for trial in trials:
            self.newest = max(self.newest, trial._trial_id)
            self.oldest = trial._trial_id if self.oldest is None else min(self.oldest, trial._trial_id)
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
        for job_id in touched:
            if any(not t.state.is_finished() for t in self.by_job[job_id]):
                self.settled.discard(job_id)
            else:
                self.settled.add(job_id)
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
        believed = [*waiting, *running]
        self.sampled = len(believed) > READ_ALL
        if not self.sampled:
            touched = self.merge(self.store.read(self._open_ids(believed), newer_than=self.newest - ID_SLACK))
            self.fresh = set(believed) | touched
            return touched
        oldest = self.oldest or 0
        start = self.rng.randint(oldest, max(oldest, self.newest))
        read = self.store.read((), newer_than=self.newest - ID_SLACK, open_sample=(start, SAMPLE))
        touched = self.merge(read)
        seen = {t._trial_id for t in read}
        complete = all(sum(t.state == state for t in read) < SAMPLE for state in OPEN)  # every open trial
        # What a job read now still has believed unfinished (its first trial, when a second was sampled):
        # read too, so that a job read this turn is known whole.
        doubt = [i for i in self._open_ids(sorted(touched)) if i not in seen]
        if complete:
            doubt = sorted({*doubt, *(i for i in self._open_ids(believed) if i not in seen)})
        if doubt:
            touched |= self.merge(self.store.read(doubt, newer_than=self.newest - ID_SLACK))
        self.fresh = touched | self.settled
        return touched

    def _open_ids(self, job_ids: list[str]) -> list[int]:
        return [t._trial_id for job_id in job_ids for t in self.by_job.get(job_id, []) if not t.state.is_finished()]

    def lost_race(self) -> int:
        """Another worker claimed a job first; returns the races lost in this take."""
        self.races += 1
        return self.races
