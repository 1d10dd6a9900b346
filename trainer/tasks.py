"""A data set as a classification task: which rows train, validate and test, their texts and
their class ids, checked before anything is tokenized or any model is loaded.

Torch-free (`datasets`, pyarrow and numpy): the preflight (`trainer.preflight`) reads every
data set of a sweep with it before the first job starts, and `trainer.data` tokenizes what it
returns. Two ways to split (`data.split`):

- three fractions (the default, the users' IMDB protocol): the labelled `train` and `test`
  splits merged and cut with the fixed data seed; rows are positions in the merged data;
- `given`: the data's own splits (`data.split_names` maps ours to theirs); each is shuffled
  with the data seed (so `data.limit` takes a random sample, not the file's first class), and a
  data set without a validation split gives 10% of its training rows (`VAL_CARVE`); rows are
  positions in the split they come from.

Labels may be integers (class indices), booleans, strings or a `ClassLabel`. Strings and
booleans are numbered in sorted order, a ClassLabel keeps its own order, integers are their
own ids. The classes are read from the training rows (with fractions, the merged data); a
validation or test label outside them is an error. A missing label (null, NaN, -1, "") drops
the row, counted per split; a validation or test split with no label at all is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import DATA_SEED, SPLIT_GIVEN, SPLIT_ROLES, ConfigError, DataConfig
from trainer.labels import classes, encode

DATA_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
VAL_CARVE = 0.1  # the share of the training rows that validates when the data has no validation split
VAL_NAMES = ("validation", "dev", "val")  # a given validation split, in this order of preference
ROLE_NAMES = {"train": "training", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class Part:
    """One of our splits: rows of one of the data's splits, their class ids."""

    source: str  # the data's split the rows come from ("train+test" for fractions)
    rows: np.ndarray  # int64 positions in that split (the merged data for fractions), in use order
    labels: np.ndarray  # int64 class ids of those rows
    dropped: int  # rows of this split left out because their label is missing
    carved: bool = False  # a validation split carved from the training rows


@dataclass(frozen=True)
class Task:
    cfg: DataConfig
    tables: dict[str, Any]  # the data's split name -> datasets.Dataset ("train+test" for fractions)
    parts: dict[str, Part]  # train, val, test
    label_names: list[str] | None  # None for integer labels without names ("0", "1", … are shown)
    num_labels: int
    fingerprint: str  # the data's contents, for the tokenization cache key

    def texts(self, role: str, n: int) -> tuple[list[str], list[str] | None]:
        """The first n rows' texts (and second texts, for pairs) of one of our splits."""
        part = self.parts[role]
        rows = self.tables[part.source].select(part.rows[:n])
        pairs = list(rows[self.cfg.text_pair]) if self.cfg.text_pair else None
        return list(rows[self.cfg.text]), pairs

    def names(self) -> list[str]:
        return self.label_names or [str(i) for i in range(self.num_labels)]

    def summary(self) -> dict[str, Any]:
        """What the job's rows are: for result.json (`data`) and the log."""
        cfg = self.cfg
        return {
            "name": cfg.name,
            "config": cfg.config,
            "split": cfg.split if isinstance(cfg.split, str) else list(cfg.split),
            "splits": {role: f"{p.source} ({VAL_CARVE:.0%} carved, data seed {DATA_SEED})" if p.carved else p.source
                       for role, p in self.parts.items()},
            "text": cfg.text,
            "text_pair": cfg.text_pair,
            "label": cfg.label,
            "label_names": self.names(),
            "num_labels": self.num_labels,
            "available": {role: len(p.rows) for role, p in self.parts.items()},
            "dropped": {role: p.dropped for role, p in self.parts.items()},
        }


# -- loading -----------------------------------------------------------------------------


def local_data_files(directory: Path, *, given: bool) -> tuple[str, dict[str, list[str]]]:
    """The directory's data files by split (the name before the first '.' or '-'): train and
    test with fractions, every split with `given`."""
    files: dict[str, list[str]] = {}
    builders = set()
    for path in sorted(directory.iterdir()):
        split = path.name.split(".")[0].split("-")[0]
        if path.suffix in DATA_EXTENSIONS and (given or split in ("train", "test")):
            files.setdefault(split, []).append(str(path))
            builders.add(DATA_EXTENSIONS[path.suffix])
    if "train" not in files:
        also = ", validation.* or dev.*" if given else ""
        raise ConfigError(
            f"data.name: {str(directory)!r} holds no train file; expected train.parquet, train.csv or "
            f"train.jsonl (and test.*{also}) with text and label columns"
        )
    if len(builders) > 1:
        raise ConfigError(f"data.name: {str(directory)!r} mixes file formats ({', '.join(sorted(builders))}); use one")
    return builders.pop(), files


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def _read(cfg: DataConfig) -> tuple[Any, str]:
    """The data's splits (a DatasetDict) and a fingerprint of what they hold."""
    import datasets

    datasets.disable_progress_bars()
    given = cfg.split == SPLIT_GIVEN
    local = Path(cfg.name)
    if local.is_dir():
        builder, files = local_data_files(local, given=given)
        stats = [(Path(f).name, os.stat(f).st_size, os.stat(f).st_mtime_ns) for fs in files.values() for f in fs]
        return datasets.load_dataset(builder, data_files=files), _sha([str(local.resolve()), stats])
    try:
        ds = datasets.load_dataset(cfg.name, cfg.config) if cfg.config else datasets.load_dataset(cfg.name)
    except ValueError as exc:  # e.g. "Config name is missing", "BuilderConfig 'x' not found"
        if "config" not in str(exc).lower():
            raise
        raise ConfigError(f"data.config: {cfg.config!r} does not name a configuration of {cfg.name!r}: {exc}") from None
    if given:
        return ds, _sha([cfg.name, cfg.config] + [[s, ds[s]._fingerprint] for s in sorted(ds)])
    return ds, _sha([cfg.name] + [ds[s]._fingerprint for s in ("train", "test") if s in ds])


_LAST: dict[str, Task] = {}  # the last task loaded in this process: `sweep run`'s preflight, then its job


def _memo_key(cfg: DataConfig) -> str:
    local = Path(cfg.name)
    files = ([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(local.iterdir()) if p.is_file()]
             if local.is_dir() else [])
    return json.dumps([dataclasses.asdict(dataclasses.replace(cfg, limit=None, eval_limit=None)), files],
                      sort_keys=True)


def load(cfg: DataConfig) -> Task:
    """Read the data, pick the rows of each split and number the labels; ConfigError on a
    missing column, split or label, naming it. The same data set loaded again in one process
    (unchanged files, same keys) is not read again."""
    key = _memo_key(cfg)
    if key in _LAST:
        return dataclasses.replace(_LAST[key], cfg=cfg)
    task = _load(cfg)
    _LAST.clear()
    _LAST[key] = task
    return task


def _load(cfg: DataConfig) -> Task:
    ds, fingerprint = _read(cfg)
    where = f"{cfg.name!r}" + (f" (config {cfg.config!r})" if cfg.config else "")
    if cfg.split == SPLIT_GIVEN:
        tables, sources = _given_sources(cfg, ds, where)
    else:
        import datasets

        labelled = [ds[s] for s in ("train", "test") if s in ds]  # IMDB's 'unsupervised' split has no labels
        tables = {"train+test": datasets.concatenate_datasets(labelled) if len(labelled) > 1 else labelled[0]}
        sources = {role: "train+test" for role in SPLIT_ROLES}
    for name in dict.fromkeys(sources.values()):
        _check_columns(cfg, tables[name], name, where)
    train_source = sources["train"]
    names, num_labels, kind = classes(cfg, tables[train_source], train_source, where)
    ids = {name: encode(cfg, tables[name], name, where, names, num_labels, kind)
           for name in dict.fromkeys(sources.values())}

    parts: dict[str, Part] = {}
    if cfg.split == SPLIT_GIVEN:
        for role in SPLIT_ROLES:
            if role == "val" and sources["val"] == sources["train"]:
                continue
            parts[role] = _shuffled_part(sources[role], ids[sources[role]])
        if "val" not in parts:  # no validation split: carve one from the training rows
            train = parts["train"]
            n_val = int(len(train.rows) * VAL_CARVE)
            parts["val"] = Part(train.source, train.rows[:n_val], train.labels[:n_val], 0, carved=True)
            parts["train"] = Part(train.source, train.rows[n_val:], train.labels[n_val:], train.dropped)
    else:
        labels = ids["train+test"]
        for role, idx in zip(SPLIT_ROLES, split_indices(len(labels), cfg.split), strict=True):  # type: ignore[arg-type]
            keep = idx[labels[idx] >= 0]
            parts[role] = Part("train+test", keep.astype(np.int64), labels[keep], len(idx) - len(keep))
    for role in SPLIT_ROLES:
        _check_labelled(cfg, role, parts[role], where)
    return Task(cfg=cfg, tables=tables, parts={r: parts[r] for r in SPLIT_ROLES}, label_names=names,
                num_labels=num_labels, fingerprint=fingerprint)


def split_indices(n: int, fractions: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with the fixed data seed and cut it train/val/test.

    Same permutation as `datasets.Dataset.shuffle(seed=DATA_SEED)`.
    """
    order = np.random.default_rng(DATA_SEED).permutation(n)
    n_train = int(n * fractions[0])
    n_val = int(n * fractions[1])
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def _given_sources(cfg: DataConfig, ds: Any, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Our train/val/test -> the data's split names (val = train when it must be carved)."""
    mapped = cfg.split_names or {}
    have = list(ds)
    sources: dict[str, str] = {}
    for role in SPLIT_ROLES:
        name = mapped.get(role)
        if name is None and role == "val":
            taken = {mapped.get("train", "train"), mapped.get("test", "test")}
            name = next((n for n in VAL_NAMES if n in ds and n not in taken), None)
            if name is None:
                sources["val"] = mapped.get("train", "train")  # carved below
                continue
        name = name or role
        if name not in ds:
            key = f"data.split_names.{role}" if role in mapped else "data.split"
            hint = (f"; name the {ROLE_NAMES[role]} split with data.split_names, e.g. {{{role}: {have[-1]}}}"
                    if role not in mapped else "")
            raise ConfigError(f"{key}: {where} has no split {name!r} (its splits: {', '.join(have)}){hint}")
        sources[role] = name
    return {name: ds[name] for name in dict.fromkeys(sources.values())}, sources


def _check_columns(cfg: DataConfig, table: Any, split: str, where: str) -> None:
    import pyarrow as pa

    for key, column in (("data.text", cfg.text), ("data.text_pair", cfg.text_pair), ("data.label", cfg.label)):
        if column is None:
            continue
        if column not in table.column_names:
            raise ConfigError(f"{key}: column {column!r} is not in {where} (split {split!r}); its columns are "
                              f"{', '.join(table.column_names)}")
        if key == "data.label":
            continue
        values = table.with_format("arrow")[column]
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise ConfigError(f"{key}: column {column!r} of {where} (split {split!r}) holds {values.type}, not text")
        if values.null_count:
            raise ConfigError(f"{key}: column {column!r} of {where} (split {split!r}) has {values.null_count} empty "
                              "(null) rows; fill or remove them")


def _shuffled_part(source: str, labels: np.ndarray) -> Part:
    order = np.random.default_rng(DATA_SEED).permutation(len(labels))
    keep = order[labels[order] >= 0]
    return Part(source, keep.astype(np.int64), labels[keep], len(order) - len(keep))


def _check_labelled(cfg: DataConfig, role: str, part: Part, where: str) -> None:
    if len(part.rows):
        return
    if role == "train":
        raise ConfigError(f"data.label: the training split {part.source!r} of {where} has no labelled rows")
    if cfg.split != SPLIT_GIVEN:
        raise ConfigError(f"data.split: the {ROLE_NAMES[role]} split of {where} is empty; give it a larger fraction")
    if role == "test":
        raise ConfigError(
            f"data.split: the test split {part.source!r} of {where} has no labels ({part.dropped} rows, all missing: "
            "null or -1, as in GLUE's test splits); test on the labelled validation split instead with "
            "data.split_names: {test: validation} (the validation rows are then carved from the training rows: "
            f"{VAL_CARVE:.0%}, with the fixed data seed)"
        )
    raise ConfigError(
        f"data.split_names.val: the validation split {part.source!r} of {where} has no labels ({part.dropped} rows, "
        "all missing); name a labelled split, or map test to it so that validation rows are carved from training"
    )
