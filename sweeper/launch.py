"""What `sweep grid` and `sweep optuna` do once their file is read: check the SLURM options and
every model and data set (the pre-flight), then submit the sweep to SLURM, print its plan
(--dry-run), or run it here with the one scheduler. `sweep compare` uses the same steps
(reports/comparison.py). Bad input raises ConfigError before any work; what the commands print
goes to the `Screen` the CLI gives them."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from sweeper import experiment, slurm, view
from sweeper.devices import Slot, choose_slots
from sweeper.experiment_run import execute, mean_runtime
from sweeper.grid_source import GridSource
from sweeper.options import SLURM_OPTIONS, Screen, SlurmRequest, Workers
from sweeper.samplers import open_study
from sweeper.scheduler import Scheduler
from sweeper.search import Space
from sweeper.slurm_options import file_options
from sweeper.spec import Grid
from sweeper.storage import default_storage, missing_storage, open_storage
from sweeper.store import SweepStore
from sweeper.study import StudySource
from sweeper.sweepfile import Loaded, describe
from trainer.config import ConfigError, JobConfig
from trainer.jobdir import FAILED, JOB_LOG_FILE, RESULT_FILE, read_result
from trainer.preflight import check, space_configs


def grid(loaded: Loaded, *, overrides: list[str], max_jobs: int, workers: Workers, request: SlurmRequest,
         dry_run: bool, screen: Screen) -> int:
    """`sweep grid`: every point of the grid as its own job. Returns the exit code (1: a job failed)."""
    path = loaded.path
    if isinstance(loaded.sweep, Space):
        raise ConfigError(f"{path}: a search space (sampled, not a grid): run it with sweep optuna --space {path}")
    for warning in loaded.warnings:
        screen.warn(warning)
    check_slurm(request, path)  # the file's own keys first, then what it names
    preflight([j.config for j in loaded.sweep.jobs], strict=not dry_run, source=str(path), screen=screen)
    if request.submit and not dry_run:
        args = ["grid", str(path.absolute()), "--max-jobs", str(max_jobs), *(f"--set={o}" for o in overrides)]
        return submit(loaded.sweep.name, path, args, workers=workers, request=request, screen=screen)
    return run_grid(loaded, workers=workers, dry_run=dry_run, screen=screen)


def optuna_study(loaded: Loaded, *, overrides: list[str], trials: int | None, study: str | None,
                 sampler_seed: int | None, workers: Workers, request: SlurmRequest, dry_run: bool,
                 screen: Screen) -> int:
    """`sweep optuna`: an Optuna study of the space (a grid file runs as the grid it is). Returns the exit code."""
    path = loaded.path
    if isinstance(loaded.sweep, Grid):
        _grid_as_space(loaded, trials=trials, study=study, sampler_seed=sampler_seed, screen=screen)
    for warning in loaded.warnings:
        screen.warn(warning)
    check_slurm(request, path)  # the file's own keys first, then what it names
    if not isinstance(loaded.sweep, Grid) and not dry_run and (trials or loaded.sweep.run_cap) is None:
        raise ConfigError(f"--trials: needed ({path} has no run_cap); e.g. --trials 20")
    configs = [j.config for j in loaded.sweep.jobs] if isinstance(loaded.sweep, Grid) else space_configs(loaded.sweep)
    preflight(configs, strict=not dry_run, source=str(path), screen=screen)
    if isinstance(loaded.sweep, Grid):
        if request.submit and not dry_run:
            args = ["grid", str(path.absolute()), *(f"--set={o}" for o in overrides)]
            return submit(loaded.sweep.name, path, args, workers=workers, request=request, screen=screen)
        return run_grid(loaded, workers=workers, dry_run=dry_run, screen=screen)
    space = loaded.sweep
    if sampler_seed is not None:
        name, kwargs = space.sampler
        space = dataclasses.replace(space, sampler=(name, {**kwargs, "seed": sampler_seed}))
        loaded = dataclasses.replace(loaded, sweep=space)
    if dry_run:
        screen.echo("\n".join(describe(loaded, trials=trials)))
        screen.show(view.slots_table(slots(workers, screen)))
        return 0
    trials = trials or space.run_cap
    assert trials is not None  # checked above
    name = study or space.name
    if request.submit:
        args = ["optuna", "--trials", str(trials), "--space", str(path.absolute()), "--study", name,
                *(["--sampler-seed", str(sampler_seed)] if sampler_seed is not None else []),
                *(f"--set={o}" for o in overrides)]
        return submit(name, path, args, workers=workers, request=request, screen=screen)
    return run_study(space, name, trials=trials, workers=workers, screen=screen)


def plan_comparison(loaded: Loaded, *, options: experiment.Options, overrides: list[str], json_out: bool,
                    workers: Workers, request: SlurmRequest, dry_run: bool,
                    screen: Screen) -> tuple[experiment.Plan, list[Slot]] | None:
    """`sweep compare` up to its run: the plan, its models and data sets checked, then submitted to
    SLURM or printed (--dry-run, with an estimate from the storage's runtimes): None; else the plan,
    printed, and the slots to run it on here."""
    path = loaded.path
    plan = experiment.plan(loaded, options)
    jobs = [j.config for lab in plan.labels for j in plan.tuning.get(lab, [])] or [
        space.config({}) for _, space in plan.studies.values()]
    preflight(jobs, strict=not dry_run, source=str(path), screen=screen)
    check_slurm(request, path)
    if request.submit and not dry_run:
        # every worker runs this same comparison: each phase's jobs are claimed once across the
        # workers, and a worker starts the next phase only when every job of this one finished
        seeds = "auto" if options.seeds is None else str(options.seeds)
        args = ["compare", str(path.absolute()), "--axis", options.axis, "--budget", str(options.budget), "--seeds", seeds,
                "--max-seeds", str(options.max_seeds),
                *(["--values", ",".join(str(v) for v in options.values)] if options.values else []),
                *(["--target-diff", str(options.target_diff)] if options.target_diff is not None else []),
                *(["--json"] if json_out else []), *(f"--set={o}" for o in overrides)]
        submit(plan.name, path, args, workers=workers, request=request, screen=screen)
        return None
    where = slots(workers, screen)
    if dry_run:
        url = workers.storage or default_storage(workers.runs_dir)
        backend = None if missing_storage(url) else open_storage(url, readonly=True)
        screen.echo("\n".join(experiment.describe(plan, estimate_s=mean_runtime(backend), slots=len(where))))
        return None
    screen.echo("\n".join(experiment.describe(plan, slots=len(where))))
    quiet_optuna()
    return plan, where


def run_comparison(plan: experiment.Plan, where: list[Slot], *, backend: Any, workers: Workers, screen: Screen,
                   more_seeds: Callable[[experiment.Outcome], int]) -> experiment.Outcome:
    """The comparison's phases run here (sweeper.experiment_run.execute), each under the screen's
    view; `more_seeds(outcome)` is how many seeds a side the pilot's verdicts ask for."""
    def run_source(source: Any) -> None:
        scheduler = Scheduler(source, runs_dir=workers.runs_dir, slots=where, retries=workers.retries,
                              cache_dir=workers.cache_dir, warm=workers.warm_start)

        def table() -> Any:
            return view.progress_table(source.name, [plan.axis], list(source.progress.values()), slots=len(where))

        if hasattr(source, "tick"):
            source.tick()
        screen.watch(scheduler.run, table, interrupted="jobs stopped; run the same command to continue the comparison")

    return execute(plan, backend=backend, runs_dir=workers.runs_dir, run_source=run_source, retries=workers.retries,
                   more_seeds=more_seeds, say=lambda line: screen.note(line) if line else None)


def _grid_as_space(loaded: Loaded, *, trials: int | None, study: str | None, sampler_seed: int | None,
                   screen: Screen) -> None:
    """A grid given to `sweep optuna --space` runs as the grid it is, and says so; the study's options are refused."""
    path, grid_ = loaded.path, loaded.sweep
    assert isinstance(grid_, Grid)
    given = [o for o, v in (("--trials", trials), ("--study", study), ("--sampler-seed", sampler_seed)) if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: {path} is a grid (every point runs once, no sampler), not a search "
                          f"space; run it with sweep grid {path} (or without {', '.join(given)}), or give a search "
                          "space with params")
    screen.warn(f"{path} is a grid, not a search space: each of its {len(grid_.jobs)} jobs runs once, as "
                f"sweep grid {path} would")


def check_slurm(request: SlurmRequest, sweep_file: Path) -> None:
    """The file's `slurm:` block is checked on every run (a local one too); --slurm-… need --slurm."""
    file_options(sweep_file)
    values = (request.partition, request.gpus_per_task, request.time, request.workers, request.extra, request.proxy)
    given = [name for name, value in zip(SLURM_OPTIONS, values, strict=True) if value]
    if given and not request.submit:
        raise ConfigError(f"{', '.join(given)}: only with --slurm (without it the sweep runs here)")


def preflight(configs: list[JobConfig], *, strict: bool, source: str, screen: Screen) -> None:
    """Every distinct model and data set checked before any work (trainer.preflight)."""
    for warning in check(configs, strict=strict, source=source):
        screen.warn(warning)


def submit(name: str, sweep_file: Path, args: list[str], *, workers: Workers, request: SlurmRequest,
           screen: Screen) -> int:
    """The sweep's workers submitted to SLURM (sweeper.slurm.launch); prints how to follow them."""
    for line in slurm.launch(name, sweep_file, args, workers=workers, request=request):
        screen.echo(line)
    return 0


def slots(workers: Workers, screen: Screen) -> list[Slot]:
    """Where the jobs run; from here on the orchestrator's log records go to the screen."""
    screen.start_logging()
    return choose_slots(workers.gpus, workers.jobs_per_gpu, workers.parallel)


def storage(workers: Workers, *, readonly: bool = False) -> Any:
    """The sweep storage of --storage (default: RUNS_DIR/sweeps.journal), opened."""
    return open_storage(workers.storage or default_storage(workers.runs_dir), readonly=readonly)


def quiet_optuna() -> None:
    """Optuna's ExperimentalWarning lines (journal storage, heartbeats...) are for Optuna's users, not sweep's."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def wandb_env(project: str | None, entity: str | None) -> dict[str, str]:
    """The W&B project and entity a sweep file names, for its jobs' runs (the environment wins)."""
    return {key: str(value) for key, value in (("WANDB_PROJECT", project), ("WANDB_ENTITY", entity))
            if value and not os.environ.get(key)}


def run_grid(loaded: Loaded, *, workers: Workers, dry_run: bool, screen: Screen) -> int:
    """A grid run here (or its plan printed): `sweep grid`, and `sweep optuna --space` given a grid."""
    spec, runs_dir = loaded.sweep, workers.runs_dir
    assert isinstance(spec, Grid)
    if dry_run:
        if loaded.wandb is not None:
            screen.echo("\n".join(describe(loaded)))
        screen.show(view.jobs_table(spec))
        screen.show(view.slots_table(slots(workers, screen)))
        return 0
    quiet_optuna()
    where = slots(workers, screen)
    store = SweepStore(storage(workers), spec.name, lock_dir=runs_dir)
    source = GridSource(spec, store, runs_dir=runs_dir,
                        wandb_env=wandb_env(getattr(loaded.wandb, "project", None), getattr(loaded.wandb, "entity", None)))
    scheduler = Scheduler(source, runs_dir=runs_dir, slots=where, retries=workers.retries, cache_dir=workers.cache_dir,
                          warm=workers.warm_start)

    def table() -> Any:
        return view.progress_table(spec.name, spec.varied, list(source.progress.values()), slots=len(where))

    screen.note(f"{spec.name}: {len(spec.jobs)} jobs on {len(where)} slot(s) ({', '.join(s.name for s in where)}); "
                f"runs in {runs_dir / spec.name}")
    screen.watch(scheduler.run, table, interrupted="jobs stopped and queued again; run the same command to continue "
                                                   "the sweep")
    screen.show(table())
    job_warnings([runs_dir / spec.name / job.id for job in spec.jobs], screen)
    failed = [p for p in source.progress.values() if p.state == FAILED]
    for p in failed:
        screen.say(FAILED, "red", f"{p.job.id} {p.job.point}: {p.note} "
                                    f"(log: {runs_dir / spec.name / p.job.id / JOB_LOG_FILE})")
    return 1 if failed else 0


def run_study(space: Space, name: str, *, trials: int, workers: Workers, screen: Screen) -> int:
    """A study run here until it has `trials` finished trials, then its summary."""
    quiet_optuna()
    runs_dir = workers.runs_dir
    where = slots(workers, screen)
    store = open_study(space, storage(workers), name)
    store.study.set_user_attr("description", space.description)
    source = StudySource(space, store, runs_dir=runs_dir, trials=trials, retries=workers.retries,
                         wandb_env=wandb_env(space.wandb_project, space.wandb_entity))
    scheduler = Scheduler(source, runs_dir=runs_dir, slots=where, retries=workers.retries, cache_dir=workers.cache_dir,
                          warm=workers.warm_start)
    keys = [p.name for p in space.params]

    def table() -> Any:
        rows = list(source.progress.values())
        return view.progress_table(f"{name} ({source.finished()}/{trials} finished)", keys, rows, slots=len(where))

    source.tick()
    screen.note(f"{name}: {source.finished()} of {trials} trials finished; {len(where)} slot(s); "
                f"runs in {runs_dir / name}")
    screen.watch(scheduler.run, table, interrupted="trials stopped and queued again; run the same command to "
                                                   "continue the study")
    if source.stop_asking:
        screen.note(f"{name}: {source.stop_asking}")
    screen.show_study(name, store, space.metric)
    job_warnings([runs_dir / name / job_id for job_id in source.progress], screen)
    return 0


def job_warnings(job_dirs: list[Path], screen: Screen) -> None:
    """The sweep's summary of what its jobs warned of at their start (result.json's `warnings`),
    one line per distinct message with the jobs that gave it."""
    by_message: dict[str, list[str]] = {}
    for job_dir in job_dirs:
        for warning in (read_result(job_dir / RESULT_FILE) or {}).get("warnings") or []:
            by_message.setdefault(str(warning.get("message")), []).append(job_dir.name)
    for message, jobs in by_message.items():
        who = f"job {jobs[0]}" if len(jobs) == 1 else f"{len(jobs)} jobs ({', '.join(jobs[:3])}{', …' if len(jobs) > 3 else ''})"
        screen.warn(f"{who}: {message}")
