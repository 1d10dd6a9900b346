"""A sweep's report as markdown (`to_markdown`): what `report.md` and `report.html` show."""

from __future__ import annotations

import json

import numpy as np

from reports.bootstrap import ENUMERATE_COMPOSITIONS, EXACT_INFORMATIVE
from reports.budget import budget_points
from reports.collect import Record, retry_note
from reports.compare import SeedComparison
from reports.seeds import ASO_SAMPLES, ASO_TAU
from reports.tables import FINISHED, Row, SweepReport, best_note

FEW_SEEDS = 5  # below this, bootstrap intervals over seeds are known to be too narrow


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _mean_std(stat: tuple[float, float | None] | None, decimals: int, bold: bool = False) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    text = _fmt(mean, decimals) + (f" ± {_fmt(std, decimals)}" if std is not None else "")
    return f"**{text}**" if bold else text


def _best(rows: list[Row], column: str, direction: str | None) -> set[int]:
    if direction is None or len(rows) < 2:
        return set()
    means = {i: row.stats[column][0] for i, row in enumerate(rows) if column in row.stats}
    if not means:
        return set()
    target = max(means.values()) if direction == "max" else min(means.values())
    return {i for i, m in means.items() if m == target}


def _show(key: str, value: object) -> str:
    if not isinstance(value, str):
        return json.dumps(value)
    if key == "model" and value.startswith(("/", "./", "../")):
        return value.rstrip("/").rsplit("/", 1)[-1]  # a local directory: its name (the path is in config.json)
    return value


def label_cells(report: SweepReport, row: Row) -> list[str]:
    return [_show(k, row.label[k]) for k in report.keys]


def label_text(report: SweepReport, row: Row) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(report.keys, label_cells(report, row), strict=True))


def runs_cell(row: Row) -> str:
    """`completed/runs`, then what became of the others."""
    others = [f"{row.count(s)} {s}" for s in ("collapsed", "diverged", "failed", "pruned", "running", "waiting")
              if row.count(s)]
    return f"{row.n}/{len(row.runs)}" + (f" ({', '.join(others)})" if others else "")


def _table(header: list[str], align: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def to_markdown(report: SweepReport, *, description: str = "") -> str:
    out = [f"# Sweep `{report.name}`", ""]
    if description:
        out += [description.strip(), ""]
    if not report.rows:
        out += ["No finished job yet.", ""]
    else:
        out += _configurations(report)
        out += _headline(report)
        out += _ensembles(report)
    out += _budget(report)
    if report.excluded:
        out += ["## Runs that did not complete", ""]
        out += _table(["job", "point", "status", "reason"], ["---"] * 4, [
            [r.job_id, ", ".join(f"{k}={v}" for k, v in r.point.items()), r.status,
             r.reason or _status_reason(r)] for r in report.excluded])
        out += [""]
    if report.pending:
        out += [f"Still to finish: {len(report.pending)} job(s) "
                f"({', '.join(sorted({r.status for r in report.pending}))}).", ""]
    out += ["Trials per state: " + ", ".join(f"{state} {n}" for state, n in report.states.items()), ""]
    top = report.study.get("best")
    if top:
        params = ", ".join(f"{k}={v}" for k, v in top["params"].items())
        what = "Best trial" if report.study.get("sampled") else "Best single run (one seed; the table's best is by mean)"
        out += [f"{what}: #{top['number']} (job {top['job_id']}), {report.metric} {top['value']:.4f}: {params}.", ""]
    if report.study.get("importances"):
        out += ["Parameter importances (optuna.importance, fANOVA): " + ", ".join(
            f"{k} {v:.3f}" for k, v in report.study["importances"].items()), ""]
    for title, path in report.plots:
        out += [f"![{title}]({path})", ""]
    return "\n".join(out).rstrip() + "\n"


def _configurations(report: SweepReport) -> list[str]:
    rows = report.rows
    unstable = any(row.unstable for row in rows)
    best = {column: _best(rows, column, direction) for column, _, direction, _ in report.columns}
    extra = [c for c in dict.fromkeys([report.metric, "test_acc"]) if unstable]
    decimals = {c: d for c, _, _, d in report.columns}
    header = [*report.keys, "runs", *(h for _, h, _, _ in report.columns), *(f"{c} (all runs)" for c in extra), "best"]
    body = []
    for i, row in enumerate(rows):
        mark = ""
        if i == report.best:
            mark = "best" + (" (not every run completed)" if row.unstable or row.count("failed") else "")
        body.append([*label_cells(report, row), runs_cell(row),
                     *(_mean_std(row.stats.get(c), d, i in best[c]) for c, _, _, d in report.columns),
                     *(_mean_std(row.stats_all.get(c), decimals.get(c, 4)) for c in extra), mark])
    out = _table(header, ["---"] * len(report.keys) + ["---:"] * (1 + len(report.columns) + len(extra)) + ["---"], body)
    seeds = ("mean ± sample standard deviation over the completed runs (seeds) of each configuration"
             if report.several_seeds else "one run per configuration")
    notes = [f"runs: completed / all runs of the configuration. Columns: {seeds}."]
    if unstable:
        notes.append("(all runs): over every run with a score, a collapsed or diverged run counted as what it scored.")
    notes.append("Best value of each column in bold (highest accuracy, macro-F1 and samples/s, lowest loss, ECE and "
                 "runtime). ECE: 15 equal-width confidence bins.")
    if report.best is not None:
        notes.append(best_note(report).capitalize() + ".")
    if retried := retry_note([run for row in rows for run in row.runs]):
        notes.append(retried)
    return [*out, "", " ".join(notes), ""]


def _headline(report: SweepReport) -> list[str]:
    compared = [(i, row) for i, row in enumerate(report.rows) if i != report.baseline]
    if not compared:
        return []
    base = report.rows[report.baseline]
    k = sum(row.headline is not None and row.headline.testable for _, row in compared)
    k_aso = sum(row.headline is not None and row.headline.aso is not None for _, row in compared)
    replicates = sorted({row.headline.boot.replicates for _, row in compared if row.headline is not None})
    effect = report.effect
    out = [f"## Across seeds: each configuration against the baseline ({label_text(report, base)})", "",
           "Δ test_acc: the configuration's mean per-seed test accuracy minus the baseline's, on the test examples "
           "every run shares. 95% CI: two-level bootstrap (" + " or ".join(f"{r:,}" for r in replicates)
           + " replicates: the seeds of each configuration resampled, then the shared test examples, one resample "
           "for every run). p: two-sided, the bootstrap's own tail probability of a difference on the other side of "
           f"0. p (Holm): Holm–Bonferroni-adjusted over the {k} configuration(s) compared. ASO: Almost Stochastic "
           f"Order's ε_min (Dror et al. 2019, as in deepsig: {ASO_SAMPLES:,} bootstrap iterations, confidence "
           f"Bonferroni-adjusted over the {k_aso} configuration(s) with ASO, 1 − 0.05/{max(1, k_aso)}) "
           f"of the row over the baseline and of the baseline over the row; below {ASO_TAU} the first is almost "
           "stochastically better. P(>): the share of (row seed, baseline seed) pairs where the row's test accuracy "
           "is higher, ties half (Bouthillier et al. 2021). Verdict: better or worse when p (Holm) < 0.05 and the "
           f"better side's ε_min < {ASO_TAU}, otherwise cannot tell. Seeds needed: per configuration, for the 95% "
           "interval of the difference to exclude 0 if the true difference were the observed Δ"
           + (f" (and {effect:+g}, --effect)" if effect is not None else "")
           + ", from the observed seed spreads and the test set's own spread (a t interval; at that many seeds a "
           "new experiment would exclude 0 about half the time, for 80% power take about twice as many; – when no "
           "number up to 1,000 does, or one seed gives no spread).", ""]
    header = [*report.keys, "seeds", "Δ test_acc", "95% CI", "p", "p (Holm)", "ASO ε row>base", "ASO ε base>row",
              "P(>)", "verdict", "seeds needed"] + (["at --effect"] if effect is not None else [])
    body = []
    notes: set[str] = set()
    for _, row in compared:
        h = row.headline
        if h is None:
            body.append([*label_cells(report, row), "–", "–", "–", "–", "–", "–", "–", "–", row.comparison_note or "–",
                         "–"] + (["–"] if effect is not None else []))
            continue
        if h.aso is None:
            notes.add("ASO –: it needs two or more seeds on each side.")
        if h.seeds[0] == 1 and h.seeds[1] == 1:
            notes.add("One seed a side: the comparison covers test-set variance only, not the seeds'.")
        elif min(h.seeds) == 1:
            notes.add("One seed on one side: that side's seed variance is not covered, only its test-set variance.")
        elif min(h.seeds) < FEW_SEEDS:
            notes.add(f"Fewer than {FEW_SEEDS} seeds on a side: a bootstrap over so few seeds gives intervals that "
                      "are too narrow; read the verdict as a hint and add seeds.")
        if h.examples and not h.boot.exact:
            notes.add(f"Where the runs disagree on more than {EXACT_INFORMATIVE} of the test examples, the test-example "
                      "level is its normal limit (the resample's exact mean and covariance) and p is the mean over "
                      "the seed resamples of its normal tail, so p is not limited by the number of replicates.")
        if h.examples and h.boot.exact:
            notes.add(f"Where the runs disagree on {EXACT_INFORMATIVE} or fewer test examples, those are resampled "
                      "exactly for the interval, and p is the tail of that exact resampling (a saddlepoint "
                      "approximation, Lugannani–Rice, averaged over the seed resamples), not a count of replicates.")
        if h.examples == 0:
            notes.add("seeds only: no per-example predictions in the runs directory, so the interval covers the "
                      "seeds alone (stored test accuracies), not the test set's own variance; p is exact over every "
                      f"resample of the seeds (sampled past {ENUMERATE_COMPOSITIONS:,} of them a side).")
        if any(h.unscored):
            notes.add("left out: runs that finished without a test score (a diverged run is never tested) are not in "
                      "Δ, which flatters the side that lost them; the runs column counts them.")
        if not h.testable:
            notes.add("One seed on a side and no per-example predictions: no spread to test a difference against "
                      "(no interval, no verdict).")
        aso = (f"{h.aso.eps_a_over_b:.3f}", f"{h.aso.eps_b_over_a:.3f}") if h.aso else ("–", "–")
        ci = f"[{h.boot.low:+.4f}, {h.boot.high:+.4f}]" if h.testable else "–"
        p_cells = (_p(h.boot.p_value), _p(h.p_holm)) if h.testable else ("–", "–")
        body.append([*label_cells(report, row), f"{h.seeds[1]} vs {h.seeds[0]}", f"{h.boot.diff:+.4f}", ci, *p_cells, *aso,
                     f"{h.p_better:.2f}", h.verdict + (" (significant)" if h.significant else "") + _left_out(h),
                     "–" if h.needed is None else str(h.needed)]
                    + (["–" if h.needed_effect is None else str(h.needed_effect)] if effect is not None else []))
    out += _table(header, ["---"] * len(report.keys) + ["---:"] * 8 + ["---", "---:"] + (["---:"] if effect else []),
                  body)
    return [*out, "", *sorted(notes), ""] if notes else [*out, ""]


def _p(p: float) -> str:
    """A p-value: below 1e-16 (or exactly 0, no bootstrap resample on the other side of 0) as such."""
    return "< 1e-16" if p < 1e-16 else f"{p:.3g}"


def _left_out(h: SeedComparison) -> str:
    parts = [f"{n} {side} run(s)" for side, n in zip(("baseline", "row"), h.unscored, strict=True) if n]
    return f"; left out: {' and '.join(parts)} without a test score" if parts else ""


def _ensembles(report: SweepReport) -> list[str]:
    rows = [(i, row) for i, row in enumerate(report.rows) if i != report.baseline and row.ensemble is not None]
    if not rows or not report.several_seeds:
        return []
    out = ["## Secondary: seed ensembles against the baseline's", "",
           "Each configuration's class probabilities averaged over its seeds (an ensemble of n seeds), then compared "
           "example by example: the accuracy difference with a paired bootstrap interval (the shared examples "
           "resampled; the bootstrap above with one run a side) and McNemar's exact test; not corrected for multiple "
           "comparisons. This "
           "compares ensembles, which a sweep does not deploy, and models test-set sampling only: it is not the "
           "headline.", ""]
    body = []
    for _, row in rows:
        c = row.ensemble
        assert c is not None and row.headline is not None
        body.append([*label_cells(report, row), f"{row.headline.seeds[1]} vs {row.headline.seeds[0]}", f"{c.diff:+.4f}",
                     f"[{c.low:+.4f}, {c.high:+.4f}]", f"{c.p_value:.4g}", str(c.n)])
    out += _table([*report.keys, "ensemble of n seeds", "Δ test_acc", "95% CI", "McNemar p", "examples"],
                  ["---"] * len(report.keys) + ["---:"] * 5, body)
    return [*out, ""]


def _budget(report: SweepReport) -> list[str]:
    if not report.budget:
        return []
    best = "best" if report.maximize else "lowest"
    out = ["## Expected validation performance against budget", "",
           f"Dodge et al. 2019: the expected {best} {report.metric} among k trials drawn (with replacement) from this "
           f"sweep's finished runs, ± its standard deviation; every finished run counts (collapsed and diverged ones "
           "as they scored, when they have a score)" + (", one curve per model" if len(report.budget) > 1 else "")
           + ". The estimator treats the runs as independent draws (a grid's points and seeds, random search); for "
           "a study whose sampler learns as it goes (TPE) it describes the trials it drew, not a fresh search.", ""]
    ks = sorted({k for c in report.budget for k in budget_points(c.n)})
    body = []
    for k in ks:
        cells = [str(k)]
        for c in report.budget:
            hit = np.flatnonzero(c.ks == k)
            cells.append(f"{c.mean[hit[0]]:.4f} ± {c.std[hit[0]]:.4f}" if len(hit) else "")
        body.append(cells)
    out += _table(["trials k", *(f"{c.label} (n={c.n})" for c in report.budget)], ["---:"] * (1 + len(report.budget)),
                  body)
    return [*out, ""]


def _status_reason(record: Record) -> str:
    if record.status == "collapsed" and record.result:
        value = record.result.get("val_acc")
        return f"val_acc {value:.4f} at chance" if isinstance(value, (int, float)) else "at chance"
    if record.status == "diverged":
        return "training loss not finite or exploded"
    return ""


__all__ = ["FINISHED", "to_markdown", "label_cells", "label_text", "runs_cell"]
