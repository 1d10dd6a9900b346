"""What the scheduler and its sources exchange: a source (a grid's, a study's) hands out
`Ticket`s and is told how each went; `Progress` is what the views show of one job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sweeper.spec import Job
from trainer.config import JobConfig
from trainer.jobdir import WAITING


@dataclass
class Progress:
    """What the live view and the summary show of one job."""

    job: Job
    state: str = WAITING
    epoch: float = 0
    val_acc: float | None = None
    started: float | None = None
    seconds: float | None = None
    note: str = ""


@dataclass
class Ticket:
    """One job handed out by a source: claimed for this worker, to be run once here."""

    job: Job  # its id names the job directory
    config: JobConfig  # what runs: the job's own, or an out-of-memory retry's smaller micro-batch
    handle: Any  # the source's own (a trial id; a trial group and a seed)
    env: dict[str, str] = field(default_factory=dict)  # the job's W&B run: group, name, id

    @property
    def key(self) -> tuple[str, str]:
        """Unique among the tickets a worker holds (a job id alone is not: see Scheduler.running)."""
        return self.job.id, repr(self.handle)


class Source(Protocol):
    """Where the jobs come from, and where what they ended with goes."""

    name: str  # the sweep or study: jobs live in RUNS_DIR/<name>/<job id>
    progress: dict[str, Progress]  # by job id

    def tick(self) -> None:
        """Read the storage (once per loop turn); take over the jobs of workers that are gone."""

    def exhausted(self) -> bool:
        """Nothing is left for this worker to start, now or later (the loop ends when nothing runs)."""

    def waiting(self) -> int:
        """How many jobs may still start here (as many warm processes are worth making)."""

    def take(self) -> Ticket | None:
        """The next job to run here, claimed; None when there is none now."""

    def heartbeat(self, ticket: Ticket) -> None: ...

    def report(self, ticket: Ticket, epochs: list[dict[str, Any]]) -> str | None:
        """The job's finished epochs so far; a reason to stop it now (pruned), or None."""

    def finish(self, ticket: Ticket, result: dict[str, Any]) -> None: ...

    def retrying(self, ticket: Ticket, attempt: int, reason: str, tail: list[str]) -> None: ...

    def fail(self, ticket: Ticket, reason: str, tail: list[str]) -> None: ...

    def stopped(self, ticket: Ticket, reason: str) -> None:
        """The job was stopped for `reason` (from `report`) and has exited."""

    def interrupt(self, ticket: Ticket) -> None:
        """Ctrl-C or SIGTERM: the job stopped at a safe point; put it back in the queue."""
