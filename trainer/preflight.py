"""Before any work: every distinct model and data set of a run, grid or study, checked once.

A local model directory must hold a config and a tokenizer; a path that does not exist is
refused; a Hub id must be well-formed and, where the Hub cannot be reached (`HF_HUB_OFFLINE=1`,
or no connection), be in the local cache. Each data set is read (not the model) and its
columns, splits and labels checked by the same code the jobs use (`trainer.tasks`). Something
missing (a path that does not exist, a Hub entry not cached offline) is a warning for a dry
run (nothing would load it) and an error for a real run; every other problem is an error. All problems are reported at once.

Torch-free: the sweeper calls it before it starts a job process.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.config import MIN_MAX_LEN, ConfigError, DataConfig, JobConfig, is_dir
from trainer.maxlen import MODEL_CONFIG_FILE, local_max_len, out_of_range

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "vocab.json")
_TRUE = ("1", "ON", "YES", "TRUE")


def check(jobs: Sequence[JobConfig], *, strict: bool, source: str = "") -> list[str]:
    """Check every distinct model and data set of `jobs`; return the warnings. Raises
    ConfigError listing every problem (a missing Hub entry is one only when `strict`)."""
    where = f"{source}: " if source else ""
    hub = _Hub()
    problems: list[str] = []
    warnings: list[str] = []
    for model, path in dict.fromkeys((j.model, j.model_path) for j in jobs):
        kind, message = _model(model, path, hub)
        if message:
            (problems if kind == "error" or strict else warnings).append(where + message)
        elif (limit := local_max_len(path)) is not None:
            longest = max(j.max_len for j in jobs if j.model == model)
            if longest > limit[0]:
                problems.append(where + out_of_range(longest, low=MIN_MAX_LEN, limit=limit, model=model))
    for data in _distinct_data(jobs):
        kind, message = _data(data, hub)
        if message:
            (problems if kind == "error" or strict else warnings).append(where + message)
    if problems:
        head = f"{len(problems)} problems before any job started:\n  " if len(problems) > 1 else ""
        raise ConfigError(head + "\n  ".join(problems))
    return warnings


def _distinct_data(jobs: Sequence[JobConfig]) -> list[DataConfig]:
    """The data sets of `jobs`, once each (limits aside: they only cut rows)."""
    out: dict[str, DataConfig] = {}
    for job in jobs:
        cfg = dataclasses.replace(job.data, limit=None, eval_limit=None)
        out.setdefault(json.dumps(dataclasses.asdict(cfg), sort_keys=True), cfg)
    return list(out.values())


class _Hub:
    """Whether the Hub is reachable: asked at most once per check, only when an id needs it."""

    def __init__(self) -> None:
        self.offline = any(os.environ.get(k, "").upper() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
        self.data_offline = self.offline or os.environ.get("HF_DATASETS_OFFLINE", "").upper() in _TRUE
        self._reachable: bool | None = None

    def reachable(self) -> bool:
        if self.offline:
            return False
        if self._reachable is None:
            from huggingface_hub import constants, get_session

            try:
                get_session().head(constants.ENDPOINT, timeout=5)
                self._reachable = True
            except Exception:  # any failure to connect: treated as offline
                self._reachable = False
        return self._reachable

    def why(self) -> str:
        return "HF_HUB_OFFLINE=1" if self.offline else "the Hub is unreachable"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system
        return False


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value


def _hub_id_problem(value: str) -> str | None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        return str(exc).splitlines()[0]
    return None


def _model(model: str, path: str, hub: _Hub) -> tuple[str, str | None]:
    shown = f"model: {model!r}" + (f" ({path})" if path != model else "")
    local = Path(path).expanduser()
    if is_dir(path):
        if not (local / MODEL_CONFIG_FILE).is_file():
            return "error", (f"{shown}: the directory holds no config.json; expected a Hugging Face model directory "
                             "(config.json, the tokenizer's files, the weights), e.g. one written by save_pretrained")
        if not any((local / f).is_file() for f in TOKENIZER_FILES):
            return "error", (f"{shown}: the directory holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                             "save the tokenizer next to the model (tokenizer.save_pretrained(DIR))")
        return "ok", None
    if _exists(local):
        return "error", f"{shown}: is a file; expected a model directory, an alias or a Hub id (owner/name)"
    if _looks_like_path(path):
        return "missing", (f"{shown}: no such directory; expected an existing local model directory, an alias or a "
                         "Hub id such as 'google-bert/bert-base-uncased'")
    if problem := _hub_id_problem(path):
        return "error", f"{shown}: not a well-formed Hub id ({problem})"
    if hub.reachable():
        return "ok", None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, MODEL_CONFIG_FILE), str):
        return "ok", None
    return "missing", (f"{shown}: not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {hub.why()}; "
                       f"download it where the Hub is reachable (hf download {path}) or point model at a local "
                       "directory (--set model=/path/to/model)")


def _dataset_cached(name: str, config: str | None) -> bool:
    import datasets
    from huggingface_hub import try_to_load_from_cache

    built = Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")
    if (built / config).is_dir() if config else built.is_dir():
        return True
    return isinstance(try_to_load_from_cache(name, "README.md", repo_type="dataset"), str)


def _data(cfg: DataConfig, hub: _Hub) -> tuple[str, str | None]:
    from trainer import tasks

    shown = f"data.name: {cfg.name!r}" + (f" (data.config {cfg.config!r})" if cfg.config else "")
    local = Path(cfg.name).expanduser()
    if not is_dir(cfg.name):
        if _exists(local):
            return "error", f"{shown}: is a file; expected a directory of train.*/test.* files or a Hub data set id"
        if _looks_like_path(cfg.name):
            return "missing", (f"{shown}: no such directory; expected an existing directory of train.*/test.* files "
                             "(parquet, csv or jsonl) or a Hub data set id such as 'stanfordnlp/imdb'")
        if problem := _hub_id_problem(cfg.name):
            return "error", f"{shown}: not a well-formed Hub id ({problem})"
        if (hub.data_offline or not hub.reachable()) and not _dataset_cached(cfg.name, cfg.config):
            return "missing", (f"{shown}: not in the local cache and {hub.why()}, so its columns and labels are not "
                               f"checked; load it once where the Hub is reachable (datasets.load_dataset"
                               f"({cfg.name!r}{', ' + repr(cfg.config) if cfg.config else ''})) or point data.name at "
                               "a local directory (--set data.name=/path/to/data)")
    try:
        tasks.load(cfg)
    except ConfigError as exc:
        return "error", str(exc)
    except Exception as exc:  # the data set's own loader failed: say so, with its words
        return "error", f"{shown}: could not be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return "ok", None


def space_configs(space: Any, limit: int = 256) -> list[JobConfig]:
    """The job configurations a search space (sweeper.search.Space) can reach, as far as models
    and data sets go: its base with every combination of its categorical `model` and `data.*`
    values (the other parameters at the base's values; `limit` caps the combinations)."""
    import itertools

    chosen = [p for p in space.params if p.values is not None and (p.name == "model" or p.name.startswith("data."))]
    combos = itertools.islice(itertools.product(*(p.values for p in chosen)), limit)
    return [space.config(dict(zip((p.name for p in chosen), combo, strict=True))) for combo in combos]
