"""`sweep grid`, `sweep optuna`, `sweep status`, `sweep cancel`: run a sweep (here or on SLURM),
watch it, stop its SLURM workers.

The layer below is imported inside each command, when it runs: it imports optuna and SQLAlchemy,
which `sweep --help` and the other commands do without."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sweeper.cli.options import SLURM, WORKERS, LiveView, Overrides, RunsDir, Storage, sweep_options
from sweeper.cli.output import Terminal, fail, run_sweep
from sweeper.options import SlurmRequest, Workers
from sweeper.spec import check_name
from sweeper.sweepfile import read_sweep
from trainer.config import ConfigError

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the expanded jobs and where they would run; run "
                                                        "nothing.")]


@sweep_options
def grid(
    grid_file: Annotated[Path, typer.Argument(help="Grid file (grids/NAME.yaml), or a W&B sweep file with method: grid.")],
    set_: Overrides = None,
    dry_run: DryRun = False,
    max_jobs: Annotated[int, typer.Option(min=1, help="Refuse a grid of more jobs than this, before expanding "
                                                      "it.")] = 10_000,
    live: LiveView = True,
    workers: Workers = WORKERS,
    slurm: SlurmRequest = SLURM,
) -> None:
    """Run every point of a grid as its own job; the same command again resumes the sweep."""
    from sweeper import launch

    def run() -> int:
        loaded = read_sweep(grid_file, set_ or [], max_jobs=max_jobs)
        return launch.grid(loaded, overrides=set_ or [], max_jobs=max_jobs, workers=workers, request=slurm,
                           dry_run=dry_run, screen=Terminal(live=live))

    run_sweep(workers.runs_dir, workers.cache_dir, dry_run=dry_run, run=run)


@sweep_options
def optuna(
    trials: Annotated[int | None, typer.Option(
        min=1, help="The study's total of finished (complete or pruned) trials (default: the file's run_cap).")] = None,
    space_file: Annotated[Path, typer.Option(
        "--space", help="Search space file, or a W&B sweep file (method: grid runs as sweep grid).")] = Path(
            "grids/optuna.yaml"),
    study: Annotated[str | None, typer.Option(help="Study name (default: the space's name).")] = None,
    set_: Overrides = None,
    sampler_seed: Annotated[int | None, typer.Option(
        min=0, max=2**32 - 1, help="Seed the sampler: a study draws the same values again, with any number of workers "
                                   "(each trial's stream is derived from the seed and its number).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the space as it will run (sampler, pruner, metric, "
                                                            "names); run nothing.")] = False,
    live: LiveView = True,
    workers: Workers = WORKERS,
    slurm: SlurmRequest = SLURM,
) -> None:
    """Search a space with an Optuna study; the same command on other machines shares the study."""
    from sweeper import launch

    def run() -> int:
        if study is not None:
            check_name(study, "--study")
        loaded = read_sweep(space_file, set_ or [])
        return launch.optuna_study(loaded, overrides=set_ or [], trials=trials, study=study, sampler_seed=sampler_seed,
                                   workers=workers, request=slurm, dry_run=dry_run, screen=Terminal(live=live))

    run_sweep(workers.runs_dir, workers.cache_dir, dry_run=dry_run, run=run)


def status(
    sweep: Annotated[str | None, typer.Argument(help="Sweep name (default: every sweep in the storage).")] = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Print each sweep's jobs and states (and SLURM workers) from the storage, from any shell, at any time
    (read-only)."""
    from sweeper import view

    try:
        tables = view.status_tables(sweep, runs_dir=runs_dir, storage=storage)
    except ConfigError as exc:
        raise fail(exc) from None
    for table in tables:
        Console().print(table)


def cancel(
    sweep: Annotated[str, typer.Argument(help="Sweep (or study) name whose SLURM workers to cancel.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """scancel a sweep's SLURM workers; they stop their jobs like Ctrl-C and are not requeued.
    The same submit command later continues the sweep."""
    from sweeper import slurm

    try:
        ids = slurm.cancel(runs_dir / sweep)
    except slurm.SlurmError as exc:
        raise fail(exc) from None
    typer.echo(f"{sweep}: cancelled SLURM job array(s) {', '.join(ids)}; "
               "their jobs resume from the last finished epoch when the sweep is run or submitted again")
