"""A W&B sweep file's translation (`sweeper.wandb_sweep`) as the Space or Grid sweep runs.

Every value of the file (and both ends of every range) goes through the training core's own
checks; every problem of the file is raised at once, each at its line.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.search import Param, Space
from sweeper.spec import MAX_JOBS, Grid, Job, Reporter
from sweeper.wandb_params import Parameter, Problems
from sweeper.wandb_sweep import METHODS, Translation
from trainer.config import ConfigError, JobConfig
from trainer.jobfile import build_point


def sweep_from(path: Path, t: Translation, problems: Problems, report: Reporter, fixed: Mapping[str, Any],
               notes: list[str], *, max_jobs: int = MAX_JOBS) -> Grid | Space:
    """The Grid (method: grid) or Space (random, bayes) of a translated W&B file, with the `--set`
    overrides (`fixed`, flat job keys) replacing its parameters; `notes` gets what the dry run says."""
    constants = {p.key: p for p in t.parameters if p.distribution == "constant"}
    searched = []
    for p in t.parameters:
        if p.key in fixed:
            notes.append(f"--set {p.key}={fixed[p.key]!r} replaces parameters.{p.name} ({p.shown()})")
        elif p.distribution != "constant":
            searched.append(p)
    base = {**{k: p.value for k, p in constants.items()}, **fixed}
    check_base = _check_base(base, constants, fixed, problems)
    if t.method == "grid":
        _check_grid_size(path, t, searched, max_jobs)
    for p in searched:
        for value in p.values if p.values is not None else [p.low, p.high]:
            try:
                build_point({**check_base, p.key: value})
            except ConfigError as exc:
                problems.add(p.where, f"parameters.{p.name}: {p.key} {_core_says(exc)}")
                break
    if t.method == "grid" and t.hyperband is not None:
        notes.append("early_terminate: not used by a grid (every job runs to its end, exactly once)")
    raise_all(path, report, problems, ignored=t.ignored)
    if t.method == "grid":
        return _grid(path, t, base, searched, notes, max_jobs=max_jobs)
    return _space(t, base, searched, notes)


def _check_base(base: dict[str, Any], constants: dict[str, Parameter], fixed: Mapping[str, Any],
                problems: Problems) -> dict[str, Any]:
    """Each fixed value (a constant parameter, a --set), then all of them together: the base the
    searched values are checked against ({} when it has a problem of its own)."""
    ok = True
    for key, value in base.items():
        try:
            build_point({key: value})
        except ConfigError as exc:
            ok = False
            where = constants[key].where if key in constants and key not in fixed else ()
            label = f"parameters.{constants[key].name}" if where else f"--set {key}"
            problems.add(where, f"{label}: {key} {_core_says(exc)}")
    if ok:
        try:
            build_point(base)
        except ConfigError as exc:
            ok = False
            problems.add((), f"the fixed values together: {exc}")
    return base if ok else {}


def _space(t: Translation, base: dict[str, Any], searched: list[Parameter], notes: list[str]) -> Space:
    params = [Param(p.key, values=p.values, low=p.low, high=p.high, log=p.log, integer=p.integer, q=p.q)
              for p in searched]
    pruner: tuple[str, dict[str, Any]] = ("none", {})
    if t.hyperband is not None:
        epochs = [base.get("epochs", JobConfig().epochs)]
        for p in searched:
            if p.key == "epochs":
                epochs = list(p.values) if p.values is not None else [p.high]
        kwargs = {"max_resource": max(epochs), **t.hyperband}
        if kwargs["min_resource"] >= kwargs["max_resource"]:
            notes.append(f"early_terminate: min_iter {kwargs['min_resource']} is not below the jobs' "
                         f"{kwargs['max_resource']} epochs: no trial will be pruned")
        pruner = ("hyperband", kwargs)
    return Space(name=t.name, description=t.description, base=base, params=params, metric=t.metric,
                 sampler=(METHODS[t.method], {}), pruner=pruner, direction=t.direction, target=t.target,
                 wandb_project=t.project, wandb_entity=t.entity, run_cap=t.run_cap)


def raise_all(path: Path, report: Reporter, problems: Problems, *,
              ignored: list[tuple[tuple[str, ...], str]] | None = None) -> None:
    """Every problem of the file in one ConfigError, each at its line, then the keys ignored (a
    misspelt `parameters` is said as both); nothing when there is no problem."""
    if not problems.items:
        return
    located = sorted(((report.doc.line(where) or 0, message) for where, message in problems.items),
                     key=lambda item: item[0])
    body = "\n".join(f"  line {line}: {message}" if line else f"  {message}" for line, message in located)
    also = "".join(f"\n  line {report.doc.line(where) or 0}: {message}" for where, message in ignored or [])
    count = f"{len(located)} problem{'s' if len(located) > 1 else ''}"
    raise ConfigError(f"{path}: W&B sweep file: {count}; nothing was run (sweep runs its own training core: every "
                      f"parameter must be one of its job keys)\n{body}{also}")


def _core_says(exc: ConfigError) -> str:
    """The core's 'key: problem' less the key."""
    return str(exc).split(": ", 1)[-1]
def _check_grid_size(path: Path, t: Translation, searched: list[Parameter],
                     max_jobs: int) -> None:
    """A W&B grid's size, computed before any value is listed or checked; an axis longer than
    --max-jobs is refused even under a run_cap."""
    counts = {p.key: p.grid_count() for p in searched}
    size = math.prod(counts.values())
    if min(size, (t.run_cap or size) * counts.get("seed", 1)) > max_jobs or max(counts.values(), default=0) > max_jobs:
        shape = " x ".join(f"{n:,} {k}" for k, n in counts.items())
        raise ConfigError(f"{path}: the grid has {size:,} jobs ({shape}), more than --max-jobs {max_jobs:,}; shrink a "
                          "parameter's values (or set run_cap), or raise --max-jobs if you mean it")


def _grid(path: Path, t: Translation, base: dict[str, Any], searched: list[Parameter], notes: list[str], *,
          max_jobs: int = MAX_JOBS) -> Grid:
    """Every combination once, as W&B's grid; a list of seeds is the grid's seeds (each point once per seed)."""
    axes: dict[str, list[Any]] = {}
    seeds = [base.get("seed", JobConfig().seed)]
    _check_grid_size(path, t, searched, max_jobs)
    for p in searched:
        listed = p.grid_values()
        values = list({json.dumps(v, sort_keys=True): v for v in reversed(listed)}.values())[::-1]
        if len(values) < len(listed):
            notes.append(f"parameters.{p.name}: a value listed twice runs once (as in W&B's grid)")
        if p.key == "seed":
            seeds = values
        else:
            axes[p.key] = values
    flat = {k: v for k, v in base.items() if k != "seed"}
    size = math.prod(len(v) for v in axes.values()) * len(seeds)
    if min(size, t.run_cap or size) > max_jobs:
        raise ConfigError(f"{path}: the grid has {size:,} jobs, more than --max-jobs {max_jobs:,}; shrink a parameter's "
                          "values (or set run_cap), or raise --max-jobs if you mean it")
    jobs: list[Job] = []
    for combo in itertools.product(*axes.values()):
        if t.run_cap is not None and len(jobs) >= t.run_cap * len(seeds):
            break
        point = dict(zip(axes, combo, strict=True))
        for seed in seeds:
            jobs.append(Job(config=build_point({**flat, **point, "seed": seed}), point={**point, "seed": seed}))
    if t.run_cap is not None and t.run_cap < len(jobs):
        notes.append(f"run_cap {t.run_cap}: the first {t.run_cap} of the grid's {len(jobs)} jobs run, as in W&B")
        jobs = jobs[: t.run_cap]
    return Grid(name=t.name, description=t.description, path=path, axes=axes, jobs=jobs)


