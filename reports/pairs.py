"""Each run's right/wrong on its test examples, as the comparisons take them: read from the
jobs' `test_predictions.npz`, or from the sweep's `reports.cache.Cache` of them, with each
configuration's seed ensemble (class probabilities averaged over its seeds). Rows are the key
that pairs two runs: kept sorted, and equal row sets shared as one array."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reports.cache import Cache
from reports.collect import Predictions, Record


@dataclass(frozen=True)
class Run:
    """One run's right/wrong on its test rows (sorted: the key that pairs runs)."""

    rows: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class Seeds:
    """What the comparisons need of one configuration's runs: each run's right/wrong and the
    seed ensemble's (class probabilities averaged over the seeds, on the rows all share). The
    probabilities themselves are not kept: a sweep of 10,000 jobs holds 1.2 GB of them."""

    runs: list[Run]
    ensemble: Run


class Reader:
    """Reads configurations' predictions, through the sweep's `Cache` of right/wrong bits when
    there is one; equal row arrays (every job of a sweep usually has the same test rows) become
    one object, so that `shared_rows` compares them by identity."""

    def __init__(self, predictions: Callable[[str], Predictions | None], cache: Cache | None = None) -> None:
        self._predictions = predictions
        self._cache = cache
        self._rows: list[np.ndarray] = []
        self._seen: list[tuple[np.ndarray, np.ndarray]] = []  # (the cache's row array, its canonical one)

    def seeds(self, records: list[Record]) -> Seeds | None:
        """None when any run has no predictions."""
        runs = []
        for r in records:
            run = self._run(r.job_id)
            if run is None:
                return None  # the configuration is compared on its scores: the other runs need not be read
            runs.append(run)
        ids = [r.job_id for r in records]
        hit = self._cache.ensemble(ids) if self._cache is not None else None
        if hit is None:
            preds = read_sorted(records, self._predictions)
            if preds is None:
                return None
            rows, labels, probs = average_probs(preds)
            hit = (self._canonical(rows), predicted(probs) == labels)
            if self._cache is not None:
                self._cache.put_ensemble(ids, hit)
        return Seeds(runs, Run(self._canonical(hit[0]), hit[1]))

    def _run(self, job_id: str) -> Run | None:
        if self._cache is not None and self._cache.stamp(job_id) is None:
            return None  # no predictions file: nothing to read
        hit = self._cache.run(job_id) if self._cache is not None else None
        if hit is None:
            preds = read_sorted([Record(job_id, {}, {}, "", "", None)], self._predictions)
            if preds is None:
                return None
            # the canonical rows: a copy, never a view on the job's file (which would keep all of it alive)
            hit = (self._canonical(preds[0].rows), predicted(preds[0].probs) == preds[0].labels)
            if self._cache is not None:
                self._cache.put_run(job_id, hit)
        return Run(self._canonical(hit[0]), hit[1])

    def canonical(self, rows: np.ndarray) -> bool:
        """Whether `rows` is one of the row sets this reader keeps (alive, so its id is its own)."""
        return any(rows is known for known in self._rows)

    def _canonical(self, rows: np.ndarray) -> np.ndarray:
        for seen, known in self._seen:  # the cache hands out one array per row set: compared by identity
            if rows is seen:
                return known
        for known in self._rows:
            if len(known) == len(rows) and np.array_equal(known, rows):
                break
        else:
            known = rows.copy()  # not a view on the job's file, which would keep all of it alive
            if len(self._rows) < 8:
                self._rows.append(known)
        if self._cache is not None and self._cache.owns(rows) and len(self._seen) < 8:
            self._seen.append((rows, known))  # the cache keeps it alive anyway
        return known


def read_sorted(records: list[Record], predictions: Callable[[str], Predictions | None]) -> list[Predictions] | None:
    """The records' predictions in row order (the trainer writes them so; other writers may
    not); None when any has none."""
    out = []
    for r in records:
        p = predictions(r.job_id)
        if p is None:
            return None
        if not np.all(p.rows[1:] > p.rows[:-1]):
            order = np.argsort(p.rows, kind="stable")
            p = Predictions(p.rows[order], p.labels[order], p.probs[order])
        out.append(p)
    return out


def predicted(probs: np.ndarray) -> np.ndarray:
    """`probs.argmax(1)` (the first of equal maxima); with two classes one comparison, five
    times faster than numpy's argmax over rows of two (a report takes it for every job)."""
    if probs.shape[1] == 2:  # argmax takes the first NaN as the maximum: so does this
        first, second = probs[:, 0], probs[:, 1]
        return ((second > first) | (np.isnan(second) & ~np.isnan(first))).view(np.int8)
    return probs.argmax(1)


def shared_rows(rows: list[np.ndarray]) -> np.ndarray:
    """The sorted rows every array holds (usually all are equal)."""
    shared = rows[0]
    for r in rows[1:]:
        if r is not shared and (len(r) != len(shared) or not np.array_equal(r, shared)):
            shared = np.intersect1d(shared, r, assume_unique=True)
    return shared


def positions_of(rows: np.ndarray, subset: np.ndarray) -> np.ndarray | None:
    """Where the sorted `subset` of `rows` sits in it; None when it is all of it."""
    return None if len(subset) == len(rows) else np.searchsorted(rows, subset)


def right_on(run: Run, rows: np.ndarray) -> np.ndarray:
    """The run's right/wrong on `rows` (a sorted subset of its own)."""
    pos = positions_of(run.rows, rows)
    return run.correct if pos is None else run.correct[pos]


def seed_ensemble(records: list[Record], predictions: Callable[[str], Predictions | None]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, labels, probabilities averaged over the records' seeds) on the examples all share."""
    preds = read_sorted(records, predictions)
    return average_probs(preds) if preds else None


def average_probs(preds: list[Predictions]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, labels, mean probabilities) of sorted predictions, on the rows all hold."""
    shared = shared_rows([p.rows for p in preds])
    at = [positions_of(p.rows, shared) for p in preds]
    probs = (preds[0].probs if at[0] is None else preds[0].probs[at[0]]).astype(np.float64)
    for p, pos in zip(preds[1:], at[1:], strict=True):
        probs += p.probs if pos is None else p.probs[pos]
    probs /= len(preds)
    return shared, preds[0].labels if at[0] is None else preds[0].labels[at[0]], probs
