"""One job's configuration: a frozen dataclass, built and checked in one place.

Every key has the users' protocol as its default. `build_job` rejects unknown keys (naming
the nearest valid one), wrong types, out-of-range values and cross-field mistakes, so that a
bad job fails before any model or data is touched; the sweeper builds every job with it, once,
and the job process trusts the `job.json` it is given (`trainer.jobfile` reads job files and
`--set` overrides, with every problem at once).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainer import checks, maxlen
from trainer.checks import is_dir
from trainer.jobdir import METRICS
from trainer.names import nearest
from trainer.yamlfile import ConfigError

__all__ = ["ConfigError"]  # defined with the one reader of input files (trainer.yamlfile), raised here too

MODEL_ALIASES: dict[str, str] = {
    "bert": "bert-base-uncased",
    "modernbert": "answerdotai/ModernBERT-base",
    "roberta": "roberta-base",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
}
# Hub ids from before owners were required; the Hub still serves them (bert-base-uncased is
# google-bert/bert-base-uncased), and sweep files from other tools name models this way.
LEGACY_HUB_IDS = frozenset({
    "bert-base-uncased", "bert-base-cased", "bert-large-uncased", "bert-large-cased", "bert-base-multilingual-cased",
    "bert-base-multilingual-uncased", "roberta-base", "roberta-large", "distilbert-base-uncased",
    "distilbert-base-cased", "distilroberta-base", "xlm-roberta-base", "xlm-roberta-large", "albert-base-v2",
    "albert-large-v2",
})
POOLINGS = ("cls", "mean", "pooler")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("constant", "linear", "cosine")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Absolute bounds for max_len; the model's own maximum is checked once its config is read.
MIN_MAX_LEN = 8
MAX_MAX_LEN = 8192


@dataclass(frozen=True)
class DataConfig:
    name: str = "stanfordnlp/imdb"
    # Fractions of train+test merged; the shuffle uses a fixed data seed (DATA_SEED), not the
    # job's seed, so every job of every sweep is tested on the same rows (paired comparisons).
    # Or "given": the data's own splits (see split_names).
    split: tuple[float, float, float] | str = (0.8, 0.1, 0.1)
    limit: int | None = None  # cap on training rows, for quick runs
    eval_limit: int | None = None  # cap on validation and test rows
    text: str = "text"
    label: str = "label"
    # Added with issue #14; each default is the behaviour before it (left out of job ids there).
    config: str | None = None  # the Hub data set's configuration, load_dataset(name, config)
    # With split: given, the data's own train/validation/test splits; these names map ours
    # (train, val, test) to the data's, e.g. {test: validation}.
    split_names: dict[str, str] | None = None
    text_pair: str | None = None  # a second text column: the rows are tokenized as pairs


SPLIT_GIVEN = "given"
SPLIT_ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class JobConfig:
    model: str = "bert"
    pooling: str = "cls"
    dropout: float = 0.1  # on the pooled vector, before the linear head
    max_len: int = 128
    batch_size: int = 16  # micro-batch; the effective batch is batch_size * grad_accum
    grad_accum: int = 1
    # How the batch is run, not what is trained: an out-of-memory retry runs batch_size in
    # micro-batches of this size (batch_size / micro_batch_size more accumulation steps, the
    # same effective batch). Never part of the job's id. None: batch_size.
    micro_batch_size: int | None = None
    lr: float = 5e-5
    optimizer: str = "adam"
    weight_decay: float = 0.0
    clip: float = 0.0  # max gradient norm; 0 turns clipping off
    scheduler: str = "constant"
    warmup_ratio: float = 0.0
    epochs: int = 5
    seed: int = 42
    precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    # Added with issue #14 (left out of job ids while at their defaults, today's behaviour):
    metric: str = "val_acc"  # keeps the best checkpoint: val_acc, val_macro_f1 (maximised), val_loss (minimised)
    patience: int | None = None  # stop after this many epochs without improvement of `metric`; None: off
    # Added after the first release (left out of job ids while at their defaults):
    eval_batch_size: int | None = None  # evaluation batch; None: max(64, 2 * micro-batch); not in the job's id
    warmup_steps: int = 0  # warmup in optimizer steps, beside warmup_ratio (one of the two)

    @property
    def model_path(self) -> str:
        """What `from_pretrained` is given: the alias resolved, or the id/directory as is."""
        return MODEL_ALIASES.get(self.model, self.model)

    @property
    def micro_batch(self) -> int:
        """The batch one forward pass takes."""
        return self.micro_batch_size or self.batch_size

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step."""
        return self.grad_accum * self.batch_size // self.micro_batch

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def smaller_micro_batch(self) -> int | None:
        """What an out-of-memory retry runs next: the largest divisor of batch_size below the
        current micro-batch (the same effective batch), or None at a micro-batch of 1."""
        return next((d for d in range(self.micro_batch - 1, 0, -1) if self.batch_size % d == 0), None)

    def with_micro_batch(self, size: int) -> JobConfig:
        """The same job run in micro-batches of `size` (validated like any configuration)."""
        evaluation = None if self.eval_batch_size is None else max(1, self.eval_batch_size * size // self.micro_batch)
        return build_job({**self.to_dict(), "micro_batch_size": None if size == self.batch_size else size,
                          "eval_batch_size": evaluation})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"]["split"] = self.data.split if isinstance(self.data.split, str) else list(self.data.split)
        return d

    def job_id(self) -> str:
        """Stable short id of the resolved configuration: same configuration, same id.

        Keys added after the first release are hashed only when they differ from their default,
        so the jobs (and job directories) of earlier sweeps keep their ids."""
        blob = json.dumps(id_fields(self.to_dict()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


DATA_SEED = 42

# The keys of the first release: every other key is left out of a job's id at its default.
FIRST_JOB_KEYS = frozenset({"model", "pooling", "dropout", "max_len", "batch_size", "grad_accum", "lr", "optimizer",
                            "weight_decay", "clip", "scheduler", "warmup_ratio", "epochs", "seed", "precision", "data"})
FIRST_DATA_KEYS = frozenset({"name", "split", "limit", "eval_limit", "text", "label"})


def defaults_filled(d: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration (config.json, job.json) with every key added since at its default."""
    default = JobConfig().to_dict()
    return {**default, **d, "data": {**default["data"], **(d.get("data") or {})}}


# How a job runs, not what it trains: never in its id (an out-of-memory retry stays the same job).
RUN_KEYS = frozenset({"micro_batch_size", "eval_batch_size"})


def id_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    """What a job's id hashes: the configuration less the later keys at their defaults (and
    less RUN_KEYS)."""
    default = JobConfig().to_dict()
    out = {k: v for k, v in d.items() if k not in RUN_KEYS and (k in FIRST_JOB_KEYS or v != default.get(k))}
    data = d.get("data") or {}
    out["data"] = {k: v for k, v in data.items() if k in FIRST_DATA_KEYS or v != default["data"].get(k)}
    return out

_JOB_KEYS = [f.name for f in dataclasses.fields(JobConfig)]
_DATA_KEYS = [f.name for f in dataclasses.fields(DataConfig)]
ALL_KEYS = [k for k in _JOB_KEYS if k != "data"] + [f"data.{k}" for k in _DATA_KEYS]


def _model(source: str, value: Any) -> str:
    value = checks.name(source, "model", value)
    if value in MODEL_ALIASES or value in LEGACY_HUB_IDS or is_dir(value) or "/" in value:
        # Anything with a '/' that is not a directory is taken as a Hub id (owner/name);
        # a wrong one fails when it is fetched, with the Hub's own message.
        return value
    close = difflib.get_close_matches(value, list(MODEL_ALIASES), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(
        f"{checks.where(source, 'model')}: {checks.shown(value)} is not an alias, Hub id or directory{hint}; expected one of "
        f"the aliases {', '.join(MODEL_ALIASES)}, a Hub id such as 'google-bert/bert-base-uncased', "
        "or an existing local directory"
    )


def _check_keys(source: str, raw: Mapping[str, Any], valid: list[str], prefix: str = "") -> None:
    for key in raw:
        if not isinstance(key, str) or key not in valid:
            keys = [f"{prefix}{k}" for k in valid]
            raise ConfigError(f"{checks.where(source, prefix + checks.key_text(key))}: unknown key; "
                              f"{nearest(prefix + str(key), keys)}")


def _build_data(source: str, raw: Any) -> DataConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{checks.where(source, 'data')}: {raw!r} is not a mapping of {', '.join(_DATA_KEYS)}")
    _check_keys(source, raw, _DATA_KEYS, "data.")
    d = DataConfig()
    name = checks.name(source, "data.name", raw.get("name", d.name))
    split = raw.get("split", list(d.split))
    if split == SPLIT_GIVEN:
        fractions: tuple[float, ...] | str = SPLIT_GIVEN
    else:
        if not isinstance(split, (list, tuple)) or len(split) != 3:
            raise ConfigError(f"{checks.where(source, 'data.split')}: {split!r} is not three fractions "
                              f"[train, val, test] or {SPLIT_GIVEN!r} (the data's own splits)")
        fractions = tuple(checks.number(source, "data.split", x) for x in split)
        if any(not 0 < x < 1 for x in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"{checks.where(source, 'data.split')}: {list(split)!r} is not allowed; expected three fractions, "
                f"each between 0 and 1, summing to 1 (these sum to {sum(fractions):g})"
            )
    limits = {}
    for key in ("limit", "eval_limit"):
        value = raw.get(key)
        limits[key] = None if value is None else checks.integer(source, f"data.{key}", value, minimum=1)
    text = checks.string(source, "data.text", raw.get("text", d.text))
    label = checks.string(source, "data.label", raw.get("label", d.label))
    config = raw.get("config")
    if config is not None:
        config = checks.name(source, "data.config", config)
        if is_dir(name):
            raise ConfigError(f"{checks.where(source, 'data.config')}: {config!r} is not allowed with the local directory "
                              f"data.name {name!r} (a configuration names one of a Hub data set's subsets); "
                              "remove data.config, or point data.name at the directory of that subset's files")
    text_pair = raw.get("text_pair")
    if text_pair is not None:
        text_pair = checks.string(source, "data.text_pair", text_pair)
        if text_pair == text:
            raise ConfigError(f"{checks.where(source, 'data.text_pair')}: {text_pair!r} is data.text itself; "
                              "expected the second text column")
    if label in (text, text_pair):
        raise ConfigError(f"{checks.where(source, 'data.label')}: {label!r} is also a text column; expected another column")
    split_names = _split_names(source, raw.get("split_names"), fractions)
    return DataConfig(name=name, split=fractions, text=text, label=label, config=config,  # type: ignore[arg-type]
                      split_names=split_names, text_pair=text_pair, **limits)


def _split_names(source: str, raw: Any, split: Any) -> dict[str, str] | None:
    where = checks.where(source, "data.split_names")
    if raw is None:
        return None
    if split != SPLIT_GIVEN:
        raise ConfigError(f"{where}: only used with data.split: {SPLIT_GIVEN} (the data's own splits); "
                          f"with fractions, train and test are merged and split again")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: {raw!r} is not a mapping of {', '.join(SPLIT_ROLES)} to the data's split "
                          "names, e.g. {val: dev, test: validation}")
    out = {}
    for role, value in raw.items():
        if role not in SPLIT_ROLES:
            raise ConfigError(f"{where}.{role}: unknown split; expected one of {', '.join(SPLIT_ROLES)}")
        out[role] = checks.string(source, f"data.split_names.{role}", value)
    if len(set(out.values())) < len(out):
        raise ConfigError(f"{where}: {out!r} uses one of the data's splits twice; each of ours needs its own")
    return out


def build_job(raw: Mapping[str, Any], *, source: str = "") -> JobConfig:
    """Check a mapping of job keys (YAML/JSON shape) and return the frozen configuration.

    `source` (a file name) prefixes every message. Raises ConfigError on the first problem
    (`trainer.jobfile.every_problem` finds them all).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source or 'job'}: expected a mapping of job keys, got {checks.typename(raw)}")
    _check_keys(source, raw, _JOB_KEYS)
    d = JobConfig()
    get = raw.get
    numbers = _rates(source, get, d)
    sizes = _sizes(source, get, d, warmup=numbers["warmup_ratio"])
    return JobConfig(
        model=_model(source, get("model", d.model)),
        pooling=checks.choice(source, "pooling", get("pooling", d.pooling), POOLINGS),
        grad_accum=checks.integer(source, "grad_accum", get("grad_accum", d.grad_accum), minimum=1),
        optimizer=checks.choice(source, "optimizer", get("optimizer", d.optimizer), OPTIMIZERS),
        scheduler=checks.choice(source, "scheduler", get("scheduler", d.scheduler), SCHEDULERS),
        epochs=checks.integer(source, "epochs", get("epochs", d.epochs), minimum=1),
        seed=checks.seed(source, "seed", get("seed", d.seed)),
        precision=checks.choice(source, "precision", get("precision", d.precision), PRECISIONS),
        data=_build_data(source, get("data", {})),
        metric=checks.choice(source, "metric", get("metric", d.metric), tuple(METRICS)),
        **numbers,
        **sizes,
    )


def _out_of_range(source: str, key: str, value: float, expected: str) -> ConfigError:
    said = f"{value:g}" if isinstance(value, float) else str(value)
    return ConfigError(f"{checks.where(source, key)}: {said} is out of range; expected {expected}")


def _rates(source: str, get: Any, d: JobConfig) -> dict[str, Any]:
    """dropout, max_len, lr, weight_decay, clip and warmup_ratio, each in its range."""
    out: dict[str, Any] = {"dropout": checks.number(source, "dropout", get("dropout", d.dropout))}
    if not 0 <= out["dropout"] < 1:
        raise _out_of_range(source, "dropout", out["dropout"], "0 <= dropout < 1")
    out["max_len"] = checks.integer(source, "max_len", get("max_len", d.max_len))
    if not MIN_MAX_LEN <= out["max_len"] <= MAX_MAX_LEN:  # the message names the model's maximum (trainer/maxlen.py)
        model = get("model", d.model)
        path = MODEL_ALIASES.get(model, model) if isinstance(model, str) else None
        raise ConfigError(checks.where(source, "") + maxlen.above_any(out["max_len"], low=MIN_MAX_LEN, high=MAX_MAX_LEN,
                                                                       path=path))
    out["lr"] = checks.number(source, "lr", get("lr", d.lr))
    if not out["lr"] > 0:
        raise _out_of_range(source, "lr", out["lr"], "lr > 0")
    for key in ("weight_decay", "clip"):
        out[key] = checks.number(source, key, get(key, getattr(d, key)))
        if out[key] < 0:
            raise _out_of_range(source, key, out[key], f"{key} >= 0")
    out["warmup_ratio"] = checks.number(source, "warmup_ratio", get("warmup_ratio", d.warmup_ratio))
    if not 0 <= out["warmup_ratio"] < 1:
        raise _out_of_range(source, "warmup_ratio", out["warmup_ratio"], "0 <= warmup_ratio < 1")
    return out


def _sizes(source: str, get: Any, d: JobConfig, *, warmup: float) -> dict[str, Any]:
    """batch_size, micro_batch_size, patience, eval_batch_size and warmup_steps, and the rules between them."""
    batch_size = checks.integer(source, "batch_size", get("batch_size", d.batch_size), minimum=1)
    micro = get("micro_batch_size")
    if micro is not None:
        micro = checks.integer(source, "micro_batch_size", micro, minimum=1)
        if batch_size % micro:
            raise ConfigError(f"{checks.where(source, 'micro_batch_size')}: {micro} does not divide batch_size "
                              f"{batch_size}; expected a divisor of batch_size (or null)")
    patience = get("patience", d.patience)
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(
            f"{checks.where(source, 'patience')}: {patience!r} is not allowed; expected an integer >= 1 (epochs "
            "without improvement before stopping) or null (no early stopping)"
        )
    eval_batch = get("eval_batch_size", d.eval_batch_size)
    eval_batch = None if eval_batch is None else checks.integer(source, "eval_batch_size", eval_batch, minimum=1)
    warmup_steps = checks.integer(source, "warmup_steps", get("warmup_steps", d.warmup_steps), minimum=0)
    if warmup_steps and warmup:
        raise ConfigError(
            f"{checks.where(source, 'warmup_steps')}: {warmup_steps} with warmup_ratio {warmup:g}: give one of the "
            "two (the other 0)"
        )
    return {"batch_size": batch_size, "micro_batch_size": micro, "patience": patience, "eval_batch_size": eval_batch,
            "warmup_steps": warmup_steps}
