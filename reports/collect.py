"""What a report is built from: the jobs of a sweep as its storage records them, and (for
paired tests, reliability diagrams) the per-example test predictions in the runs directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.store import SweepStore


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
    records = []
    for job_id, trials in store.trials_by_job().items():
        first = trials[0].user_attrs
        state = store.state(trials)
        reason = ""
        if state.trial is not None:
            reason = str(state.trial.user_attrs.get("reason", ""))
        records.append(Record(job_id=job_id, point=dict(first.get("point", {})), config=dict(first["config"]),
                              status=state.status, reason=reason, result=state.result))
    return records


def trial_states(store: SweepStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in store.study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return dict(sorted(counts.items()))


def study_summary(store: SweepStore) -> dict[str, Any]:
    """Best trial, and parameter importances (`optuna.importance`) where trials were sampled
    with parameters (Optuna studies) and at least two of them completed."""
    import optuna

    complete = [t for t in store.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None]
    summary: dict[str, Any] = {}
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        summary["best"] = {"number": best.number, "value": best.value, "job_id": best.user_attrs.get("job_id"),
                           "params": best.params or best.user_attrs.get("point", {})}
    if len([t for t in complete if t.params]) >= 2:
        try:
            importances = optuna.importance.get_param_importances(store.study)
        except (RuntimeError, ValueError):  # e.g. a single distinct value per parameter
            importances = {}
        summary["importances"] = {k: round(float(v), 4) for k, v in importances.items()}
    return summary


def load_predictions(job_dir: Path) -> Predictions | None:
    path = job_dir / "test_predictions.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        return Predictions(rows=data["rows"], labels=data["labels"], probs=data["probs"])
