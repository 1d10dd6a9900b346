"""Which finished job a command means: a job directory, a job id, or `best:<sweep>`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, JobConfig, build_job
from trainer.jobdir import (
    CLASSIFIER_FILE,
    COMPLETED,
    CONFIG_FILE,
    FINISHED,
    METRICS,
    MODEL_DIR,
    PENDING,
    PREDICTIONS_FILE,
    RESULT_FILE,
    WEIGHTS_FILE,
)

JOB_ID = re.compile(r"[0-9a-f]{12}")


class JobRefError(ValueError):
    """The JOB argument names no finished job; the message says why and what is allowed."""


@dataclass(frozen=True)
class FinishedJob:
    dir: Path
    config: JobConfig
    result: dict[str, Any]

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def model_dir(self) -> Path:
        return self.dir / MODEL_DIR

    @property
    def weights(self) -> Path:
        return self.dir / WEIGHTS_FILE

    @property
    def predictions(self) -> Path:
        return self.dir / PREDICTIONS_FILE


def resolve(ref: str, *, runs_dir: Path, storage: str | None = None) -> FinishedJob:
    """The finished job that `ref` names, or JobRefError."""
    if not ref.strip():
        raise JobRefError("JOB is empty; expected a job directory, a job id or best:<sweep>")
    if ref.startswith("best:"):
        return finished(best_of_sweep(ref.removeprefix("best:"), runs_dir=runs_dir, storage=storage))
    path = Path(ref)
    if path.is_dir():
        return finished(path)
    if JOB_ID.fullmatch(ref):
        candidates = sorted({d.resolve() for d in [runs_dir / ref, *runs_dir.glob(f"*/{ref}")] if d.is_dir()})
        if not candidates:
            raise JobRefError(f"JOB: no job {ref!r} under {runs_dir}/ (looked in {runs_dir}/*/{ref}); "
                              "pass its directory or --runs-dir")
        if len(candidates) > 1:
            raise JobRefError(f"JOB: job id {ref!r} is in more than one sweep: "
                              + ", ".join(str(c) for c in candidates) + "; pass one of these directories")
        return finished(candidates[0])
    raise JobRefError(f"JOB: {ref!r} is not a job directory, a job id (12 hex digits) under {runs_dir}/, "
                      "or best:<sweep>")


def best_of_sweep(sweep: str, *, runs_dir: Path, storage: str | None) -> Path:
    """The directory of the sweep's completed job with the best selection metric (`metric` of its
    results, val_acc by default; lower is better for val_loss). Ties: the smallest job id, so the
    answer never depends on storage order. Reads the storage without writing to it."""
    from sweeper.storage import default_storage, missing_storage, open_storage, sweep_names
    from sweeper.store import SweepStore

    url = storage or default_storage(runs_dir)
    if why := missing_storage(url):
        raise JobRefError(f"JOB: best:{sweep} needs the sweep storage: {why}")
    backend = open_storage(url, readonly=True)
    names = sweep_names(backend)
    if sweep not in names:
        raise JobRefError(f"JOB: no sweep named {sweep!r} in {url}; sweeps: {', '.join(names) or 'none'}")
    store = SweepStore(backend, sweep, create=False)
    states = {}
    done: dict[str, dict] = {}
    for job_id, trials in store.trials_by_job().items():
        if isinstance(trials[0].user_attrs.get("seeds"), list):  # a study trial run once per seed: each seed's job
            for trial in trials:
                for row in trial.user_attrs.get("seeds") or []:
                    if row.get("status") == COMPLETED and row.get("result"):
                        done[str(row["job_id"])] = row["result"]
            continue
        states[job_id] = state = store.state(trials)
        if state.status == COMPLETED and state.result:
            done[job_id] = state.result
    metrics = {str(r.get("metric") or "val_acc") for r in done.values()}
    metric = metrics.pop() if len(metrics) == 1 else "val_acc"
    done = {job_id: r for job_id, r in done.items() if r.get(metric) is not None}
    if not done:
        counts: dict[str, int] = {}
        for s in states.values():
            counts[s.status] = counts.get(s.status, 0) + 1
        seen = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
        if counts and not set(PENDING) & set(counts):
            raise JobRefError(f"JOB: sweep {sweep!r} finished with no completed job (its jobs: {seen}); a collapsed "
                              "or diverged job is used by its directory or job id, with a warning")
        raise JobRefError(f"JOB: sweep {sweep!r} has no completed job yet (its jobs: {seen})")
    sign = 1.0 if METRICS.get(metric) == "minimize" else -1.0
    best = min(done, key=lambda job_id: (sign * float(done[job_id][metric]), job_id))
    return runs_dir / sweep / best


def finished(path: Path) -> FinishedJob:
    """The job in `path`, if it has finished with a best checkpoint."""
    if not (path / CONFIG_FILE).is_file():
        raise JobRefError(f"JOB: {path} is not a job directory (no {CONFIG_FILE}); "
                          "expected a directory written by `sweep run`, `sweep grid` or `sweep optuna`")
    result_path = path / RESULT_FILE
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    status = result.get("status", "not started or still running")
    if status not in FINISHED:
        raise JobRefError(f"JOB: {path} has not finished (status: {status}); wait for it, or resume it with "
                          "the same command that started it")
    for needed in (path / WEIGHTS_FILE, path / MODEL_DIR / CLASSIFIER_FILE):
        if not needed.is_file():
            raise JobRefError(f"JOB: {path} has no best checkpoint ({needed.name} is missing)")
    try:
        config = build_job(json.loads((path / CONFIG_FILE).read_text()), source=str(path / CONFIG_FILE))
    except ConfigError as exc:
        raise JobRefError(f"JOB: {exc}") from None
    return FinishedJob(dir=path, config=config, result=result)
