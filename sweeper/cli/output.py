"""How the commands print: a label in colour and the message as written on stderr, exit 2 for
bad input, and `Terminal`, the screen the sweep commands print on (sweeper.options.Screen)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from trainer.config import ConfigError
from trainer.io import DestinationError, check_dir_option
from trainer.jobdir import EXIT_TERMINATED
from trainer.signals import exit_code

err = Console(stderr=True)


def say(label: str, style: str, message: object) -> None:
    """A label in colour, then the message as written: users' text is never read as rich markup
    (`[/x]` in a value) or emoji codes."""
    err.print(Text.assemble((label, style), " ", str(message)), highlight=False, soft_wrap=True)


def warn(message: object) -> None:
    say("warning:", "yellow", message)


def fail(exc: Exception) -> typer.Exit:
    """Bad input: the message on stderr, exit 2."""
    say("error:", "bold red", exc)
    return typer.Exit(code=2)


def refused(exc: Exception) -> typer.Exit:
    """SLURM refused (sbatch, scancel): what it said on stderr, exit 1."""
    say("error:", "bold red", exc)
    return typer.Exit(code=1)


def check_dirs(*options: tuple[str, Path | None], write: bool = True) -> None:
    """--out, --runs-dir, --cache-dir checked before any work (trainer.io.check_dir_option)."""
    for option, path in options:
        if option == "--cache-dir" and path is None and os.environ.get("SWEEP_CACHE_DIR"):
            option, path = "SWEEP_CACHE_DIR", Path(os.environ["SWEEP_CACHE_DIR"])
        if path is None:
            continue
        try:
            check_dir_option(path, option, write=write)
        except DestinationError as exc:
            raise fail(exc) from None


def run_sweep(runs_dir: Path, cache_dir: Path | None, *, dry_run: bool, run: Callable[[], int]) -> None:
    """A sweep command's one call below (`run`), after its directories are checked: bad input
    exits 2, a refused sbatch 1, and the call's own code is the command's."""
    from sweeper.slurm import SlurmError  # imported when a sweep runs: submitit is not for `sweep --help`

    check_dirs(("--runs-dir", runs_dir), ("--cache-dir", cache_dir), write=not dry_run)
    try:
        code = run()
    except ConfigError as exc:
        raise fail(exc) from None
    except SlurmError as exc:  # sbatch refused the workers
        raise refused(exc) from None
    if code:
        raise typer.Exit(code=code)


def rich_handler(*, show_time: bool = False) -> logging.Handler:
    return RichHandler(console=err, show_path=False, show_time=show_time, rich_tracebacks=False)


class Terminal:
    """The screen of `sweep grid`, `optuna` and `compare`: answers on stdout, the rest on stderr,
    a live table while the scheduler runs (with `live`, on a terminal)."""

    def __init__(self, *, live: bool) -> None:
        self.live = live
        self.out = Console()

    def echo(self, text: str) -> None:
        typer.echo(text)

    def show(self, renderable: Any) -> None:
        self.out.print(renderable)

    def note(self, text: str) -> None:
        err.print(text, highlight=False, markup=False)

    def say(self, label: str, style: str, message: object) -> None:
        say(label, style, message)

    def warn(self, message: object) -> None:
        warn(message)

    def start_logging(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[rich_handler()])

    def watch(self, run: Callable[..., Any], table: Callable[[], Any], *, interrupted: str) -> None:
        """Run a scheduler loop under a live table (on a terminal); Ctrl-C exits 130, SIGTERM 143."""
        try:
            if self.live and err.is_terminal:
                with Live(table(), console=err, refresh_per_second=2) as screen:
                    run(on_tick=lambda _: screen.update(table()))
            else:
                run()
        except KeyboardInterrupt as exc:
            code = exit_code(exc)
            err.print(f"{'terminated (SIGTERM)' if code == EXIT_TERMINATED else 'interrupted (Ctrl-C)'}: {interrupted}")
            raise typer.Exit(code=code) from None

    def show_study(self, name: str, store: Any, metric: str) -> None:
        # imported here, when a study has run: `sweep --help` and the other commands start without them
        from reports.collect import study_summary
        from sweeper.view import study_summary_table

        self.out.print(study_summary_table(name, study_summary(store), store.study, metric=metric))
