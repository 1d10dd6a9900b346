"""How a report names a configuration and its runs, in every format (the page, the console,
REPORT.md)."""

from __future__ import annotations

import json

from reports.rows import Row, SweepReport
from trainer.jobdir import STATUSES


def show_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        return json.dumps(value)
    if key == "model" and value.startswith(("/", "./", "../")):
        return value.rstrip("/").rsplit("/", 1)[-1]  # a local directory: its name (the path is in config.json)
    return value


def label_cells(report: SweepReport, row: Row) -> list[str]:
    return [show_value(k, row.label[k]) for k in report.keys]


def label_text(report: SweepReport, row: Row) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(report.keys, label_cells(report, row), strict=True))


def runs_cell(row: Row) -> str:
    """`completed/runs`, then what became of the others."""
    others = [f"{row.count(s)} {s}" for s in STATUSES[1:]
              if row.count(s)]
    return f"{row.n}/{len(row.runs)}" + (f" ({', '.join(others)})" if others else "")


def p_text(p: float) -> str:
    """A p-value: below 1e-16 as such."""
    return "< 1e-16" if p < 1e-16 else f"{p:.3g}"
