"""What the sweep commands (`sweep grid`, `optuna`, `compare`) take from the command line, as the
layer below the CLI takes it, and the screen they print on (the CLI's terminal; anything that
prints, in a test)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Workers:
    """Where and how a sweep's jobs run."""

    runs_dir: Path = Path("runs")
    storage: str | None = None  # None: RUNS_DIR/sweeps.journal
    gpus: str | None = None  # None: every visible device; "none": the CPU
    jobs_per_gpu: int = 1
    parallel: int | None = None  # CPU lanes; None: 2 on 2 or more cores
    retries: int = 1
    cache_dir: Path | None = None
    warm_start: bool = True


SLURM_OPTIONS = ("--slurm-partition", "--slurm-gpus-per-task", "--slurm-time", "--slurm-workers", "--slurm-extra",
                 "--slurm-proxy")


@dataclass(frozen=True)
class SlurmRequest:
    """--slurm and the --slurm-… options (None: the file's `slurm:` block decides, else the default)."""

    submit: bool = False
    partition: str | None = None
    gpus_per_task: int | None = None
    time: str | None = None
    workers: int | None = None
    extra: list[str] | None = None
    proxy: bool | None = None


class Screen(Protocol):
    """Where a sweep command prints: stdout for what it answers, stderr for what it says on the way."""

    def echo(self, text: str) -> None:
        """A line (or lines) of the answer, on stdout."""

    def show(self, renderable: Any) -> None:
        """A table, on stdout."""

    def note(self, text: str) -> None:
        """A line on stderr, as written."""

    def say(self, label: str, style: str, message: object) -> None:
        """A coloured label, then the message as written, on stderr."""

    def warn(self, message: object) -> None: ...

    def start_logging(self) -> None:
        """The orchestrator's log records from now on go to the screen."""

    def watch(self, run: Callable[..., Any], table: Callable[[], Any], *, interrupted: str) -> None:
        """Run a scheduler loop (`run(on_tick=…)`), showing `table()` while it runs; on Ctrl-C or
        SIGTERM say `interrupted` and exit 130 or 143."""

    def show_study(self, name: str, store: Any, metric: str) -> None:
        """A finished study's summary: its best trials and their results."""
