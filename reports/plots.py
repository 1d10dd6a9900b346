"""The report's PNGs (matplotlib, no display needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reports.collect import Predictions, Record
from reports.tables import SweepReport, _seed_averaged


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "sweep"  # no random ids in output
    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})


def _finish(plt: Any, fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str, legend: bool) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9 if len(title) > 60 else None)
    if legend:
        ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def _name(label: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in label.items())


def write_plots(report: SweepReport, records: list[Record], out_dir: Path,
                predictions: Callable[[str], Predictions | None]) -> list[tuple[str, str]]:
    """Write the plots under out_dir; return (title, path relative to out_dir.parent)."""
    plt = _pyplot()
    written = []

    curves = [r for r in records if r.result and r.result.get("epochs")]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        lines = [[(e["epoch"], e["val_acc"]) for e in r.result["epochs"]] for r in curves]  # type: ignore[index]
        if len(curves) <= 12:
            for r, line in zip(curves, lines, strict=True):
                ax.plot(*zip(*line, strict=True), marker="o", alpha=0.7,
                        label=", ".join(f"{k}={v}" for k, v in r.point.items()) + f" ({r.status})")
        else:  # thousands of jobs: one artist for all of them
            from matplotlib.collections import LineCollection

            ax.add_collection(LineCollection(lines, linewidths=0.5, alpha=0.3))
            ax.autoscale()
        _finish(plt, fig, ax, out_dir / "val_acc_per_epoch.png", xlabel="epoch", ylabel="validation accuracy",
                title=f"{report.name}: validation accuracy per epoch, every job", legend=len(curves) <= 12)
        written.append(("validation accuracy per epoch", f"{out_dir.name}/val_acc_per_epoch.png"))

    if report.rows:
        axis = next((k for k in report.keys if k != "model"), "model")
        others = [k for k in report.keys if k != axis]
        xs = list(dict.fromkeys(json.dumps(row.label[axis]) for row in report.rows))
        values = [json.loads(x) for x in xs]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        fig, ax = plt.subplots(figsize=(7, 4))
        series: dict[str, list[tuple[int, float, float]]] = {}
        for row in report.rows:
            if "test_acc" not in row.stats:
                continue
            mean, std = row.stats["test_acc"]
            name = _name({k: row.label[k] for k in others}) or "all"
            x = row.label[axis] if numeric else xs.index(json.dumps(row.label[axis]))
            series.setdefault(name, []).append((x, mean, std or 0.0))
        for name, points in series.items():
            points.sort()
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                        marker="o" if len(points) <= 50 else None, capsize=4 if len(points) <= 50 else 0, label=name)
        if numeric:
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and max(values) / min(values) >= 100:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(xs)), [x.strip('"') for x in xs])
        _finish(plt, fig, ax, out_dir / "test_acc_by_axis.png", xlabel=axis,
                ylabel="test accuracy (mean ± std over seeds)", title=f"{report.name}: test accuracy along {axis}",
                legend=len(series) <= 12)
        written.append((f"test accuracy along {axis}", f"{out_dir.name}/test_acc_by_axis.png"))

        ranked = [row for row in report.rows if "val_acc" in row.stats]
        best = max(ranked, key=lambda row: row.stats["val_acc"][0]) if ranked else None
        averaged = _seed_averaged(best, predictions) if best is not None else None
        if best is not None and averaged is not None:
            _, labels, probs = averaged
            confidence, correct = probs.max(1), probs.argmax(1) == labels
            edges = np.linspace(0, 1, 16)
            bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, 14)
            centers, accs, counts = [], [], []
            for b in range(15):
                mask = bins == b
                if mask.any():
                    centers.append(confidence[mask].mean())
                    accs.append(correct[mask].mean())
                    counts.append(int(mask.sum()))
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
            ax.plot(centers, accs, marker="o", label="model")
            _finish(plt, fig, ax, out_dir / "reliability_best.png", xlabel="confidence", ylabel="accuracy",
                    title=f"reliability: {_name(best.label)}", legend=True)
            written.append((f"reliability diagram of the best configuration ({_name(best.label)})",
                            f"{out_dir.name}/reliability_best.png"))
    return written
