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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainer.config import (
    ALL_KEYS,
    ConfigError,
    JobConfig,
    YamlLoader,
    _nearest,
    apply_overrides,
    build_job,
    refuse_aliases,
)

GRID_KEYS = ["name", "description", "base", "axes", "seeds", "include", "exclude", "slurm"]  # slurm: sweeper/slurm.py
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Job:
    config: JobConfig
    point: dict[str, Any]  # the swept keys' values (and seed) that make this job

    @property
    def id(self) -> str:
        return self.config.job_id()


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    path: Path
    axes: dict[str, list[Any]]
    jobs: list[Job]

    @property
    def varied(self) -> list[str]:
        """The keys that differ between jobs, in axis order (what a table's rows are)."""
        keys = list(self.axes) + sorted({k for job in self.jobs for k in job.point} - set(self.axes))
        return [k for k in keys if len({json.dumps(job.point.get(k)) for job in self.jobs}) > 1]


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """Line number (1-based) of every mapping key, by its path from the root."""
    found: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                found[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    root = yaml.compose(text, Loader=YamlLoader)
    if root is not None:
        walk(root, ())
    return found


class _Reporter:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _lines(text)

    def error(self, where: tuple[str, ...], message: str) -> ConfigError:
        for end in range(len(where), 0, -1):
            if where[:end] in self.lines:
                return ConfigError(f"{self.path}: line {self.lines[where[:end]]}: {message}")
        return ConfigError(f"{self.path}: {message}")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if key == "data" and not prefix and isinstance(value, Mapping):
            flat.update(_flatten(value, "data."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        target = nested
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def _check_point_keys(report: _Reporter, where: tuple[str, ...], keys: list[str]) -> None:
    for key in keys:
        if key not in ALL_KEYS:
            raise report.error((*where, key), f"{'.'.join(where)}.{key}: unknown key; {_nearest(key, ALL_KEYS)}")


def read_sweep_file(path: Path, keys: list[str],
                    overrides: list[str] | None) -> tuple[dict[str, Any], _Reporter, str, dict[str, Any]]:
    """The part grid and search-space files share: read the YAML (keeping line numbers), check
    the top-level keys and the name, and apply `--set` overrides to `base`.

    Returns the raw mapping, a reporter for located errors, the name and the (nested) base.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    refuse_aliases(text, str(path))
    try:
        raw = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
        report = _Reporter(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        raise ConfigError(f"{path}:{line} not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(keys)}")
    for key in raw:
        if key not in keys:
            raise report.error((str(key),), f"{key}: unknown key; {_nearest(str(key), keys)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise report.error(("name",), f"name: {name!r} is not allowed; expected letters, digits, '_', '-', '.'")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise report.error(("base",), f"base: expected a mapping of job keys, got {type(base).__name__}")
    _check_point_keys(report, ("base",), list(_flatten(base)))
    try:
        base = apply_overrides(base, overrides or [])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return raw, report, name, base


MAX_JOBS = 10_000


def load_grid(path: Path, overrides: list[str] | None = None, *, max_jobs: int = MAX_JOBS) -> Grid:
    """Read, validate and expand a grid file. Raises ConfigError naming file, line and key; a
    grid of more than `max_jobs` jobs is refused with its size before it is expanded."""
    raw, report, name, base = read_sweep_file(path, GRID_KEYS, overrides)

    axes = raw.get("axes") or {}
    if not isinstance(axes, dict):
        raise report.error(("axes",), f"axes: expected a mapping of key -> list of values, got {type(axes).__name__}")
    _check_point_keys(report, ("axes",), list(axes))
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise report.error(("axes", key), f"axes.{key}: {values!r} is not a non-empty list of values")
        if key == "seed":
            raise report.error(("axes", key), "axes.seed: use the top-level 'seeds' list for seeds")

    seeds = raw.get("seeds", [base.get("seed", 42)])
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise report.error(("seeds",), f"seeds: {seeds!r} is not a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise report.error(("seeds",), f"seeds: {seeds!r} lists a seed twice")

    sizes = [len(v) for v in axes.values()]
    includes: list[Any] = raw["include"] if isinstance(raw.get("include"), list) else []
    size = (math.prod(sizes) + len(includes)) * len(seeds)
    if size > max_jobs:
        shape = " x ".join(f"{len(v)} {k}" for k, v in axes.items()) or "1 point"
        extra = f" + {len(includes)} included" if includes else ""
        raise ConfigError(f"{path}: the grid has {size:,} jobs (({shape}{extra}) x {len(seeds)} seed(s)), more than "
                          f"--max-jobs {max_jobs:,}; shrink an axis, or raise --max-jobs if you mean it")

    # Each point with the YAML path that locates it: its last axis value, or its include entry.
    located: list[tuple[dict[str, Any], tuple[str, ...]]] = [({}, ("base",))]
    if axes:
        located = [
            ({k: axes[k][i] for k, i in zip(axes, combo, strict=False)}, ("axes", list(axes)[-1], str(combo[-1])))
            for combo in itertools.product(*(range(len(v)) for v in axes.values()))
        ]
    for section in ("include", "exclude"):
        entries = raw.get(section) or []
        if not isinstance(entries, list) or any(not isinstance(e, dict) or not e for e in entries):
            raise report.error((section,), f"{section}: expected a list of non-empty mappings of key -> value")
        for i, entry in enumerate(entries):
            _check_point_keys(report, (section, str(i)), list(entry))
    for i, entry in enumerate(raw.get("include") or []):
        located.append((dict(entry), ("include", str(i))))
    excluded = [dict(e) for e in raw.get("exclude") or []]
    located = [(p, w) for p, w in located if not any(all(k in p and p[k] == v for k, v in e.items()) for e in excluded)]

    base_flat = _flatten(base)
    jobs: list[Job] = []
    seen: dict[str, dict[str, Any]] = {}
    for point, where in located:
        for seed in seeds:
            flat = {**base_flat, **point, "seed": seed}
            try:
                config = build_job(_nest(flat))
            except ConfigError as exc:
                raise _locate(report, exc, point, where, axes) from None
            job = Job(config=config, point={**point, "seed": seed})
            if job.id in seen:
                raise report.error(where, f"{_describe(where)}: duplicate point {job.point} (the same job as "
                                          f"{seen[job.id]}); remove one")
            seen[job.id] = job.point
            jobs.append(job)
    if not jobs:
        raise report.error(("exclude",), "exclude: drops every point; nothing would run")
    return Grid(name=name, description=str(raw.get("description") or ""), path=path,
                axes={k: list(v) for k, v in axes.items()}, jobs=jobs)


def _locate(report: _Reporter, exc: ConfigError, point: dict[str, Any], where: tuple[str, ...],
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


def _describe(where: tuple[str, ...]) -> str:
    return ".".join(where[:2]) + (f"[{where[2]}]" if len(where) > 2 else "")
