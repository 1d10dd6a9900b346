"""Optuna search spaces, in the shape W&B sweep users know.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.spec import _flatten, _nest, _Reporter, read_sweep_file
from trainer.config import ALL_KEYS, ConfigError, JobConfig, _nearest, build_job

SPACE_KEYS = ["name", "description", "base", "params", "metric", "sampler", "pruner", "slurm"]  # slurm: sweeper/slurm.py
METRICS = ("val_acc",)
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


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    base: dict[str, Any]  # flat (dotted) keys
    params: list[Param]
    metric: str
    sampler: tuple[str, dict[str, Any]]
    pruner: tuple[str, dict[str, Any]]

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


def _named(report: _Reporter, key: str, raw: Any, allowed: dict[str, str], default: str) -> tuple[str, dict]:
    """`tpe`, or `{name: tpe, seed: 0}`: a public Optuna class by its short name, with arguments."""
    if raw is None:
        return default, {}
    kwargs = {}
    if isinstance(raw, dict):
        kwargs = {k: v for k, v in raw.items() if k != "name"}
        raw = raw.get("name")
    if raw not in allowed:
        raise report.error((key,), f"{key}: {raw!r} is not allowed; expected one of: {', '.join(allowed)}")
    import optuna

    module = optuna.samplers if key == "sampler" else optuna.pruners
    try:
        getattr(module, allowed[raw])(**kwargs)
    except TypeError as exc:
        raise report.error((key,), f"{key}: {exc}") from None
    return raw, kwargs


def load_space(path: Path, overrides: list[str] | None = None) -> Space:
    raw, report, name, base = read_sweep_file(path, SPACE_KEYS, overrides)
    flat_base = _flatten(base)
    try:
        build_job(_nest(flat_base))
    except ConfigError as exc:
        raise report.error(("base", *str(exc).split(":")[0].split(".")), f"base.{exc}") from None

    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise report.error(("params",), "params: expected a mapping of key -> {values: [...]} or {min, max, log}")
    params = []
    for key, spec in params_raw.items():
        where = ("params", str(key))
        if key not in ALL_KEYS or key == "seed":
            raise report.error(where, f"params.{key}: unknown or unsearchable key; {_nearest(str(key), ALL_KEYS)}")
        if not isinstance(spec, dict) or not (set(spec) == {"values"} or {"min", "max"} <= set(spec) <= {"min", "max", "log"}):
            raise report.error(where, f"params.{key}: {spec!r} is not allowed; expected {{values: [...]}} or "
                                      "{min: ..., max: ..., log: true|false}")
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise report.error(where, f"params.{key}.values: {values!r} is not a non-empty list")
            checks = values
            param = Param(key, values=list(values))
        else:
            low, high, log = spec["min"], spec["max"], spec.get("log", False)
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            if not numbers or not low < high or not isinstance(log, bool) or (log and low <= 0):
                raise report.error(where, f"params.{key}: min {low!r}, max {high!r}, log {log!r} is not allowed; "
                                          "expected numbers with min < max (and min > 0 when log: true)")
            checks = [low, high]
            param = Param(key, low=low, high=high, log=log, integer=isinstance(low, int) and isinstance(high, int))
        for value in checks:  # each value, or both ends of the range, as the core checks a job
            try:
                build_job(_nest({**flat_base, key: value}))
            except ConfigError as exc:
                raise report.error(where, f"params.{exc}") from None
        params.append(param)

    metric = raw.get("metric", "val_acc")
    if metric not in METRICS:
        raise report.error(("metric",), f"metric: {metric!r} is not allowed; expected one of: {', '.join(METRICS)} "
                                        "(maximised)")
    return Space(name=name, description=str(raw.get("description") or ""), base=flat_base, params=params,
                 metric=metric, sampler=_named(report, "sampler", raw.get("sampler"), SAMPLERS, "tpe"),
                 pruner=_named(report, "pruner", raw.get("pruner"), PRUNERS, "median"))


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """The trial's values for every parameter, through Optuna's suggest API."""
    values = {}
    for p in space.params:
        if p.values is not None:
            values[p.name] = trial.suggest_categorical(p.name, p.values)
        elif p.integer:
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)  # type: ignore[arg-type]
        else:
            values[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)  # type: ignore[arg-type]
    return values
