"""A sweep's report as data: one `Row` per configuration, each with its comparison against the
baseline (`SeedComparison`), and the `SweepReport` that holds them. `reports.tables` fills them
in, `reports.compare` compares them; `reports.markdown`, `reports.html` and `reports.console`
render them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reports.budget import Curve
from reports.collect import Record
from reports.seeds import Aso
from reports.stats import Comparison
from reports.verdict import Verdict
from trainer.jobdir import COLLAPSED, COMPLETED, DIVERGED, METRICS

DEFAULT_METRIC = "val_acc"


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



@dataclass
class Row:
    label: dict[str, Any]
    runs: list[Record]  # every job of the configuration, whatever became of it
    stats: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # over completed runs
    stats_all: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # over every run with a value
    headline: SeedComparison | None = None  # across seeds, against the baseline
    ensemble: Comparison | None = None  # the seed ensembles, example by example
    scores: tuple[np.ndarray, np.ndarray] | None = None  # per-seed test scores compared: (baseline, row)
    comparison_note: str = ""

    @property
    def completed(self) -> list[Record]:
        return [r for r in self.runs if r.status == COMPLETED and r.result is not None]

    @property
    def n(self) -> int:
        return len(self.completed)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)

    @property
    def unstable(self) -> bool:
        """Any run collapsed or diverged."""
        return any(r.status in (COLLAPSED, DIVERGED) for r in self.runs)


@dataclass
class SweepReport:
    name: str
    keys: list[str]
    rows: list[Row]
    baseline: int
    excluded: list[Record]  # runs that did not complete (collapsed, diverged, failed, pruned), with their reasons
    pending: list[Record]  # waiting or running
    states: dict[str, int]
    several_seeds: bool
    metric: str = DEFAULT_METRIC  # the selection metric the jobs stored (`metric` in their results)
    best: int | None = None  # the row best by the selection metric's mean over all its runs
    effect: float | None = None
    budget: list[Curve] = field(default_factory=list)  # expected best validation score after k trials
    columns: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    study: dict[str, Any] = field(default_factory=dict)  # best trial, parameter importances
    plots: list[tuple[str, str]] = field(default_factory=list)  # (title, relative path)
    unwritten: str = ""  # why its files could not be written (a read-only runs directory), if so
    lead: list[Lead] = field(default_factory=list)  # the comparisons the report leads with
    seeds_used: list[int] = field(default_factory=list)  # the seeds the sweep's runs used
    budget_note: str = ""  # which runs the budget curve counts, and how

    @property
    def maximize(self) -> bool:
        return METRICS.get(self.metric, "maximize") == "maximize"
