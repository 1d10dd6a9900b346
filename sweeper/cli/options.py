"""The options several commands share, defined once: where sweeps live, where their jobs run
(`sweep grid`, `optuna`, `compare`) and how to submit them to SLURM.

A sweep command declares `workers: Workers` and `slurm: SlurmRequest` and is decorated with
`@sweep_options`: Typer sees the options of `workers_options` and `slurm_options` in their place,
and the command gets the two objects built from them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sweeper.options import SlurmRequest, Workers

RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar="SWEEP_RUNS_DIR", help="Where job directories live.")]
Storage = Annotated[
    str | None,
    typer.Option("--storage", envvar="SWEEP_STORAGE",
                 help="Where the sweep's jobs and results are kept: a journal file, a database (postgresql://…, "
                      "sqlite:///…), or grpc://HOST:PORT, a `sweep storage serve` proxy for many workers "
                      "(default: RUNS_DIR/sweeps.journal)."),
]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override a base key, e.g. --set model=/models/x.")]
LiveView = Annotated[bool, typer.Option(help="Live table while it runs (on a terminal).")]


def workers_options(
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    gpus: Annotated[str | None, typer.Option(
        help="Devices among the visible ones: positions (0,1: the first two, as torch numbers them) or names "
             "(GPU-…/MIG-… UUIDs), or none: the CPU (default: every visible device).")] = None,
    jobs_per_gpu: Annotated[int, typer.Option(min=1, help="Jobs sharing one GPU.")] = 1,
    parallel: Annotated[int | None, typer.Option(
        min=1, help="Jobs at once on the CPU (no GPU), sharing its cores (default: 2 on 2 or more cores, else 1).")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a failed job.")] = 1,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Tokenization cache shared by the jobs (default: env SWEEP_CACHE_DIR, else ~/.cache/sweep/tokenized).")] = None,
    warm_start: Annotated[bool, typer.Option(
        help="Start each slot's next job process while its current job runs, so that the next job starts "
             "without waiting for its imports.")] = True,
) -> Workers:
    return Workers(runs_dir=runs_dir, storage=storage, gpus=gpus, jobs_per_gpu=jobs_per_gpu, parallel=parallel,
                   retries=retries, cache_dir=cache_dir, warm_start=warm_start)


# These options, or a `slurm:` block in the grid/space file (the options win).
def slurm_options(
    slurm: Annotated[bool, typer.Option("--slurm", help="Submit the sweep's orchestrators to SLURM as one job array "
                                                         "and return; each worker runs this same command.")] = False,
    slurm_partition: Annotated[str | None, typer.Option("--slurm-partition", help="SLURM partition.")] = None,
    slurm_gpus_per_task: Annotated[int | None, typer.Option(
        "--slurm-gpus-per-task", min=0, help="GPUs per worker (default: 0, the CPU).")] = None,
    slurm_time: Annotated[str | None, typer.Option(
        "--slurm-time", help="Time limit per worker (minutes, HH:MM:SS, D-HH:MM:SS; at least 2) (default: 60); a "
                             "worker requeues itself 90 s before it.")] = None,
    slurm_workers: Annotated[int | None, typer.Option("--slurm-workers", min=1,
                                                      help="Workers in the array (default: 1).")] = None,
    slurm_extra: Annotated[list[str] | None, typer.Option(
        "--slurm-extra", help="Any sbatch option, e.g. --slurm-extra account=lab --slurm-extra mem=16G.")] = None,
    slurm_proxy: Annotated[bool | None, typer.Option(
        "--slurm-proxy/--no-slurm-proxy",
        help="Also submit one job running `sweep storage serve` in front of the --storage database (postgresql://, "
             "mysql://); the workers share it instead of a connection pool each. It stops when they are done.")] = None,
) -> SlurmRequest:
    return SlurmRequest(submit=slurm, partition=slurm_partition, gpus_per_task=slurm_gpus_per_task, time=slurm_time,
                        workers=slurm_workers, extra=slurm_extra, proxy=slurm_proxy)


# What a sweep command's `workers` and `slurm` parameters default to, for mypy and readers: Typer
# never sees these parameters (@sweep_options puts the options in their place).
WORKERS = Workers()
SLURM = SlurmRequest()
GROUPS: dict[str, Callable[..., Any]] = {"workers": workers_options, "slurm": slurm_options}
Command = TypeVar("Command", bound=Callable[..., Any])


def sweep_options(command: Command) -> Command:
    """`command` with its `workers` and `slurm` parameters replaced, for Typer, by the options of
    `workers_options` and `slurm_options`; called, it gets the Workers and SlurmRequest they make."""
    own = inspect.signature(command, eval_str=True).parameters.values()
    parameters: list[inspect.Parameter] = []
    members: dict[str, list[str]] = {}
    for parameter in own:
        if parameter.name in GROUPS:
            group = list(inspect.signature(GROUPS[parameter.name], eval_str=True).parameters.values())
            members[parameter.name] = [p.name for p in group]
            parameters += group
        else:
            parameters.append(parameter)

    @functools.wraps(command)
    def parsed(**kwargs: Any) -> Any:
        for name, names in members.items():
            kwargs[name] = GROUPS[name](**{n: kwargs.pop(n) for n in names})
        return command(**kwargs)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in parameters]
    parsed.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    parsed.__annotations__ = {p.name: p.annotation for p in parameters}
    return parsed  # type: ignore[return-value]
