"""The terminal summary of a report: one narrow table per sweep (readable at 80 columns: the
numbers never wrap, the configuration column folds), the notes it needs, and where the full
report is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from reports.labels import label_cells, label_text, runs_cell
from reports.lead import lead_sentences
from reports.rows import Row, SweepReport
from reports.tables import best_note, counts_text
from trainer.jobdir import COLLAPSED, DIVERGED, FAILED, PRUNED, RUNNING, WAITING

SHOWN = 20  # rows in the terminal; the rest are in report.md


def _stat(row: Row, column: str) -> str:
    """Over every run with a value (a collapsed seed as it scored): the runs Δ counts."""
    if column not in row.stats_all:
        return "–"
    mean, std = row.stats_all[column]
    return f"{mean:.3f}" + (f"±{std:.3f}" if std is not None else "")


def _runs(row: Row) -> str:
    """`completed/runs`; for a configuration none of whose runs has a score yet, what became of them."""
    if row.n or row.stats_all:
        return f"{row.n}/{len(row.runs)}"
    return f"{row.n}/{len(row.runs)} " + ", ".join(
        f"{row.count(s)} {s}" for s in (FAILED, COLLAPSED, DIVERGED, PRUNED, RUNNING, WAITING) if row.count(s))


def _shown(report: SweepReport) -> list[int]:
    if len(report.rows) <= SHOWN:
        return list(range(len(report.rows)))
    sign = 1 if report.maximize else -1
    ranked = sorted((i for i, row in enumerate(report.rows) if report.metric in row.stats_all),
                    key=lambda i: (-sign * report.rows[i].stats_all[report.metric][0], i))
    keep = {report.baseline, *ranked[: SHOWN - 1]}
    return sorted(keep)


def summary(report: SweepReport, sweep_dir: Path) -> list[Any]:
    """Rich renderables: the table, its notes, the paths of report.md and report.html."""
    out: list[Any] = [Text(f"{report.name}: {counts_text(report)}")]
    if not report.rows:
        out.append(Text(f"{report.name}: no job yet"))
    else:
        out += [Text(sentence) for sentence in lead_sentences(report)]
        table = Table(title=f"{report.name}: {len(report.rows)} configuration(s)", box=box.SIMPLE_HEAD,
                      title_justify="left", pad_edge=False)
        table.add_column(", ".join(report.keys), overflow="fold", ratio=1, min_width=10)
        table.add_column("runs", no_wrap=True, justify="right")
        table.add_column("test_acc", no_wrap=True, justify="right")
        table.add_column("Δ test_acc [95% CI]", no_wrap=True, justify="right")
        table.add_column("verdict", no_wrap=True)
        for i in _shown(report):
            row = report.rows[i]
            h = row.headline
            if i == report.baseline:
                delta, verdict = "", "baseline"
            elif h is None:
                delta, verdict = "–", ""
            elif not h.testable:
                delta, verdict = f"{h.result.diff:+.3f} (1 seed)", "unclear"
            else:
                v = h.result
                delta = f"{v.diff:+.3f} [{v.low:+.3f},{v.high:+.3f}]"
                verdict = {"better": "better*", "worse": "worse*"}.get(h.verdict, "unclear")
            label = ", ".join(label_cells(report, row))
            if i == report.best:
                label += " (best!)" if row.unstable else " (best)"
            table.add_row(label, _runs(row), _stat(row, "test_acc"),
                          delta, verdict)
        out.append(table)
        notes = ["runs: completed/all. test_acc: mean ± std over every run with a test score (a collapsed seed as it "
                 "scored; report.md has it over completed runs too). Δ: over the same runs, the mean per-seed test "
                 "accuracy minus the baseline's, 95% interval "
                 "from the seeds' and the test set's variance (reports.verdict). better*/worse*: significant (p "
                 "Holm-adjusted over the rows < 0.05); unclear: cannot tell."]
        unstable = [row for row in report.rows if row.n < len(row.runs)]
        if unstable:
            notes.append("Not every run completed (yet): " + "; ".join(
                f"{label_text(report, row)}: {runs_cell(row)}" for row in unstable[:5])
                + (f"; {len(unstable) - 5} more" if len(unstable) > 5 else "") + ".")
        if report.best is not None:
            notes.append(best_note(report).capitalize() + ".")
        if warned := sum(bool((r.result or {}).get("warnings")) for row in report.rows for r in row.runs):
            notes.append(f"{warned} run(s) warned at their start of settings that could not work as written or an "
                         "evaluation set too small for these statistics: see report.md.")
        if len(report.rows) > SHOWN:
            notes.append(f"Shown: the baseline and the {SHOWN - 1} best by {report.metric}; "
                         f"{len(report.rows) - len(_shown(report))} more rows in report.md.")
        out += [Text(note) for note in notes]
    out.append(Text(f"Full report: {sweep_dir / 'report.md'} ({sweep_dir / 'report.html'})", overflow="fold"))
    return out
