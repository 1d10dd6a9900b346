"""W&B sweep configuration files (`wandb sweep sweep.yaml`), read in sweep's own terms.

`translate` turns a W&B file's mapping into job keys, ranges and choices, the metric, the
pruner and what is not used, and names every problem of the file at once (never one at a
time). It decides nothing about Optuna or grids: `sweeper.search` builds the Space or Grid
from the translation and checks every value with the training core's own rules.

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
import math
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.checks import key_text
from trainer.config import ALL_KEYS
from trainer.jobdir import METRICS

# A W&B sweep file's top-level keys; the ones sweep does not use are said so, once.
WANDB_KEYS = ("method", "parameters", "metric", "early_terminate", "run_cap", "name", "description", "project",
              "entity", "program", "command", "controller", "job", "image_uri")
NOT_USED = ("program", "command", "controller", "job", "image_uri")
METHODS = {"grid": "grid", "random": "random", "bayes": "tpe"}

# Names training scripts (the HF Trainer's among them) give the job keys.
NAMES: dict[str, str] = {
    "learning_rate": "lr", "lr": "lr",
    "num_train_epochs": "epochs", "n_epochs": "epochs", "num_epochs": "epochs", "epochs": "epochs",
    "batch_size": "batch_size", "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size",
    "eval_batch_size": "eval_batch_size", "per_device_eval_batch_size": "eval_batch_size",
    "model": "model", "model_name": "model", "model_name_or_path": "model", "pretrained_model": "model",
    "max_length": "max_len", "max_seq_length": "max_len", "max_len": "max_len",
    "warmup_steps": "warmup_steps", "warmup_ratio": "warmup_ratio",
    "gradient_accumulation_steps": "grad_accum", "grad_accum": "grad_accum",
    "max_grad_norm": "clip", "clip": "clip",
    "lr_scheduler_type": "scheduler", "scheduler": "scheduler",
    "weight_decay": "weight_decay", "dropout": "dropout", "classifier_dropout": "dropout",
    "seed": "seed", "optimizer": "optimizer", "pooling": "pooling", "precision": "precision",
}
SPEC_KEYS = ("distribution", "value", "values", "probabilities", "min", "max", "q", "mu", "sigma", "a", "b",
             "parameters")
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "log_uniform_values", "log_uniform",
                 "inv_log_uniform_values", "inv_log_uniform", "q_uniform", "q_log_uniform_values", "q_log_uniform")
UNBOUNDED = ("normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")  # W&B's grid allows these only
HYPERBAND_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
# Choices of one sampled (random, bayes) parameter: beyond this it is a range, not a choice.
MAX_VALUES = 1000
# exp() of a natural-log bound stays inside the float range (exp(709) is about 8e307).
MAX_LOG = 700
# early_terminate's integers (epochs, bands, the reduction factor): far above any real sweep, and
# small enough that eta ** s is computed at once.
MAX_ITER = 10**6
MAX_BANDS = 64

# Metric names: the last path part, less these prefixes, then the core word.
_PREFIXES = ("best_", "eval_", "val_", "valid_", "validation_", "dev_")
_CORES = {"acc": "val_acc", "accuracy": "val_acc", "f1": "val_macro_f1", "macro_f1": "val_macro_f1",
          "f1_macro": "val_macro_f1", "f1_score": "val_macro_f1", "loss": "val_loss"}


@dataclass(frozen=True)
class Parameter:
    """One W&B parameter as a job key: a constant, a list of choices, or a range."""

    name: str  # as the file spells it (dotted when nested)
    key: str  # the job key
    where: tuple[str, ...]  # its path in the file, for line numbers
    distribution: str
    value: Any = None  # constant
    values: list[Any] | None = None  # categorical (and grid-expanded ranges)
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    q: float | None = None  # a multiple every drawn value is rounded to
    note: str = ""  # how a W&B rule was read, for the dry run
    grid: bool = False  # a range a grid runs every step of (int_uniform, q_uniform): grid_values()

    def grid_count(self) -> int:
        """How many values a grid runs, computed without listing them."""
        if self.values is not None:
            return len(self.values)
        assert self.grid and self.low is not None and self.high is not None
        if self.q is None:  # int_uniform: range(min, max + 1)
            return int(self.high) - int(self.low) + 1
        return max(0, math.ceil((self.high - self.low) / self.q - 1e-9))  # numpy.arange(min, max, q)

    def grid_values(self) -> list[Any]:
        """Every value a grid runs (call grid_count first: this lists them)."""
        if self.values is not None:
            return self.values
        assert self.low is not None and self.high is not None
        if self.q is None:
            return list(range(int(self.low), int(self.high) + 1))
        return [int(self.low + i * self.q) if self.integer else round(self.low + i * self.q, 12)
                for i in range(self.grid_count())]

    def shown(self) -> str:
        if self.values is not None:
            return f"one of {self.values}"
        if self.grid:
            step = "every integer" if self.q is None else f"every multiple of {self.q:g} from"
            end = "" if self.q is None else " (excluded)"
            return f"{step} {self.low:g} to {self.high:g}{end} ({self.grid_count():,} values)"
        if self.low is None:
            return repr(self.value)
        text = f"{'int ' if self.integer else ''}{'log-' if self.log else ''}uniform [{self.low:g}, {self.high:g}]"
        return text + (f", multiples of {self.q:g}" if self.q is not None else "")


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


class Problems:
    """Every problem of a file, each at its line; raised together once the whole file is read."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str, ...], str]] = []

    def add(self, where: tuple[str, ...], message: str) -> None:
        self.items.append((where, message))


def is_wandb(raw: dict[str, Any]) -> bool:
    """A W&B sweep file (and not one of sweep's own grid or space files)."""
    return ("parameters" in raw or "method" in raw) and not ({"params", "axes", "base"} & set(raw))


def job_key(name: str) -> str | None:
    """The job key a parameter name stands for: a job key, a known name for one, or (dotted) its last part."""
    if name in ALL_KEYS:
        return name
    leaf = name.rsplit(".", 1)[-1]
    return NAMES.get(leaf) or (leaf if leaf in ALL_KEYS and leaf != "data" else None)


# A word inside a foreign name that points at a job key (min_lr -> lr, warmup_epochs -> warmup_steps).
_WORDS = {"lr": "lr", "learning": "lr", "warmup": "warmup_steps", "drop": "dropout", "dropout": "dropout",
          "batch": "batch_size", "epoch": "epochs", "epochs": "epochs", "len": "max_len", "length": "max_len",
          "seq": "max_len", "model": "model", "data": "data.name", "dataset": "data.name", "decay": "weight_decay",
          "clip": "clip", "norm": "clip", "accumulation": "grad_accum", "seed": "seed", "opt": "optimizer",
          "optimizer": "optimizer", "scheduler": "scheduler", "pool": "pooling", "pooling": "pooling",
          "precision": "precision", "fp16": "precision", "bf16": "precision"}


def nearest_key(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1].lower()
    for word in re.split(r"[_\-/]", leaf):
        if word in _WORDS:
            return _WORDS[word]
    candidates = sorted(set(NAMES) | set(ALL_KEYS))
    best = difflib.get_close_matches(leaf, candidates, n=1, cutoff=0.0)
    return NAMES.get(best[0], best[0]) if best else "lr"


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


def _number(value: Any) -> bool:
    """A finite number (NaN and infinity are not numbers a sweep can use)."""
    return _int_like(value) or (isinstance(value, float) and math.isfinite(value))


def _int_like(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        _read_parameters(params_raw, (), method, parameters, problems)
    seen: dict[str, Parameter] = {}
    for p in parameters:
        if p.key in seen:
            problems.add(p.where, f"parameters.{p.name}: is {p.key}, as parameters.{seen[p.key].name} already is; "
                                  "keep one")
        seen[p.key] = p

    metric, direction, metric_note, target = _read_metric(raw, problems)
    hyperband = _read_early_terminate(raw.get("early_terminate"), problems)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not _int_like(run_cap) or run_cap < 1):
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


def _read_parameters(block: dict[str, Any], prefix: tuple[str, ...], method: str, out: list[Parameter],
                     problems: Problems) -> None:
    for raw_name, spec in block.items():
        name = ".".join((*prefix, str(raw_name)))
        where = ("parameters", *(part for p in (*prefix, str(raw_name)) for part in (p, "parameters")))[:-1]
        if isinstance(spec, dict) and "parameters" in spec:  # a nested block: dotted names
            if isinstance(spec["parameters"], dict):
                _read_parameters(spec["parameters"], (*prefix, str(raw_name)), method, out, problems)
            else:
                problems.add(where, f"parameters.{name}.parameters: expected a mapping of parameters")
            continue
        key = job_key(name)
        if key is None:
            problems.add(where, f"parameters.{name}: not a setting of sweep's training core (a parameter of "
                                f"another program?); nearest job key: {nearest_key(name)}")
            continue
        parameter = _read_spec(name, key, where, spec, method, problems)
        if parameter is not None:
            out.append(parameter)


def _read_spec(name: str, key: str, where: tuple[str, ...], spec: Any, method: str,
               problems: Problems) -> Parameter | None:
    label = f"parameters.{name}"
    if not isinstance(spec, dict):
        problems.add(where, f"{label}: {spec!r} is not allowed; expected {{value: x}}, {{values: [...]}} or "
                            "{min: a, max: b} (with an optional distribution)")
        return None
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        problems.add(where, f"{label}: unknown field(s) {', '.join(map(str, unknown))}; W&B parameter fields: "
                            f"{', '.join(SPEC_KEYS[:-1])}")
        return None
    dist = spec.get("distribution")
    if dist is None:  # W&B's rule
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical"
        elif "min" in spec and "max" in spec:
            dist = "int_uniform" if _int_like(spec["min"]) and _int_like(spec["max"]) else "uniform"
        else:
            problems.add(where, f"{label}: {spec!r} has no value, values, or min and max")
            return None
    if dist in UNBOUNDED:
        problems.add(where, f"{label}: distribution {dist} is refused: it is unbounded (or on [0, 1] for beta), and "
                            "Optuna's samplers draw from bounded ranges or choices; give min and max (uniform, "
                            "log_uniform_values, ...) or values")
        return None
    if dist not in DISTRIBUTIONS:
        problems.add(where, f"{label}: distribution {dist!r} is not a W&B distribution; expected one of: "
                            f"{', '.join(DISTRIBUTIONS)}")
        return None
    if method == "grid" and dist not in GRID_DISTRIBUTIONS:
        problems.add(where, f"{label}: distribution {dist} is not allowed with method: grid (W&B's rule too: a grid "
                            f"takes {', '.join(GRID_DISTRIBUTIONS)}); use values, or method: random or bayes")
        return None

    if dist == "constant":
        if "value" not in spec:
            problems.add(where, f"{label}: distribution constant needs value")
            return None
        return Parameter(name, key, where, dist, value=spec["value"])
    if dist == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            problems.add(where, f"{label}.values: {values!r} is not a non-empty list")
            return None
        if method != "grid" and len(values) > MAX_VALUES:
            problems.add(where, f"{label}.values: {len(values):,} values is too many for a sampled parameter; expected "
                                f"at most {MAX_VALUES:,} (a grid takes more: method: grid, up to --max-jobs)")
            return None
        if method != "grid" and any(v is not None and not isinstance(v, (str, int, float)) for v in values):
            problems.add(where, f"{label}.values: {values!r} is not allowed; Optuna draws from strings, numbers, "
                                "true/false and null (no lists or mappings)")
            return None
        note = ""
        probabilities = spec.get("probabilities")
        if probabilities is not None:
            equal = (isinstance(probabilities, list) and len(probabilities) == len(values)
                     and all(_number(p) for p in probabilities)
                     and max(probabilities) - min(probabilities) < 1e-9)
            if not equal or method == "grid":
                problems.add(where, f"{label}.probabilities: {probabilities!r} cannot be honoured: Optuna's samplers "
                                    "draw a categorical value uniformly (random) or from its own model (TPE), and a "
                                    "grid runs every value; remove probabilities")
                return None
            note = "equal probabilities: as Optuna draws them"
        if key == "seed" and method != "grid":
            note = "searched as W&B does (each trial draws one seed): the best trial may be the luckiest seed"
        return Parameter(name, key, where, dist, values=list(values), note=note)

    low: Any = spec.get("min")
    high: Any = spec.get("max")
    if not _number(low) or not _number(high) or not low < high or max(abs(low), abs(high)) > 1e300:
        problems.add(where, f"{label}: min {low!r}, max {high!r} is not allowed; expected finite numbers with "
                            "min < max")
        return None
    q: Any = spec.get("q")
    if q is None and dist.startswith("q_"):
        q = 1  # W&B's default, also for q: null
    if q is not None and (not _number(q) or q <= 0):
        problems.add(where, f"{label}.q: {q!r} is not allowed; expected a finite number > 0")
        return None
    if dist in ("log_uniform", "inv_log_uniform", "q_log_uniform") and max(abs(low), abs(high)) > MAX_LOG:
        problems.add(where, f"{label}: {dist} bounds are natural logs, and min {low!r}, max {high!r} is not allowed: "
                            f"exp() of them leaves the float range; expected -{MAX_LOG} <= min < max <= {MAX_LOG} "
                            f"(or {dist}_values with the values themselves)")
        return None
    if dist == "int_uniform":
        if not _int_like(low) or not _int_like(high):
            problems.add(where, f"{label}: int_uniform needs integer bounds, got min {low!r}, max {high!r}")
            return None
        if method == "grid":  # listed only once the grid's size is known to be allowed
            return Parameter(name, key, where, dist, low=low, high=high, integer=True, grid=True,
                             note=f"int_uniform on a grid: every integer {low}..{high}")
        return Parameter(name, key, where, dist, low=low, high=high, integer=True)
    if dist == "uniform":
        return Parameter(name, key, where, dist, low=float(low), high=float(high))
    if dist == "q_uniform":
        integer = _int_like(q) and _int_like(low) and _int_like(high)
        if method == "grid":  # numpy.arange(min, max, q), as W&B's grid: max itself excluded
            return Parameter(name, key, where, dist, low=low, high=high, integer=integer, q=q, grid=True,
                             note=f"q_uniform on a grid: {low:g} to {high:g} (excluded) in steps of {q:g}")
        return Parameter(name, key, where, dist, low=low, high=high, integer=integer, q=q)
    # the log-uniform family
    in_logs = not dist.endswith("_values")
    if in_logs:
        bounds = (math.exp(low), math.exp(high))
        if dist == "inv_log_uniform":  # 1/x with log(1/x) uniform on [min, max]
            bounds = (math.exp(-high), math.exp(-low))
        note = f"{dist} bounds are natural logs: [{low:g}, {high:g}] is [{bounds[0]:.4g}, {bounds[1]:.4g}]"
    else:
        if low <= 0:
            problems.add(where, f"{label}: {dist} needs min > 0, got {low!r}")
            return None
        bounds, note = (float(low), float(high)), ""
    if dist.startswith("inv_"):
        note = (note + "; " if note else "") + "1/x log-uniform is x log-uniform on the same range"
    if dist.startswith("q_"):
        integer = _int_like(q) and all(float(b).is_integer() for b in bounds)
        note = (note + "; " if note else "") + f"each draw rounded to a multiple of {q:g}"
        lo, hi = (int(bounds[0]), int(bounds[1])) if integer else bounds
        return Parameter(name, key, where, dist, low=lo, high=hi, log=True, integer=integer, q=q, note=note)
    return Parameter(name, key, where, dist, low=bounds[0], high=bounds[1], log=True, note=note)


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
    if target is not None and not _number(target):
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
        if value is not None and (not _int_like(value) or not minimum <= value <= maximum):
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
