"""Grid files: parse, validate (with the training core's own checks) and expand into jobs.

A grid file has `name`, optional `description`, `base` (job keys), `axes` (key -> list of
values; dotted keys such as `data.limit` allowed; the cartesian product), `seeds` (each point
runs once per seed), optional `include` (extra points, each a mapping of keys) and `exclude`
(mappings; a point matching every key of one is dropped). Problems are reported with the
file, the YAML line where there is one, the key and the reason.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from trainer import yamlfile
from trainer.checks import SEED_RANGE, key_text
from trainer.config import ALL_KEYS, ConfigError, JobConfig
from trainer.jobfile import build_point, every_problem, flatten, nest, parse_overrides
from trainer.names import nearest

GRID_KEYS = ["name", "description", "base", "axes", "seeds", "include", "exclude", "slurm"]  # slurm: sweeper/slurm_options.py
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # matched whole (fullmatch)
NAME_MAX = 100


@dataclass(frozen=True)
class Job:
    config: JobConfig
    point: dict[str, Any]  # the swept keys' values (and seed) that make this job

    @cached_property
    def id(self) -> str:  # computed once: a worker's every look at the storage asks it of every job (issue 28)
        return self.config.job_id()


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    path: Path
    axes: dict[str, list[Any]]
    jobs: list[Job]
    warnings: list[str] = field(default_factory=list)  # what the file says that does nothing (shown, not refused)

    @property
    def varied(self) -> list[str]:
        """The keys that differ between jobs, in axis order (what a table's rows are)."""
        keys = list(self.axes) + sorted({k for job in self.jobs for k in job.point} - set(self.axes))
        return [k for k in keys if len({json.dumps(job.point.get(k)) for job in self.jobs}) > 1]


class Reporter:
    """Errors located at the YAML line of the key they are about."""

    def __init__(self, doc: yamlfile.Document) -> None:
        self.path = doc.path
        self.lines = doc.lines
        self.doc = doc

    def error(self, where: tuple[str, ...], message: str) -> ConfigError:
        line = self.doc.line(where)
        return ConfigError(f"{self.path}: line {line}: {message}" if line else f"{self.path}: {message}")


def all_problems(path: Path, problems: list[str], limit: int = 20) -> ConfigError:
    """One error with every problem (the first `limit`), each at its line."""
    if len(problems) == 1:
        return ConfigError(problems[0])
    prefix = f"{path}: "
    body = [p[len(prefix):] if p.startswith(prefix) else p for p in problems[:limit]]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return ConfigError(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(body) + more)


def _check_point_keys(report: Reporter, where: tuple[str, ...], keys: list[str]) -> None:
    for key in keys:
        if key not in ALL_KEYS:
            raise report.error((*where, key), f"{'.'.join(where)}.{key_text(key)}: unknown key; {nearest(key, ALL_KEYS)}")


def check_name(value: Any, what: str) -> str:
    """A sweep or study name: a whole match of NAME_PATTERN, at most NAME_MAX characters, never a path."""
    if isinstance(value, str) and len(value) <= NAME_MAX and NAME_PATTERN.fullmatch(value) and ".." not in value:
        return value
    shown = repr(value[:60]) + "..." if isinstance(value, str) and len(value) > 60 else repr(value)
    raise ConfigError(f"{what}: {shown} is not allowed; expected a name of 1 to {NAME_MAX} letters, digits, '_', '-', "
                      "'.' starting with a letter or digit (no '..', no path: it names the directory under the runs "
                      "directory)")


def overrides_of(path: Path, overrides: list[str] | None) -> dict[str, Any]:
    """`--set` overrides as flat job keys, parsed once for the whole sweep file (ConfigError names the file)."""
    try:
        return parse_overrides(overrides or [])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Header:
    """What grid and space files share: the file's mapping, its name, and its base with the overrides
    set (flat job keys, the one form a parameter keeps up to `build_point`)."""

    raw: dict[str, Any]
    report: Reporter
    name: str
    base: dict[str, Any]


def read_header(doc: yamlfile.Document, keys: list[str], fixed: Mapping[str, Any]) -> Header:
    """Check the top-level keys, the name and the base of a grid or space file, and set the `--set`
    overrides (`fixed`, from `overrides_of`) in its base."""
    raw, report = doc.data, Reporter(doc)
    if not isinstance(raw, dict):
        raise ConfigError(f"{doc.path}: expected a mapping with keys {', '.join(keys)}, got {_type(raw)}")
    for key in raw:
        if key not in keys:
            raise report.error((str(key),), f"{key_text(key)}: unknown key; {nearest(str(key), keys)}")
    try:
        name = check_name(raw.get("name"), "name")
    except ConfigError as exc:
        raise report.error(("name",), str(exc)) from None
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise report.error(("base",), f"base: {base!r} ({_type(base)}) is not allowed; expected a mapping of job keys "
                                      "({} for none)")
    data = base.get("data", {})
    if not isinstance(data, dict):
        raise report.error(("base", "data"), f"base.data: {data!r} ({_type(data)}) is not allowed; expected a mapping "
                                             "of data keys, e.g. {name: stanfordnlp/imdb, limit: 2000}")
    flat = flatten(base)
    _check_point_keys(report, ("base",), list(flat))
    return Header(raw=raw, report=report, name=name, base={**flat, **fixed})


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


MAX_JOBS = 10_000


def load_grid(path: Path, overrides: list[str] | None = None, *, max_jobs: int = MAX_JOBS) -> Grid:
    """Read, validate and expand a grid file (`sweeper.sweepfile.read_sweep` reads any sweep file)."""
    return grid_from(yamlfile.read(path), overrides_of(path, overrides), max_jobs=max_jobs)


def grid_from(doc: yamlfile.Document, fixed: Mapping[str, Any], *, max_jobs: int = MAX_JOBS) -> Grid:
    """A grid file read once (`doc`), with the `--set` overrides parsed once (`fixed`), validated and
    expanded. ConfigError names file, line and key of every problem; a grid of more than
    `max_jobs` jobs is refused with its size before it is expanded."""
    head = read_header(doc, GRID_KEYS, fixed)
    raw, report, path = head.raw, head.report, doc.path
    axes = _axes(report, raw)
    seeds = _seeds(report, raw, head.base)
    includes, excluded = _sections(report, raw)
    _check_size(path, axes, includes, seeds, max_jobs)
    located = _points(axes, includes)
    warnings = [str(report.error(("exclude", str(i)), f"exclude[{i}]: {entry!r} matches no point, so drops nothing "
                                                      f"({_why_no_match(entry, axes, includes)})"))
                for i, entry in enumerate(excluded) if not any(_matches(entry, p) for p, _ in located)]
    located = [(p, w) for p, w in located if not any(_matches(e, p) for e in excluded)]
    problems = _each_value(report, head.base, axes, includes, seeds)
    if problems:
        raise all_problems(path, problems)
    jobs = _expand(report, head.base, located, seeds, axes)
    return Grid(name=head.name, description=str(raw.get("description") or ""), path=path,
                axes={k: list(v) for k, v in axes.items()}, jobs=jobs, warnings=warnings)


def _axes(report: Reporter, raw: dict[str, Any]) -> dict[str, list[Any]]:
    axes = raw.get("axes", {})
    if not isinstance(axes, dict):
        raise report.error(("axes",), f"axes: {axes!r} ({_type(axes)}) is not allowed; expected a mapping of key -> "
                                      "list of values (leave the key out for a grid of the base alone)")
    _check_point_keys(report, ("axes",), list(axes))
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise report.error(("axes", key), f"axes.{key}: {values!r} is not a non-empty list of values")
        if key == "seed":
            raise report.error(("axes", key), "axes.seed: use the top-level 'seeds' list for seeds")
    return axes


def _seeds(report: Reporter, raw: dict[str, Any], base: dict[str, Any]) -> list[int]:
    seeds = raw.get("seeds", [base.get("seed", 42)])
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise report.error(("seeds",), f"seeds: {seeds!r} is not a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise report.error(("seeds",), f"seeds: {seeds!r} lists a seed twice")
    for i, seed in enumerate(seeds):
        if not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
            raise report.error(("seeds", str(i)), f"seeds: {seed} is out of range; expected integers 0 <= seed < 2**32")
    return seeds


def _sections(report: Reporter, raw: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The include and exclude entries, each a non-empty mapping of job keys."""
    for section in ("include", "exclude"):
        entries = raw.get(section, [])
        if not isinstance(entries, list) or any(not isinstance(e, dict) or not e for e in entries):
            raise report.error((section,), f"{section}: {entries!r} is not allowed; expected a list of non-empty "
                                           "mappings of key -> value")
        for i, entry in enumerate(entries):
            _check_point_keys(report, (section, str(i)), list(entry))
    return list(raw.get("include", [])), [dict(e) for e in raw.get("exclude", [])]


def _check_size(path: Path, axes: dict[str, list[Any]], includes: list[Any], seeds: list[int], max_jobs: int) -> None:
    size = (math.prod(len(v) for v in axes.values()) + len(includes)) * len(seeds)
    if size > max_jobs:
        shape = " x ".join(f"{len(v)} {k}" for k, v in axes.items()) or "1 point"
        extra = f" + {len(includes)} included" if includes else ""
        raise ConfigError(f"{path}: the grid has {size:,} jobs (({shape}{extra}) x {len(seeds)} seed(s)), more than "
                          f"--max-jobs {max_jobs:,}; shrink an axis, or raise --max-jobs if you mean it")


def _points(axes: dict[str, list[Any]], includes: list[Any]) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
    """Each point with the YAML path that locates it: its last axis value, or its include entry."""
    located: list[tuple[dict[str, Any], tuple[str, ...]]] = [({}, ("base",))]
    if axes:
        located = [
            ({k: axes[k][i] for k, i in zip(axes, combo, strict=False)}, ("axes", list(axes)[-1], str(combo[-1])))
            for combo in itertools.product(*(range(len(v)) for v in axes.values()))
        ]
    located.extend((dict(entry), ("include", str(i))) for i, entry in enumerate(includes))
    return located


def _expand(report: Reporter, base: dict[str, Any], located: list[tuple[dict[str, Any], tuple[str, ...]]],
            seeds: list[int], axes: dict[str, list[Any]]) -> list[Job]:
    """Every point once per seed, each built (and checked) once, here in the parent."""
    jobs: list[Job] = []
    seen: dict[str, dict[str, Any]] = {}
    for point, where in located:
        for seed in seeds:
            try:
                config = build_point({**base, **point, "seed": seed})
            except ConfigError as exc:  # a rule between values of different axes
                raise _locate(report, exc, point, where, axes) from None
            job = Job(config=config, point={**point, "seed": seed})
            if job.id in seen:
                raise report.error(where, f"{_describe(where)}: duplicate point {job.point} (the same job as "
                                          f"{seen[job.id]}); remove one")
            seen[job.id] = job.point
            jobs.append(job)
    if not jobs:
        raise report.error(("exclude",), "exclude: drops every point; nothing would run")
    return jobs


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)  # True == 1 in Python; not in a grid file


def _matches(entry: dict[str, Any], point: dict[str, Any]) -> bool:
    return all(k in point and _same(point[k], v) for k, v in entry.items())


def _why_no_match(entry: dict[str, Any], axes: dict[str, list[Any]], includes: list[dict[str, Any]]) -> str:
    swept = set(axes) | {k for e in includes for k in e}
    for key, value in entry.items():
        if key == "seed":
            return "seed: a seed is not excluded per point; list the seeds wanted in seeds"
        if key not in swept:
            return f"{key} is not an axis or an include key; expected one of: {', '.join(sorted(swept)) or 'none'}"
        if key in axes and not any(_same(v, value) for v in axes[key]):
            return f"{key}: {value!r} is not one of the axis' values {axes[key]!r}"
    return "no point has all of these values together"


def _locate(report: Reporter, exc: ConfigError, point: dict[str, Any], where: tuple[str, ...],
            axes: dict[str, list[Any]]) -> ConfigError:
    """Turn the core's 'key: problem' into 'file: line N: axes.key: problem' (or base., include[i].)."""
    message = str(exc)
    key = message.split(":")[0]
    if key in point and where[0] == "include":
        return report.error((*where, key), f"include[{where[1]}].{message}")
    if key in point:
        return report.error(("axes", key, str(axes[key].index(point[key]))), f"axes.{message}")
    if key == "seed":
        return report.error(("seeds",), f"seeds: {message}")
    return report.error(("base", *key.split(".")), f"base.{message}")


def _each_value(report: Reporter, base: dict[str, Any], axes: dict[str, list[Any]], includes: list[dict[str, Any]],
                seeds: list[int]) -> list[str]:
    """Every problem of the base, of each axis value and of each include entry, each checked on
    its own against the base (the product is checked after, for rules between axes)."""
    problems: list[str] = []
    failing = set()
    for text in every_problem(nest(base)):
        key = text.split(":")[0]
        failing.add(key.split(".")[0])
        problems.append(str(report.error(("base", *key.split(".")), f"base.{text}")))
    ok = {k: v for k, v in base.items() if k.split(".")[0] not in failing}

    swept = {k for k in axes} | {k for entry in includes for k in entry}

    def about_failing(text: str) -> bool:
        """A rule with another key that is refused itself, or swept: judged in the product."""
        key, _, said = text.partition(": ")
        others = failing | {k for k in swept if k != key}
        return any(re.search(rf"(?<![\w.]){re.escape(k)}\b", said) for k in others)

    seed = {"seed": seeds[0]}
    for key, values in axes.items():
        for i, value in enumerate(values):
            try:
                build_point({**ok, **seed, key: value})
            except ConfigError as exc:
                if not about_failing(str(exc)):
                    problems.append(str(report.error(("axes", key, str(i)), f"axes.{exc}")))
    for i, entry in enumerate(includes):
        try:
            build_point({**ok, **seed, **entry})
        except ConfigError as exc:
            if not about_failing(str(exc)):
                key = str(exc).split(":")[0]
                problems.append(str(report.error(("include", str(i), key), f"include[{i}].{exc}")))
    return list(dict.fromkeys(problems))


def _describe(where: tuple[str, ...]) -> str:
    return ".".join(where[:2]) + (f"[{where[2]}]" if len(where) > 2 else "")
