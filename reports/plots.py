"""The report's PNGs (matplotlib, no display needed): validation accuracy per epoch, the test
accuracy along every swept axis, the expected best validation score against budget, and a
reliability diagram of the best configuration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reports.collect import Predictions, Record
from reports.compare import seed_ensemble
from reports.tables import Row, SweepReport

MAX_LINES = 12  # more jobs than this: a median and a 10-90% band instead of one line each
MAX_SERIES = 8  # more combinations of the other keys than this: the axis's marginal means


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "sweep"  # no random ids in output
    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})


def _finish(plt: Any, fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str, legend: bool) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9 if len(title) > 60 else None)
    if legend:
        ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def _log_x(ax: Any) -> None:
    """A log x axis labelled in plain numbers (matplotlib's default 10^k labels go through its
    mathtext parser, a large part of a plot's cost)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _name(label: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in label.items())


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


def write_plots(report: SweepReport, records: list[Record], out_dir: Path,
                predictions: Callable[[str], Predictions | None]) -> list[tuple[str, str]]:
    """Write the plots under out_dir; return (title, path relative to out_dir.parent)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    written = []
    curves = [r for r in records if r.result and r.result.get("epochs")]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        lines = [[(e["epoch"], e["val_acc"]) for e in r.result["epochs"] if e.get("val_acc") is not None]  # type: ignore[index]
                 for r in curves]
        one_epoch = all(len(line) <= 1 for line in lines)
        if len(curves) <= MAX_LINES:
            for r, line in zip(curves, lines, strict=True):
                if line:
                    ax.plot(*zip(*line, strict=True), marker="o", linestyle="none" if one_epoch else "-", alpha=0.7,
                            label=", ".join(f"{k}={v}" for k, v in r.point.items()) + f" ({r.status})")
        else:  # thousands of jobs: the spread across them per epoch
            by_epoch: dict[int, list[float]] = {}
            for line in lines:
                for epoch, value in line:
                    by_epoch.setdefault(int(epoch), []).append(float(value))
            epochs = sorted(by_epoch)
            q = np.array([np.quantile(by_epoch[e], [0.1, 0.5, 0.9]) for e in epochs])
            style = {"linestyle": "none"} if len(epochs) == 1 else {}
            ax.plot(epochs, q[:, 1], marker="o", label=f"median of {len(curves)} jobs", **style)
            if len(epochs) == 1:
                ax.errorbar(epochs, q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], linestyle="none", capsize=4,
                            label="10-90% of jobs")
            else:
                ax.fill_between(epochs, q[:, 0], q[:, 2], alpha=0.3, label="10-90% of jobs")
        seen = sorted({int(e) for line in lines for e, _ in line})
        if seen and len(seen) <= 20:  # integer epochs, one tick each (a 1-epoch sweep: points at 1)
            ax.set_xticks(seen)
            ax.set_xlim(seen[0] - 0.5, seen[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _finish(plt, fig, ax, out_dir / "val_acc_per_epoch.png", xlabel="epoch", ylabel="validation accuracy",
                title=f"{report.name}: validation accuracy per epoch, every job",
                legend=True)
        written.append(("validation accuracy per epoch", f"{out_dir.name}/val_acc_per_epoch.png"))

    rows = [row for row in report.rows if "test_acc" in row.stats_all]
    axes = [k for k in report.keys if len({json.dumps(row.label[k]) for row in rows}) > 1]
    for axis in axes:
        path = out_dir / f"test_acc_by_{_safe(axis)}.png"
        _axis_plot(plt, report, rows, axis, path)
        written.append((f"test accuracy along {axis}", f"{out_dir.name}/{path.name}"))

    if report.budget:
        fig, ax = plt.subplots(figsize=(7, 4))
        for c in report.budget:
            ax.plot(c.ks, c.mean, marker="o" if len(c.ks) <= 30 else None, label=f"{c.label} ({c.n} trials)")
            ax.fill_between(c.ks, c.mean - c.std, c.mean + c.std, alpha=0.2)
        if max(c.n for c in report.budget) > 50:
            _log_x(ax)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        best = "best" if report.maximize else "lowest"
        _finish(plt, fig, ax, out_dir / "budget.png", xlabel="trials (k)", ylabel=f"expected {best} {report.metric} ± std",
                title=f"{report.name}: expected validation performance against budget (Dodge et al. 2019)", legend=True)
        written.append(("expected validation performance against budget", f"{out_dir.name}/budget.png"))

    best_row = report.rows[report.best] if report.best is not None else None
    averaged = seed_ensemble([r for r in best_row.runs if r.status in ("completed", "collapsed")], predictions) \
        if best_row is not None else None
    if best_row is not None and averaged is not None:
        _, labels, probs = averaged
        confidence, correct = probs.max(1), probs.argmax(1) == labels
        edges = np.linspace(0, 1, 16)
        bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, 14)
        centers, accs = [], []
        for b in range(15):
            mask = bins == b
            if mask.any():
                centers.append(confidence[mask].mean())
                accs.append(correct[mask].mean())
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.plot(centers, accs, marker="o", label="model (its seeds' mean probabilities)")
        _finish(plt, fig, ax, out_dir / "reliability_best.png", xlabel="confidence", ylabel="accuracy",
                title=f"reliability: {_name(best_row.label)}", legend=True)
        written.append((f"reliability diagram of the best configuration ({_name(best_row.label)})",
                        f"{out_dir.name}/reliability_best.png"))
    return written


def _axis_plot(plt: Any, report: SweepReport, rows: list[Row], axis: str, path: Path) -> None:
    """Test accuracy (mean ± std over all runs with a score) along one axis: one series per
    combination of the other keys, or the axis's marginal when there are too many. A categorical
    axis gets points with error bars, never a line between categories."""
    xs = list(dict.fromkeys(json.dumps(row.label[axis]) for row in rows))
    values = [json.loads(x) for x in xs]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    others = [k for k in report.keys if k != axis and len({json.dumps(row.label[k]) for row in rows}) > 1]
    groups: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        series = _name({k: row.label[k] for k in others}) or "all"
        scores = [float(r.result["test_acc"]) for r in row.runs
                  if r.result and r.result.get("test_acc") is not None and r.status in ("completed", "collapsed", "diverged")]
        groups.setdefault(series, {}).setdefault(json.dumps(row.label[axis]), []).extend(scores)
    if len(groups) > MAX_SERIES:
        marginal: dict[str, list[float]] = {}
        for by_x in groups.values():
            for x, scores in by_x.items():
                marginal.setdefault(x, []).extend(scores)
        groups = {f"all (mean over the other keys, {len(groups)} combinations)": marginal}
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.6 / max(1, len(groups))
    for s, (series, by_x) in enumerate(groups.items()):
        points = []
        for x, scores in by_x.items():
            pos = json.loads(x) if numeric else xs.index(x) + (s - (len(groups) - 1) / 2) * width
            points.append((pos, float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0))
        points.sort()
        px, py, pe = (np.array(col) for col in zip(*points, strict=True))
        if numeric and len(points) > 50:
            ax.plot(px, py, label=series)
            ax.fill_between(px, py - pe, py + pe, alpha=0.2)
        else:
            ax.errorbar(px, py, yerr=pe, marker="o", capsize=4, linestyle="-" if numeric else "none", label=series)
    if numeric:
        positive = [v for v in values if v > 0]
        if len(positive) == len(values) and max(values) / min(values) >= 100:
            _log_x(ax)
    else:
        ax.set_xticks(range(len(xs)), [x.strip('"') for x in xs])
        ax.set_xlim(-0.5, len(xs) - 0.5)
    _finish(plt, fig, ax, path, xlabel=axis, ylabel="test accuracy, mean ± std over all runs",
            title=f"{report.name}: test accuracy along {axis}", legend=len(groups) > 1 or numeric is False)
