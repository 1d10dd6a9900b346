"""The one reader of a sweep file: a grid, an Optuna search space or a W&B sweep file.

`read_sweep` reads the file once (`trainer.yamlfile`), parses the `--set` overrides once, tells
the kind of file from its keys and returns one `Loaded`: the Grid (its jobs built and checked
here, in the parent) or the Space to run, with what the dry run and the warnings say. Every
problem of the file is named at once, each with its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper import wandb_space
from sweeper.search import PRUNERS, SAMPLERS, Space, args_text, space_from
from sweeper.spec import MAX_JOBS, Grid, Reporter, grid_from, overrides_of
from sweeper.wandb_sweep import Translation, is_wandb, translate
from trainer import yamlfile


@dataclass(frozen=True)
class Loaded:
    sweep: Grid | Space
    path: Path
    wandb: Translation | None = None  # how a W&B file was read (for the dry run)
    notes: list[str] = field(default_factory=list)  # said by the dry run
    warnings: list[str] = field(default_factory=list)  # what the file says that does nothing (shown, not refused)


def load_sweep(path: Path, overrides: list[str] | None = None, *, max_jobs: int = MAX_JOBS) -> Grid | Space:
    """A grid file, a space file or a W&B sweep file (`method: grid` is a Grid, `random` and
    `bayes` a Space), validated; ConfigError names the file, line and key of every problem."""
    return read_sweep(path, overrides, max_jobs=max_jobs).sweep


# Keys only a search space has: a file with them and without params is a space missing its params.
SPACE_ONLY = ("params", "sampler", "pruner", "metric", "target")


def read_sweep(path: Path, overrides: list[str] | None = None, *, max_jobs: int = MAX_JOBS) -> Loaded:
    """`load_sweep`, with how a W&B file was read (its name mapping, unused keys, notes) and the
    warnings to show."""
    doc = yamlfile.read(path)
    fixed = overrides_of(path, overrides)
    raw = doc.data
    if isinstance(raw, dict) and is_wandb(raw):
        return _from_wandb(doc, raw, fixed, max_jobs=max_jobs)
    if isinstance(raw, dict) and any(k in raw for k in SPACE_ONLY) and "axes" not in raw:
        return Loaded(space_from(doc, fixed), path)
    grid = grid_from(doc, fixed, max_jobs=max_jobs)
    return Loaded(grid, path, warnings=list(grid.warnings))


def _from_wandb(doc: yamlfile.Document, raw: dict[str, Any], fixed: dict[str, Any], *, max_jobs: int) -> Loaded:
    t, problems = translate(raw, stem=doc.path.stem)
    report = Reporter(doc)
    notes: list[str] = []
    sweep = wandb_space.sweep_from(doc.path, t, problems, report, fixed, notes, max_jobs=max_jobs)
    warnings = [str(report.error(where, message)) for where, message in t.ignored]
    return Loaded(sweep, doc.path, t, notes, warnings)


def describe(loaded: Loaded, *, trials: int | None = None) -> list[str]:
    """The dry run: the sweep as `sweep` will run it (`trials`: the --trials given), and how a W&B
    file was read."""
    sweep, t = loaded.sweep, loaded.wandb
    lines = []
    source = f"W&B sweep file {loaded.path}" if t else str(loaded.path)
    if isinstance(sweep, Grid):
        lines.append(f"grid {sweep.name} ({source}, method: grid): {len(sweep.jobs)} jobs, each run exactly once")
    else:
        lines.append(f"study {sweep.name} ({source})")
        name, kwargs = sweep.sampler
        sampler = f"{SAMPLERS[name]}({args_text(kwargs)})"
        if t is not None and t.method == "bayes":
            sampler += " - W&B's bayes is a Gaussian process; Optuna's TPE stands in for it"
        elif t is not None:
            sampler += " (method: random)"
        if "seed" not in kwargs:
            sampler += "; unseeded: --sampler-seed N makes the draws reproducible"
        lines.append(f"sampler: {sampler}")
        name, kwargs = sweep.pruner
        pruner = f"{PRUNERS[name]}({args_text(kwargs)})"
        if name == "hyperband":
            pruner += ", on epochs (each epoch's metric is reported)"
        elif t is not None:
            pruner += " (no early_terminate)"
        lines.append(f"pruner: {pruner}")
        metric = f"metric: {sweep.metric}, {sweep.direction}d"
        if t is not None and t.metric_note:
            metric += f" ({t.metric_note})"
        lines.append(metric)
        lines.append(f"target: {sweep.target:g} (the study stops when its best trial reaches it)"
                     if sweep.target is not None else "target: none")
        lines.append(_trials(trials, sweep.run_cap))
    if isinstance(sweep, Space):
        lines.append("base: " + (", ".join(f"{k}={v}" for k, v in sweep.base.items()) or "(the job defaults)"))
        lines.append("searched:")
        for p in sweep.params:
            lines.append(f"  {p.name}: " + (f"one of {p.values}" if p.values is not None else
                                            f"{'int ' if p.integer else ''}{'log-' if p.log else ''}uniform "
                                            f"[{p.low:g}, {p.high:g}]" + (f", multiples of {p.q:g}" if p.q else "")))
    if t is not None:
        lines.extend(_wandb_lines(t))
    lines.extend(f"note: {n}" for n in loaded.notes)
    return lines


def _trials(trials: int | None, run_cap: int | None) -> str:
    if trials is not None:
        return f"trials: {trials} (--trials)" + (f"; the file's run_cap {run_cap} is not used" if run_cap else "")
    if run_cap is not None:
        return f"trials: {run_cap} (run_cap; --trials overrides)"
    return "trials: --trials N (the file has no run_cap)"


def _wandb_lines(t: Translation) -> list[str]:
    """How a W&B file was read: each parameter's job key and distribution, what is not used."""
    lines = []
    rows = [("W&B parameter", "job key", "W&B distribution", "sweep runs", "note")]
    for w in t.parameters:
        rows.append((w.name, w.key, w.distribution, w.shown(), w.note))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines.append("names (W&B -> sweep):")
    for r in rows:
        lines.append(("  " + "  ".join(str(c).ljust(w) for c, w in zip(r[:4], widths, strict=True))
                      + (f"  {r[4]}" if r[4] else "")).rstrip())
    for key, value in t.unused.items():
        shown = " ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"not used: {key}: {shown} (sweep runs its own training core)")
    if t.project or t.entity:
        lines.append(f"W&B runs: project {t.project or '(default)'}, entity {t.entity or '(default)'}")
    if t.renamed:
        lines.append(f"name: {t.name} (from the file: its own name is absent or not letters, digits, '_', '-', '.')")
    return lines

