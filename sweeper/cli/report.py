"""`sweep report`: result tables, comparisons across seeds and plots of finished sweeps (reports/).

reports/ is imported inside the command, when it runs: it imports numpy, matplotlib and optuna,
which `sweep --help` and the other commands do without."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sweeper.cli.options import RunsDir, Storage
from sweeper.cli.output import err, fail


class ReportFormat(str, Enum):
    md = "md"
    csv = "csv"
    json = "json"


def report(
    sweeps: Annotated[list[str] | None, typer.Argument(help="Sweep names (default: every sweep in the storage).")] = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline row, e.g. model=bert,pooling=cls (default: the first row).")
    ] = None,
    format_: Annotated[
        ReportFormat, typer.Option("--format", help="Also write and print report.csv or report.json.")
    ] = ReportFormat.md,
    plots: Annotated[bool, typer.Option(help="Write the PNG plots.")] = True,
    effect: Annotated[
        float | None,
        typer.Option(help="A difference in test accuracy worth finding (e.g. 0.01): the seeds needed to see it."),
    ] = None,
) -> None:
    """Result tables, comparisons across seeds and plots: runs/<sweep>/report.md, report.html, runs/REPORT.md."""
    from reports import tables
    from reports.build import generate
    from reports.console import summary
    from sweeper.storage import default_storage, missing_storage

    url = storage or default_storage(runs_dir)
    if why := missing_storage(url):
        raise fail(ValueError(why))
    try:
        reports = generate(storage=url, runs_dir=runs_dir, sweeps=sweeps or None, baseline=baseline,
                           fmt=format_.value, plots=plots, effect=effect)
    except ValueError as exc:
        raise fail(exc) from None
    if format_ == ReportFormat.csv:
        typer.echo(tables.to_csv(reports), nl=False)
    elif format_ == ReportFormat.json:
        typer.echo(tables.to_json(reports), nl=False)
    else:
        console = Console()
        for r in reports:
            for item in summary(r, runs_dir / r.name):
                console.print(item)
    unwritten = [r for r in reports if r.unwritten]
    for r in unwritten:
        err.print(f"[yellow]warning:[/] the report of {r.name} was printed, not written ({r.unwritten})",
                  highlight=False, soft_wrap=True)
    if not unwritten:
        err.print(f"wrote {runs_dir / 'REPORT.md'} and " + ", ".join(str(runs_dir / r.name / "report.md") for r in reports),
                  highlight=False, soft_wrap=True)
