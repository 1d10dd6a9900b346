"""Build and write the reports of every (or the named) sweep in a storage."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator
from pathlib import Path

from threadpoolctl import threadpool_limits

from reports.cache import Cache
from reports.collect import Predictions, load_predictions, load_records, study_summary, trial_states
from reports.draw import Painter, Plot
from reports.html import to_html
from reports.labels import label_text, runs_cell
from reports.markdown import to_markdown
from reports.plots import plan_plots
from reports.rows import SweepReport
from reports.tables import compare_report, counts_text, tabulate, to_csv, to_json
from sweeper.storage import open_storage, sweep_names
from sweeper.store import SweepStore
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
    # One BLAS thread: the report's matrix products are small (rows x bootstrap replicates), and
    # OpenBLAS's idle threads spin on the CPU the plot helper needs (10,000 trials: 2.55 s -> 2.19 s).
    with _no_gc(), threadpool_limits(limits=1, user_api="blas"), Painter(enabled=plots) as painter:
        reports = _build_all(storage, runs_dir, sweeps, painter, baseline=baseline, fmt=fmt, plots=plots,
                             effect=effect, html=html)
    if not any(r.unwritten for r in reports):
        index = runs_dir / "REPORT.md"
        try:
            before = index.read_text()
        except (OSError, UnicodeDecodeError):
            before = ""
        _write_text(index, merge_index(before, [index_entry(r) for r in reports]))
    return reports


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a report is built: the report allocates objects by
    the million (the storage's trials, the records, the rows) and frees them all at the end, and
    every collection on the way walks all that are alive: a tenth to a fifth of a 10,000-trial
    report's time, for nothing (it makes no cycles worth collecting early)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


INDEX_TITLE = "# Sweep reports"
INDEX_ROWS = 20  # configurations listed per sweep in REPORT.md; the rest are in its report.md


def index_entry(report: SweepReport) -> tuple[str, list[str]]:
    """A sweep's entry of REPORT.md: its line and one line per configuration (those that did not
    all complete first, past INDEX_ROWS)."""
    head = (f"- [{report.name}]({report.name}/report.md) ([html]({report.name}/report.html)): "
            f"{counts_text(report)}; {len(report.rows)} configuration(s)")
    rows = list(range(len(report.rows)))
    if len(rows) > INDEX_ROWS:
        rows = sorted(sorted(rows, key=lambda i: report.rows[i].n == len(report.rows[i].runs))[:INDEX_ROWS])
    lines = [f"  - {label_text(report, report.rows[i]) or report.name}: {runs_cell(report.rows[i])}" for i in rows]
    if len(report.rows) > len(rows):
        lines.append(f"  - {len(report.rows) - len(rows)} more configuration(s) in its report.md")
    return report.name, [head, *lines]


def merge_index(before: str, entries: list[tuple[str, list[str]]]) -> str:
    """REPORT.md with these sweeps' entries written and every other sweep's entry kept as it was
    (`sweep report NAME` updates one sweep of the index, not the whole of it)."""
    kept: dict[str, list[str]] = {}
    name = None
    for line in before.splitlines():
        if line.startswith("- [") and "](" in line:
            name = line[3:line.index("](")]
            kept[name] = [line]
        elif line.startswith("  ") and name is not None:
            kept[name].append(line)
        else:
            name = None
    kept.update(dict(entries))
    return "\n".join([INDEX_TITLE, "", *(line for key in sorted(kept) for line in kept[key])]) + "\n"


def _build_all(storage: str, runs_dir: Path, sweeps: list[str] | None, painter: Painter, *, baseline: str | None,
               fmt: str, plots: bool, effect: float | None, html: bool) -> list[SweepReport]:
    backend = open_storage(storage, readonly=True)  # a report only reads: a read-only runs directory works
    names = sweep_names(backend)
    unknown = [s for s in sweeps or [] if s not in names]
    if unknown:
        raise ValueError(f"no sweep named {', '.join(map(repr, unknown))} in {storage}; sweeps: {', '.join(names) or 'none'}")
    built: list[tuple[SweepReport, str]] = []
    for name in sweeps or names:
        store = SweepStore(backend, name, create=False)
        records = load_records(store)
        sweep_dir = runs_dir / name

        # the reliability plot and the comparisons read the best configuration's files once; a
        # bounded cache: 10,000 jobs' predictions would hold over a GB
        @functools.lru_cache(maxsize=64)
        def predictions(job_id: str, sweep_dir: Path = sweep_dir) -> Predictions | None:
            return load_predictions(sweep_dir / job_id)

        report = tabulate(name, records, states=trial_states(store), baseline=baseline, effect=effect)
        # the plots need no comparison: drawn by the helper while the rows are compared
        planned: list[Plot] = plan_plots(report, records, sweep_dir / "report", predictions) if plots else []
        report.plots = [(p.caption, f"{p.path.parent.name}/{p.path.name}") for p in planned]
        painter.submit(name, planned)
        cache = Cache(sweep_dir)
        compare_report(report, predictions, cache=cache)
        cache.save()
        report.study = study_summary(store)
        built.append((report, to_markdown(report, description=str(store.study.user_attrs.get("description", "")))))
    unwritable = painter.finish()
    for report, markdown in built:
        sweep_dir = runs_dir / report.name
        try:
            if report.name in unwritable:
                raise unwritable[report.name]
            _write_files(report, markdown, sweep_dir, html=html, fmt=fmt)
        except OSError as exc:  # e.g. a read-only copy of the runs directory: the report is still printed
            report.plots = []
            report.unwritten = f"{exc.filename or sweep_dir}: {exc.strerror or exc}"
    return [report for report, _ in built]


def _write_files(report: SweepReport, markdown: str, sweep_dir: Path, *, html: bool, fmt: str) -> None:
    _write_text(sweep_dir / "report.md", markdown)
    if html:
        _write_text(sweep_dir / "report.html", to_html(markdown, sweep_dir, title=f"Sweep {report.name}"))
    if fmt == "csv":
        _write_text(sweep_dir / "report.csv", to_csv([report]))
    elif fmt == "json":
        _write_text(sweep_dir / "report.json", to_json([report]))
