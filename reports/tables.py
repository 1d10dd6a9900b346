"""A sweep's report as data (`build_report`) and as text (`to_markdown`, `to_csv`, `to_json`).

Pure functions: the same records and predictions give byte-identical output.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reports.collect import Predictions, Record
from reports.stats import BOOTSTRAP_SAMPLES, Comparison, compare, mean_std

# column, header, which way is better (None: not a quality), decimals
COLUMNS: list[tuple[str, str, str | None, int]] = [
    ("val_acc", "val_acc", "max", 4),
    ("test_acc", "test_acc", "max", 4),
    ("test_loss", "test_loss", "min", 4),
    ("test_ece", "test_ECE", "min", 4),
    ("best_epoch", "best epoch", None, 1),
    ("runtime_s", "runtime (s)", "min", 1),
    ("train_samples_per_s", "samples/s", "max", 1),
]
IN_TABLE = ("completed",)


@dataclass
class Row:
    label: dict[str, Any]
    records: list[Record]
    stats: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    comparison: Comparison | None = None
    comparison_note: str = ""

    @property
    def n(self) -> int:
        return len(self.records)


@dataclass
class SweepReport:
    name: str
    keys: list[str]
    rows: list[Row]
    baseline: int
    excluded: list[Record]  # failed, diverged, collapsed, pruned: listed, never averaged
    pending: list[Record]  # waiting or running
    states: dict[str, int]
    several_seeds: bool
    study: dict[str, Any] = field(default_factory=dict)  # best trial, parameter importances
    plots: list[tuple[str, str]] = field(default_factory=list)  # (title, relative path)


def _config_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


def _label_value(record: Record, key: str) -> Any:
    if key in record.point:
        return record.point[key]
    value: Any = record.config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _varied_keys(records: list[Record]) -> list[str]:
    keys = list(dict.fromkeys(k for r in records for k in r.point if k != "seed"))
    varied = [k for k in keys if len({json.dumps(_label_value(r, k)) for r in records}) > 1]
    return ["model", *[k for k in varied if k != "model"]]


def _matches(label: dict[str, Any], spec: str) -> bool:
    wanted = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    return bool(wanted) and all(str(label.get(k)) == v for k, v in wanted.items())


def build_report(name: str, records: list[Record], *, states: dict[str, int],
                 predictions: Callable[[str], Predictions | None], baseline: str | None = None) -> SweepReport:
    """Group finished jobs into one row per configuration and compare each row with the baseline."""
    finished = [r for r in records if r.status in IN_TABLE and r.result is not None]
    keys = _varied_keys(finished or records)
    groups: dict[str, Row] = {}
    for record in finished:
        key = _config_key(record.config)
        if key not in groups:
            groups[key] = Row(label={k: _label_value(record, k) for k in keys}, records=[])
        groups[key].records.append(record)
    rows = list(groups.values())
    for row in rows:
        for column, *_ in COLUMNS:
            values = [r.result[column] for r in row.records if r.result and r.result.get(column) is not None]
            if values:
                row.stats[column] = mean_std(values)
    base = 0
    if baseline is not None:
        found = [i for i, row in enumerate(rows) if _matches(row.label, baseline)]
        if not found:
            raise ValueError(f"--baseline {baseline!r} matches no row; rows: "
                             + "; ".join(",".join(f"{k}={v}" for k, v in row.label.items()) for row in rows))
        base = found[0]
    if rows:
        _compare_rows(rows, base, predictions)
    return SweepReport(
        name=name, keys=keys, rows=rows, baseline=base,
        excluded=[r for r in records if r.status not in IN_TABLE + ("waiting", "running")],
        pending=[r for r in records if r.status in ("waiting", "running")],
        states=states, several_seeds=any(row.n > 1 for row in rows),
    )


def _seed_averaged(row: Row, predictions: Callable[[str], Predictions | None]) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray] | None:
    """(rows, labels, probabilities averaged over the row's seeds) on the examples all seeds share."""
    preds = [predictions(r.job_id) for r in row.records]
    if not preds or any(p is None for p in preds):
        return None
    shared = preds[0].rows  # type: ignore[union-attr]
    for p in preds[1:]:
        shared = np.intersect1d(shared, p.rows)  # type: ignore[union-attr]
    shared = np.sort(shared)
    probs, labels = [], None
    for p in preds:
        assert p is not None
        order = np.argsort(p.rows)
        pos = order[np.searchsorted(p.rows, shared, sorter=order)]
        probs.append(p.probs[pos])
        labels = p.labels[pos]
    assert labels is not None
    return shared, labels, np.mean(probs, axis=0)


def _compare_rows(rows: list[Row], base: int, predictions: Callable[[str], Predictions | None]) -> None:
    reference = _seed_averaged(rows[base], predictions)
    for i, row in enumerate(rows):
        if i == base:
            continue
        other = _seed_averaged(row, predictions)
        if reference is None or other is None:
            row.comparison_note = "no per-example predictions in the runs directory"
            continue
        shared, a_idx, b_idx = np.intersect1d(reference[0], other[0], return_indices=True)
        if len(shared) == 0:
            row.comparison_note = "no shared test examples (different data or split)"
            continue
        labels = reference[1][a_idx]
        correct_a = reference[2][a_idx].argmax(1) == labels
        correct_b = other[2][b_idx].argmax(1) == labels
        row.comparison = compare(correct_a, correct_b)


# -- rendering ---------------------------------------------------------------------------------


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _cell(row: Row, column: str, decimals: int, bold: bool) -> str:
    if column not in row.stats:
        return "–"
    mean, std = row.stats[column]
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


def _label_cells(report: SweepReport, row: Row) -> list[str]:
    return [json.dumps(row.label[k]) if not isinstance(row.label[k], str) else row.label[k] for k in report.keys]


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
        best = {column: _best(report.rows, column, direction) for column, _, direction, _ in COLUMNS}
        body = [
            [*_label_cells(report, row), str(row.n),
             *(_cell(row, column, decimals, i in best[column]) for column, _, _, decimals in COLUMNS)]
            for i, row in enumerate(report.rows)
        ]
        out += _table([*report.keys, "n", *(header for _, header, _, _ in COLUMNS)],
                      ["---"] * len(report.keys) + ["---:"] * (1 + len(COLUMNS)), body)
        seeds = ("mean ± sample standard deviation over the n seeds of each configuration"
                 if report.several_seeds else "one seed per configuration")
        out += ["", f"Completed jobs only; {seeds}. Best value of each column in bold (highest accuracy and "
                    "samples/s, lowest loss, ECE and runtime). ECE: 15 equal-width confidence bins.", ""]
        out += _comparison_section(report)
    if report.excluded:
        out += ["## Not averaged into the table", ""]
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
        out += [f"Best trial: #{top['number']} (job {top['job_id']}), validation accuracy {top['value']:.4f}: "
                f"{params}.", ""]
    if report.study.get("importances"):
        out += ["Parameter importances (optuna.importance, fANOVA): " + ", ".join(
            f"{k} {v:.3f}" for k, v in report.study["importances"].items()), ""]
    for title, path in report.plots:
        out += [f"![{title}]({path})", ""]
    return "\n".join(out).rstrip() + "\n"


def _status_reason(record: Record) -> str:
    if record.status == "collapsed" and record.result:
        return f"val_acc {record.result.get('val_acc')} at chance"
    if record.status == "diverged":
        return "training loss not finite or exploded"
    return ""


def _comparison_section(report: SweepReport) -> list[str]:
    if len(report.rows) < 2:
        return []
    base = report.rows[report.baseline]
    base_label = ", ".join(f"{k}={v}" for k, v in base.label.items())
    how = ("each configuration's class probabilities are first averaged over its seeds (seed ensemble), "
           "then compared example by example" if report.several_seeds else "one seed per configuration")
    out = [f"## Paired comparison with the baseline ({base_label})", "",
           f"Test accuracy of each row minus the baseline's on the test examples both share; 95% interval from "
           f"a paired bootstrap ({BOOTSTRAP_SAMPLES:,} resamples of those examples); McNemar's exact test on the "
           f"examples where they disagree; {how}. Significant: the interval excludes 0 and p < 0.05.", ""]
    body = []
    for i, row in enumerate(report.rows):
        if i == report.baseline:
            continue
        c = row.comparison
        if c is None:
            body.append([*_label_cells(report, row), "–", "–", "–", "–", row.comparison_note])
        else:
            body.append([*_label_cells(report, row), f"{c.diff:+.4f}", f"[{c.low:+.4f}, {c.high:+.4f}]",
                         f"{c.p_value:.4g}", "yes" if c.significant else "no", str(c.n)])
    out += _table([*report.keys, "Δ test_acc", "95% CI", "McNemar p", "significant", "examples"],
                  ["---"] * len(report.keys) + ["---:"] * 3 + ["---", "---:"], body)
    return [*out, ""]


def to_rows(report: SweepReport) -> list[dict[str, Any]]:
    """Flat rows for CSV and JSON."""
    rows = []
    for i, row in enumerate(report.rows):
        flat: dict[str, Any] = {"sweep": report.name, **row.label, "n": row.n, "baseline": i == report.baseline}
        for column, *_ in COLUMNS:
            mean, std = row.stats.get(column, (None, None))
            flat[f"{column}_mean"], flat[f"{column}_std"] = mean, std
        c = row.comparison
        flat.update({"diff_test_acc": c.diff if c else None, "ci_low": c.low if c else None,
                     "ci_high": c.high if c else None, "mcnemar_p": c.p_value if c else None,
                     "significant": c.significant if c else None})
        rows.append(flat)
    return rows


def to_csv(reports: list[SweepReport]) -> str:
    rows = [r for report in reports for r in to_rows(report)]
    if not rows:
        return ""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(reports: list[SweepReport]) -> str:
    payload = [{"sweep": r.name, "rows": to_rows(r),
                "excluded": [{"job": x.job_id, "point": x.point, "status": x.status, "reason": x.reason}
                             for x in r.excluded],
                "states": r.states, "study": r.study} for r in reports]
    return json.dumps(payload, indent=2) + "\n"
