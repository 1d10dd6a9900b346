"""Optuna search spaces in sweep's own format (W&B sweep files are read by `load_sweep`).

    name: imdb_search
    base: {epochs: 3, max_len: 128}
    params:
      model: {values: [bert, modernbert, roberta]}
      lr: {min: 1.0e-5, max: 1.0e-4, log: true}
      dropout: {min: 0.0, max: 0.3}
    metric: val_acc            # maximised
    sampler: tpe               # or random; or {name: tpe, seed: 0}
    pruner: median             # or hyperband, none; or {name: median, n_startup_trials: 2}

Validated like grid files: every value (and both ends of every range) goes through the
training core's own checks, and errors name the file, line and key.

`load_sweep` is the one entry point of `sweep grid` and `sweep optuna`: it reads a grid file, a
space file or a W&B sweep file (`sweeper.wandb_sweep`) and returns the Grid or Space to run.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper import wandb_sweep
from sweeper.spec import MAX_JOBS, Grid, Job, _all, _flatten, _nest, _Reporter, load_grid, read_sweep_file
from trainer import yamlfile
from trainer.config import (
    ALL_KEYS,
    SEED_RANGE,
    ConfigError,
    JobConfig,
    _nearest,
    apply_overrides,
    build_job,
    every_problem,
    key_text,
)
from trainer.jobdir import METRICS as JOB_METRICS

# slurm: sweeper/slurm.py reads it
SPACE_KEYS = ["name", "description", "base", "params", "metric", "target", "sampler", "pruner", "seeds", "slurm"]
METRICS = tuple(JOB_METRICS)  # val_acc, val_macro_f1 (maximised), val_loss (minimised)
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}


@dataclass(frozen=True)
class Param:
    name: str
    values: list[Any] | None = None  # categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    q: float | None = None  # each draw rounded to a multiple of q (W&B's q_* distributions)


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    base: dict[str, Any]  # flat (dotted) keys
    params: list[Param]
    metric: str  # the job-result key optimised (trainer.jobdir.METRICS)
    sampler: tuple[str, dict[str, Any]]
    pruner: tuple[str, dict[str, Any]]
    direction: str = "maximize"  # METRICS[metric]
    target: float | None = None  # the study stops once its best value reaches this
    wandb_project: str | None = None  # the jobs' W&B runs (WANDB_PROJECT / WANDB_ENTITY)
    wandb_entity: str | None = None
    run_cap: int | None = None  # the default --trials (W&B's run_cap)
    # Each trial runs these seeds as jobs and reports their mean (None: the base's seed, one job).
    seeds: tuple[int, ...] | None = None

    def config(self, values: dict[str, Any]) -> JobConfig:
        return build_job(_nest({**self.base, **values}))

    def make_sampler(self) -> Any:
        import optuna

        name, kwargs = self.sampler
        return getattr(optuna.samplers, SAMPLERS[name])(**kwargs)

    def make_pruner(self) -> Any:
        import optuna

        name, kwargs = self.pruner
        return getattr(optuna.pruners, PRUNERS[name])(**kwargs)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


_SEED = ("an integer 0 <= seed < 2**32", lambda v: _is_int(v) and SEED_RANGE[0] <= v < SEED_RANGE[1])
_BOOL = ("true or false", lambda v: isinstance(v, bool))
_INT0 = ("an integer >= 0", lambda v: _is_int(v) and 0 <= v <= 10**9)
_INT1 = ("an integer >= 1", lambda v: _is_int(v) and 1 <= v <= 10**9)
# The arguments a space file may give Optuna's classes: those a YAML value can express (a callable
# such as TPE's gamma cannot be written in a file), each with what it allows.
ARGUMENTS: dict[str, dict[str, tuple[str, Any]]] = {
    "tpe": {"seed": _SEED, "n_startup_trials": _INT0, "n_ei_candidates": _INT1, "multivariate": _BOOL, "group": _BOOL,
            "consider_prior": _BOOL, "prior_weight": ("a number > 0", lambda v: _is_number(v) and v > 0),
            "consider_magic_clip": _BOOL, "consider_endpoints": _BOOL, "constant_liar": _BOOL,
            "warn_independent_sampling": _BOOL},
    "random": {"seed": _SEED},
    "median": {"n_startup_trials": _INT0, "n_warmup_steps": _INT0, "interval_steps": _INT1, "n_min_trials": _INT1},
    "hyperband": {"min_resource": _INT1, "max_resource": ("an integer >= 1 or 'auto'",
                                                          lambda v: v == "auto" or (_is_int(v) and 1 <= v <= 10**9)),
                  "reduction_factor": ("an integer >= 2", lambda v: _is_int(v) and 2 <= v <= 10**9),
                  "bootstrap_count": _INT0},
    "none": {},
}


def _named(report: _Reporter, key: str, raw: Any, allowed: dict[str, str], default: str) -> tuple[str, dict]:
    """`tpe`, or `{name: tpe, seed: 0}`: a public Optuna class by its short name, with arguments."""
    if raw is None:
        return default, {}
    kwargs = {}
    if isinstance(raw, dict):
        kwargs = {k: v for k, v in raw.items() if k != "name"}
        raw = raw.get("name")
    if not isinstance(raw, str) or raw not in allowed:
        raise report.error((key,), f"{key}: {raw!r} is not allowed; expected one of: {', '.join(allowed)}, or "
                                   f"{{name: {default}, ...arguments}}")
    problems = []
    for arg, value in kwargs.items():
        if arg not in ARGUMENTS[raw]:
            takes = ", ".join(ARGUMENTS[raw]) or "none"
            problems.append(f"{key}.{arg}: not an argument sweep passes to {allowed[raw]}; its arguments: {takes}")
        elif not ARGUMENTS[raw][arg][1](value):
            problems.append(f"{key}.{arg}: {value!r} is not allowed; expected {ARGUMENTS[raw][arg][0]}")
    if problems:
        raise report.error((key,), "; ".join(problems))
    import optuna

    module = optuna.samplers if key == "sampler" else optuna.pruners
    try:
        getattr(module, allowed[raw])(**kwargs)
    except (TypeError, ValueError) as exc:  # Optuna's own words, with the key and values they are about
        raise report.error((key,), f"{key}: {allowed[raw]}({_args(kwargs)}) is refused by Optuna: {exc}") from None
    return raw, kwargs


def load_space(path: Path, overrides: list[str] | None = None, *, doc: yamlfile.Document | None = None) -> Space:
    """Read and check a search space; ConfigError lists every problem of the file, each at its line."""
    raw, report, name, base = read_sweep_file(path, SPACE_KEYS, overrides, doc)
    flat_base = _flatten(base)
    problems: list[str] = []
    failing: set[str] = set()
    for text in every_problem(_nest(flat_base)):
        key = text.split(":")[0]
        failing.add(key.split(".")[0])
        problems.append(str(report.error(("base", *key.split(".")), f"base.{text}")))
    checked_base = {k: v for k, v in flat_base.items() if k.split(".")[0] not in failing}

    params_raw = raw.get("params")
    params = []
    if not isinstance(params_raw, dict) or not params_raw:
        problems.append(str(report.error(("params",), "params: expected a mapping of key -> {values: [...]} or "
                                                      "{min, max, log}")))
        params_raw = {}
    for key, spec in params_raw.items():
        try:
            params.append(_param(report, key, spec, checked_base))
        except ConfigError as exc:
            problems.append(str(exc))

    metric = raw.get("metric", "val_acc")
    if not isinstance(metric, str) or metric not in METRICS:
        problems.append(str(report.error(("metric",), f"metric: {metric!r} is not allowed; expected one of: "
                                         + ", ".join(f"{m} ({d}d)" for m, d in JOB_METRICS.items()))))
        metric = "val_acc"
    target = raw.get("target")
    if target is not None and not _is_number(target):
        problems.append(str(report.error(("target",), f"target: {target!r} is not a finite number")))
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(_SEED[1](x) for x in seeds)
                              or len(set(seeds)) != len(seeds)):
        problems.append(str(report.error(("seeds",), f"seeds: {seeds!r} is not allowed; expected a non-empty list of "
                                                     "distinct integers 0 <= seed < 2**32")))
    elif seeds is not None and "seed" in flat_base:
        problems.append(str(report.error(("seeds",), "seeds: the base sets a seed too; give the seeds here only")))
    named = {}
    for key, allowed, default in (("sampler", SAMPLERS, "tpe"), ("pruner", PRUNERS, "median")):
        try:
            named[key] = _named(report, key, raw.get(key), allowed, default)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise _all(path, list(dict.fromkeys(problems)))
    return Space(name=name, description=str(raw.get("description") or ""), base=flat_base, params=params,
                 seeds=tuple(seeds) if seeds is not None else None,
                 metric=metric, sampler=named["sampler"], pruner=named["pruner"],
                 direction=JOB_METRICS[metric], target=None if target is None else float(target))


def _param(report: _Reporter, key: Any, spec: Any, base: dict[str, Any]) -> Param:
    """One searched parameter: its values, or both ends of its range, checked as the core checks a job."""
    where = ("params", str(key))
    if key not in ALL_KEYS or key == "seed":
        raise report.error(where, f"params.{key_text(key)}: unknown or unsearchable key; {_nearest(str(key), ALL_KEYS)}")
    if not isinstance(spec, dict) or not (set(spec) == {"values"} or {"min", "max"} <= set(spec) <= {"min", "max", "log"}):
        raise report.error(where, f"params.{key}: {spec!r} is not allowed; expected {{values: [...]}} or "
                                  "{min: ..., max: ..., log: true|false}")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise report.error(where, f"params.{key}.values: {values!r} is not a non-empty list")
        if len(values) > wandb_sweep.MAX_VALUES:
            raise report.error(where, f"params.{key}.values: {len(values):,} values is too many; expected at most "
                                      f"{wandb_sweep.MAX_VALUES:,} (a range: min and max)")
        if any(v is not None and not isinstance(v, (str, int, float)) for v in values):
            raise report.error(where, f"params.{key}.values: {values!r} is not allowed; Optuna draws from "
                                      "strings, numbers, true/false and null (no lists or mappings)")
        checks = values
        param = Param(key, values=list(values))
    else:
        low, high, log = spec["min"], spec["max"], spec.get("log", False)
        numbers = all(_is_number(v) and abs(v) < 1e300 for v in (low, high))
        if not numbers or not low < high or not isinstance(log, bool) or (log and low <= 0):
            raise report.error(where, f"params.{key}: min {low!r}, max {high!r}, log {log!r} is not allowed; "
                                      "expected finite numbers with min < max (and min > 0 when log: true)")
        checks = [low, high]
        param = Param(key, low=low, high=high, log=log, integer=isinstance(low, int) and isinstance(high, int))
    for value in checks:  # each value, or both ends of the range, as the core checks a job
        try:
            build_job(_nest({**base, key: value}))
        except ConfigError as exc:
            raise report.error(where, f"params.{exc}") from None
    return param


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """The trial's values for every parameter, through Optuna's suggest API."""
    values: dict[str, Any] = {}
    for p in space.params:
        assert p.values is not None or (p.low is not None and p.high is not None)
        step = p.q if p.q is not None and not p.log else None  # Optuna's own step; on a log scale, rounded after
        if p.values is not None:
            values[p.name] = trial.suggest_categorical(p.name, p.values)
        elif p.integer:
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log,  # type: ignore[arg-type]
                                               step=int(step or 1))
        else:
            values[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log,  # type: ignore[arg-type]
                                                 step=step)
        if p.q is not None and p.log:
            rounded = round(values[p.name] / p.q) * p.q
            values[p.name] = int(rounded) if p.integer else rounded
    return values


# -- one entry point for every sweep file ---------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    sweep: Grid | Space
    path: Path
    wandb: wandb_sweep.Translation | None = None  # how a W&B file was read (for the dry run)
    notes: list[str] = field(default_factory=list)


def load_sweep(path: Path, overrides: list[str] | None = None, *, max_jobs: int = MAX_JOBS) -> Grid | Space:
    """A grid file, a space file or a W&B sweep file (`method: grid` is a Grid, `random` and
    `bayes` a Space), validated; ConfigError names the file, line and key of every problem."""
    return read_sweep(path, overrides, max_jobs=max_jobs).sweep


# Keys only a search space has: a file with them and without params is a space missing its params.
SPACE_ONLY = ("params", "sampler", "pruner", "metric", "target")


def read_sweep(path: Path, overrides: list[str] | None = None, *, max_jobs: int = MAX_JOBS) -> Loaded:
    """`load_sweep`, with how a W&B file was read (its name mapping, unused keys, notes). The file
    is read once (`trainer.yamlfile`)."""
    doc = yamlfile.read(path)
    raw = doc.data
    if isinstance(raw, dict) and wandb_sweep.is_wandb(raw):
        return _from_wandb(path, raw, _Reporter(doc), overrides or [], max_jobs=max_jobs)
    if isinstance(raw, dict) and any(k in raw for k in SPACE_ONLY) and "axes" not in raw:
        return Loaded(load_space(path, overrides, doc=doc), path)
    return Loaded(load_grid(path, overrides, max_jobs=max_jobs, doc=doc), path)


def _raise_all(path: Path, report: _Reporter, problems: wandb_sweep.Problems) -> None:
    if not problems.items:
        return
    located = []
    for where, message in problems.items:
        line = next((report.lines[where[:end]] for end in range(len(where), 0, -1) if where[:end] in report.lines), 0)
        located.append((line, message))
    located.sort(key=lambda item: item[0])
    body = "\n".join(f"  line {line}: {message}" if line else f"  {message}" for line, message in located)
    count = f"{len(located)} problem{'s' if len(located) > 1 else ''}"
    raise ConfigError(f"{path}: W&B sweep file: {count}; nothing was run (sweep runs its own training core: every "
                      f"parameter must be one of its job keys)\n{body}")


def _core_says(exc: ConfigError) -> str:
    """The core's 'key: problem' less the key."""
    return str(exc).split(": ", 1)[-1]


def _from_wandb(path: Path, raw: dict[str, Any], report: _Reporter, overrides: list[str], *,
                max_jobs: int = MAX_JOBS) -> Loaded:
    t, problems = wandb_sweep.translate(raw, stem=path.stem)
    notes: list[str] = []
    try:
        fixed = _flatten(apply_overrides({}, overrides))
    except ConfigError as exc:
        problems.add((), str(exc))
        fixed = {}
    constants = {p.key: p for p in t.parameters if p.distribution == "constant"}
    searched = []
    for p in t.parameters:
        if p.key in fixed:
            notes.append(f"--set {p.key}={fixed[p.key]!r} replaces parameters.{p.name} ({p.shown()})")
        elif p.distribution != "constant":
            searched.append(p)
    base = {**{k: p.value for k, p in constants.items()}, **fixed}
    base_ok = True
    for key, value in base.items():
        try:
            build_job(_nest({key: value}))
        except ConfigError as exc:
            base_ok = False
            where = constants[key].where if key in constants and key not in fixed else ()
            label = f"parameters.{constants[key].name}" if where else f"--set {key}"
            problems.add(where, f"{label}: {key} {_core_says(exc)}")
    if base_ok:
        try:
            build_job(_nest(base))
        except ConfigError as exc:
            base_ok = False
            problems.add((), f"the fixed values together: {exc}")
    check_base = base if base_ok else {}
    if t.method == "grid":
        _check_grid_size(path, t, searched, max_jobs)
    for p in searched:
        ends = p.values if p.values is not None else [p.low, p.high]
        for value in ends:
            try:
                build_job(_nest({**check_base, p.key: value}))
            except ConfigError as exc:
                problems.add(p.where, f"parameters.{p.name}: {p.key} {_core_says(exc)}")
                break
    if t.method == "grid" and t.hyperband is not None:
        notes.append("early_terminate: not used by a grid (every job runs to its end, exactly once)")
    _raise_all(path, report, problems)

    if t.method == "grid":
        return Loaded(_wandb_grid(path, t, base, searched, notes, max_jobs=max_jobs), path, t, notes)
    params = [Param(p.key, values=p.values, low=p.low, high=p.high, log=p.log, integer=p.integer, q=p.q)
              for p in searched]
    if t.hyperband is not None:
        epochs = [base.get("epochs", JobConfig().epochs)]
        for p in searched:
            if p.key == "epochs":
                epochs = list(p.values) if p.values is not None else [p.high]
        kwargs = {"max_resource": max(epochs), **t.hyperband}
        if kwargs["min_resource"] >= kwargs["max_resource"]:
            notes.append(f"early_terminate: min_iter {kwargs['min_resource']} is not below the jobs' "
                         f"{kwargs['max_resource']} epochs: no trial will be pruned")
        pruner: tuple[str, dict[str, Any]] = ("hyperband", kwargs)
    else:
        pruner = ("none", {})
    space = Space(name=t.name, description=t.description, base=base, params=params, metric=t.metric,
                  sampler=(wandb_sweep.METHODS[t.method], {}), pruner=pruner, direction=t.direction, target=t.target,
                  wandb_project=t.project, wandb_entity=t.entity, run_cap=t.run_cap)
    return Loaded(space, path, t, notes)


def _check_grid_size(path: Path, t: wandb_sweep.Translation, searched: list[wandb_sweep.Parameter],
                     max_jobs: int) -> None:
    """A W&B grid's size, computed before any value is listed or checked; an axis longer than
    --max-jobs is refused even under a run_cap."""
    counts = {p.key: p.grid_count() for p in searched}
    size = math.prod(counts.values())
    if min(size, (t.run_cap or size) * counts.get("seed", 1)) > max_jobs or max(counts.values(), default=0) > max_jobs:
        shape = " x ".join(f"{n:,} {k}" for k, n in counts.items())
        raise ConfigError(f"{path}: the grid has {size:,} jobs ({shape}), more than --max-jobs {max_jobs:,}; shrink a "
                          "parameter's values (or set run_cap), or raise --max-jobs if you mean it")


def _wandb_grid(path: Path, t: wandb_sweep.Translation, base: dict[str, Any],
                searched: list[wandb_sweep.Parameter], notes: list[str], *, max_jobs: int = MAX_JOBS) -> Grid:
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
            jobs.append(Job(config=build_job(_nest({**flat, **point, "seed": seed})), point={**point, "seed": seed}))
    if t.run_cap is not None and t.run_cap < len(jobs):
        notes.append(f"run_cap {t.run_cap}: the first {t.run_cap} of the grid's {len(jobs)} jobs run, as in W&B")
        jobs = jobs[: t.run_cap]
    return Grid(name=t.name, description=t.description, path=path, axes=axes, jobs=jobs)


def describe(loaded: Loaded) -> list[str]:
    """The dry run: the sweep as `sweep` will run it, and how a W&B file was read."""
    sweep, t = loaded.sweep, loaded.wandb
    lines = []
    source = f"W&B sweep file {loaded.path}" if t else str(loaded.path)
    if isinstance(sweep, Grid):
        lines.append(f"grid {sweep.name} ({source}, method: grid): {len(sweep.jobs)} jobs, each run exactly once")
    else:
        lines.append(f"study {sweep.name} ({source})")
        name, kwargs = sweep.sampler
        sampler = f"{SAMPLERS[name]}({_args(kwargs)})"
        if t is not None and t.method == "bayes":
            sampler += " - W&B's bayes is a Gaussian process; Optuna's TPE stands in for it"
        elif t is not None:
            sampler += " (method: random)"
        if "seed" not in kwargs:
            sampler += "; unseeded: --sampler-seed N makes the draws reproducible"
        lines.append(f"sampler: {sampler}")
        name, kwargs = sweep.pruner
        pruner = f"{PRUNERS[name]}({_args(kwargs)})"
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
        lines.append(f"trials: {sweep.run_cap} (run_cap; --trials overrides)" if sweep.run_cap is not None
                     else "trials: --trials N (the file has no run_cap)")
    if isinstance(sweep, Space):
        lines.append("base: " + (", ".join(f"{k}={v}" for k, v in sweep.base.items()) or "(the job defaults)"))
        lines.append("searched:")
        for p in sweep.params:
            lines.append(f"  {p.name}: " + (f"one of {p.values}" if p.values is not None else
                                            f"{'int ' if p.integer else ''}{'log-' if p.log else ''}uniform "
                                            f"[{p.low:g}, {p.high:g}]" + (f", multiples of {p.q:g}" if p.q else "")))
    if t is not None:
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
    lines.extend(f"note: {n}" for n in loaded.notes)
    return lines


def _args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
