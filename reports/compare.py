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

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from reports.bootstrap import SAMPLES, Moments, moments, paired_moments, two_level_bootstrap_many
from reports.cache import Cache
from reports.collect import Predictions, Record
from reports.pairs import Reader, Run, Seeds, right_on, shared_rows
from reports.rows import Lead, Pooled, Row, SeedComparison
from reports.seeds import Aso, aso_many, prob_better
from reports.stats import Comparison, mcnemar_p, mcnemar_p_counts
from reports.verdict import Runs, Verdict, adjust, compare, compare_many, runs, seeds_needed
from trainer.jobdir import FINISHED, SCORED

# Past this many rows compared, the seed ensembles' bootstrap draws fewer replicates (the cost is
# replicates x rows; 2,000 still put the percentile ends within a few % of the width).
MANY_ROWS, MANY_ROWS_SAMPLES = 200, 2_000


def _replicates(rows: int) -> int:
    return SAMPLES if rows <= MANY_ROWS else MANY_ROWS_SAMPLES


def _scored(row: Row) -> list[Record]:
    return [r for r in row.runs if r.status in SCORED and r.result is not None and r.result.get("test_acc") is not None]


def _unscored(row: Row) -> int:
    """Runs that finished without a test score (a diverged run is never tested): not in the
    comparison, which therefore flatters the configuration; the report says so."""
    return sum(r.status in FINISHED for r in row.runs) - len(_scored(row))


def pooled_seed_sd(rows: list[Row]) -> Pooled | None:
    """The per-seed standard deviation of test accuracy pooled over the configurations with two
    or more scored runs (sum of (n - 1) s^2 over sum of (n - 1)); None when there are none."""
    total, df, configs = 0.0, 0, 0
    for row in rows:
        scores = [float(r.result["test_acc"]) for r in _scored(row) if r.result]
        if len(scores) > 1:
            mean = sum(scores) / len(scores)  # plain Python: numpy's overhead on a handful of seeds, row after row
            total += sum((s - mean) ** 2 for s in scores)
            df += len(scores) - 1
            configs += 1
    return Pooled(math.sqrt(total / df), df, configs) if df else None


class _Pairs:
    """Two configurations' runs as `compare` takes them: right/wrong on the test examples every
    run shares when every run kept its predictions, else the stored test scores."""

    def __init__(self, reader: Reader, pooled: Pooled | None) -> None:
        self.reader = reader
        self.pooled = pooled
        self._seeds: dict[int, tuple[list[Record], Seeds | None]] = {}
        self._summaries: dict[tuple[int, int], Runs] = {}  # (row, id of a canonical row set): the baseline's, once

    def runs(self, rows: list[Row], i: int, *, read: bool = True) -> tuple[list[Record], Seeds | None]:
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

    def _pool(self, na: int, nb: int) -> dict[str, float]:
        if self.pooled is not None and min(na, nb) == 1:
            return {"seed_sd": self.pooled.sd, "seed_df": self.pooled.df}
        return {}

    def _side(self, i: int, seeds: Seeds, shared: np.ndarray) -> Runs:
        """Row i's runs on `shared` as `compare` takes them; kept for a canonical row set (the baseline's)."""
        key = (i, id(shared))
        side = self._summaries.get(key) if self.reader.canonical(shared) else None
        if side is None:
            side = runs(np.stack([right_on(r, shared) for r in seeds.runs]))
            if self.reader.canonical(shared):
                self._summaries[key] = side
        return side

    def compare(self, rows: list[Row], a: int, b: int) -> Got:
        """(verdict, per-seed scores compared, both sides' predictions or None), or why not."""
        runs_a, seeds_a = self.runs(rows, a)
        runs_b, seeds_b = self.runs(rows, b, read=seeds_a is not None)
        if not runs_a or not runs_b:
            return "no run with a test score" if runs_a else "the baseline has no run with a test score"
        pool = self._pool(len(runs_a), len(runs_b))
        if seeds_a is not None and seeds_b is not None:
            shared = shared_rows([r.rows for r in seeds_a.runs + seeds_b.runs])
            if len(shared) == 0:
                return "no shared test examples (different data or split)"
            side_a = self._side(a, seeds_a, shared)
            side_b = runs(np.stack([right_on(r, shared) for r in seeds_b.runs]))
            return compare(side_a, side_b, **pool), (side_a.scores, side_b.scores), (seeds_a, seeds_b)
        scores = (_scores(runs_a), _scores(runs_b))
        return compare(scores[0], scores[1], **pool), scores, None

    def against(self, rows: list[Row], a: int, chunk: list[int]) -> dict[int, Got]:
        """`compare(rows, a, i)` for each row i of `chunk`, in order. The rows whose runs all hold
        row a's test rows (in a sweep, nearly every row), and the rows compared on their scores,
        are compared together by seed count (`compare_many`): the same verdicts, in a fraction
        of the time."""
        runs_a, seeds_a = self.runs(rows, a)
        rows_a = _aligned(seeds_a)
        out: dict[int, Got] = {}
        on_rows: dict[int, list[int]] = {}  # seeds of the row -> rows compared on a's test rows
        on_scores: dict[int, list[int]] = {}  # seeds of the row -> rows compared on scores
        for i in chunk:
            runs_b, seeds_b = self.runs(rows, i, read=seeds_a is not None)
            if not runs_a or not runs_b:
                out[i] = self.compare(rows, a, i)  # why not
            elif seeds_a is None or seeds_b is None:
                on_scores.setdefault(len(runs_b), []).append(i)
            elif rows_a is not None and _aligned(seeds_b) is rows_a:
                on_rows.setdefault(len(seeds_b.runs), []).append(i)
            else:
                out[i] = self.compare(rows, a, i)
        for n, members in on_rows.items():
            assert seeds_a is not None and rows_a is not None
            side_a = self._side(a, seeds_a, rows_a)
            sides = [self._seeds[i][1] for i in members]
            right = np.stack([np.stack([r.correct for r in side.runs]) for side in sides])  # type: ignore[union-attr]
            scores = np.count_nonzero(right, axis=2) / right.shape[2]
            verdicts = compare_many(side_a, right, **self._pool(len(runs_a), n))
            for i, verdict, row_scores, side in zip(members, verdicts, scores, sides, strict=True):
                assert side is not None
                out[i] = (verdict, (side_a.scores, row_scores), (seeds_a, side))
        scores_a = _scores(runs_a)
        for n, members in on_scores.items():
            scores_b = np.stack([_scores(self.runs(rows, i, read=False)[0]) for i in members])
            for i, verdict, row_scores in zip(members, compare_many(scores_a, scores_b, **self._pool(len(runs_a), n)),
                                              scores_b, strict=True):
                out[i] = (verdict, (scores_a, row_scores), None)
        return {i: out[i] for i in chunk}

    def ensembles(self, a: int, paired: list[int]) -> list[tuple[int, Moments, float, int]]:
        """(row, moments, McNemar p, shared examples) of each `paired` row's seed ensemble against
        row a's, the rows on a's test rows together."""
        seeds_a = self._seeds[a][1]
        assert seeds_a is not None
        ens_a = seeds_a.ensemble
        out, together = [], []
        for i in paired:
            ens_b = self._seeds[i][1].ensemble  # type: ignore[union-attr]
            if ens_b.rows is ens_a.rows:
                together.append(i)
            elif (pair := _ensemble_pair(ens_a, ens_b)) is not None:
                out.append((i, *pair))
        if together:
            ca = ens_a.correct
            cb = np.stack([self._seeds[i][1].ensemble.correct for i in together])  # type: ignore[union-attr]
            both = np.count_nonzero(cb & ca, axis=1).tolist()
            only_b = (np.count_nonzero(cb, axis=1) - both).tolist()
            only_a = int(np.count_nonzero(ca)) - np.array(both)
            out += [(i, m, mcnemar_p_counts(int(x), y), len(ca)) for i, m, x, y in
                    zip(together, paired_moments(ca, cb), only_a, only_b, strict=True)]
        return sorted(out, key=lambda e: e[0])


def _scores(runs: list[Record]) -> np.ndarray:
    return np.array([r.result["test_acc"] for r in runs if r.result], dtype=float)


def _aligned(seeds: Seeds | None) -> np.ndarray | None:
    """The test rows all the runs hold, as one array, when they hold the same array (the
    reader makes equal row sets one); else None."""
    if seeds is None:
        return None
    first = seeds.runs[0].rows
    return first if all(r.rows is first for r in seeds.runs) else None


Got = tuple[Verdict, tuple[np.ndarray, np.ndarray], tuple[Seeds, Seeds] | None] | str
CHUNK = 256  # rows compared in one batch: bounds what is held of a 10,000-job sweep's right/wrong


def compare_rows(rows: list[Row], base: int, predictions: Callable[[str], Predictions | None], *,
                 effect: float | None = None, lead: list[tuple[int, int, str]] | None = None,
                 cache: Cache | None = None) -> list[Lead]:
    """Fill in each row's `headline` (against the baseline) and `ensemble` (seed ensemble)
    comparison; return the `lead` pairs (a, b, kind) compared the same way."""
    pooled = pooled_seed_sd(rows)
    pairs = _Pairs(Reader(predictions, cache), pooled)
    keep = {base} | {i for pair in lead or [] for i in pair[:2]}
    found: list[tuple[int, Verdict]] = []
    ensembles: list[tuple[int, Moments, float, int]] = []  # (row, moments, McNemar p, shared examples)
    others = [i for i in range(len(rows)) if i != base]
    for start in range(0, len(others), CHUNK):
        chunk = others[start:start + CHUNK]
        paired = []
        for i, got in pairs.against(rows, base, chunk).items():
            if isinstance(got, str):
                rows[i].comparison_note = got
                continue
            verdict, rows[i].scores, both = got
            found.append((i, verdict))
            if both is None:
                rows[i].comparison_note = "no per-example predictions in the runs directory: seeds only"
            else:
                paired.append(i)
        ensembles += pairs.ensembles(base, paired) if paired else []
        for i in chunk:
            if i not in keep:
                pairs.forget(i)
    _headlines(rows, base, found, pooled, effect)
    boots = two_level_bootstrap_many([m for _, m, _, _ in ensembles], samples=_replicates(len(ensembles)))
    for (i, _, p, n), boot in zip(ensembles, boots, strict=True):
        rows[i].ensemble = Comparison(boot.diff, boot.low, boot.high, p, n)
    _aso([row for row in rows if row.headline is not None])
    return _leads(rows, base, lead or [], pairs)


def _headlines(rows: list[Row], base: int, found: list[tuple[int, Verdict]], pooled: Pooled | None,
               effect: float | None) -> None:
    """Each compared row's headline: its verdict, Holm-adjusted over the rows."""
    found.sort(key=lambda f: f[0])
    unscored_base = _unscored(rows[base])
    for (i, _), verdict in zip(found, adjust([v for _, v in found]), strict=True):
        row = rows[i]
        one = min(verdict.seeds) == 1 and pooled is not None
        row.headline = SeedComparison(verdict, None, prob_better(row.scores[1], row.scores[0]),  # type: ignore[index]
                                      unscored=(unscored_base, _unscored(row)), pooled=pooled if one else None)
        if effect is not None and not math.isnan(verdict.seed_vars[0]):
            row.headline.needed_effect = seeds_needed(*verdict.seed_vars, verdict.test_sd**2, effect)


def _leads(rows: list[Row], base: int, lead: list[tuple[int, int, str]], pairs: _Pairs) -> list[Lead]:
    """The comparisons the report leads with. Against the baseline: the row's headline (Holm over
    the table's rows). The others (each model's best against the overall best): Holm over them,
    one family, so that eight models do not give eight chances of a false winner."""
    out: list[Lead] = []
    own: list[int] = []  # positions in `out` of the leads compared here
    for a, b, kind in lead:
        if a == base and rows[b].headline is not None:
            out.append(Lead(a, b, kind, rows[b].headline.result, rows[b].headline.pooled))  # type: ignore[union-attr]
            continue
        got = pairs.compare(rows, a, b)
        if not isinstance(got, str):
            one = min(got[0].seeds) == 1 and pairs.pooled is not None
            own.append(len(out))
            out.append(Lead(a, b, kind, got[0], pairs.pooled if one else None))
    if len(own) > 1:
        for k, verdict in zip(own, adjust([out[k].result for k in own]), strict=True):
            out[k] = dataclasses.replace(out[k], result=verdict)
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


def _ensemble_pair(a: Run, b: Run) -> tuple[Moments, float, int] | None:
    """The two seed ensembles' right/wrong on the examples both hold, as the bootstrap's moments
    (one run a side: the paired bootstrap), with McNemar's exact p."""
    shared = shared_rows([a.rows, b.rows])
    if len(shared) == 0:
        return None
    ca, cb = right_on(a, shared), right_on(b, shared)
    return moments(ca[None], cb[None]), mcnemar_p(ca, cb), len(shared)
