"""The `parameters` block of a W&B sweep file, each parameter read as a job key and a constant,
a list of choices or a range (`sweeper.wandb_sweep.translate` reads the rest of the file).

Whole names come from the one table of users' names (`trainer.names`); a word inside a foreign
name only points at the nearest job key in the message that refuses it.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from trainer.config import ALL_KEYS
from trainer.names import USER_NAMES

SPEC_KEYS = ("distribution", "value", "values", "probabilities", "min", "max", "q", "mu", "sigma", "a", "b",
             "parameters")
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "log_uniform_values", "log_uniform",
                 "inv_log_uniform_values", "inv_log_uniform", "q_uniform", "q_log_uniform_values", "q_log_uniform")
UNBOUNDED = ("normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")  # W&B's grid allows these only


# Choices of one sampled (random, bayes) parameter: beyond this it is a range, not a choice.
MAX_VALUES = 1000
# exp() of a natural-log bound stays inside the float range (exp(709) is about 8e307).
MAX_LOG = 700


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


class Problems:
    """Every problem of a file, each at its line; raised together once the whole file is read."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str, ...], str]] = []

    def add(self, where: tuple[str, ...], message: str) -> None:
        self.items.append((where, message))


def job_key(name: str) -> str | None:
    """The job key a parameter name stands for: a job key, a known name for one, or (dotted) its last part."""
    if name in ALL_KEYS:
        return name
    leaf = name.rsplit(".", 1)[-1]
    return USER_NAMES.get(leaf) or (leaf if leaf in ALL_KEYS and leaf != "data" else None)


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
    candidates = sorted(set(USER_NAMES) | set(ALL_KEYS))
    best = difflib.get_close_matches(leaf, candidates, n=1, cutoff=0.0)
    return USER_NAMES.get(best[0], best[0]) if best else "lr"


def is_number(value: Any) -> bool:
    """A finite number (NaN and infinity are not numbers a sweep can use)."""
    return is_int(value) or (isinstance(value, float) and math.isfinite(value))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_parameters(block: dict[str, Any], prefix: tuple[str, ...], method: str, out: list[Parameter],
                     problems: Problems) -> None:
    for raw_name, spec in block.items():
        name = ".".join((*prefix, str(raw_name)))
        where = ("parameters", *(part for p in (*prefix, str(raw_name)) for part in (p, "parameters")))[:-1]
        if isinstance(spec, dict) and "parameters" in spec:  # a nested block: dotted names
            if isinstance(spec["parameters"], dict):
                read_parameters(spec["parameters"], (*prefix, str(raw_name)), method, out, problems)
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
    """One parameter's fields as a Parameter, or None with every problem added."""
    dist = _distribution(name, where, spec, method, problems)
    if dist is None:
        return None
    if dist == "constant":
        if "value" not in spec:
            problems.add(where, f"parameters.{name}: distribution constant needs value")
            return None
        return Parameter(name, key, where, dist, value=spec["value"])
    if dist == "categorical":
        return _categorical(name, key, where, spec, method, problems)
    bounds = _bounds(f"parameters.{name}", where, spec, dist, problems)
    if bounds is None:
        return None
    if dist in ("int_uniform", "uniform", "q_uniform"):
        return _linear(name, key, where, dist, bounds, method, problems)
    return _log(name, key, where, dist, bounds, problems)


def _distribution(name: str, where: tuple[str, ...], spec: Any, method: str, problems: Problems) -> str | None:
    """The W&B distribution of a parameter's fields (W&B's rule where none is given), or None with
    the problem added."""
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
            dist = "int_uniform" if is_int(spec["min"]) and is_int(spec["max"]) else "uniform"
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
    return str(dist)


def _categorical(name: str, key: str, where: tuple[str, ...], spec: dict[str, Any], method: str,
                 problems: Problems) -> Parameter | None:
    label, dist = f"parameters.{name}", "categorical"
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
                 and all(is_number(p) for p in probabilities)
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


def _bounds(label: str, where: tuple[str, ...], spec: dict[str, Any], dist: str,
            problems: Problems) -> tuple[Any, Any, Any] | None:
    """min, max and q of a range, checked (q: W&B's default 1 for the q_ distributions)."""
    low: Any = spec.get("min")
    high: Any = spec.get("max")
    if not is_number(low) or not is_number(high) or not low < high or max(abs(low), abs(high)) > 1e300:
        problems.add(where, f"{label}: min {low!r}, max {high!r} is not allowed; expected finite numbers with "
                            "min < max")
        return None
    q: Any = spec.get("q")
    if q is None and dist.startswith("q_"):
        q = 1  # W&B's default, also for q: null
    if q is not None and (not is_number(q) or q <= 0):
        problems.add(where, f"{label}.q: {q!r} is not allowed; expected a finite number > 0")
        return None
    if dist in ("log_uniform", "inv_log_uniform", "q_log_uniform") and max(abs(low), abs(high)) > MAX_LOG:
        problems.add(where, f"{label}: {dist} bounds are natural logs, and min {low!r}, max {high!r} is not allowed: "
                            f"exp() of them leaves the float range; expected -{MAX_LOG} <= min < max <= {MAX_LOG} "
                            f"(or {dist}_values with the values themselves)")
        return None
    return low, high, q


def _linear(name: str, key: str, where: tuple[str, ...], dist: str, bounds: tuple[Any, Any, Any], method: str,
            problems: Problems) -> Parameter | None:
    """int_uniform, uniform and q_uniform: drawn, or on a grid every step."""
    label = f"parameters.{name}"
    low, high, q = bounds
    if dist == "int_uniform":
        if not is_int(low) or not is_int(high):
            problems.add(where, f"{label}: int_uniform needs integer bounds, got min {low!r}, max {high!r}")
            return None
        if method == "grid":  # listed only once the grid's size is known to be allowed
            return Parameter(name, key, where, dist, low=low, high=high, integer=True, grid=True,
                             note=f"int_uniform on a grid: every integer {low}..{high}")
        return Parameter(name, key, where, dist, low=low, high=high, integer=True)
    if dist == "uniform":
        return Parameter(name, key, where, dist, low=float(low), high=float(high))
    if dist == "q_uniform":
        integer = is_int(q) and is_int(low) and is_int(high)
        if method == "grid":  # numpy.arange(min, max, q), as W&B's grid: max itself excluded
            return Parameter(name, key, where, dist, low=low, high=high, integer=integer, q=q, grid=True,
                             note=f"q_uniform on a grid: {low:g} to {high:g} (excluded) in steps of {q:g}")
        return Parameter(name, key, where, dist, low=low, high=high, integer=integer, q=q)
    return None


def _log(name: str, key: str, where: tuple[str, ...], dist: str, bounds: tuple[Any, Any, Any],
         problems: Problems) -> Parameter | None:
    """The log-uniform family: bounds as natural logs, or as values (*_values); inverted; rounded."""
    label = f"parameters.{name}"
    low, high, q = bounds
    in_logs = not dist.endswith("_values")
    if in_logs:
        ends = (math.exp(low), math.exp(high))
        if dist == "inv_log_uniform":  # 1/x with log(1/x) uniform on [min, max]
            ends = (math.exp(-high), math.exp(-low))
        note = f"{dist} bounds are natural logs: [{low:g}, {high:g}] is [{ends[0]:.4g}, {ends[1]:.4g}]"
    else:
        if low <= 0:
            problems.add(where, f"{label}: {dist} needs min > 0, got {low!r}")
            return None
        ends, note = (float(low), float(high)), ""
    if dist.startswith("inv_"):
        note = (note + "; " if note else "") + "1/x log-uniform is x log-uniform on the same range"
    if dist.startswith("q_"):
        integer = is_int(q) and all(float(b).is_integer() for b in ends)
        note = (note + "; " if note else "") + f"each draw rounded to a multiple of {q:g}"
        lo, hi = (int(ends[0]), int(ends[1])) if integer else ends
        return Parameter(name, key, where, dist, low=lo, high=hi, log=True, integer=integer, q=q, note=note)
    return Parameter(name, key, where, dist, low=ends[0], high=ends[1], log=True, note=note)
