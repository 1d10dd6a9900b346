"""A job file and `--set` overrides, read into a JobConfig with every problem of the file at once.

A job's keys take two shapes: nested, as a job file and `job.json` write them
(`data: {limit: 2000}`), and flat, as sweep files and `--set` write them (`data.limit: 2000`).
`flatten` and `nest` turn one into the other; `build_point` builds a job from the flat shape.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer import yamlfile
from trainer.checks import key_text, typename
from trainer.config import ALL_KEYS, DataConfig, JobConfig, build_job
from trainer.names import nearest
from trainer.yamlfile import ConfigError


def flatten(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Nested job keys as flat ones: {data: {limit: 5}} is {data.limit: 5}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if key == "data" and isinstance(value, Mapping):
            flat.update({f"data.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat job keys as nested ones: {data.limit: 5} is {data: {limit: 5}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        target = nested
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def build_point(flat: Mapping[str, Any], *, source: str = "") -> JobConfig:
    """`build_job` of flat (dotted) keys, as a sweep file's base, axes and params write them."""
    return build_job(nest(flat), source=source)


def parse_overrides(overrides: list[str], *, source: str = "--set") -> dict[str, Any]:
    """`key=value` strings as flat job keys and plain-data values (each value read as YAML)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source} {item!r}: expected key=value, e.g. --set lr=3e-5 or --set data.limit=2000")
        value = yamlfile.value(text, f"{source} {key}")
        if key not in ALL_KEYS:
            raise ConfigError(f"{source} {key_text(key)}: unknown key; {nearest(key, ALL_KEYS)}")
        parsed[key] = value
    return parsed


def trusted(stored: Mapping[str, Any]) -> JobConfig:
    """A configuration the sweeper built and checked (a job's `job.json`), taken as it is."""
    data = dict(stored["data"])
    if isinstance(data["split"], list):
        data["split"] = tuple(data["split"])
    return JobConfig(**{**stored, "data": DataConfig(**data)})


def apply_overrides(raw: Mapping[str, Any], overrides: list[str] | Mapping[str, Any], *,
                    source: str = "--set") -> dict[str, Any]:
    """A nested job mapping with the overrides set in it: `key=value` strings, or the flat mapping
    `parse_overrides` made of them (parsed once)."""
    parsed = parse_overrides(overrides, source=source) if isinstance(overrides, list) else overrides
    merged: dict[str, Any] = json.loads(json.dumps(raw))  # deep copy of plain data
    for key, value in parsed.items():
        target = merged
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(target.setdefault(part, {}), dict):
                raise ConfigError(f"{source} {key}: {part} is {target[part]!r} ({typename(target[part])}), not a "
                                  f"mapping of {part} keys, so {key} cannot be set in it; expected {part}: "
                                  f"{{{leaf}: ...}}")
            target = target[part]
        target[leaf] = value
    return merged


def _read_job_file(path: Path) -> yamlfile.Document:
    doc = yamlfile.read(path)  # JSON is YAML
    if doc.data is None:
        return dataclasses.replace(doc, data={})
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}: expected a mapping of job keys, got {typename(doc.data)}")
    return doc


def load_job(path: Path, overrides: list[str] | None = None) -> JobConfig:
    """Read a job file (YAML or JSON), apply `--set` overrides, and validate; ConfigError lists
    every problem of the file at once, each with its line."""
    doc = _read_job_file(path)
    raw = apply_overrides(doc.data, overrides or [])
    try:
        return build_job(raw, source=str(path))
    except ConfigError as first:
        problems = every_problem(raw)
        if not problems:
            raise first from None
        located = []
        for problem in problems:
            line = doc.line(tuple(problem.split(":")[0].split(".")))
            located.append((line or 0, f"line {line}: {problem}" if line else problem))
        texts = [text for _, text in sorted(located, key=lambda item: item[0])]
        if len(texts) == 1:
            raise ConfigError(f"{path}: {texts[0]}") from None
        body = "\n  ".join(texts)
        raise ConfigError(f"{path}: {len(problems)} problems:\n  {body}") from None


def every_problem(raw: Mapping[str, Any], *, source: str = "") -> list[str]:
    """Each key's problem, each key checked with the keys that pass (so that rules between keys,
    such as micro_batch_size dividing batch_size, are checked in context, in any order)."""
    accepted: dict[str, Any] = {}
    failing = dict(raw)
    changed = True
    while changed:  # a key refused beside fewer keys may pass beside more (at most len(raw) rounds)
        changed = False
        problems = {}
        for key, value in list(failing.items()):
            try:
                build_job({**accepted, key: value}, source=source)
            except ConfigError as exc:
                problems[key] = str(exc)
                continue
            accepted[key] = value
            del failing[key]
            changed = True
    # A rule between two keys, one of them refused itself (micro_batch_size against a batch_size
    # of 0), is judged against the default: said once the other key is right.
    return [text for key, text in problems.items()
            if not any(re.search(rf"\b{re.escape(str(other))}\b", text.split(": ", 1)[-1]) for other in problems if other != key)]
