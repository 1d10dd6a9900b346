"""W&B sweep configuration files (`wandb sweep sweep.yaml`), read in sweep's own terms.

`translate` turns a W&B file's mapping into job keys, ranges and choices, the metric, the
pruner and what is not used, and names every problem of the file at once (never one at a
time). It decides nothing about Optuna or grids: `sweeper.wandb_space` builds the Space or
Grid from the translation and checks every value with the training core's own rules; the
`parameters` block is read by `sweeper.wandb_params`. Top-level keys that are not W&B's are
warned about and ignored, as W&B does.

The W&B rules followed (github.com/wandb/sweeps, `params.py`, `grid_search.py`,
`hyperband_stopping.py`): a parameter without `distribution` is `constant` with `value`,
`categorical` with `values`, `int_uniform` with int bounds, `uniform` otherwise; `*_values`
distributions take the bounds as values, the others as natural logs; `q_*` rounds to a
multiple of q; a grid runs `int_uniform` as range(min, max + 1) and `q_uniform` as
arange(min, max, q); hyperband's bands come from `min_iter` (times eta) or `max_iter` (divided
by eta, s times).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from sweeper.wandb_params import Parameter, Problems, is_int, is_number, read_parameters
from trainer.checks import key_text
from trainer.jobdir import METRICS

# A W&B sweep file's top-level keys; the ones sweep does not use are said so, once.
WANDB_KEYS = ("method", "parameters", "metric", "early_terminate", "run_cap", "name", "description", "project",
              "entity", "program", "command", "controller", "job", "image_uri")
NOT_USED = ("program", "command", "controller", "job", "image_uri")
METHODS = {"grid": "grid", "random": "random", "bayes": "tpe"}

HYPERBAND_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
# early_terminate's integers (epochs, bands, the reduction factor): far above any real sweep, and
# small enough that eta ** s is computed at once.
MAX_ITER = 10**6
MAX_BANDS = 64

# Metric names: the last path part, less these prefixes, then the core word.
_PREFIXES = ("best_", "eval_", "val_", "valid_", "validation_", "dev_")
_CORES = {"acc": "val_acc", "accuracy": "val_acc", "f1": "val_macro_f1", "macro_f1": "val_macro_f1",
          "f1_macro": "val_macro_f1", "f1_score": "val_macro_f1", "loss": "val_loss"}


@dataclass(frozen=True)
class Translation:
    name: str
    renamed: bool  # the W&B name was not a sweep name (or absent)
    description: str
    method: str  # grid, random, bayes
    parameters: list[Parameter]
    metric: str
    direction: str
    metric_note: str
    target: float | None
    hyperband: dict[str, int] | None  # min_resource, reduction_factor (and max_resource when max_iter given)
    run_cap: int | None
    project: str | None
    entity: str | None
    unused: dict[str, Any]
    # Top-level keys that are not W&B's, each at its path: warned about and ignored, as W&B does
    # ("malformed sweep config"), never refused.
    ignored: list[tuple[tuple[str, ...], str]] = field(default_factory=list)


def is_wandb(raw: dict[str, Any]) -> bool:
    """A W&B sweep file (and not one of sweep's own grid or space files)."""
    return ("parameters" in raw or "method" in raw) and not ({"params", "axes", "base"} & set(raw))


def metric_key(name: str) -> tuple[str | None, str]:
    """The job metric a W&B metric name means, or None with the reason."""
    lowered = name.lower()
    if any(word.startswith(("test", "train")) for word in re.split(r"[/._\-]", lowered)):
        return None, ("a training or test metric cannot steer a search (the test split is kept for the final "
                      "claim); use a validation metric")
    leaf = re.split(r"[/.]", lowered)[-1]
    stripped = True
    while stripped:
        stripped = False
        for prefix in _PREFIXES:
            if leaf.startswith(prefix) and len(leaf) > len(prefix):
                leaf, stripped = leaf[len(prefix):], True
    if leaf in _CORES:
        return _CORES[leaf], ""
    return None, "not a metric the jobs report"


NAME_MAX = 100  # as sweeper.spec's


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")
    return re.sub(r"\.\.+", ".", slug)[:NAME_MAX].strip("-._")


def sweep_name(raw_name: Any, fallback: str) -> tuple[str, bool]:
    """The file's name if it is a sweep name (matched whole, at most NAME_MAX characters, no '..'),
    else a slug of it, else of the file's name."""
    if (isinstance(raw_name, str) and len(raw_name) <= NAME_MAX and ".." not in raw_name
            and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw_name)):
        return raw_name, False
    if isinstance(raw_name, str) and (slug := _slug(raw_name)):
        return slug, True
    return _slug(fallback) or "wandb", True


def translate(raw: dict[str, Any], *, stem: str) -> tuple[Translation, Problems]:
    """Read a W&B sweep mapping; `stem` (the file's name) names a sweep without a usable `name`."""
    problems = Problems()
    ignored: list[tuple[tuple[str, ...], str]] = []
    for key in raw:
        if key not in WANDB_KEYS:
            close = difflib.get_close_matches(str(key), WANDB_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            ignored.append(((str(key),), f"{key_text(key)}: not a W&B sweep key, ignored (as W&B does); {hint}"
                                         f"W&B keys: {', '.join(WANDB_KEYS)}"))

    method = raw.get("method")
    if not isinstance(method, str) or method not in METHODS:
        problems.add(("method",), f"method: {method!r} is not allowed; expected one of: {', '.join(METHODS)}")
        method = "random"

    parameters: list[Parameter] = []
    params_raw = raw.get("parameters")
    if not isinstance(params_raw, dict) or not params_raw:
        problems.add(("parameters",), "parameters: expected a mapping of parameter -> {value | values | min, max}")
    else:
        read_parameters(params_raw, (), method, parameters, problems)
    seen: dict[str, Parameter] = {}
    for p in parameters:
        if p.key in seen:
            problems.add(p.where, f"parameters.{p.name}: is {p.key}, as parameters.{seen[p.key].name} already is; "
                                  "keep one")
        seen[p.key] = p

    metric, direction, metric_note, target = _read_metric(raw, problems)
    hyperband = _read_early_terminate(raw.get("early_terminate"), problems)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not is_int(run_cap) or run_cap < 1):
        problems.add(("run_cap",), f"run_cap: {run_cap!r} is not an integer >= 1")
        run_cap = None
    strings = {}
    for key in ("project", "entity", "description"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            problems.add((key,), f"{key}: {value!r} is not a string")
            value = None
        strings[key] = value
    name, renamed = sweep_name(raw.get("name"), stem)
    return Translation(
        name=name, renamed=renamed, description=strings["description"] or "", method=method,
        parameters=parameters, metric=metric, direction=direction, metric_note=metric_note, target=target,
        hyperband=hyperband, run_cap=run_cap, project=strings["project"], entity=strings["entity"],
        unused={k: raw[k] for k in NOT_USED if k in raw}, ignored=ignored,
    ), problems


def _read_metric(raw: dict[str, Any], problems: Problems) -> tuple[str, str, str, float | None]:
    metric = raw.get("metric")
    if metric is None:
        return "val_acc", METRICS["val_acc"], "no metric in the file: val_acc, maximised", None
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str) or not metric["name"]:
        problems.add(("metric",), f"metric: {metric!r} is not allowed; expected {{name: ..., goal: maximize|minimize}}")
        return "val_acc", "maximize", "", None
    extra = [k for k in metric if k not in ("name", "goal", "target")]
    if extra:
        problems.add(("metric",), f"metric: unknown field(s) {', '.join(map(str, extra))}; expected name, goal, target")
    name = metric["name"]
    key, why = metric_key(name)
    if key is None:
        problems.add(("metric", "name"), f"metric.name: {name!r}: {why}; sweep's jobs report "
                                         f"{', '.join(METRICS)} (names such as accuracy, eval/f1, val_loss map to them)")
        return "val_acc", "maximize", "", None
    direction = METRICS[key]
    goal = metric.get("goal")
    note = f"{name} -> {key}"
    if key == "val_macro_f1":
        note += ", macro-averaged over the classes (a script's binary F1 is the positive class's only)"
    if goal is None:
        note += f"; the file gives no goal (W&B would minimise): sweep {direction}s {key}"
    elif goal not in ("maximize", "minimize"):
        problems.add(("metric", "goal"), f"metric.goal: {goal!r} is not allowed; expected maximize or minimize")
    elif goal != direction:
        problems.add(("metric", "goal"), f"metric.goal: {goal} disagrees with {name} ({key} is better when "
                                         f"{'higher' if direction == 'maximize' else 'lower'}); use goal: {direction}")
    target = metric.get("target")
    if target is not None and not is_number(target):
        problems.add(("metric", "target"), f"metric.target: {target!r} is not a finite number")
        target = None
    return key, direction, note, None if target is None else float(target)


def _read_early_terminate(raw: Any, problems: Problems) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "hyperband":
        shown = raw.get("type") if isinstance(raw, dict) else raw
        problems.add(("early_terminate",), f"early_terminate: type {shown!r} is not allowed; W&B and sweep have "
                                           "type: hyperband")
        return None
    unknown = [k for k in raw if k not in HYPERBAND_KEYS]
    if unknown:
        problems.add(("early_terminate",), f"early_terminate: unknown field(s) {', '.join(map(str, unknown))}; "
                                           f"expected {', '.join(HYPERBAND_KEYS)}")
    values = {}
    for key, minimum, maximum in (("min_iter", 1, MAX_ITER), ("max_iter", 1, MAX_ITER), ("s", 1, MAX_BANDS),
                                  ("eta", 2, MAX_ITER)):
        value = raw.get(key)
        if value is not None and (not is_int(value) or not minimum <= value <= maximum):
            problems.add(("early_terminate", key), f"early_terminate.{key}: {value!r} is not allowed; expected an "
                                                   f"integer {minimum} <= {key} <= {maximum:,}")
            return None
        values[key] = value
    eta = values["eta"] or 3
    if values["min_iter"] is not None:
        out = {"min_resource": values["min_iter"], "reduction_factor": eta}
    elif values["max_iter"] is not None:
        if values["s"] is None:
            problems.add(("early_terminate",), "early_terminate: max_iter needs s (the number of bands), or give "
                                               "min_iter")
            return None
        out = {"min_resource": max(1, int(values["max_iter"] / eta ** values["s"])), "reduction_factor": eta}
    else:
        problems.add(("early_terminate",), "early_terminate: hyperband needs min_iter or max_iter (with s)")
        return None
    if values["max_iter"] is not None:
        out["max_resource"] = values["max_iter"]
    return out
