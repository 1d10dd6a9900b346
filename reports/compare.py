"""Every row of a report against the baseline row, and the comparisons the report leads with.

The headline is `reports.verdict.compare` on each configuration's runs against the baseline's:
per-seed right/wrong on the test examples every run shares where every run kept its
predictions, per-seed test scores otherwise; a side with one seed takes the seed spread pooled
over the sweep's configurations with two or more seeds (`pooled_seed_sd`); Holm-Bonferroni over
the rows compared (`reports.verdict.adjust`). ASO's eps_min and P(row > baseline) over seed
pairs stand beside it as descriptions, not gates. The seed ensembles' McNemar test
(`reports.stats`) and paired bootstrap (`reports.bootstrap` with one run a side) stay as a
secondary comparison, named as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reports.bootstrap import SAMPLES, Moments, moments, two_level_bootstrap_many
from reports.cache import Cache
from reports.collect import Predictions, Record
from reports.seeds import Aso, aso_many, prob_better
from reports.stats import Comparison, mcnemar_p
from reports.verdict import Runs, Verdict, adjust, compare, runs, seeds_needed
from trainer.jobdir import FINISHED

if TYPE_CHECKING:
    from reports.tables import Row

SCORED = ("completed", "collapsed")  # runs with a test score: a collapsed seed counts as what it scored
# Past this many rows compared, the seed ensembles' bootstrap draws fewer replicates (the cost is
# replicates x rows; 2,000 still put the percentile ends within a few % of the width).
MANY_ROWS, MANY_ROWS_SAMPLES = 200, 2_000


def _replicates(rows: int) -> int:
    return SAMPLES if rows <= MANY_ROWS else MANY_ROWS_SAMPLES


@dataclass(frozen=True)
class Pooled:
    """The per-seed spread of test accuracy pooled over a sweep's configurations with two or
    more seeds: what a side with one seed is compared with."""

    sd: float
    df: int
    configurations: int


@dataclass
class SeedComparison:
    result: Verdict  # reports.verdict.compare, Holm-adjusted over the rows
    aso: Aso | None  # None with one seed on either side
    p_better: float  # P(row > baseline) over seed pairs
    needed_effect: int | None = None  # seeds a side to decide a difference of --effect at 80% power
    unscored: tuple[int, int] = (0, 0)  # (baseline, row) runs that finished without a test score (diverged)
    pooled: Pooled | None = None  # the pooled seed spread, where a side with one seed took it

    @property
    def seeds(self) -> tuple[int, int]:
        return self.result.seeds

    @property
    def examples(self) -> int:
        return self.result.examples

    @property
    def testable(self) -> bool:
        return self.result.testable

    @property
    def significant(self) -> bool:
        return self.result.winner is not None

    @property
    def verdict(self) -> str:
        return self.result.word

    @property
    def scope(self) -> str:
        sa, sb = self.seeds
        what = "seeds and test examples" if self.examples else "seeds (scores only)"
        if sa == sb == 1:
            return f"one seed a side, {what}"
        return what


@dataclass(frozen=True)
class Lead:
    """A comparison the report leads with: row `b` against row `a`."""

    a: int
    b: int
    kind: str  # "best vs baseline", "runner-up vs best", "model best vs overall best"
    result: Verdict
    pooled: Pooled | None = None


def _scored(row: Row) -> list[Record]:
    return [r for r in row.runs if r.status in SCORED and r.result is not None and r.result.get("test_acc") is not None]


def _unscored(row: Row) -> int:
    """Runs that finished without a test score (a diverged run is never tested): not in the
    comparison, which therefore flatters the configuration; the report says so."""
    return sum(r.status in FINISHED for r in row.runs) - len(_scored(row))


@dataclass(frozen=True)
class _Run:
    """One run's right/wrong on its test rows (sorted: the key that pairs runs)."""

    rows: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class _Seeds:
    """What the comparisons need of one configuration's runs: each run's right/wrong and the
    seed ensemble's (class probabilities averaged over the seeds, on the rows all share). The
    probabilities themselves are not kept: a sweep of 10,000 jobs holds 1.2 GB of them."""

    runs: list[_Run]
    ensemble: _Run


class _Reader:
    """Reads configurations' predictions, through the sweep's `Cache` of right/wrong bits when
    there is one; equal row arrays (every job of a sweep usually has the same test rows) become
    one object, so that `_shared` compares them by identity."""

    def __init__(self, predictions: Callable[[str], Predictions | None], cache: Cache | None = None) -> None:
        self._predictions = predictions
        self._cache = cache
        self._rows: list[np.ndarray] = []

    def seeds(self, records: list[Record]) -> _Seeds | None:
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
            preds = _read(records, self._predictions)
            if preds is None:
                return None
            rows, labels, probs = _average(preds)
            hit = (self._canonical(rows), predicted(probs) == labels)
            if self._cache is not None:
                self._cache.put_ensemble(ids, hit)
        return _Seeds(runs, _Run(self._canonical(hit[0]), hit[1]))

    def _run(self, job_id: str) -> _Run | None:
        if self._cache is not None and self._cache.stamp(job_id) is None:
            return None  # no predictions file: nothing to read
        hit = self._cache.run(job_id) if self._cache is not None else None
        if hit is None:
            preds = _read([Record(job_id, {}, {}, "", "", None)], self._predictions)
            if preds is None:
                return None
            # the canonical rows: a copy, never a view on the job's file (which would keep all of it alive)
            hit = (self._canonical(preds[0].rows), predicted(preds[0].probs) == preds[0].labels)
            if self._cache is not None:
                self._cache.put_run(job_id, hit)
        return _Run(self._canonical(hit[0]), hit[1])

    def canonical(self, rows: np.ndarray) -> bool:
        """Whether `rows` is one of the row sets this reader keeps (alive, so its id is its own)."""
        return any(rows is known for known in self._rows)

    def _canonical(self, rows: np.ndarray) -> np.ndarray:
        for known in self._rows:
            if len(known) == len(rows) and np.array_equal(known, rows):
                return known
        rows = rows.copy()  # not a view on the job's file, which would keep all of it alive
        if len(self._rows) < 8:
            self._rows.append(rows)
        return rows


def _read(records: list[Record], predictions: Callable[[str], Predictions | None]) -> list[Predictions] | None:
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


def _shared(rows: list[np.ndarray]) -> np.ndarray:
    """The sorted rows every array holds (usually all are equal)."""
    shared = rows[0]
    for r in rows[1:]:
        if r is not shared and (len(r) != len(shared) or not np.array_equal(r, shared)):
            shared = np.intersect1d(shared, r, assume_unique=True)
    return shared


def _positions(rows: np.ndarray, subset: np.ndarray) -> np.ndarray | None:
    """Where the sorted `subset` of `rows` sits in it; None when it is all of it."""
    return None if len(subset) == len(rows) else np.searchsorted(rows, subset)


def _at(run: _Run, rows: np.ndarray) -> np.ndarray:
    """The run's right/wrong on `rows` (a sorted subset of its own)."""
    pos = _positions(run.rows, rows)
    return run.correct if pos is None else run.correct[pos]


def pooled_seed_sd(rows: list[Row]) -> Pooled | None:
    """The per-seed standard deviation of test accuracy pooled over the configurations with two
    or more scored runs (sum of (n - 1) s^2 over sum of (n - 1)); None when there are none."""
    total, df, configs = 0.0, 0, 0
    for row in rows:
        scores = [float(r.result["test_acc"]) for r in _scored(row) if r.result]
        if len(scores) > 1:
            total += float(np.var(scores, ddof=1)) * (len(scores) - 1)
            df += len(scores) - 1
            configs += 1
    return Pooled(math.sqrt(total / df), df, configs) if df else None


class _Pairs:
    """Two configurations' runs as `compare` takes them: right/wrong on the test examples every
    run shares when every run kept its predictions, else the stored test scores."""

    def __init__(self, reader: _Reader, pooled: Pooled | None) -> None:
        self.reader = reader
        self.pooled = pooled
        self._seeds: dict[int, tuple[list[Record], _Seeds | None]] = {}
        self._summaries: dict[tuple[int, int], Runs] = {}  # (row, id of a canonical row set): the baseline's, once

    def runs(self, rows: list[Row], i: int, *, read: bool = True) -> tuple[list[Record], _Seeds | None]:
        """The row's scored runs and their predictions (not read when `read` is False: the other
        side has none, so they would go unused)."""
        if i not in self._seeds:
            runs = _scored(rows[i])
            if not read:
                return runs, None
            self._seeds[i] = (runs, self.reader.seeds(runs) if runs else None)
        return self._seeds[i]

    def forget(self, i: int) -> None:
        self._seeds.pop(i, None)

    def compare(self, rows: list[Row], a: int, b: int) -> tuple[Verdict, tuple[np.ndarray, np.ndarray],
                                                               tuple[_Seeds, _Seeds] | None] | str:
        """(verdict, per-seed scores compared, both sides' predictions or None), or why not."""
        runs_a, seeds_a = self.runs(rows, a)
        runs_b, seeds_b = self.runs(rows, b, read=seeds_a is not None)
        if not runs_a or not runs_b:
            return "no run with a test score" if runs_a else "the baseline has no run with a test score"
        pool: dict[str, float] = {}
        if self.pooled is not None and min(len(runs_a), len(runs_b)) == 1:
            pool = {"seed_sd": self.pooled.sd, "seed_df": self.pooled.df}
        if seeds_a is not None and seeds_b is not None:
            shared = _shared([r.rows for r in seeds_a.runs + seeds_b.runs])
            if len(shared) == 0:
                return "no shared test examples (different data or split)"
            mat_b = np.stack([_at(r, shared) for r in seeds_b.runs])
            key = (a, id(shared))
            side_a = self._summaries.get(key) if self.reader.canonical(shared) else None
            if side_a is None:
                side_a = runs(np.stack([_at(r, shared) for r in seeds_a.runs]))
                if self.reader.canonical(shared):
                    self._summaries[key] = side_a
            side_b = runs(mat_b)
            return compare(side_a, side_b, **pool), (side_a.scores, side_b.scores), (seeds_a, seeds_b)
        scores = (np.array([r.result["test_acc"] for r in runs_a if r.result], dtype=float),
                  np.array([r.result["test_acc"] for r in runs_b if r.result], dtype=float))
        return compare(scores[0], scores[1], **pool), scores, None


def compare_rows(rows: list[Row], base: int, predictions: Callable[[str], Predictions | None], *,
                 effect: float | None = None, lead: list[tuple[int, int, str]] | None = None,
                 cache: Cache | None = None) -> list[Lead]:
    """Fill in each row's `headline` (against the baseline) and `ensemble` (seed ensemble)
    comparison; return the `lead` pairs (a, b, kind) compared the same way."""
    pooled = pooled_seed_sd(rows)
    pairs = _Pairs(_Reader(predictions, cache), pooled)
    keep = {base} | {i for pair in lead or [] for i in pair[:2]}
    found: list[tuple[int, Verdict]] = []
    ensembles: list[tuple[int, Moments, float, int]] = []  # (row, moments, McNemar p, shared examples)
    for i, row in enumerate(rows):
        if i == base:
            continue
        got = pairs.compare(rows, base, i)
        if i not in keep:
            pairs.forget(i)  # a sweep of 10,000 jobs: hold one configuration's right/wrong at a time
        if isinstance(got, str):
            row.comparison_note = got
            continue
        verdict, row.scores, both = got
        found.append((i, verdict))
        if both is None:
            row.comparison_note = "no per-example predictions in the runs directory: seeds only"
        elif (pair := _ensemble_pair(both[0].ensemble, both[1].ensemble)) is not None:
            ensembles.append((i, *pair))
    for (i, _), verdict in zip(found, adjust([v for _, v in found]), strict=True):
        row = rows[i]
        one = min(verdict.seeds) == 1 and pooled is not None
        row.headline = SeedComparison(verdict, None, prob_better(row.scores[1], row.scores[0]),  # type: ignore[index]
                                      unscored=(_unscored(rows[base]), _unscored(row)), pooled=pooled if one else None)
        if effect is not None and not math.isnan(verdict.seed_vars[0]):
            row.headline.needed_effect = seeds_needed(*verdict.seed_vars, verdict.test_sd**2, effect)
    boots = two_level_bootstrap_many([m for _, m, _, _ in ensembles], samples=_replicates(len(ensembles)))
    for (i, _, p, n), boot in zip(ensembles, boots, strict=True):
        rows[i].ensemble = Comparison(boot.diff, boot.low, boot.high, p, n)
    _aso([row for row in rows if row.headline is not None])
    out = []
    for a, b, kind in lead or []:
        if a == base and rows[b].headline is not None:
            out.append(Lead(a, b, kind, rows[b].headline.result, rows[b].headline.pooled))  # type: ignore[union-attr]
            continue
        got = pairs.compare(rows, a, b)
        if not isinstance(got, str):
            one = min(got[0].seeds) == 1 and pooled is not None
            out.append(Lead(a, b, kind, got[0], pooled if one else None))
    return out


def _aso(compared: list[Row]) -> None:
    """ASO for every row with two or more seeds a side, batched by (row seed count, baseline
    scores); one Bonferroni over the rows that get ASO (deepsig's num_comparisons)."""
    groups: dict[tuple[int, bytes], list[Row]] = {}
    for row in compared:
        assert row.scores is not None
        sa, sb = row.scores
        if len(sa) > 1 and len(sb) > 1:
            groups.setdefault((len(sb), np.asarray(sa, dtype=float).tobytes()), []).append(row)
    family = sum(len(members) for members in groups.values())
    for members in groups.values():
        base = members[0].scores[0]  # type: ignore[index]
        results = aso_many(base, np.stack([m.scores[1] for m in members]), comparisons=family)  # type: ignore[index]
        for row, result in zip(members, results, strict=True):
            assert row.headline is not None  # aso_many: baseline (A) over row (B); store row over baseline
            row.headline.aso = Aso(result.eps_b_over_a, result.eps_a_over_b)


def _ensemble_pair(a: _Run, b: _Run) -> tuple[Moments, float, int] | None:
    """The two seed ensembles' right/wrong on the examples both hold, as the bootstrap's moments
    (one run a side: the paired bootstrap), with McNemar's exact p."""
    shared = _shared([a.rows, b.rows])
    if len(shared) == 0:
        return None
    ca, cb = _at(a, shared), _at(b, shared)
    return moments(ca[None], cb[None]), mcnemar_p(ca, cb), len(shared)


def seed_ensemble(records: list[Record], predictions: Callable[[str], Predictions | None]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, labels, probabilities averaged over the records' seeds) on the examples all share."""
    preds = _read(records, predictions)
    return _average(preds) if preds else None


def _average(preds: list[Predictions]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, labels, mean probabilities) of sorted predictions, on the rows all hold."""
    shared = _shared([p.rows for p in preds])
    at = [_positions(p.rows, shared) for p in preds]
    probs = (preds[0].probs if at[0] is None else preds[0].probs[at[0]]).astype(np.float64)
    for p, pos in zip(preds[1:], at[1:], strict=True):
        probs += p.probs if pos is None else p.probs[pos]
    probs /= len(preds)
    return shared, preds[0].labels if at[0] is None else preds[0].labels[at[0]], probs
