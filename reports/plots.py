"""What the report plots (`plan_plots`): validation accuracy per epoch, the test accuracy along
every swept axis, the expected best validation score against budget, and a reliability
diagram of the best configuration, as `reports.draw.Plot` data; `reports.draw` draws them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reports.collect import Predictions, Record
from reports.draw import Plot, Series
from reports.pairs import seed_ensemble
from reports.rows import Row, SweepReport
from trainer.jobdir import FINISHED, SCORED

MAX_LINES = 12  # more jobs than this: a median and a 10-90% band instead of one line each
MAX_SERIES = 8  # more combinations of the other keys than this: the axis's marginal means


def _name(label: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in label.items())


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


def plan_plots(report: SweepReport, records: list[Record], out_dir: Path,
               predictions: Callable[[str], Predictions | None]) -> list[Plot]:
    """The plots of a report, to be written under out_dir (their `caption`s and paths are what
    the report lists)."""
    plots = []
    curves = _epochs(report, records, out_dir)
    if curves is not None:
        plots.append(curves)
    rows = [row for row in report.rows if "test_acc" in row.stats_all]
    axes = [k for k in report.keys if len({json.dumps(row.label[k]) for row in rows}) > 1]
    plots += [_axis_plot(report, rows, axis, out_dir / f"test_acc_by_{_safe(axis)}.png") for axis in axes]
    if report.budget:
        series = [Series(c.ks, c.mean, label=f"{c.label} ({c.n} trials)", marker="o" if len(c.ks) <= 30 else None,
                         band=(c.mean - c.std, c.mean + c.std)) for c in report.budget]
        many = max(c.n for c in report.budget) > 50
        best = "best" if report.maximize else "lowest"
        plots.append(Plot(out_dir / "budget.png", "expected validation performance against budget",
                          f"{report.name}: expected validation performance against budget (Dodge et al. 2019)",
                          "trials (k)", f"expected {best} {report.metric} ± std", series, log_x=many, integer_x=not many))
    reliability = _reliability(report, out_dir, predictions)
    if reliability is not None:
        plots.append(reliability)
    return plots


def _epochs(report: SweepReport, records: list[Record], out_dir: Path) -> Plot | None:
    curves = [r for r in records if r.result and r.result.get("epochs")]
    if not curves:
        return None
    lines = [[(e["epoch"], e["val_acc"]) for e in r.result["epochs"] if e.get("val_acc") is not None]  # type: ignore[index]
             for r in curves]
    one_epoch = all(len(line) <= 1 for line in lines)
    series = []
    if len(curves) <= MAX_LINES:
        for r, line in zip(curves, lines, strict=True):
            if line:
                x, y = zip(*line, strict=True)
                series.append(Series(list(x), list(y), marker="o", linestyle="none" if one_epoch else "-", alpha=0.7,
                                     label=_name(r.point) + f" ({r.status})"))
    else:  # thousands of jobs: the spread across them per epoch
        by_epoch: dict[int, list[float]] = {}
        for line in lines:
            for epoch, value in line:
                by_epoch.setdefault(int(epoch), []).append(float(value))
        epochs = sorted(by_epoch)
        q = np.array([np.quantile(by_epoch[e], [0.1, 0.5, 0.9]) for e in epochs])
        median = f"median of {len(curves)} jobs"
        if len(epochs) == 1:
            series += [Series(epochs, q[:, 1], label=median, marker="o", linestyle="none"),
                       Series(epochs, q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], linestyle="none",
                              label="10-90% of jobs")]
        else:
            series.append(Series(epochs, q[:, 1], label=median, marker="o", band=(q[:, 0], q[:, 2]), band_alpha=0.3,
                                 band_label="10-90% of jobs"))
    seen = sorted({int(e) for line in lines for e, _ in line})
    ticks = seen if seen and len(seen) <= 20 else None  # integer epochs, one tick each (a 1-epoch sweep: points at 1)
    return Plot(out_dir / "val_acc_per_epoch.png", "validation accuracy per epoch",
                f"{report.name}: validation accuracy per epoch, every job", "epoch", "validation accuracy", series,
                xticks=ticks, xlim=(seen[0] - 0.5, seen[-1] + 0.5) if ticks else None, integer_x=ticks is None)


def _axis_plot(report: SweepReport, rows: list[Row], axis: str, path: Path) -> Plot:
    """Test accuracy (mean ± std over all runs with a score) along one axis: one series per
    combination of the other keys, or the axis's marginal when there are too many. A categorical
    axis gets points with error bars, never a line between categories."""
    xs = list(dict.fromkeys(json.dumps(row.label[axis]) for row in rows))
    values = [json.loads(x) for x in xs]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    others = [k for k in report.keys if k != axis and len({json.dumps(row.label[k]) for row in rows}) > 1]
    groups: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        name = _name({k: row.label[k] for k in others}) or "all"
        scores = [float(r.result["test_acc"]) for r in row.runs
                  if r.result and r.result.get("test_acc") is not None and r.status in FINISHED]
        groups.setdefault(name, {}).setdefault(json.dumps(row.label[axis]), []).extend(scores)
    if len(groups) > MAX_SERIES:
        marginal: dict[str, list[float]] = {}
        for by_x in groups.values():
            for x, scores in by_x.items():
                marginal.setdefault(x, []).extend(scores)
        groups = {f"all (mean over the other keys, {len(groups)} combinations)": marginal}
    width = 0.6 / max(1, len(groups))
    index = {x: i for i, x in enumerate(xs)}
    series = []
    for s, (name, by_x) in enumerate(groups.items()):
        points = []
        for x, scores in by_x.items():
            pos = json.loads(x) if numeric else index[x] + (s - (len(groups) - 1) / 2) * width
            points.append((pos, float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0))
        points.sort()
        px, py, pe = (np.array(col) for col in zip(*points, strict=True))
        if numeric and len(points) > 50:
            series.append(Series(px, py, label=name, band=(py - pe, py + pe)))
        else:
            series.append(Series(px, py, yerr=pe, marker="o", linestyle="-" if numeric else "none", label=name))
    positive = numeric and all(v > 0 for v in values)
    return Plot(path, f"test accuracy along {axis}", f"{report.name}: test accuracy along {axis}", axis,
                "test accuracy, mean ± std over all runs", series,
                log_x=bool(positive and max(values) / min(values) >= 100),
                xticks=None if numeric else list(range(len(xs))),
                xticklabels=None if numeric else [x.strip('"') for x in xs],
                xlim=None if numeric else (-0.5, len(xs) - 0.5), legend=len(groups) > 1 or numeric is False)


def _reliability(report: SweepReport, out_dir: Path, predictions: Callable[[str], Predictions | None]) -> Plot | None:
    best_row = report.rows[report.best] if report.best is not None else None
    if best_row is None:
        return None
    averaged = seed_ensemble([r for r in best_row.runs if r.status in SCORED], predictions)
    if averaged is None:
        return None
    _, labels, probs = averaged
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, 16)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, 14)
    centers, accs = [], []
    for b in range(15):
        mask = bins == b
        if mask.any():
            centers.append(float(confidence[mask].mean()))
            accs.append(float(correct[mask].mean()))
    series = [Series([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration"),
              Series(centers, accs, marker="o", label="model (its seeds' mean probabilities)")]
    return Plot(out_dir / "reliability_best.png",
                f"reliability diagram of the best configuration ({_name(best_row.label)})",
                f"reliability: {_name(best_row.label)}", "confidence", "accuracy", series, figsize=(5, 5))
