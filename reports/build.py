"""Build and write the reports of every (or the named) sweep in a storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reports.collect import Predictions, load_predictions, load_records, study_summary, trial_states
from reports.markdown import to_markdown
from reports.plots import write_plots
from reports.tables import SweepReport, build_report, to_csv, to_json
from sweeper.store import SweepStore, open_storage, sweep_names
from trainer.io import atomic_write


def _write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)


def generate(*, storage: str, runs_dir: Path, sweeps: list[str] | None = None, baseline: str | None = None,
             fmt: str = "md", plots: bool = True, effect: float | None = None, html: bool = True) -> list[SweepReport]:
    """Write runs/<sweep>/report.md and report.html (and .csv/.json with that format), its plots,
    and runs/REPORT.md; return the reports."""
    if effect is not None and not 0 < abs(effect) < 1:
        raise ValueError(f"--effect: {effect!r} is out of range; expected a difference in accuracy, 0 < |effect| < 1 "
                         "(e.g. 0.01)")
    backend = open_storage(storage, readonly=True)  # a report only reads: a read-only runs directory works
    names = sweep_names(backend)
    unknown = [s for s in sweeps or [] if s not in names]
    if unknown:
        raise ValueError(f"no sweep named {', '.join(map(repr, unknown))} in {storage}; sweeps: {', '.join(names) or 'none'}")
    reports = []
    for name in sweeps or names:
        store = SweepStore(backend, name, create=False)
        records = load_records(store)
        sweep_dir = runs_dir / name

        def predictions(job_id: str, sweep_dir: Path = sweep_dir) -> Predictions | None:
            return load_predictions(sweep_dir / job_id)

        report = build_report(name, records, states=trial_states(store), predictions=predictions,
                              baseline=baseline, effect=effect)
        report.study = study_summary(store)
        try:
            _write_files(report, records, sweep_dir, predictions, plots=plots, html=html, fmt=fmt,
                         description=str(store.study.user_attrs.get("description", "")))
        except OSError as exc:  # e.g. a read-only copy of the runs directory: the report is still printed
            report.plots = []
            report.unwritten = f"{exc.filename or sweep_dir}: {exc.strerror or exc}"
        reports.append(report)
    index = ["# Sweep reports", ""] + [
        f"- [{r.name}]({r.name}/report.md) ([html]({r.name}/report.html)): {sum(row.n for row in r.rows)} completed "
        f"job(s) in {len(r.rows)} configuration(s), {len(r.excluded)} did not complete, {len(r.pending)} still to "
        "finish" for r in reports]
    if not any(r.unwritten for r in reports):
        _write_text(runs_dir / "REPORT.md", "\n".join(index) + "\n")
    return reports


def _write_files(report: SweepReport, records: list, sweep_dir: Path, predictions: Any, *, plots: bool, html: bool,
                 fmt: str, description: str) -> None:
    if plots:
        report.plots = write_plots(report, records, sweep_dir / "report", predictions)
    markdown = to_markdown(report, description=description)
    _write_text(sweep_dir / "report.md", markdown)
    if html:
        from reports.html import to_html

        _write_text(sweep_dir / "report.html", to_html(markdown, sweep_dir, title=f"Sweep {report.name}"))
    if fmt == "csv":
        _write_text(sweep_dir / "report.csv", to_csv([report]))
    elif fmt == "json":
        _write_text(sweep_dir / "report.json", to_json([report]))
