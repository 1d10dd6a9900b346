"""Data: load, merge, split with a fixed seed, tokenize once into a shared cache, batch.

The split depends only on the data and `data.split` (never on the job's seed), so every job
of every sweep trains, validates and tests on the same rows. Tokenized splits are stored as
flat numpy arrays (token ids + offsets), keyed by tokenizer, max_len, data and rows; a file
lock makes two jobs that start at once build it once, and a finished entry is published by
an atomic rename, so a reader never sees half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import DATA_SEED, ConfigError, DataConfig

log = logging.getLogger(__name__)

DATA_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("SWEEP_CACHE_DIR", Path.home() / ".cache" / "sweep" / "tokenized"))


@dataclass(frozen=True)
class Split:
    """One tokenized split: row i is ids[offsets[i]:offsets[i+1]], label labels[i]."""

    ids: np.ndarray  # int32, all rows' token ids concatenated (no padding stored)
    offsets: np.ndarray  # int64, len(rows) + 1
    labels: np.ndarray  # int64
    rows: np.ndarray  # int64, the rows' positions in the merged, shuffled data

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class Prepared:
    train: Split
    val: Split
    test: Split
    num_labels: int
    label_names: list[str] | None  # the data set's class names, where its label column has them
    cache_hit: bool  # True when no tokenization was done (the whole prepared set was cached)


# -- loading -----------------------------------------------------------------------------


def _local_data_files(directory: Path) -> tuple[str, dict[str, list[str]]]:
    files: dict[str, list[str]] = {}
    builders = set()
    for path in sorted(directory.iterdir()):
        split = path.name.split(".")[0].split("-")[0]
        if path.suffix in DATA_EXTENSIONS and split in ("train", "test"):
            files.setdefault(split, []).append(str(path))
            builders.add(DATA_EXTENSIONS[path.suffix])
    if "train" not in files:
        raise ConfigError(
            f"data.name: {str(directory)!r} holds no train file; expected train.parquet, train.csv or "
            "train.jsonl (and optionally test.*) with text and label columns"
        )
    if len(builders) > 1:
        raise ConfigError(f"data.name: {str(directory)!r} mixes file formats ({', '.join(sorted(builders))}); use one")
    return builders.pop(), files


def load_rows(cfg: DataConfig) -> tuple[Any, str]:
    """Load train+test merged (Hub id or local directory, both through `datasets`).

    Returns the merged dataset and a fingerprint of its contents for the cache key.
    """
    import datasets

    datasets.disable_progress_bars()
    local = Path(cfg.name)
    if local.is_dir():
        builder, files = _local_data_files(local)
        stats = [(Path(f).name, os.stat(f).st_size, os.stat(f).st_mtime_ns) for fs in files.values() for f in fs]
        fingerprint = hashlib.sha256(json.dumps([str(local.resolve()), stats]).encode()).hexdigest()
        ds = datasets.load_dataset(builder, data_files=files)
    else:
        ds = datasets.load_dataset(cfg.name)
        fingerprint = hashlib.sha256(
            json.dumps([cfg.name] + [ds[s]._fingerprint for s in ("train", "test") if s in ds]).encode()
        ).hexdigest()
    parts = [ds[s] for s in ("train", "test") if s in ds]  # IMDB's 'unsupervised' split has no labels
    merged = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    for column in (cfg.text, cfg.label):
        if column not in merged.column_names:
            key = "data.text" if column == cfg.text else "data.label"
            raise ConfigError(
                f"{key}: column {column!r} is not in {cfg.name!r}; its columns are {', '.join(merged.column_names)}"
            )
    return merged, fingerprint


def split_indices(n: int, fractions: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with the fixed data seed and cut it train/val/test.

    Same permutation as `datasets.Dataset.shuffle(seed=DATA_SEED)`.
    """
    order = np.random.default_rng(DATA_SEED).permutation(n)
    n_train = int(n * fractions[0])
    n_val = int(n * fractions[1])
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


# -- tokenization cache --------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a tokenizer by what it does, not by its name."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding settings change as the tokenizer is called: not its identity.
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:  # a slow tokenizer: its vocabulary stands for it
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(tokenizer.all_special_tokens).encode())
    return h.hexdigest()


def _tokenize(tokenizer: Any, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    lengths: list[int] = []
    chunks: list[list[int]] = []
    for start in range(0, len(texts), 1000):
        enc = tokenizer(texts[start : start + 1000], truncation=True, max_length=max_len)["input_ids"]
        lengths.extend(len(x) for x in enc)
        chunks.extend(enc)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for row in chunks for t in row), dtype=np.int32, count=int(offsets[-1]))
    return ids, offsets


def encode_texts(tokenizer: Any, texts: list[str], max_len: int) -> Split:
    """Texts to a split (no labels: all 0), tokenized as training tokenizes them."""
    ids, offsets = _tokenize(tokenizer, texts, max_len)
    return Split(ids=ids, offsets=offsets, labels=np.zeros(len(texts), dtype=np.int64),
                 rows=np.arange(len(texts), dtype=np.int64))


def _save_split(directory: Path, split: Split) -> None:
    for name in ("ids", "offsets", "labels", "rows"):
        np.save(directory / f"{name}.npy", getattr(split, name))


def _load_split(directory: Path, n: int) -> Split:
    """The first n rows of a cached split (memory-mapped)."""
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in ("ids", "offsets", "labels", "rows")}
    offsets = arrays["offsets"][: n + 1]
    return Split(ids=arrays["ids"][: int(offsets[-1])], offsets=offsets, labels=arrays["labels"][:n],
                 rows=arrays["rows"][:n])


def prepare(
    cfg: DataConfig, tokenizer: Any, max_len: int, *, cache_dir: Path | None = None
) -> Prepared:
    """Load, split and tokenize the job's rows, through the shared cache."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    merged, data_fp = load_rows(cfg)
    full = dict(zip(("train", "val", "test"), split_indices(len(merged), cfg.split), strict=True))
    need = {"train": len(full["train"][: cfg.limit]), "val": len(full["val"][: cfg.eval_limit]),
            "test": len(full["test"][: cfg.eval_limit])}
    # The key leaves out data.limit / data.eval_limit: an entry holds the first rows of each
    # split, and serves every job that needs no more rows than it holds.
    key = hashlib.sha256(
        json.dumps([CACHE_VERSION, tokenizer_fingerprint(tokenizer), max_len, data_fp, cfg.text, cfg.label,
                    list(cfg.split)]).encode()
    ).hexdigest()[:24]
    entry = cache_dir / key
    hit = True
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second job starting now waits here, then hits
        meta = json.loads((entry / "meta.json").read_text()) if (entry / "meta.json").exists() else None
        if meta is None or any(meta["rows"][s] < n for s, n in need.items()):
            hit = False
            held = meta["rows"] if meta else {}
            rows = {s: full[s][: max(n, held.get(s, 0))] for s, n in need.items()}
            _build_entry(entry, merged, cfg, tokenizer, max_len, rows)
            meta = json.loads((entry / "meta.json").read_text())
        splits = {name: _load_split(entry / name, need[name]) for name in ("train", "val", "test")}
    return Prepared(**splits, num_labels=meta["num_labels"], label_names=meta.get("label_names"), cache_hit=hit)


def _build_entry(
    entry: Path, merged: Any, cfg: DataConfig, tokenizer: Any, max_len: int, indices: dict[str, np.ndarray]
) -> None:
    all_labels = np.asarray(merged[cfg.label])
    if all_labels.dtype.kind not in "iu" or all_labels.min() < 0:
        raise ConfigError(
            f"data.label: column {cfg.label!r} of {cfg.name!r} must hold class indices 0..K-1 (integers), "
            f"found dtype {all_labels.dtype} with minimum {all_labels.min()}"
        )
    num_labels = int(all_labels.max()) + 1
    names = getattr(merged.features[cfg.label], "names", None)  # a ClassLabel's, e.g. IMDB's neg/pos
    label_names = [str(n) for n in names] if names and len(names) >= num_labels else None
    for stale in entry.parent.glob(f".{entry.name}.*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for name, idx in indices.items():
            rows = merged.select(idx)
            ids, offsets = _tokenize(tokenizer, list(rows[cfg.text]), max_len)
            (tmp / name).mkdir()
            _save_split(tmp / name, Split(ids=ids, offsets=offsets, labels=all_labels[idx].astype(np.int64), rows=idx))
        rows = {name: len(idx) for name, idx in indices.items()}
        (tmp / "meta.json").write_text(json.dumps({"num_labels": num_labels, "label_names": label_names, "max_len": max_len,
                                                      "rows": rows}))
        if entry.exists():  # a smaller entry, or an incomplete one from a killed build: replace it
            old = entry.with_name(f".{entry.name}.old")
            os.rename(entry, old)
            os.rename(tmp, entry)
            shutil.rmtree(old, ignore_errors=True)  # readers' memory maps outlive the unlink
        else:
            os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- batching ------------------------------------------------------------------------------


def train_batches(split: Split, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices per training batch, grouped by length, deterministic in (seed, epoch).

    Shuffle, cut into mega-batches of 50 batches, sort each by length, cut into batches and
    shuffle the batches: rows of similar length share a batch (little padding) while the
    order stays random. The longest batch goes first so an out-of-memory error shows at once.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(split))
    lengths = split.lengths
    mega = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = rng.permutation(len(batches))
    batches = [batches[i] for i in perm]
    longest = max(range(len(batches)), key=lambda i: int(lengths[batches[i]].max()))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def eval_batches(split: Split, batch_size: int) -> list[np.ndarray]:
    """Row indices per evaluation batch, sorted by length (longest first)."""
    order = np.argsort(-split.lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(split: Split, rows: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the rows to the longest among them (dynamic padding)."""
    starts, ends = split.offsets[rows], split.offsets[rows + 1]
    width = int((ends - starts).max())
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, (s, e) in enumerate(zip(starts, ends, strict=False)):
        ids[i, : e - s] = split.ids[s:e]
        mask[i, : e - s] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.asarray(split.labels[rows], dtype=np.int64)),
    }


def iterate(split: Split, batches: list[np.ndarray], pad_id: int, *, pin: bool = False
            ) -> Iterator[dict[str, torch.Tensor]]:
    """The batches, collated; with `pin`, in page-locked memory, so that the caller's
    `.to(cuda, non_blocking=True)` is a real asynchronous copy (from pageable memory the copy
    is staged, and may wait for the GPU's queue) and the next batch is prepared while the GPU
    still works on the last. Torch's caching host allocator keeps a pinned block from reuse
    until the copies reading it are done."""
    for rows in batches:
        batch = collate(split, rows, pad_id)
        yield {k: v.pin_memory() for k, v in batch.items()} if pin else batch
