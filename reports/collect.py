"""What a report is built from: the jobs of a sweep as its storage records them, and (for
paired tests, reliability diagrams) the per-example test predictions in the runs directory."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from sweeper.store import SweepStore
from trainer.jobdir import COLLAPSED, COMPLETED, DIVERGED, FAILED, FINISHED, PREDICTIONS_FILE, PRUNED, RUNNING, WAITING
from trainer.npz import read_npz

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    job_id: str
    point: dict[str, Any]  # the swept values, seed included
    config: dict[str, Any]
    status: str  # waiting, running, completed, collapsed, diverged, failed
    reason: str
    result: dict[str, Any] | None


@dataclass(frozen=True)
class Predictions:
    rows: np.ndarray  # positions in the merged, shuffled data: the key that pairs two jobs
    labels: np.ndarray
    probs: np.ndarray


def load_records(store: SweepStore) -> list[Record]:
    """One record per job: a grid's or single-seed study's trial is one job; a study trial whose
    space has `seeds` ran one job per seed and is expanded into one record per seed, with the
    trial's sampled point as the configuration (so its seeds group like a grid's)."""
    records = []
    for job_id, trials in store.trials_by_job().items():
        first = trials[0].user_attrs
        if isinstance(first.get("seeds"), list):
            continue  # one record per seed, below
        state = store.state(trials)
        reason = ""
        if state.trial is not None:
            reason = str(state.trial.user_attrs.get("reason", ""))
        records.append(Record(job_id=job_id, point=dict(first.get("point", {})), config=dict(first["config"]),
                              status=state.status, reason=reason, result=state.result))
    return records + seed_records(store.study.get_trials(deepcopy=False))


# A retried trial runs the same seeds again: keep, per job, the record that got furthest.
_RANK = {COMPLETED: 4, COLLAPSED: 4, DIVERGED: 4, PRUNED: 3, RUNNING: 2, WAITING: 1, FAILED: 0}


def seed_records(trials: list[Any]) -> list[Record]:
    """The per-seed jobs of study trials that carry `user_attrs["seeds"]`: a list of
    {"job_id", "seed", "status", "result"} (result: the RESULT_KEYS of that seed's result.json),
    `user_attrs["point"]` the sampled parameters, `user_attrs["config"]` (when present) the
    resolved configuration of the trial's first seed."""
    best: dict[str, tuple[tuple[int, int], Record]] = {}
    for trial in trials:
        attrs = trial.user_attrs
        seeds = attrs.get("seeds")
        if not isinstance(seeds, list):
            continue
        point = dict(attrs.get("point", {}))
        base = dict(attrs.get("config") or point)
        for entry in seeds:
            if not isinstance(entry, dict) or not entry.get("job_id"):
                continue
            status = str(entry.get("status") or WAITING)
            result = entry.get("result") if status in FINISHED else None
            record = Record(job_id=str(entry["job_id"]), point={**point, "seed": entry.get("seed")},
                            config={**base, "seed": entry.get("seed")}, status=status,
                            reason=str(entry.get("reason", attrs.get("reason", "")) if status != COMPLETED else ""),
                            result=dict(result) if isinstance(result, dict) else None)
            rank = (_RANK.get(status, 0), trial.number)
            if record.job_id not in best or rank > best[record.job_id][0]:
                best[record.job_id] = (rank, record)
    return [record for _, record in best.values()]


def retry_note(records: list[Record]) -> str | None:
    """A note naming the runs that an out-of-memory retry trained in smaller micro-batches (the
    same rows in each optimizer step and the same effective batch: the same training, run in
    more forward passes), or None when there are none."""
    retried = [(r.job_id, r.result) for r in records
               if r.result and r.result.get("micro_batch") and r.config.get("batch_size")
               and r.result["micro_batch"] < r.config["batch_size"]]
    if not retried:
        return None
    shown = ", ".join(f"{job_id} (micro-batch {result['micro_batch']}, attempt {result.get('attempt') or '?'})"
                      for job_id, result in retried[:5])
    more = f" and {len(retried) - 5} more" if len(retried) > 5 else ""
    return (f"Out-of-memory retries: {shown}{more} trained in smaller micro-batches than their batch_size, with the "
            "same rows in each optimizer step and the same effective batch.")


def trial_states(store: SweepStore) -> dict[str, int]:
    """Trials by Optuna state; a trial the storage keeps PRUNED because its job diverged (no
    value to store) is counted as DIVERGED: nothing pruned it (a grid has no pruner)."""
    counts: dict[str, int] = {}
    for trial in store.study.get_trials(deepcopy=False):
        name = trial.state.name
        if name == "PRUNED" and trial.user_attrs.get("status") == DIVERGED:
            name = "DIVERGED"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def study_summary(store: SweepStore) -> dict[str, Any]:
    """Best trial, and parameter importances (`optuna.importance`) where trials were sampled
    with parameters (Optuna studies) and at least two of them completed. A grid's trials carry
    their swept values as parameters too (for optuna-dashboard), but a grid was not sampled:
    Optuna marks every trial a grid enqueued with `fixed_params` {}, and its best trial is one
    seed's luck, not a search's result."""
    complete = [t for t in store.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None]
    summary: dict[str, Any] = {}
    sign = -1.0 if store.study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0
    grid = all(t.system_attrs.get("fixed_params") == {} for t in complete)
    if complete:
        best = max(complete, key=lambda t: (sign * float(t.value or 0.0), -t.number))
        summary["best"] = {"number": best.number, "value": best.value, "job_id": best.user_attrs.get("job_id"),
                           "params": best.params or best.user_attrs.get("point", {})}
        summary["sampled"] = bool(best.params) and not grid
    if not grid and len([t for t in complete if t.params]) >= 2:
        try:
            importances = optuna.importance.get_param_importances(store.study)
        except (RuntimeError, ValueError):  # e.g. a single distinct value per parameter
            importances = {}
        summary["importances"] = {k: round(float(v), 4) for k, v in importances.items()}
    return summary


def load_predictions(job_dir: Path) -> Predictions | None:
    """The job's per-example test predictions; None when it has none, or when the file is
    damaged (said in the log: the report then compares that job's configuration on its stored
    scores alone; the file is left where it is, since a report only reads)."""
    path = job_dir / PREDICTIONS_FILE
    try:
        data = read_npz(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: damaged, not used (%s: %s)", path, type(exc).__name__, exc)
        return None
    try:
        rows, labels, probs = data["rows"], data["labels"], data["probs"]
        if not (rows.ndim == labels.ndim == 1 and probs.ndim == 2 and len(rows) == len(labels) == len(probs)):
            raise ValueError(f"rows {rows.shape}, labels {labels.shape} and probs {probs.shape} do not match")
    except (KeyError, ValueError) as exc:
        log.warning("%s: not a predictions file, not used (%s)", path, exc)
        return None
    return Predictions(rows=rows, labels=labels, probs=probs)
