"""`sweep compare`: the experiment that answers "is A better than B on my task?".

Three phases, each run by the one scheduler, all recorded in the storage so that a killed run
continues where it stopped and `sweep status` / `sweep report` see every job:

1. **Equal tuning.** Every value of the compared axis gets the same budget of K configurations
   of the rest of the space. For a grid, the same K points for every value (a paired design; a
   seeded sample of the grid's points, all of them when K is their number), in one sweep named
   `<grid>-compare-<axis>`; for a search space, one study per value, `<space>-compare-<axis>-<i>`,
   with the same sampler, the same sampler seed and K trials. Nothing else differs: same data,
   split and tuning seed.
2. **Seeds.** Each value's best tuning configuration (by the validation metric) runs again on
   seeds: a pilot of `seeds` a side (the tuning run is one of them), then, with `seeds: auto`,
   as many more as `reports.verdict` says would decide the target difference at 80% power,
   capped by `max_seeds`. In the sweep `<name>-compare-<axis>-seeds` (a grid's: its own sweep).
3. **The answer**: `reports.experiment` (the pairwise verdicts, P(A beats B) at every budget).

The plan of each phase is known before it runs (`Plan`), and printed by the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeper.search import Space
from sweeper.spec import NAME_PATTERN, Grid, Job
from sweeper.sweepfile import Loaded
from trainer.config import ConfigError

DESIGN_SEED = 0  # which K points of a grid are the tuning budget (the same for every value)
DEFAULT_SEEDS = 3
DEFAULT_MAX_SEEDS = 10


@dataclass(frozen=True)
class Options:
    axis: str
    values: list[Any] | None  # None: every value the file lists
    budget: int
    seeds: int | None  # None: auto (a pilot of DEFAULT_SEEDS, then as many as needed)
    max_seeds: int = DEFAULT_MAX_SEEDS
    target_diff: float | None = None


@dataclass
class Plan:
    kind: str  # "grid" or "study"
    name: str  # the tuning sweep (a grid) or the prefix of the studies
    axis: str
    values: list[Any]
    budget: int
    pilot: int
    auto: bool
    max_seeds: int
    target_diff: float | None
    metric: str
    tuning_seed: int
    tuning: dict[str, list[Job]] = field(default_factory=dict)  # grid: value label -> its K jobs
    rest: list[dict[str, Any]] = field(default_factory=list)  # grid: the K points of the rest of the space
    studies: dict[str, tuple[str, Space]] = field(default_factory=dict)  # study: value label -> (name, space)
    seeds_sweep: str = ""

    @property
    def labels(self) -> list[str]:
        return [label(v) for v in self.values]

    def tuning_jobs(self) -> int:
        return self.budget * len(self.values)


def label(value: Any) -> str:
    """A value as the page shows it: a local model directory by its name."""
    if isinstance(value, str):
        local = value.startswith(("/", "./", "../")) or value.count("/") > 1 or Path(value).is_dir()
        return value.rstrip("/").rsplit("/", 1)[-1] if local else value
    return json.dumps(value)


def _sweep_name(*parts: str) -> str:
    name = "-".join(parts)
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)
    if not NAME_PATTERN.match(cleaned):
        cleaned = "c" + cleaned
    return cleaned[:100]


def plan(loaded: Loaded, options: Options) -> Plan:
    """The experiment's design, checked before any work: ConfigError names the flag or file."""
    if options.budget < 1:
        raise ConfigError(f"--budget: {options.budget} is not allowed; expected K >= 1 configurations a value")
    pilot = options.seeds if options.seeds is not None else DEFAULT_SEEDS
    if pilot < 1:
        raise ConfigError(f"--seeds: {pilot} is not allowed; expected N >= 1 or auto")
    if options.max_seeds < pilot:
        raise ConfigError(f"--max-seeds: {options.max_seeds} is below --seeds {pilot}; expected --max-seeds >= --seeds")
    if options.target_diff is not None and not (math.isfinite(options.target_diff) and 0 < options.target_diff < 1):
        raise ConfigError(f"--target-diff: {options.target_diff!r} is not allowed; expected a difference in accuracy, "
                          "0 < D < 1 (e.g. 0.01)")
    sweep = loaded.sweep
    common = {"axis": options.axis, "budget": options.budget, "pilot": pilot, "auto": options.seeds is None,
              "max_seeds": options.max_seeds, "target_diff": options.target_diff}
    if isinstance(sweep, Grid):
        return _plan_grid(sweep, options, common)
    return _plan_study(sweep, options, common)


def _chosen(axis: str, listed: list[Any], wanted: list[Any] | None, where: str) -> list[Any]:
    if wanted is None:
        values = listed
    else:
        by_text = {str(v): v for v in listed} | {label(v): v for v in listed}
        unknown = [w for w in wanted if str(w) not in by_text]
        if unknown:
            raise ConfigError(f"--values: {', '.join(map(str, unknown))} not among the values {where} lists for "
                              f"{axis}: {', '.join(label(v) for v in listed)}")
        values = [by_text[str(w)] for w in wanted]
    if len(values) < 2:
        raise ConfigError(f"--axis {axis}: {len(values)} value(s) to compare; expected two or more")
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise ConfigError(f"--values: a value is listed twice: {', '.join(map(str, values))}")
    return values


def _plan_grid(grid: Grid, options: Options, common: dict[str, Any]) -> Plan:
    axis = options.axis
    if axis not in grid.axes:
        raise ConfigError(f"--axis {axis}: {grid.path} has no such axis; its axes: {', '.join(grid.axes) or 'none'}")
    values = _chosen(axis, grid.axes[axis], [_parse(v) for v in options.values] if options.values else None,
                     str(grid.path))
    tuning_seed = grid.jobs[0].point["seed"]
    by_rest: dict[str, dict[str, Job]] = {}  # rest point -> value -> job (the tuning seed's)
    rest_points: dict[str, dict[str, Any]] = {}
    for job in grid.jobs:
        if job.point["seed"] != tuning_seed:
            continue
        rest = {k: v for k, v in job.point.items() if k not in (axis, "seed")}
        key = json.dumps(rest, sort_keys=True)
        rest_points.setdefault(key, rest)
        by_rest.setdefault(key, {})[json.dumps(job.point.get(axis), sort_keys=True)] = job
    wanted = [json.dumps(v, sort_keys=True) for v in values]
    paired = [key for key in rest_points if all(w in by_rest[key] for w in wanted)]  # points every value has
    if options.budget > len(paired):
        raise ConfigError(f"--budget: {options.budget} is larger than the rest of the grid: {len(paired)} point(s) of "
                          f"the other axes that every value of {axis} has ({grid.path}); expected K <= {len(paired)}")
    chosen = paired if options.budget == len(paired) else sorted(
        random.Random(DESIGN_SEED).sample(paired, options.budget), key=paired.index)
    metric = _metric(grid.jobs[0].config)
    p = Plan(kind="grid", name=_sweep_name(grid.name, "compare", axis), values=values, metric=metric,
             tuning_seed=tuning_seed, **common)
    p.rest = [rest_points[key] for key in chosen]
    p.tuning = {label(v): [by_rest[key][w] for key in chosen] for v, w in zip(values, wanted, strict=True)}
    p.seeds_sweep = _sweep_name(grid.name, "compare", axis, "seeds")
    return p


def _metric(config: Any) -> str:
    return str(getattr(config, "metric", "val_acc"))


def _parse(text: Any) -> Any:
    """A --values entry as YAML reads it (0.1 a number, cls a string)."""
    try:
        return yaml.safe_load(str(text))
    except yaml.YAMLError:
        return text


def _plan_study(space: Space, options: Options, common: dict[str, Any]) -> Plan:
    axis = options.axis
    param = next((p for p in space.params if p.name == axis), None)
    if param is None or param.values is None:
        found = ", ".join(p.name for p in space.params if p.values is not None) or "none"
        raise ConfigError(f"--axis {axis}: the space has no categorical parameter of that name (a range cannot be "
                          f"compared value by value); its categorical parameters: {found}")
    values = _chosen(axis, param.values, [_parse(v) for v in options.values] if options.values else None,
                     space.name)
    rest = [p for p in space.params if p.name != axis]
    if not rest and options.budget > 1:
        raise ConfigError(f"--budget: {options.budget} is larger than the rest of the space: {axis} is its only "
                          "parameter; expected K = 1")
    sampler_name, sampler_kwargs = space.sampler
    seed = sampler_kwargs.get("seed", DESIGN_SEED)
    seeds = space.seeds
    tuning_seed = seeds[0] if seeds else space.config({axis: values[0]}).seed
    p = Plan(kind="study", name=_sweep_name(space.name, "compare", axis), values=values, metric=space.metric,
             tuning_seed=tuning_seed, **common)
    for i, value in enumerate(values):
        sub = dataclasses.replace(space, name=_sweep_name(space.name, "compare", axis, str(i)),
                                  base={**space.base, axis: value}, params=rest,
                                  sampler=(sampler_name, {**sampler_kwargs, "seed": seed}), seeds=None,
                                  pruner=("none", {}), target=None)
        p.studies[label(value)] = (sub.name, sub)
    p.seeds_sweep = _sweep_name(space.name, "compare", axis, "seeds")
    return p


def describe(p: Plan, *, estimate_s: float | None = None, slots: int = 1) -> list[str]:
    """The three phases as they will run (the dry run prints this; a run prints it first)."""
    lines = [f"compare {p.axis}: {', '.join(p.labels)}"]
    if p.kind == "grid":
        lines.append(f"phase 1, equal tuning: the same {p.budget} point(s) of the rest of the grid for every value "
                     f"(seed {p.tuning_seed}), {p.tuning_jobs()} jobs in sweep {p.name}:")
        lines += [f"  {i + 1}. " + (", ".join(f"{k}={label(v)}" for k, v in rest.items()) or "(the base)")
                  for i, rest in enumerate(p.rest)]
    else:
        lines.append(f"phase 1, equal tuning: one study per value, {p.budget} trial(s) each, the same sampler and "
                     f"sampler seed, seed {p.tuning_seed}: {p.tuning_jobs()} jobs in studies "
                     + ", ".join(name for name, _ in p.studies.values()))
    more = (f", then as many as the verdict needs at 80% power for "
            f"{'the observed difference' if p.target_diff is None else f'a difference of {p.target_diff:g}'}, at most "
            f"{p.max_seeds} a side" if p.auto else "")
    lines.append(f"phase 2, seeds: each value's best configuration by {p.metric} on {p.pilot} seed(s) (its tuning run "
                 f"one of them: {(p.pilot - 1) * len(p.values)} more jobs){more}, in sweep {p.seeds_sweep}")
    lines.append("phase 3, the answer: compare.md, compare.html (and compare.json with --json): the pairwise verdicts "
                 "and P(A beats B) at every tuning budget")
    jobs = p.tuning_jobs() + (p.pilot - 1) * len(p.values)
    if estimate_s is not None:
        lines.append(f"estimate: {jobs} jobs before any extra seeds, about {_duration(estimate_s * jobs / max(1, slots))} "
                     f"on {slots} slot(s) (the mean of the storage's finished jobs, {estimate_s:.0f} s a job)")
    else:
        lines.append(f"estimate: {jobs} jobs before any extra seeds (no finished job in the storage to time them by)")
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


# -- what the phases leave (run by sweeper.experiment_run) ----------------------------------------


@dataclass
class Tuned:
    """One value's tuning runs and its best configuration."""

    value: Any
    runs: list[tuple[str, float | None]]  # (job id, validation score) in budget order
    best_job: Job | None
    best_score: float | None
    sweep: str = ""  # where its tuning runs live


@dataclass
class Outcome:
    plan: Plan
    tuned: dict[str, Tuned]
    seeds: dict[str, list[tuple[str, str]]]  # value label -> (sweep, job id) of its best configuration's seeds
    runs_dir: Path
    extra: dict[str, int] = field(default_factory=dict)  # value label -> seeds added by `auto`
