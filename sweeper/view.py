"""Rich tables for a sweep: the live view while it runs, `sweep status`, and `--dry-run`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from sweeper.devices import Slot
from sweeper.slurm import worker_rows
from sweeper.source import Progress
from sweeper.spec import Grid, Job
from sweeper.storage import default_storage, missing_storage, open_storage, sweep_names
from sweeper.store import SweepStore
from trainer.config import ConfigError, build_job
from trainer.jobdir import COLLAPSED, COMPLETED, DIVERGED, EVENTS_FILE, FAILED, FINISHED, RUNNING, WAITING
from trainer.jobdir import progress as read_progress

COLOURS = {COMPLETED: "green", RUNNING: "cyan", WAITING: "white", FAILED: "red", COLLAPSED: "red",
           DIVERGED: "red"}


def _value(value: Any) -> Text:
    """A user's value as written (a Text: never read as rich markup)."""
    return Text(json.dumps(value) if not isinstance(value, str) else value)


def jobs_table(grid: Grid) -> Table:
    keys = grid.varied or ["seed"]
    table = Table(title=f"{grid.name}: {len(grid.jobs)} jobs", caption=Text(grid.description) if grid.description else None)
    table.add_column("job")
    for key in keys:
        table.add_column(key)
    for job in grid.jobs:
        table.add_row(job.id, *(_value(job.point.get(key, _config_value(job, key))) for key in keys))
    return table


def _config_value(job: Job, key: str) -> Any:
    value: Any = job.config.to_dict()
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def progress_table(title: str, keys: list[str], rows: list[Progress], *, slots: int = 1) -> Table:
    now = time.time()
    counts: dict[str, int] = {}
    for p in rows:
        counts[p.state] = counts.get(p.state, 0) + 1
    done = [p for p in rows if p.state in FINISHED and p.seconds]
    left = len([p for p in rows if p.state in (WAITING, RUNNING)])
    eta = ""
    if done and left:
        mean = sum(p.seconds or 0 for p in done) / len(done)
        eta = f", ETA ~{_duration(mean * left / max(slots, 1))}"
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    table = Table(title=f"{title}: {summary}{eta}")
    for column in ("job", *keys, "state", "epoch", "val_acc", "time", "note"):
        table.add_column(column, justify="right" if column in ("epoch", "val_acc", "time") else "left")
    for p in rows:
        elapsed = p.seconds if p.seconds is not None else (now - p.started if p.started else None)
        colour = COLOURS.get(p.state, "yellow")
        table.add_row(
            p.job.id, *(_value(p.job.point.get(k, _config_value(p.job, k))) for k in keys),
            f"[{colour}]{p.state}[/]", f"{p.epoch:.3g}/{p.job.config.epochs}" if p.epoch else "",
            f"{p.val_acc:.4f}" if p.val_acc is not None else "",
            _duration(elapsed) if elapsed is not None else "", p.note,
        )
    return table


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def status_rows(store: SweepStore, runs_dir: Path) -> tuple[list[str], list[Progress]]:
    """Progress rows of a sweep from its storage alone (plus live epochs from the runs directory)."""
    rows: list[Progress] = []
    points: list[dict[str, Any]] = []
    for job_id, trials in store.trials_by_job().items():
        first = trials[0].user_attrs
        job = Job(config=build_job(first["config"]), point=first.get("point", {}))
        state = store.state(trials)
        p = Progress(job, state=state.status, note=state.note)
        if state.result is not None:
            p.val_acc, p.seconds = state.result.get("val_acc"), state.result.get("runtime_s")
            p.epoch = len(state.result.get("epochs") or [])
        elif state.status == RUNNING:
            p.epoch, p.val_acc = read_progress(runs_dir / store.sweep / job_id / EVENTS_FILE)
            p.note = f"on {state.owner}"
            if state.trial is not None and state.trial.datetime_start is not None:
                p.started = state.trial.datetime_start.timestamp()
        if state.status == FAILED and state.trial is not None:
            p.note = str(state.trial.user_attrs.get("reason", ""))
            p.seconds = _trial_seconds(state.trial)
        rows.append(p)
        points.append(p.job.point)
    keys = [k for k in dict.fromkeys(k for pt in points for k in pt)
            if len({json.dumps(pt.get(k)) for pt in points}) > 1]
    return keys, rows


def _trial_seconds(trial: Any) -> float | None:
    """How long a finished trial ran (its last attempt: claim to end), or None when unknown."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def study_summary_table(name: str, summary: dict[str, Any], study: Any, metric: str = "val_acc") -> Table:
    """Best trial, its parameters and metrics, trials per state, parameter importances."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    table = Table(title=f"{name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())),
                  show_header=False)
    best = summary.get("best")
    if best:
        table.add_row("best trial", f"#{best['number']} (job {best['job_id']})")
        table.add_row(metric, f"{best['value']:.4f}")
        result = study.trials[best["number"]].user_attrs.get("result") or {}
        for key in ("test_acc", "test_loss", "test_ece", "best_epoch"):
            if result.get(key) is not None:
                table.add_row(key, f"{result[key]:.4f}" if isinstance(result[key], float) else str(result[key]))
        for key, value in best["params"].items():
            table.add_row(f"  {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
    if summary.get("importances"):
        table.add_row("importances", ", ".join(f"{k} {v:.3f}" for k, v in summary["importances"].items()))
    return table


def workers_table(name: str, rows: list[Any]) -> Table:
    """A sweep's SLURM workers (sweeper.slurm.WorkerRow): job id, state and where it came from."""
    table = Table(title=f"{name}: SLURM workers")
    for column in ("SLURM job", "state", "from", "node / reason", "starts", "exit"):
        table.add_column(column)
    for w in rows:
        table.add_row(w.task, w.state, w.source, w.where, str(w.starts or ""), "" if w.exit_code is None else str(w.exit_code))
    return table


def slots_table(slots: list[Slot]) -> Table:
    """Where the jobs will run: each slot's device as its jobs' CUDA_VISIBLE_DEVICES names it, and their threads."""
    table = Table(title=f"{len(slots)} slot(s)")
    for column in ("slot", "CUDA_VISIBLE_DEVICES", "threads"):
        table.add_column(column, overflow="fold")
    for slot in slots:
        table.add_row(slot.name, slot.env["CUDA_VISIBLE_DEVICES"] or "(none: the CPU)", slot.env["OMP_NUM_THREADS"])
    return table


def status_tables(sweep: str | None, *, runs_dir: Path, storage: str | None) -> list[Table]:
    """`sweep status`: each sweep's (or one sweep's) jobs and states from the storage, read-only,
    and its SLURM workers. Raises ConfigError when there is no storage or no such sweep."""
    url = storage or default_storage(runs_dir)
    submitted = worker_rows(runs_dir / sweep) if sweep else []
    if (why := missing_storage(url)) and not submitted:
        raise ConfigError(why)
    backend = None if why else open_storage(url, readonly=True)
    names = sweep_names(backend) if backend is not None else []
    if sweep is not None and sweep not in names:
        if submitted:  # submitted to SLURM; no worker has started it yet
            return [workers_table(sweep, submitted)]
        raise ConfigError(f"no sweep named {sweep!r} in {url}; sweeps: {', '.join(names) or 'none'}")
    assert backend is not None
    tables = []
    for name in [sweep] if sweep else names:
        keys, rows = status_rows(SweepStore(backend, name, create=False), runs_dir)
        tables.append(progress_table(name, keys, rows))
        if workers := worker_rows(runs_dir / name):
            tables.append(workers_table(name, workers))
    return tables
