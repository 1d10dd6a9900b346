"""A sweep's report as markdown (`to_markdown`): what `report.md` and `report.html` show."""

from __future__ import annotations

import numpy as np

from reports.budget import budget_points
from reports.collect import Record, retry_note
from reports.labels import label_cells, label_text, p_text, runs_cell
from reports.lead import lead_sentences
from reports.rows import Row, SeedComparison, SweepReport
from reports.seeds import ASO_SAMPLES, ASO_TAU
from reports.tables import best_note
from trainer.jobdir import COLLAPSED, DIVERGED, FAILED

METHOD = "How these figures are computed"  # the last section; report.html folds it away


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


def _table(header: list[str], align: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines


def to_markdown(report: SweepReport, *, description: str = "") -> str:
    out = [f"# Sweep `{report.name}`", ""]
    if description:
        out += [description.strip(), ""]
    method: list[str] = []
    if not report.rows:
        out += ["No finished job yet.", ""]
    else:
        out += [f"- {sentence}" for sentence in lead_sentences(report, markdown=True)] + [""] if report.lead else []
        out += _configurations(report)
        out += _headline(report, method)
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
    if method:
        out += [f"## {METHOD}", "", *method]
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
            mark = "best" + (" (not every run completed)" if row.unstable or row.count(FAILED) else "")
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
    return [*out, "", " ".join(notes), "", *warnings_notes(report)]


def warnings_notes(report: SweepReport) -> list[str]:
    """What the runs warned of at their start (`warnings` in their results: a warmup longer than
    the run, a batch larger than the training rows, an evaluation set too small for these
    statistics), one paragraph per configuration and kind, beside the table."""
    out = []
    for row in report.rows:
        said: dict[str, tuple[str, int]] = {}
        for run in row.runs:
            for warning in (run.result or {}).get("warnings") or []:
                kind = str(warning.get("kind"))
                message, n = said.get(kind, (str(warning.get("message")), 0))
                said[kind] = (message, n + 1)
        for kind, (message, n) in said.items():
            what = "Evaluation set too small for these statistics" if kind == "small_eval_set" else \
                "Setting that could not work as written"
            out += [f"{what}: {label_text(report, row)} ({n} of {len(row.runs)} run(s)): {message}.", ""]
    return out


def _headline(report: SweepReport, method: list[str]) -> list[str]:
    compared = [(i, row) for i, row in enumerate(report.rows) if i != report.baseline]
    if not compared:
        return []
    base = report.rows[report.baseline]
    k = sum(row.headline is not None and row.headline.testable for _, row in compared)
    k_aso = sum(row.headline is not None and row.headline.aso is not None for _, row in compared)
    effect = report.effect
    out = [f"## Across seeds: each configuration against the baseline ({label_text(report, base)})", ""]
    method += _headline_method(k, k_aso, effect)
    header = [*report.keys, "seeds", "Δ test_acc", "95% CI", "p", "p (Holm)", "ASO ε row>base", "ASO ε base>row",
              "P(>)", "verdict", "seeds needed"] + (["at --effect"] if effect is not None else [])
    notes: set[str] = set()
    body = [_headline_row(report, row, effect, notes) for _, row in compared]
    out += _table(header, ["---"] * len(report.keys) + ["---:"] * 8 + ["---", "---:"] + (["---:"] if effect else []),
                  body)
    return [*out, "", *sorted(notes), ""] if notes else [*out, ""]


def _headline_method(k: int, k_aso: int, effect: float | None) -> list[str]:
    """How the across-seeds table is computed (the page's last section)."""
    return [
        "Δ test_acc: the configuration's mean per-seed test accuracy minus the baseline's, on the test examples every "
        "run shares (over every run with a test score: a collapsed seed counts as it scored). 95% CI and p: "
        "`reports.verdict.compare` (Bouthillier et al. 2021): the difference over its standard error, from the seeds' "
        "variance on each side (Welch's t) and, where every run kept its per-example predictions, the test set's own "
        "variance (how the difference would move on another test set of this size), referred to Student's t with "
        f"Welch–Satterthwaite degrees of freedom. p (Holm): Holm–Bonferroni-adjusted over the {k} configuration(s) "
        "compared; verdict: better or worse when it is below 0.05, otherwise cannot tell. A side with one seed has no "
        "seed spread of its own: it takes the spread pooled over the sweep's configurations with several seeds, or "
        "else the other side's; one seed a side and nothing to pool gives no verdict. Seeds needed: seeds a side for "
        "a true difference of the observed Δ" + (f" (and of {effect:+g}, --effect)" if effect is not None else "")
        + " to be decided at 80% power, from the seed spreads and the test set's variance (– when no number up to "
        "1,000 does, or the seed spread is unknown). `bench/verdict_calibration.py` shows how often this test names a "
        "false winner and how often it finds a real one (docs/benchmarks.md).", "",
        f"ASO: Almost Stochastic Order's ε_min (Dror et al. 2019, as in deepsig: {ASO_SAMPLES:,} bootstrap "
        f"iterations, confidence Bonferroni-adjusted over the {k_aso} configuration(s) with ASO, 1 − 0.05/{max(1, k_aso)}) "
        f"of the row over the baseline and of the baseline over the row; below {ASO_TAU} the first is almost "
        "stochastically better. P(>): the share of (row seed, baseline seed) pairs where the row's test accuracy is "
        "higher, ties half (Bouthillier et al. 2021). Both describe the seeds; neither decides the verdict.", ""]


def _headline_row(report: SweepReport, row: Row, effect: float | None, notes: set[str]) -> list[str]:
    """One row of the across-seeds table; what its cells need explained goes into `notes`."""
    h = row.headline
    if h is None:
        return [*label_cells(report, row), "–", "–", "–", "–", "–", "–", "–", "–", row.comparison_note or "–",
                "–"] + (["–"] if effect is not None else [])
    v = h.result
    if h.aso is None:
        notes.add("ASO –: it needs two or more seeds on each side.")
    if h.pooled is not None:
        notes.add(f"One seed on a side: its seed spread is the one pooled over the {h.pooled.configurations} "
                  f"configuration(s) with several seeds (sd {h.pooled.sd:.4f}, {h.pooled.df} degrees of freedom).")
    elif not v.testable:
        notes.add("–: one seed a side and no configuration with several seeds to pool a seed spread from: a "
                  "difference between single runs is as likely seed luck as a real one (no interval, no verdict).")
    if h.examples == 0:
        notes.add("seeds only: no per-example predictions in the runs directory, so the comparison is about this "
                  "test set (the seeds' variance, Welch's t), not the test set's own variance.")
    if any(h.unscored):
        notes.add("left out: runs that finished without a test score (a diverged run is never tested) are not in "
                  "Δ, which flatters the side that lost them; the runs column counts them.")
    ci = f"[{v.low:+.4f}, {v.high:+.4f}]" if v.testable else "–"
    p_cells = (p_text(v.p_value), p_text(v.p_adjusted if v.p_adjusted is not None else v.p_value)) if v.testable else (
        "–", "–")
    aso = (f"{h.aso.eps_a_over_b:.3f}", f"{h.aso.eps_b_over_a:.3f}") if h.aso else ("–", "–")
    return ([*label_cells(report, row), f"{v.seeds[1]} vs {v.seeds[0]}", f"{v.diff:+.4f}", ci, *p_cells, *aso,
             f"{h.p_better:.2f}", h.verdict + (" (significant)" if h.significant else "") + _left_out(h),
             "–" if v.seeds_needed is None else str(v.seeds_needed)]
            + (["–" if h.needed_effect is None else str(h.needed_effect)] if effect is not None else []))


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
           "resampled: the two-level bootstrap of reports/bootstrap.py with one run a side) and McNemar's exact "
           "test; not corrected for multiple "
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
           f"sweep's launched runs, ± its standard deviation; {report.budget_note}"
           + (", one curve per model" if len(report.budget) > 1 else "")
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
    if record.status == COLLAPSED and record.result:
        value = record.result.get("val_acc")
        return f"val_acc {value:.4f} at chance" if isinstance(value, (int, float)) else "at chance"
    if record.status == DIVERGED:
        return "training loss not finite or exploded"
    return ""
