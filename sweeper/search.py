"""Optuna search spaces in sweep's own format (W&B sweep files: `sweeper.wandb_sweep`).

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

`sweeper.sweepfile.read_sweep` is the one entry point of `sweep grid` and `sweep optuna`: it
reads a grid file, a space file or a W&B sweep file once and returns the Grid or Space to run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.spec import Reporter, all_problems, overrides_of, read_header
from sweeper.wandb_params import MAX_VALUES
from trainer import yamlfile
from trainer.checks import SEED_RANGE, key_text
from trainer.config import ALL_KEYS, ConfigError, JobConfig
from trainer.jobdir import METRICS as JOB_METRICS
from trainer.jobfile import build_point, every_problem, nest
from trainer.names import nearest

# slurm: sweeper/slurm_options.py reads it
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
        return build_point({**self.base, **values})

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


def _named(report: Reporter, key: str, raw: Any, allowed: dict[str, str], default: str) -> tuple[str, dict]:
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
        raise report.error((key,), f"{key}: {allowed[raw]}({args_text(kwargs)}) is refused by Optuna: {exc}") from None
    return raw, kwargs


def load_space(path: Path, overrides: list[str] | None = None) -> Space:
    """Read and check a search space (`sweeper.sweepfile.read_sweep` reads any sweep file)."""
    return space_from(yamlfile.read(path), overrides_of(path, overrides))


def space_from(doc: yamlfile.Document, fixed: Mapping[str, Any]) -> Space:
    """A space file read once (`doc`), with the `--set` overrides parsed once (`fixed`), checked;
    ConfigError lists every problem of the file, each at its line."""
    head = read_header(doc, SPACE_KEYS, fixed)
    raw, report, base = head.raw, head.report, head.base
    problems: list[str] = []
    failing: set[str] = set()
    for text in every_problem(nest(base)):
        key = text.split(":")[0]
        failing.add(key.split(".")[0])
        problems.append(str(report.error(("base", *key.split(".")), f"base.{text}")))
    checked_base = {k: v for k, v in base.items() if k.split(".")[0] not in failing}
    params = _params(report, raw.get("params"), checked_base, problems)
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
    elif seeds is not None and "seed" in base:
        problems.append(str(report.error(("seeds",), "seeds: the base sets a seed too; give the seeds here only")))
    named = {}
    for key, allowed, default in (("sampler", SAMPLERS, "tpe"), ("pruner", PRUNERS, "median")):
        try:
            named[key] = _named(report, key, raw.get(key), allowed, default)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise all_problems(doc.path, list(dict.fromkeys(problems)))
    return Space(name=head.name, description=str(raw.get("description") or ""), base=base, params=params,
                 seeds=tuple(seeds) if seeds is not None else None,
                 metric=metric, sampler=named["sampler"], pruner=named["pruner"],
                 direction=JOB_METRICS[metric], target=None if target is None else float(target))


def _params(report: Reporter, params_raw: Any, base: dict[str, Any], problems: list[str]) -> list[Param]:
    """Each searched parameter, checked against the base's accepted keys; problems are added to `problems`."""
    if not isinstance(params_raw, dict) or not params_raw:
        problems.append(str(report.error(("params",), "params: expected a mapping of key -> {values: [...]} or "
                                                      "{min, max, log}")))
        return []
    params = []
    for key, spec in params_raw.items():
        try:
            params.append(_param(report, key, spec, base))
        except ConfigError as exc:
            problems.append(str(exc))
    return params


def _param(report: Reporter, key: Any, spec: Any, base: dict[str, Any]) -> Param:
    """One searched parameter: its values, or both ends of its range, checked as the core checks a job."""
    where = ("params", str(key))
    if key not in ALL_KEYS or key == "seed":
        raise report.error(where, f"params.{key_text(key)}: unknown or unsearchable key; {nearest(str(key), ALL_KEYS)}")
    if not isinstance(spec, dict) or not (set(spec) == {"values"} or {"min", "max"} <= set(spec) <= {"min", "max", "log"}):
        raise report.error(where, f"params.{key}: {spec!r} is not allowed; expected {{values: [...]}} or "
                                  "{min: ..., max: ..., log: true|false}")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise report.error(where, f"params.{key}.values: {values!r} is not a non-empty list")
        if len(values) > MAX_VALUES:
            raise report.error(where, f"params.{key}.values: {len(values):,} values is too many; expected at most "
                                      f"{MAX_VALUES:,} (a range: min and max)")
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
            build_point({**base, key: value})
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


def args_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
