"""Every row of a report against the baseline row.

The headline is across seeds (`reports.seeds`): the mean difference of per-seed test accuracy
with a two-level bootstrap interval, ASO's eps_min and P(row > baseline) over seed pairs;
"significant" when the bootstrap p-value, Holm-Bonferroni-adjusted over the rows compared, is
below 0.05 *and* ASO's eps_min of the better side is below 0.5 (a row with one seed a side has
no ASO: its comparison covers test-set variance only). The seed ensemble's McNemar test and
paired bootstrap (`reports.stats`) stay as a secondary comparison, named as such.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reports.collect import Predictions, Record
from reports.seeds import (
    ALPHA,
    ASO_TAU,
    SAMPLES,
    Aso,
    Bootstrap,
    aso_many,
    holm,
    prob_better,
    seed_bootstrap_many,
    seeds_needed,
    two_level_bootstrap,
)
from reports.stats import Comparison, compare, mean_std

if TYPE_CHECKING:
    from reports.tables import Row

SCORED = ("completed", "collapsed")
# Past this many rows compared on scores alone, each row's seed bootstrap draws fewer replicates
# (the cost is replicates x rows; 2,000 still put the percentile ends within a few % of the width).
MANY_ROWS, MANY_ROWS_SAMPLES = 200, 2_000  # runs with a test score: a collapsed seed counts as what it scored


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


def _correct(records: list[Record], predictions: Callable[[str], Predictions | None]) -> dict[str, tuple[np.ndarray,
                                                                                                    np.ndarray]] | None:
    """job id -> (rows, correct) for every record, or None when any has no predictions."""
    out = {}
    for r in records:
        p = predictions(r.job_id)
        if p is None:
            return None
        order = np.argsort(p.rows, kind="stable")
        out[r.job_id] = (p.rows[order], p.probs[order].argmax(1) == p.labels[order])
    return out


def _aligned(*groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], int]:
    """Per group, a seeds x examples matrix on the rows every run shares."""
    shared = None
    for group in groups:
        for rows, _ in group.values():
            if shared is None:
                shared = rows
            elif len(rows) != len(shared) or not np.array_equal(rows, shared):  # usually every job has the same rows
                shared = np.intersect1d(shared, rows, assume_unique=True)
    assert shared is not None
    mats = [np.stack([c[np.searchsorted(rows, shared)] for rows, c in group.values()]) for group in groups]
    return mats, len(shared)


def compare_rows(rows: list[Row], base: int, predictions: Callable[[str], Predictions | None], *,
                 effect: float | None = None) -> None:
    """Fill in each row's `headline` (across seeds) and `ensemble` (seed ensemble) comparison."""
    predictions = functools.cache(predictions)
    base_runs = _scored(rows[base])
    if not base_runs:
        for i, row in enumerate(rows):
            if i != base:
                row.comparison_note = "the baseline has no run with a test score"
        return
    base_correct = _correct(base_runs, predictions)
    base_scores = np.array([r.result["test_acc"] for r in base_runs if r.result])
    seed_only: dict[int, list[int]] = {}  # seed count -> rows compared on stored scores alone
    for i, row in enumerate(rows):
        if i == base:
            continue
        runs = _scored(row)
        if not runs:
            row.comparison_note = "no run with a test score"
            continue
        correct = _correct(runs, predictions) if base_correct is not None else None
        if base_correct is not None and correct is not None:
            (mat_a, mat_b), n = _aligned(base_correct, correct)
            if n == 0:
                row.comparison_note = "no shared test examples (different data or split)"
                continue
            sa, sb = mat_a.mean(1), mat_b.mean(1)
            scope = "test examples only (one seed a side)" if len(sa) == len(sb) == 1 else "seeds and test examples"
            boot = two_level_bootstrap(mat_a, mat_b)
            row.headline = SeedComparison((len(sa), len(sb)), scope, boot, None, prob_better(sb, sa), examples=n)
            row.scores = (sa, sb)
            row.ensemble = _ensemble(base_correct, correct, predictions, base_runs, runs)
        else:
            seed_only.setdefault(len(runs), []).append(i)
            row.scores = (base_scores, np.array([r.result["test_acc"] for r in runs if r.result]))
            row.comparison_note = "no per-example predictions in the runs directory: seeds only"
    for members in seed_only.values():
        samples = SAMPLES if len(members) <= MANY_ROWS else MANY_ROWS_SAMPLES
        boots = seed_bootstrap_many(base_scores, np.stack([rows[i].scores[1] for i in members]),  # type: ignore[index]
                                    samples=samples)
        for i, boot in zip(members, boots, strict=True):
            sa, sb = rows[i].scores  # type: ignore[misc]
            scope = "seeds (scores only)" if min(len(sa), len(sb)) > 1 else "one seed, scores only: nothing to test"
            rows[i].headline = SeedComparison((len(sa), len(sb)), scope, boot, None, prob_better(sb, sa))
    compared = [row for row in rows if row.headline is not None]
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
    scores); one Bonferroni over the rows compared, as deepsig's num_comparisons does."""
    groups: dict[tuple[int, bytes], list[Row]] = {}
    for row in compared:
        assert row.scores is not None
        sa, sb = row.scores
        if len(sa) > 1 and len(sb) > 1:
            groups.setdefault((len(sb), np.asarray(sa, dtype=float).tobytes()), []).append(row)
    for members in groups.values():
        base = members[0].scores[0]  # type: ignore[index]
        results = aso_many(base, np.stack([m.scores[1] for m in members]), comparisons=len(compared))  # type: ignore[index]
        for row, result in zip(members, results, strict=True):
            assert row.headline is not None  # aso_many: baseline (A) over row (B); store row over baseline
            row.headline.aso = Aso(result.eps_b_over_a, result.eps_a_over_b)


def _ensemble(base_correct: dict[str, tuple[np.ndarray, np.ndarray]], correct: dict[str, tuple[np.ndarray, np.ndarray]],
              predictions: Callable[[str], Predictions | None], base_runs: list[Record],
              runs: list[Record]) -> Comparison | None:
    """The seed ensemble: probabilities averaged over each side's seeds, compared example by example."""
    a, b = seed_ensemble(base_runs, predictions), seed_ensemble(runs, predictions)
    if a is None or b is None:
        return None
    if len(a[0]) == len(b[0]) and np.array_equal(a[0], b[0]):
        ia = ib = np.arange(len(a[0]))
    else:
        shared, ia, ib = np.intersect1d(a[0], b[0], return_indices=True)
        if len(shared) == 0:
            return None
    labels = a[1][ia]
    return compare(a[2][ia].argmax(1) == labels, b[2][ib].argmax(1) == labels)


def seed_ensemble(records: list[Record], predictions: Callable[[str], Predictions | None]) -> tuple[
        np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, labels, probabilities averaged over the records' seeds) on the examples all share."""
    preds = [predictions(r.job_id) for r in records]
    if not preds or any(p is None for p in preds):
        return None
    shared = np.sort(preds[0].rows)  # type: ignore[union-attr]
    for p in preds[1:]:
        assert p is not None
        if len(p.rows) != len(shared) or not np.array_equal(np.sort(p.rows), shared):
            shared = np.intersect1d(shared, p.rows)
    probs, labels = [], None
    for p in preds:
        assert p is not None
        order = np.argsort(p.rows)
        pos = order[np.searchsorted(p.rows, shared, sorter=order)]
        probs.append(p.probs[pos])
        labels = p.labels[pos]
    assert labels is not None
    return shared, labels, np.mean(probs, axis=0)
