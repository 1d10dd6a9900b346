"""The `sweep` command line: each command parses its options and calls into the packages."""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from trainer.config import ConfigError
from trainer.jobfile import load_job

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hyperparameter sweeps for encoder classifiers.")
err = Console(stderr=True)

@app.callback()
def main() -> None:
    """Hyperparameter sweeps for fine-tuning transformer encoders on text classification."""


def _preflight(jobs: list[Any], *, strict: bool, source: str) -> None:
    """Every distinct model and data set checked before any work (trainer/preflight.py)."""
    from trainer.preflight import check

    for warning in check(jobs, strict=strict, source=source):
        _warn(warning)


def _say(label: str, style: str, message: object) -> None:
    """A label in colour, then the message as written: users' text is never read as rich markup
    (`[/x]` in a value) or emoji codes."""
    err.print(Text.assemble((label, style), " ", str(message)), highlight=False, soft_wrap=True)


def _warn(message: object) -> None:
    _say("warning:", "yellow", message)


def _fail(exc: Exception) -> typer.Exit:
    """Bad input: the message on stderr, exit 2."""
    _say("error:", "bold red", exc)
    return typer.Exit(code=2)


def _check_dirs(*options: tuple[str, Path | None], write: bool = True) -> None:
    """--out, --runs-dir, --cache-dir checked before any work (trainer.io.check_dir_option)."""
    import os

    from trainer.io import DestinationError, check_dir_option

    for option, path in options:
        if option == "--cache-dir" and path is None and os.environ.get("SWEEP_CACHE_DIR"):
            option, path = "SWEEP_CACHE_DIR", Path(os.environ["SWEEP_CACHE_DIR"])
        if path is None:
            continue
        try:
            check_dir_option(path, option, write=write)
        except DestinationError as exc:
            raise _fail(exc) from None


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="Job configuration file (YAML or JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: checkpoints, events, result.json.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key, e.g. --set lr=3e-5 --set data.limit=2000.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Tokenization cache shared by jobs (env SWEEP_CACHE_DIR; default ~/.cache/sweep/tokenized)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per epoch (on a terminal).")] = True,
) -> None:
    """Run one job in the foreground; started again on the same --out, it resumes or reports."""
    _check_dirs(("--out", out), ("--cache-dir", cache_dir))
    try:
        cfg = load_job(job, set_ or [])
        _preflight([cfg], strict=True, source=str(job))
    except ConfigError as exc:
        raise _fail(exc) from None
    from trainer.job import execute, setup_logging
    from trainer.jobdir import EXIT_BUSY, EXIT_OK, LOG_FILE

    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / LOG_FILE, _rich_handler(show_time=True))
    try:
        code, result = execute(cfg, out, cache_dir=cache_dir, progress=progress and err.is_terminal)
    except ConfigError as exc:
        raise _fail(exc) from None
    if code == EXIT_BUSY:
        _say("busy:", "yellow", f"{out}: another process is running this job; not starting it twice")
    elif code in (130, 143):
        err.print("stopped: run the same command again to resume from the last finished epoch")
    if result is not None and code in (EXIT_OK, 1) and "best_epoch" in result:
        _print_result(result)
    if code != EXIT_OK:
        raise typer.Exit(code=code)


RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar="SWEEP_RUNS_DIR", help="Where job directories live.")]
Storage = Annotated[
    str | None,
    typer.Option("--storage", envvar="SWEEP_STORAGE",
                 help="Optuna storage URL (postgresql://…, sqlite:///…) or journal file (default: RUNS_DIR/sweeps.journal)."),
]


Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override a base key, e.g. --set model=/models/x.")]
Gpus = Annotated[str | None, typer.Option(help="Devices among the visible ones: positions (0,1: the first two, as torch "
                                               "numbers them) or names (GPU-…/MIG-… UUIDs) (default: every visible "
                                               "device; none: the CPU).")]
JobsPerGpu = Annotated[int, typer.Option(min=1, help="Jobs sharing one GPU.")]
Parallel = Annotated[
    int | None,
    typer.Option(min=1, help="Jobs at once on the CPU (no GPU), sharing its cores [default: 2 on 2 or more cores, "
                             "1.15x faster than 1 on 2 cores: docs/benchmarks.md]."),
]
Retries = Annotated[int, typer.Option(min=0, help="Retries of a failed job.")]
CacheDir = Annotated[Path | None, typer.Option(help="Tokenization cache (env SWEEP_CACHE_DIR).")]
LiveView = Annotated[bool, typer.Option(help="Live table while it runs (on a terminal).")]
WarmStart = Annotated[
    bool,
    typer.Option(help="Start each slot's next job process while its current job runs, so the imports are done "
                      "when the slot frees (sweeper/process.py; measured in docs/benchmarks.md)."),
]


# SLURM (sweeper/slurm.py): these options, or a `slurm:` block in the grid/space file (the options win).
SlurmOn = Annotated[bool, typer.Option("--slurm", help="Submit the sweep's orchestrators to SLURM as one job array "
                                                        "and return; each worker runs this same command.")]
SlurmPartition = Annotated[str | None, typer.Option("--slurm-partition", help="SLURM partition.")]
SlurmGpus = Annotated[int | None, typer.Option("--slurm-gpus-per-task", min=0, help="GPUs per worker [default: 0, the CPU].")]
SlurmTime = Annotated[str | None, typer.Option("--slurm-time", help="Time limit per worker (minutes, HH:MM:SS, D-HH:MM:SS; "
                                                                    "at least 2) [default: 60]; a worker requeues itself "
                                                                    "90 s before it.")]
SlurmWorkers = Annotated[int | None, typer.Option("--slurm-workers", min=1, help="Workers in the array [default: 1].")]
SlurmExtra = Annotated[list[str] | None, typer.Option("--slurm-extra", help="Any sbatch option, e.g. --slurm-extra account=lab "
                                                                            "--slurm-extra mem=16G.")]


MaxJobs = Annotated[int, typer.Option(min=1, help="Refuse a grid of more jobs than this, before expanding it.")]


@app.command()
def grid(
    grid_file: Annotated[Path, typer.Argument(help="Grid file (grids/NAME.yaml), or a W&B sweep file with method: grid.")],
    set_: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    gpus: Gpus = None,
    jobs_per_gpu: JobsPerGpu = 1,
    parallel: Parallel = None,
    retries: Retries = 1,
    cache_dir: CacheDir = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded jobs; run nothing.")] = False,
    max_jobs: MaxJobs = 10_000,
    live: LiveView = True,
    warm_start: WarmStart = True,
    slurm: SlurmOn = False,
    slurm_partition: SlurmPartition = None,
    slurm_gpus_per_task: SlurmGpus = None,
    slurm_time: SlurmTime = None,
    slurm_workers: SlurmWorkers = None,
    slurm_extra: SlurmExtra = None,
) -> None:
    """Run every point of a grid as its own job; the same command again resumes the sweep."""
    from sweeper.search import Space
    from sweeper.sweepfile import read_sweep

    _check_dirs(("--runs-dir", runs_dir), ("--cache-dir", cache_dir), write=not dry_run)
    try:
        loaded = read_sweep(grid_file, set_ or [], max_jobs=max_jobs)
    except ConfigError as exc:
        raise _fail(exc) from None
    if isinstance(loaded.sweep, Space):
        raise _fail(ValueError(f"{grid_file}: a search space (sampled, not a grid): run it with "
                               f"sweep optuna --space {grid_file}"))
    for warning in loaded.warnings:
        _warn(warning)
    slurm_options = (slurm_partition, slurm_gpus_per_task, slurm_time, slurm_workers, slurm_extra)
    _check_slurm(slurm, grid_file, slurm_options)  # the file's own keys first, then what it names
    try:
        _preflight([j.config for j in loaded.sweep.jobs], strict=not dry_run, source=str(grid_file))
    except ConfigError as exc:
        raise _fail(exc) from None
    if slurm and not dry_run:
        args = ["grid", str(grid_file.absolute()), "--max-jobs", str(max_jobs), *(f"--set={o}" for o in set_ or [])]
        _submit_to_slurm(loaded.sweep.name, grid_file, args, runs_dir=runs_dir, storage=storage, gpus=gpus,
                         jobs_per_gpu=jobs_per_gpu, parallel=parallel, retries=retries, cache_dir=cache_dir,
                         warm_start=warm_start, options=slurm_options)
        return
    _grid(loaded, runs_dir=runs_dir, storage=storage, gpus=gpus, jobs_per_gpu=jobs_per_gpu, parallel=parallel,
          retries=retries, cache_dir=cache_dir, dry_run=dry_run, live=live, warm_start=warm_start)


def _grid(loaded: Any, *, runs_dir: Path, storage: str | None, gpus: str | None, jobs_per_gpu: int,
          parallel: int | None, retries: int, cache_dir: Path | None, dry_run: bool, live: bool,
          warm_start: bool) -> None:
    """`sweep grid`, and `sweep optuna --space` given a grid (a W&B file with method: grid)."""
    from sweeper import view

    spec = loaded.sweep
    if dry_run:
        if loaded.wandb is not None:
            from sweeper.sweepfile import describe

            typer.echo("\n".join(describe(loaded)))
        Console().print(view.jobs_table(spec))
        Console().print(_slots_table(_slots(gpus, jobs_per_gpu, parallel)))
        return
    _quiet_optuna()
    from sweeper.grid_source import GridSource
    from sweeper.scheduler import Scheduler
    from sweeper.store import SweepStore, default_storage, open_storage

    slots = _slots(gpus, jobs_per_gpu, parallel)
    store = SweepStore(open_storage(storage or default_storage(runs_dir)), spec.name, lock_dir=runs_dir)
    wandb = loaded.wandb
    source = GridSource(spec, store, runs_dir=runs_dir,
                        wandb_env=_wandb_env(getattr(wandb, "project", None), getattr(wandb, "entity", None)))
    scheduler = Scheduler(source, runs_dir=runs_dir, slots=slots, retries=retries, cache_dir=cache_dir, warm=warm_start)
    keys = spec.varied

    def table() -> Any:
        return view.progress_table(spec.name, keys, list(source.progress.values()), slots=len(slots))

    err.print(f"{spec.name}: {len(spec.jobs)} jobs on {len(slots)} slot(s) ({', '.join(s.name for s in slots)}); "
              f"runs in {runs_dir / spec.name}", highlight=False, markup=False)
    _run_with_view(scheduler.run, table, live=live,
                   interrupted="jobs stopped and queued again; run the same command to continue the sweep")
    Console().print(table())
    _print_job_warnings([runs_dir / spec.name / job.id for job in spec.jobs])
    failed = [p for p in source.progress.values() if p.state == "failed"]
    for p in failed:
        _say("failed", "red", f"{p.job.id} {p.job.point}: {p.note} (log: {runs_dir / spec.name / p.job.id / 'job.log'})")
    if failed:
        raise typer.Exit(code=1)


def _wandb_env(project: str | None, entity: str | None) -> dict[str, str]:
    """The W&B project and entity a sweep file names, for its jobs' runs (the environment wins)."""
    import os

    return {key: str(value) for key, value in (("WANDB_PROJECT", project), ("WANDB_ENTITY", entity))
            if value and not os.environ.get(key)}


def _quiet_optuna() -> None:
    """Optuna's ExperimentalWarning lines (journal storage, heartbeats...) are for Optuna's users, not sweep's."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@app.command()
def status(
    sweep: Annotated[str | None, typer.Argument(help="Sweep name (default: every sweep in the storage).")] = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Print each sweep's jobs and states (and SLURM workers) from the storage, from any shell, at any time
    (read-only)."""
    from sweeper import view
    from sweeper.slurm import worker_rows
    from sweeper.store import SweepStore, default_storage, missing_storage, open_storage, sweep_names

    url = storage or default_storage(runs_dir)
    submitted = worker_rows(runs_dir / sweep) if sweep else []
    if (why := missing_storage(url)) and not submitted:
        raise _fail(ValueError(why))
    backend = None if why else open_storage(url, readonly=True)
    names = sweep_names(backend) if backend is not None else []
    if sweep is not None and sweep not in names:
        if submitted:  # submitted to SLURM; no worker has started it yet
            Console().print(view.workers_table(sweep, submitted))
            return
        raise _fail(ValueError(f"no sweep named {sweep!r} in {url}; sweeps: {', '.join(names) or 'none'}"))
    assert backend is not None
    for name in [sweep] if sweep else names:
        store = SweepStore(backend, name, create=False)
        keys, rows = view.status_rows(store, runs_dir)
        Console().print(view.progress_table(name, keys, rows))
        if workers := worker_rows(runs_dir / name):
            Console().print(view.workers_table(name, workers))


@app.command()
def optuna(
    trials: Annotated[
        int | None,
        typer.Option(min=1, help="The study's total of finished (complete or pruned) trials [default: the file's "
                                 "run_cap]."),
    ] = None,
    space_file: Annotated[
        Path, typer.Option("--space", help="Search space file, or a W&B sweep file (method: grid runs as sweep grid).")
    ] = Path("grids/optuna.yaml"),
    study: Annotated[str | None, typer.Option(help="Study name (default: the space's name).")] = None,
    set_: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    gpus: Gpus = None,
    jobs_per_gpu: JobsPerGpu = 1,
    parallel: Parallel = None,
    retries: Retries = 1,
    cache_dir: CacheDir = None,
    sampler_seed: Annotated[
        int | None, typer.Option(min=0, max=2**32 - 1,
                                 help="Seed the sampler: a study draws the same values again, with any number of "
                                      "workers (each trial's stream is derived from the seed and its number).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the space as it will run (sampler, pruner, metric, names); run "
                                             "nothing.")
    ] = False,
    live: LiveView = True,
    warm_start: WarmStart = True,
    slurm: SlurmOn = False,
    slurm_partition: SlurmPartition = None,
    slurm_gpus_per_task: SlurmGpus = None,
    slurm_time: SlurmTime = None,
    slurm_workers: SlurmWorkers = None,
    slurm_extra: SlurmExtra = None,
) -> None:
    """Search a space with an Optuna study; the same command on other machines shares the study."""
    import dataclasses

    from sweeper.spec import Grid, check_name
    from sweeper.sweepfile import describe, read_sweep

    _check_dirs(("--runs-dir", runs_dir), ("--cache-dir", cache_dir), write=not dry_run)
    try:
        if study is not None:
            check_name(study, "--study")
        loaded = read_sweep(space_file, set_ or [])
    except ConfigError as exc:
        raise _fail(exc) from None
    if isinstance(loaded.sweep, Grid):
        given = [o for o, v in (("--trials", trials), ("--study", study), ("--sampler-seed", sampler_seed)) if v is not None]
        if given:
            raise _fail(ValueError(f"{', '.join(given)}: {space_file} is a grid (every point runs once, no sampler), "
                                   f"not a search space; run it with sweep grid {space_file} (or without "
                                   f"{', '.join(given)}), or give a search space with params"))
        _warn(f"{space_file} is a grid, not a search space: each of its {len(loaded.sweep.jobs)} jobs runs once, as "
              f"sweep grid {space_file} would")
    for warning in loaded.warnings:
        _warn(warning)
    from trainer.preflight import space_configs

    slurm_options = (slurm_partition, slurm_gpus_per_task, slurm_time, slurm_workers, slurm_extra)
    _check_slurm(slurm, space_file, slurm_options)  # the file's own keys first, then what it names
    if not isinstance(loaded.sweep, Grid) and not dry_run and (trials or loaded.sweep.run_cap) is None:
        raise _fail(ValueError(f"--trials: needed ({space_file} has no run_cap); e.g. --trials 20"))
    try:
        configs = [j.config for j in loaded.sweep.jobs] if isinstance(loaded.sweep, Grid) else space_configs(loaded.sweep)
        _preflight(configs, strict=not dry_run, source=str(space_file))
    except ConfigError as exc:
        raise _fail(exc) from None
    submit: dict[str, Any] = {"runs_dir": runs_dir, "storage": storage, "gpus": gpus, "jobs_per_gpu": jobs_per_gpu,
                              "parallel": parallel, "retries": retries, "cache_dir": cache_dir,
                              "warm_start": warm_start, "options": slurm_options}
    if isinstance(loaded.sweep, Grid):
        if slurm and not dry_run:
            args = ["grid", str(space_file.absolute()), *(f"--set={o}" for o in set_ or [])]
            _submit_to_slurm(loaded.sweep.name, space_file, args, **submit)
            return
        _grid(loaded, runs_dir=runs_dir, storage=storage, gpus=gpus, jobs_per_gpu=jobs_per_gpu, parallel=parallel,
              retries=retries, cache_dir=cache_dir, dry_run=dry_run, live=live, warm_start=warm_start)
        return
    space = loaded.sweep
    if sampler_seed is not None:
        name, kwargs = space.sampler
        space = dataclasses.replace(space, sampler=(name, {**kwargs, "seed": sampler_seed}))
        loaded = dataclasses.replace(loaded, sweep=space)
    if dry_run:
        typer.echo("\n".join(describe(loaded, trials=trials)))
        Console().print(_slots_table(_slots(gpus, jobs_per_gpu, parallel)))
        return
    trials = trials or space.run_cap
    if trials is None:
        raise _fail(ValueError(f"--trials: needed ({space_file} has no run_cap); e.g. --trials 20"))
    if slurm:
        name = study or space.name
        args = ["optuna", "--trials", str(trials), "--space", str(space_file.absolute()), "--study", name,
                *(["--sampler-seed", str(sampler_seed)] if sampler_seed is not None else []),
                *(f"--set={o}" for o in set_ or [])]
        _submit_to_slurm(name, space_file, args, **submit)
        return
    _quiet_optuna()
    from reports.collect import study_summary
    from sweeper import view
    from sweeper.scheduler import Scheduler
    from sweeper.store import default_storage, open_storage
    from sweeper.study import StudySource, open_study

    name = study or space.name
    slots = _slots(gpus, jobs_per_gpu, parallel)
    store = open_study(space, open_storage(storage or default_storage(runs_dir)), name)
    store.study.set_user_attr("description", space.description)
    source = StudySource(space, store, runs_dir=runs_dir, trials=trials, retries=retries,
                         wandb_env=_wandb_env(space.wandb_project, space.wandb_entity))
    scheduler = Scheduler(source, runs_dir=runs_dir, slots=slots, retries=retries, cache_dir=cache_dir, warm=warm_start)
    keys = [p.name for p in space.params]

    def table() -> Any:
        rows = list(source.progress.values())
        return view.progress_table(f"{name} ({source.finished()}/{trials} finished)", keys, rows, slots=len(slots))

    source.tick()
    err.print(f"{name}: {source.finished()} of {trials} trials finished; {len(slots)} slot(s); runs in {runs_dir / name}",
              highlight=False, markup=False)
    _run_with_view(scheduler.run, table, live=live,
                   interrupted="trials stopped and queued again; run the same command to continue the study")
    if source.stop_asking:
        err.print(f"{name}: {source.stop_asking}", highlight=False)
    Console().print(view.study_summary_table(name, study_summary(store), store.study, metric=space.metric))
    _print_job_warnings([runs_dir / name / job_id for job_id in source.progress])


def _check_slurm(slurm: bool, sweep_file: Path, options: tuple[Any, ...]) -> None:
    """The file's `slurm:` block is checked on every run (a local one too); --slurm-… need --slurm."""
    from sweeper.slurm import file_options

    try:
        file_options(sweep_file)
    except ConfigError as exc:
        raise _fail(exc) from None
    names = ("--slurm-partition", "--slurm-gpus-per-task", "--slurm-time", "--slurm-workers", "--slurm-extra")
    given = [name for name, value in zip(names, options, strict=True) if value]
    if given and not slurm:
        raise _fail(ValueError(f"{', '.join(given)}: only with --slurm (without it the sweep runs here)"))


def _submit_to_slurm(name: str, sweep_file: Path, args: list[str], *, runs_dir: Path, storage: str | None,
                     gpus: str | None, jobs_per_gpu: int, parallel: int | None, retries: int, cache_dir: Path | None,
                     warm_start: bool, options: tuple[Any, ...]) -> None:
    """Check the options and paths, submit the workers (each runs `sweep ARGS …` with absolute paths), print how to follow."""
    from sweeper import slurm

    partition, gpus_per_task, time_limit, workers, extra = options
    try:
        if gpus is not None:
            raise ConfigError("--gpus: not with --slurm: SLURM chooses each worker's GPUs (--slurm-gpus-per-task)")
        opts = slurm.resolve_options(sweep_file, partition=partition, gpus_per_task=gpus_per_task, time=time_limit,
                                     workers=workers, extra=extra)
        runs, url = slurm.check_reachable(runs_dir, storage)
    except ConfigError as exc:
        raise _fail(exc) from None
    lanes = None if opts.gpus_per_task else (parallel or 1)
    command = [sys.executable, "-m", "sweeper.cli", *args, "--runs-dir", str(runs), "--storage", url,
               "--retries", str(retries), "--jobs-per-gpu", str(jobs_per_gpu), "--no-live",
               "--warm-start" if warm_start else "--no-warm-start"]
    if lanes is not None:
        command += ["--parallel", str(lanes)]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir.absolute())]
    slots = lanes or opts.gpus_per_task * jobs_per_gpu
    env = {"SWEEP_SLURM_SLOTS": str(slots), **({"CUDA_VISIBLE_DEVICES": ""} if lanes is not None else {})}
    try:
        submission = slurm.submit(sweep=name, sweep_dir=runs / name, command=command, options=opts,
                                  cpus_per_task=lanes or slots * slurm.CPUS_PER_GPU_JOB, env=env)
    except slurm.SlurmError as exc:
        _say("error:", "bold red", exc)
        raise typer.Exit(code=1) from None
    where = f"{opts.gpus_per_task} GPU(s)" if opts.gpus_per_task else f"{lanes} CPU lane(s)"
    typer.echo(f"{name}: submitted {opts.workers} worker(s) as SLURM job array {submission.array_id} "
               f"({where} each, time limit {opts.time_min} min{', partition ' + opts.partition if opts.partition else ''})")
    typer.echo(slurm.follow_hint(submission, name, runs))


@app.command()
def compare(
    space_file: Annotated[Path, typer.Argument(help="A grid, search-space or W&B sweep file: the space to tune each "
                                                    "value in.")],
    axis: Annotated[str, typer.Option("--axis", help="The parameter compared, e.g. model or pooling.")],
    budget: Annotated[int, typer.Option("--budget", min=1, help="Configurations of the rest of the space each value "
                                                                "is tuned on (K).")],
    values: Annotated[str | None, typer.Option("--values", help="Compare only these values, comma-separated "
                                                                "[default: every value the file lists].")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds a side for each value's best configuration (N, its "
                                                       "tuning run one of them), or auto: a pilot of 3, then as many "
                                                       "as the verdict needs at 80% power.")] = "3",
    max_seeds: Annotated[int, typer.Option("--max-seeds", min=1, help="At most this many seeds a side with "
                                                                      "--seeds auto.")] = 10,
    target_diff: Annotated[float | None, typer.Option("--target-diff", help="The difference --seeds auto plans for "
                                                                            "[default: the observed one].")] = None,
    set_: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    gpus: Gpus = None,
    jobs_per_gpu: JobsPerGpu = 1,
    parallel: Parallel = None,
    retries: Retries = 1,
    cache_dir: CacheDir = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the three phases' plan; run nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Also write compare.json.")] = False,
    live: LiveView = True,
    warm_start: WarmStart = True,
    slurm: SlurmOn = False,
    slurm_partition: SlurmPartition = None,
    slurm_gpus_per_task: SlurmGpus = None,
    slurm_time: SlurmTime = None,
    slurm_workers: SlurmWorkers = None,
    slurm_extra: SlurmExtra = None,
) -> None:
    """Is A better than B on my task? Tune each value of --axis equally, run each best on seeds, answer."""
    from sweeper import experiment
    from sweeper.sweepfile import read_sweep

    _check_dirs(("--runs-dir", runs_dir), ("--cache-dir", cache_dir), write=not dry_run)
    try:
        if seeds != "auto" and not seeds.isdigit():
            raise ConfigError(f"--seeds: {seeds!r} is not allowed; expected a number of seeds (e.g. 3) or auto")
        loaded = read_sweep(space_file, set_ or [])
        options = experiment.Options(axis=axis, values=values.split(",") if values else None, budget=budget,
                                     seeds=None if seeds == "auto" else int(seeds), max_seeds=max_seeds,
                                     target_diff=target_diff)
        plan = experiment.plan(loaded, options)
        jobs = [j.config for lab in plan.labels for j in plan.tuning.get(lab, [])] or [
            space.config({}) for _, space in plan.studies.values()]
        _preflight(jobs, strict=not dry_run, source=str(space_file))
    except ConfigError as exc:
        raise _fail(exc) from None
    slurm_options = (slurm_partition, slurm_gpus_per_task, slurm_time, slurm_workers, slurm_extra)
    _check_slurm(slurm, space_file, slurm_options)
    if slurm and not dry_run:
        # every worker runs this same comparison: each phase's jobs are claimed once across the
        # workers, and a worker starts the next phase only when every job of this one finished
        args = ["compare", str(space_file.absolute()), "--axis", axis, "--budget", str(budget), "--seeds", seeds,
                "--max-seeds", str(max_seeds), *(["--values", values] if values else []),
                *(["--target-diff", str(target_diff)] if target_diff is not None else []),
                *(["--json"] if json_out else []), *(f"--set={o}" for o in set_ or [])]
        _submit_to_slurm(plan.name, space_file, args, runs_dir=runs_dir, storage=storage, gpus=gpus,
                         jobs_per_gpu=jobs_per_gpu, parallel=parallel, retries=retries, cache_dir=cache_dir,
                         warm_start=warm_start, options=slurm_options)
        return
    from sweeper.store import default_storage, missing_storage, open_storage

    url = storage or default_storage(runs_dir)
    slots = _slots(gpus, jobs_per_gpu, parallel)
    if dry_run:
        backend = None if missing_storage(url) else open_storage(url, readonly=True)
        typer.echo("\n".join(experiment.describe(plan, estimate_s=experiment.mean_runtime(backend), slots=len(slots))))
        return
    typer.echo("\n".join(experiment.describe(plan, slots=len(slots))))
    _quiet_optuna()
    from reports import experiment as answer
    from sweeper import view
    from sweeper.scheduler import Scheduler

    backend = open_storage(url)

    def run_source(source: Any) -> None:
        scheduler = Scheduler(source, runs_dir=runs_dir, slots=slots, retries=retries, cache_dir=cache_dir,
                              warm=warm_start)

        def table() -> Any:
            return view.progress_table(source.name, [plan.axis], list(source.progress.values()), slots=len(slots))

        if hasattr(source, "tick"):
            source.tick()
        _run_with_view(scheduler.run, table, live=live,
                       interrupted="jobs stopped; run the same command to continue the comparison")

    outcome = experiment.execute(plan, backend=backend, runs_dir=runs_dir, run_source=run_source, retries=retries,
                                 more_seeds=lambda o: answer.more_seeds(o, backend),
                                 say=lambda line: err.print(line, highlight=False, markup=False) if line else None)
    result = answer.answer(outcome, backend)
    written = answer.write(result, runs_dir / plan.name, with_json=json_out)
    typer.echo(answer.paragraph(result).replace("**", ""))
    typer.echo("Written: " + ", ".join(str(p) for p in written))


@app.command()
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
        raise _fail(exc) from None
    typer.echo(f"{sweep}: cancelled SLURM job array(s) {', '.join(ids)}; "
               "their jobs resume from the last finished epoch when the sweep is run or submitted again")


class ReportFormat(str, Enum):
    md = "md"
    csv = "csv"
    json = "json"


@app.command()
def report(
    sweeps: Annotated[list[str] | None, typer.Argument(help="Sweep names (default: every sweep in the storage).")] = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline row, e.g. model=bert,pooling=cls (default: the first row).")
    ] = None,
    format_: Annotated[
        ReportFormat, typer.Option("--format", help="Also write and print report.csv or report.json.")
    ] = ReportFormat.md,
    plots: Annotated[bool, typer.Option(help="Write the PNG plots.")] = True,
    effect: Annotated[
        float | None,
        typer.Option(help="A difference in test accuracy worth finding (e.g. 0.01): the seeds needed to see it."),
    ] = None,
) -> None:
    """Result tables, comparisons across seeds and plots: runs/<sweep>/report.md, report.html, runs/REPORT.md."""
    from reports import tables
    from reports.build import generate
    from sweeper.store import default_storage, missing_storage

    url = storage or default_storage(runs_dir)
    if why := missing_storage(url):
        raise _fail(ValueError(why))
    try:
        reports = generate(storage=url, runs_dir=runs_dir, sweeps=sweeps or None, baseline=baseline,
                           fmt=format_.value, plots=plots, effect=effect)
    except ValueError as exc:
        raise _fail(exc) from None
    if format_ == ReportFormat.csv:
        typer.echo(tables.to_csv(reports), nl=False)
    elif format_ == ReportFormat.json:
        typer.echo(tables.to_json(reports), nl=False)
    else:
        from reports.console import summary

        console = Console()
        for r in reports:
            for item in summary(r, runs_dir / r.name):
                console.print(item)
    unwritten = [r for r in reports if r.unwritten]
    for r in unwritten:
        err.print(f"[yellow]warning:[/] the report of {r.name} was printed, not written ({r.unwritten})",
                  highlight=False, soft_wrap=True)
    if not unwritten:
        err.print(f"wrote {runs_dir / 'REPORT.md'} and " + ", ".join(str(runs_dir / r.name / "report.md") for r in reports),
                  highlight=False, soft_wrap=True)


JobRef = Annotated[str, typer.Argument(help="A job directory, a job id (under --runs-dir) or best:<sweep>.")]


def _resolve_job(ref: str, runs_dir: Path, storage: str | None) -> Any:
    from sweeper.jobs import JobRefError, resolve

    try:
        job = resolve(ref, runs_dir=runs_dir, storage=storage)
    except JobRefError as exc:
        raise _fail(exc) from None
    if job.result.get("status") != "completed":
        _warn(f"job {job.dir} finished as {job.result.get('status')}: its predictions are not to be trusted")
    return job


class PredictFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


@app.command()
def predict(
    job: JobRef,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify (or --file).", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Texts in a .txt (one per line), .csv or .jsonl file.")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column (csv) or field (jsonl) holding the text (default: the job's data.text).")
    ] = None,
    pair_column: Annotated[
        str | None,
        typer.Option(help="Column (csv) or field (jsonl) holding a pair's second text (default: the job's "
                          "data.text_pair, for a job trained on pairs)."),
    ] = None,
    pair: Annotated[
        str | None, typer.Option("--pair", help="The second text of a pair, with one text argument.")
    ] = None,
    format_: Annotated[PredictFormat, typer.Option("--format", help="A table, or one JSON object per line.")] = (
        PredictFormat.table),
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 64,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Labels and probabilities from a finished job's best checkpoint (of texts, or of pairs)."""
    import json

    from sweeper.texts import TextsError, excerpt, from_arguments, read_file

    if bool(texts) == (file is not None):
        raise _fail(ValueError("give the texts as arguments or with --file (one of the two)"))
    if pair is not None and (file is not None or len(texts or []) != 1):
        raise _fail(ValueError("--pair: the second text of one pair goes with exactly one text argument "
                               "(for many pairs: --file with two columns)"))
    finished = _resolve_job(job, runs_dir, storage)
    data = finished.config.data
    trained_on = data.text_pair
    try:
        if file:
            inputs, pairs = read_file(file, text_column or data.text, pair_column or trained_on)
        else:
            inputs = from_arguments(texts or [])
            pairs = from_arguments([pair]) if pair is not None else None
    except TextsError as exc:
        raise _fail(exc) from None
    if trained_on and pairs is None:
        raise _fail(ValueError(f"job {finished.id} was trained on sentence pairs (columns {data.text!r} and "
                               f"{trained_on!r}): give the second text with --pair TEXT, or a --file with both columns"))
    if not trained_on and pairs is not None:
        raise _fail(ValueError(f"job {finished.id} was trained on single texts (column {data.text!r}), not pairs: "
                               "leave out --pair / --pair-column"))
    from trainer import inference
    from trainer.model import label_names

    model, tokenizer = inference.load(finished.dir)
    probs = inference.predict(model, tokenizer, inputs, max_len=finished.config.max_len, batch_size=batch_size,
                              pairs=pairs, dtype=inference.evaluation_dtype(finished.dir)).probs
    names = label_names(finished.model_dir)
    seconds: list[str | None] = list(pairs) if pairs else [None] * len(inputs)
    if format_ == PredictFormat.jsonl:
        for text, second, p in zip(inputs, seconds, probs, strict=True):
            record: dict[str, Any] = {"text": text} if second is None else {"text": text, "text_pair": second}
            typer.echo(json.dumps({**record, "label": names[int(p.argmax())],
                                   "probs": {n: float(v) for n, v in zip(names, p, strict=True)}}))
        return
    from rich.table import Table

    table = Table(title=f"job {finished.id} ({finished.config.model_path}, {finished.config.pooling})")
    table.add_column("#", justify="right")
    table.add_column("label")
    for n in names:
        table.add_column(f"p({n})", justify="right")
    table.add_column("text", overflow="fold")
    if pairs:
        table.add_column("text_pair", overflow="fold")
    for i, (text, second, p) in enumerate(zip(inputs, seconds, probs, strict=True), 1):
        cells = [excerpt(text, 120)] + ([excerpt(second, 120)] if second is not None else [])
        table.add_row(str(i), names[int(p.argmax())], *(f"{v:.4f}" for v in p), *cells)
    Console().print(table)


@app.command()
def export(
    job: JobRef,
    out: Annotated[Path, typer.Argument(help="Directory to write (replaced if it holds an earlier export).")],
    force: Annotated[bool, typer.Option("--force", help="Replace DIR even if it holds something else.")] = False,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """The job's best model in Hugging Face format, with its tokenizer and a model card."""
    from trainer.export import export as write_export
    from trainer.io import DestinationError

    finished = _resolve_job(job, runs_dir, storage)
    try:
        check = write_export(finished.dir, finished.config, finished.result, out, force=force)
    except DestinationError as exc:
        raise _fail(ValueError(f"DIR: {exc}")) from None
    err.print(f"exported job {finished.id} to {out}; loaded back with transformers alone, its probabilities "
              f"differ from the job's by at most {check['max_abs_diff']:.1e} on {check['texts']} texts",
              highlight=False, markup=False)


@app.command()
def analyze(
    job: JobRef,
    out: Annotated[Path, typer.Option("--out", help="Directory for analysis.md and its PNGs.")],
    against: Annotated[str | None, typer.Option(help="A second job (same forms as JOB) to compare with.")] = None,
    example: Annotated[
        int | None, typer.Option(help="Test row for the attention maps (default: the most confident error).")
    ] = None,
    limit: Annotated[int, typer.Option(min=4, help="Test rows in the t-SNE map (the first ones).")] = 2000,
    top: Annotated[int, typer.Option(min=1, help="Rows per listing (errors, boundary, disagreements).")] = 10,
    attention_tokens: Annotated[int, typer.Option(min=2, help="Tokens shown in an attention map.")] = 48,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds something else.")] = False,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """t-SNE, confident errors, attention; with --against, where two jobs disagree."""
    from reports.analyze import AnalyzeError, load_side
    from reports.analyze import analyze as run_analysis
    from sweeper.jobs import JobRefError
    from trainer.io import DestinationError

    job_a = _resolve_job(job, runs_dir, storage)
    job_b = _resolve_job(against, runs_dir, storage) if against is not None else None
    try:
        side_a, side_b = load_side(job_a), load_side(job_b) if job_b is not None else None
        summary = run_analysis(side_a, out, against=side_b, example=example, limit=limit, top=top,
                               attention_tokens=attention_tokens, force=force)
    except (JobRefError, AnalyzeError) as exc:
        raise _fail(exc) from None
    except DestinationError as exc:
        raise _fail(ValueError(f"--out: {exc}")) from None
    err.print(f"wrote {out / 'analysis.md'}: {summary['errors']['count']} errors in {summary['test_rows']} test rows"
              + (f"; {summary['against']['disagreements']} disagreements with {job_b.id}" if job_b else ""),
              highlight=False, markup=False)


def _slots(gpus: str | None, jobs_per_gpu: int, parallel: int | None) -> list[Any]:
    """Where jobs run (and the orchestrator's logging, which both sweep commands share)."""
    import os

    from sweeper.scheduler import make_slots, select_gpus, visible_gpus

    if parallel is None:  # measured: two one-thread jobs beat one two-thread job on 2 cores
        parallel = 2 if (os.cpu_count() or 1) >= 2 else 1

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_rich_handler()])
    visible = visible_gpus()
    if gpus is not None and gpus.strip().lower() == "none":
        chosen: list[str] = []
    elif gpus:
        try:
            chosen = select_gpus(gpus, visible)
        except ValueError as exc:
            raise _fail(exc) from None
    else:
        chosen = visible
    return make_slots(gpus=chosen, jobs_per_gpu=jobs_per_gpu, parallel=parallel)


def _slots_table(slots: list[Any]) -> Any:
    """Where the jobs will run: each slot's device as its jobs' CUDA_VISIBLE_DEVICES names it, and their threads."""
    from rich.table import Table

    table = Table(title=f"{len(slots)} slot(s)")
    for column in ("slot", "CUDA_VISIBLE_DEVICES", "threads"):
        table.add_column(column, overflow="fold")
    for slot in slots:
        table.add_row(slot.name, slot.env["CUDA_VISIBLE_DEVICES"] or "(none: the CPU)", slot.env["OMP_NUM_THREADS"])
    return table


def _run_with_view(run: Any, table: Any, *, live: bool, interrupted: str) -> None:
    """Run a scheduler loop under a live table (on a terminal); Ctrl-C exits 130, SIGTERM 143."""
    try:
        if live and err.is_terminal:
            with Live(table(), console=err, refresh_per_second=2) as screen:
                run(on_tick=lambda _: screen.update(table()))
        else:
            run()
    except KeyboardInterrupt as exc:
        from trainer.signals import exit_code

        code = exit_code(exc)
        err.print(f"{'terminated (SIGTERM)' if code == 143 else 'interrupted'}: {interrupted}")
        raise typer.Exit(code=code) from None


def _rich_handler(*, show_time: bool = False) -> logging.Handler:
    from rich.logging import RichHandler

    return RichHandler(console=err, show_path=False, show_time=show_time, rich_tracebacks=False)


def _print_job_warnings(job_dirs: list[Path]) -> None:
    """The sweep's summary of what its jobs warned of at their start (result.json's `warnings`),
    one line per distinct message with the jobs that gave it."""
    from trainer.jobdir import RESULT_FILE, read_result

    by_message: dict[str, list[str]] = {}
    for job_dir in job_dirs:
        for warning in (read_result(job_dir / RESULT_FILE) or {}).get("warnings") or []:
            by_message.setdefault(str(warning.get("message")), []).append(job_dir.name)
    for message, jobs in by_message.items():
        who = f"job {jobs[0]}" if len(jobs) == 1 else f"{len(jobs)} jobs ({', '.join(jobs[:3])}{', …' if len(jobs) > 3 else ''})"
        err.print(f"[yellow]warning:[/] {who}: {message}", highlight=False, soft_wrap=True)


def _print_result(result: dict) -> None:
    from rich.table import Table

    colour = {"completed": "green", "collapsed": "red", "diverged": "red"}.get(result["status"], "yellow")
    table = Table(title=f"job {result['job_id']}: [{colour}]{result['status']}[/]", show_header=False)
    metric = str(result.get("metric") or "val_acc")
    table.add_row("metric", f"{metric} (chose best_epoch)")
    for key in ("best_epoch", *dict.fromkeys((metric, "val_acc")), "test_acc", "test_loss", "test_ece", "runtime_s",
                "train_samples_per_s"):
        value = result.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    if result.get("status") == "collapsed" and (result.get("collapse") or {}).get("reason"):
        table.add_row("collapsed", str(result["collapse"]["reason"]))
    for warning in result.get("warnings") or []:
        table.add_row("warning", str(warning.get("message")))
    Console().print(table)


from sweeper.storage_cli import app as storage_app  # noqa: E402 - `sweep storage serve` (issue 28)

app.add_typer(storage_app, name="storage")

if __name__ == "__main__":
    sys.exit(app())
