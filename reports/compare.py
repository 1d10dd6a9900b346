"""Every row of a report against the baseline row.

The headline is across seeds (`reports.seeds`): the mean difference of per-seed test accuracy
with a two-level bootstrap interval, ASO's eps_min and P(row > baseline) over seed pairs;
"significant" when the bootstrap p-value, Holm-Bonferroni-adjusted over the rows compared, is
below 0.05 *and* ASO's eps_min of the better side is below 0.5 (a row with one seed a side has
no ASO: its comparison covers test-set variance only). The seed ensembles' McNemar test
(`reports.stats`) and paired bootstrap (the same bootstrap with one run a side) stay as a
secondary comparison, named as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reports.bootstrap import SAMPLES, Bootstrap, Moments, moments, seed_bootstrap_many, two_level_bootstrap_many
from reports.collect import Predictions, Record
from reports.seeds import ALPHA, ASO_TAU, Aso, aso_many, holm, prob_better, seeds_needed
from reports.stats import Comparison, mcnemar_p, mean_std
from trainer.jobdir import FINISHED

if TYPE_CHECKING:
    from reports.tables import Row

SCORED = ("completed", "collapsed")  # runs with a test score: a collapsed seed counts as what it scored
# Past this many rows compared, each row's bootstrap draws fewer replicates (the cost is
# replicates x rows; 2,000 still put the percentile ends within a few % of the width, and the
# p-values do not rest on the count of replicates).
MANY_ROWS, MANY_ROWS_SAMPLES = 200, 2_000


def _replicates(rows: int) -> int:
    return SAMPLES if rows <= MANY_ROWS else MANY_ROWS_SAMPLES


@dataclass
class SeedComparison:
    seeds: tuple[int, int]  # (baseline, row) seeds compared
    scope: str  # "seeds and test examples", "seeds (no per-example predictions)", "test examples only (one seed)"
    boot: Bootstrap
    aso: Aso | None  # None with one seed on either side
    p_better: float  # P(row > baseline) over seed pairs
    p_holm: float = 1.0
    needed: int | None = None  # seeds per side for the interval to exclude 0 at the observed difference
    needed_effect: int | None = None  # ... at --effect
    examples: int = 0  # shared test examples (0: scores only)
    unscored: tuple[int, int] = (0, 0)  # (baseline, row) runs that finished without a test score (diverged)

    @property
    def testable(self) -> bool:
        """Scores alone with one seed on a side: no spread to test against."""
        return self.examples > 0 or min(self.seeds) > 1

    @property
    def significant(self) -> bool:
        if not self.testable or self.p_holm >= ALPHA:
            return False
        if self.aso is None:
            return True
        winner = self.aso.eps_a_over_b if self.boot.diff > 0 else self.aso.eps_b_over_a
        return winner < ASO_TAU

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "cannot tell"
        return "better" if self.boot.diff > 0 else "worse"


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
    """Reads configurations' predictions; equal row arrays (every job of a sweep usually has
    the same test rows) become one object, so that `_shared` compares them by identity."""

    def __init__(self, predictions: Callable[[str], Predictions | None]) -> None:
        self._predictions = predictions
        self._rows: list[np.ndarray] = []

    def seeds(self, records: list[Record]) -> _Seeds | None:
        """None when any run has no predictions."""
        preds = _read(records, self._predictions)
        if preds is None:
            return None
        runs = [_Run(self._canonical(p.rows), predicted(p.probs) == p.labels) for p in preds]
        rows, labels, probs = _average(preds)
        return _Seeds(runs, _Run(self._canonical(rows), predicted(probs) == labels))

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


def compare_rows(rows: list[Row], base: int, predictions: Callable[[str], Predictions | None], *,
                 effect: float | None = None) -> None:
    """Fill in each row's `headline` (across seeds) and `ensemble` (seed ensemble) comparison."""
    reader = _Reader(predictions)
    base_runs = _scored(rows[base])
    if not base_runs:
        for i, row in enumerate(rows):
            if i != base:
                row.comparison_note = "the baseline has no run with a test score"
        return
    base_seeds = reader.seeds(base_runs)
    base_scores = np.array([r.result["test_acc"] for r in base_runs if r.result])
    on_examples: list[tuple[int, Moments, int]] = []  # (row, moments, shared examples)
    ensembles: list[tuple[int, Moments, float, int]] = []  # (row, moments, McNemar p, shared examples)
    seed_only: dict[int, list[int]] = {}  # seed count -> rows compared on stored scores alone
    for i, row in enumerate(rows):
        if i == base:
            continue
        runs = _scored(row)
        if not runs:
            row.comparison_note = "no run with a test score"
            continue
        row_seeds = reader.seeds(runs) if base_seeds is not None else None
        if base_seeds is not None and row_seeds is not None:
            shared = _shared([r.rows for r in base_seeds.runs + row_seeds.runs])
            if len(shared) == 0:
                row.comparison_note = "no shared test examples (different data or split)"
                continue
            mat_a = np.stack([_at(r, shared) for r in base_seeds.runs])
            mat_b = np.stack([_at(r, shared) for r in row_seeds.runs])
            row.scores = (mat_a.mean(1), mat_b.mean(1))
            on_examples.append((i, moments(mat_a, mat_b), len(shared)))
            if (pair := _ensemble_pair(base_seeds.ensemble, row_seeds.ensemble)) is not None:
                ensembles.append((i, *pair))
        else:
            seed_only.setdefault(len(runs), []).append(i)
            row.scores = (base_scores, np.array([r.result["test_acc"] for r in runs if r.result]))
            row.comparison_note = "no per-example predictions in the runs directory: seeds only"
    boots = two_level_bootstrap_many([m for _, m, _ in on_examples], samples=_replicates(len(on_examples)))
    for (i, _, n), boot in zip(on_examples, boots, strict=True):
        sa, sb = rows[i].scores  # type: ignore[misc]
        scope = ("test examples only (one seed a side)" if len(sa) == len(sb) == 1 else
                 "seeds and test examples" if min(len(sa), len(sb)) > 1 else
                 "test examples, and the seeds of the side with more than one")
        rows[i].headline = SeedComparison((len(sa), len(sb)), scope, boot, None, prob_better(sb, sa), examples=n)
    boots = two_level_bootstrap_many([m for _, m, _, _ in ensembles], samples=_replicates(len(ensembles)))
    for (i, _, p, n), boot in zip(ensembles, boots, strict=True):
        rows[i].ensemble = Comparison(boot.diff, boot.low, boot.high, p, n)
    for members in seed_only.values():
        boots = seed_bootstrap_many(base_scores, np.stack([rows[i].scores[1] for i in members]),  # type: ignore[index]
                                    samples=_replicates(len(members)))
        for i, boot in zip(members, boots, strict=True):
            sa, sb = rows[i].scores  # type: ignore[misc]
            scope = "seeds (scores only)" if min(len(sa), len(sb)) > 1 else "one seed, scores only: nothing to test"
            rows[i].headline = SeedComparison((len(sa), len(sb)), scope, boot, None, prob_better(sb, sa))
    compared = [row for row in rows if row.headline is not None]
    for row in compared:
        row.headline.unscored = (_unscored(rows[base]), _unscored(row))  # type: ignore[union-attr]
    _aso(compared)
    tested = [row for row in compared if row.headline.testable]  # type: ignore[union-attr]
    for row, p in zip(tested, holm([row.headline.boot.p_value for row in tested]), strict=True):  # type: ignore[union-attr]
        row.headline.p_holm = p  # type: ignore[union-attr]
    for row in compared:
        h = row.headline
        assert h is not None and row.scores is not None
        sd_a, sd_b = (mean_std(s.tolist())[1] for s in row.scores)
        h.needed = seeds_needed(sd_a, sd_b, h.boot.diff, test_sd=h.boot.test_sd)
        if effect is not None:
            h.needed_effect = seeds_needed(sd_a, sd_b, effect, test_sd=h.boot.test_sd)


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
