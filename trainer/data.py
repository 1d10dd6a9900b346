"""Data: the task's rows (`trainer.tasks`), tokenized once into a shared cache, batched.

The split depends only on the data and `data.split` (never on the job's seed), so every job
of every sweep trains, validates and tests on the same rows. Tokenized splits are stored as
flat numpy arrays (token ids + offsets, and segment ids for sentence pairs), keyed by
tokenizer, max_len, data and rows; a file lock makes two jobs that start at once build it
once, and a finished entry is published by an atomic rename, so a reader never sees half of one.
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

from trainer.config import DataConfig
from trainer.tasks import DATA_EXTENSIONS, Task, load, split_indices  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("SWEEP_CACHE_DIR", Path.home() / ".cache" / "sweep" / "tokenized"))


@dataclass(frozen=True)
class Split:
    """One tokenized split: row i is ids[offsets[i]:offsets[i+1]], label labels[i]."""

    ids: np.ndarray  # int32, all rows' token ids concatenated (no padding stored)
    offsets: np.ndarray  # int64, len(rows) + 1
    labels: np.ndarray  # int64
    rows: np.ndarray  # int64, the rows' positions in the data (fractions: train+test merged; given: their split)
    types: np.ndarray | None = None  # int8 segment ids aligned with ids, for sentence pairs

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
    task: Task | None = None

    @property
    def pairs(self) -> bool:
        return self.train.types is not None

    def summary(self) -> dict[str, Any]:
        """The rows used (per split, after data.limit / eval_limit), where they come from, the
        rows dropped for a missing label, the columns and class names: result.json's `data`."""
        out = self.task.summary() if self.task is not None else {}
        return {**out, "rows": {"train": len(self.train), "val": len(self.val), "test": len(self.test)}}


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


def _tokenize(tokenizer: Any, texts: list[str], max_len: int, pairs: list[str] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Token ids and offsets (and segment ids for pairs, where the tokenizer makes them).
    Pairs are truncated `longest_first`: the longer text loses tokens first."""
    lengths: list[int] = []
    chunks: list[list[int]] = []
    segments: list[list[int]] | None = [] if pairs is not None else None
    for start in range(0, len(texts), 1000):
        if pairs is None:
            enc = tokenizer(texts[start : start + 1000], truncation=True, max_length=max_len)
        else:
            enc = tokenizer(texts[start : start + 1000], pairs[start : start + 1000], truncation="longest_first",
                            max_length=max_len)
            if segments is not None and "token_type_ids" in enc:
                segments.extend(enc["token_type_ids"])
            else:
                segments = None  # a tokenizer without segments (RoBERTa's): the model sees none
        lengths.extend(len(x) for x in enc["input_ids"])
        chunks.extend(enc["input_ids"])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for row in chunks for t in row), dtype=np.int32, count=int(offsets[-1]))
    types = None
    if segments is not None:
        types = np.fromiter((t for row in segments for t in row), dtype=np.int8, count=int(offsets[-1]))
    return ids, offsets, types


def encode_texts(tokenizer: Any, texts: list[str], max_len: int, pairs: list[str] | None = None) -> Split:
    """Texts (or pairs) to a split (no labels: all 0), tokenized as training tokenizes them."""
    ids, offsets, types = _tokenize(tokenizer, texts, max_len, pairs)
    return Split(ids=ids, offsets=offsets, labels=np.zeros(len(texts), dtype=np.int64),
                 rows=np.arange(len(texts), dtype=np.int64), types=types)


def _save_split(directory: Path, split: Split) -> None:
    for name in ("ids", "offsets", "labels", "rows"):
        np.save(directory / f"{name}.npy", getattr(split, name))
    if split.types is not None:
        np.save(directory / "types.npy", split.types)


def _load_split(directory: Path, n: int) -> Split:
    """The first n rows of a cached split (memory-mapped)."""
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in ("ids", "offsets", "labels", "rows")}
    offsets = arrays["offsets"][: n + 1]
    end = int(offsets[-1])
    types = np.load(directory / "types.npy", mmap_mode="r")[:end] if (directory / "types.npy").exists() else None
    return Split(ids=arrays["ids"][:end], offsets=offsets, labels=arrays["labels"][:n], rows=arrays["rows"][:n],
                 types=types)


def cache_key(cfg: DataConfig, tokenizer_fp: str, max_len: int, data_fp: str) -> str:
    """The cache entry of a (tokenizer, max_len, data, rows) combination. It leaves out
    data.limit / data.eval_limit (an entry holds the first rows of each split and serves every
    job that needs no more rows than it holds); keys added since the first release join it
    only when they are not at their defaults, so the default protocol's entries stay valid."""
    split = cfg.split if isinstance(cfg.split, str) else list(cfg.split)
    parts: list[Any] = [CACHE_VERSION, tokenizer_fp, max_len, data_fp, cfg.text, cfg.label, split]
    extra = {k: getattr(cfg, k) for k in ("config", "split_names", "text_pair") if getattr(cfg, k) is not None}
    if extra:
        parts.append(extra)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def prepare(
    cfg: DataConfig, tokenizer: Any, max_len: int, *, cache_dir: Path | None = None, task: Task | None = None
) -> Prepared:
    """Load, split and tokenize the job's rows, through the shared cache (`task`: already loaded)."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    task = task or load(cfg)
    full = {role: part.rows for role, part in task.parts.items()}
    need = {"train": len(full["train"][: cfg.limit]), "val": len(full["val"][: cfg.eval_limit]),
            "test": len(full["test"][: cfg.eval_limit])}
    key = cache_key(cfg, tokenizer_fingerprint(tokenizer), max_len, task.fingerprint)
    entry = cache_dir / key
    hit = True
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second job starting now waits here, then hits
        meta = json.loads((entry / "meta.json").read_text()) if (entry / "meta.json").exists() else None
        if meta is None or any(meta["rows"][s] < n for s, n in need.items()):
            hit = False
            held = meta["rows"] if meta else {}
            rows = {s: max(n, held.get(s, 0)) for s, n in need.items()}
            _build_entry(entry, task, tokenizer, max_len, rows)
        splits = {name: _load_split(entry / name, need[name]) for name in ("train", "val", "test")}
    for role, part in task.parts.items():
        if part.dropped:
            log.warning("%s split (from %r): %d rows dropped, their label is missing", role, part.source, part.dropped)
    return Prepared(**splits, num_labels=task.num_labels, label_names=task.label_names, cache_hit=hit, task=task)


def _build_entry(entry: Path, task: Task, tokenizer: Any, max_len: int, counts: dict[str, int]) -> None:
    for stale in entry.parent.glob(f".{entry.name}.*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for name, n in counts.items():
            part = task.parts[name]
            texts, pairs = task.texts(name, n)
            ids, offsets, types = _tokenize(tokenizer, texts, max_len, pairs)
            (tmp / name).mkdir()
            _save_split(tmp / name, Split(ids=ids, offsets=offsets, labels=part.labels[:n].astype(np.int64),
                                          rows=part.rows[:n], types=types))
        (tmp / "meta.json").write_text(json.dumps({"num_labels": task.num_labels, "label_names": task.label_names,
                                                      "max_len": max_len, "rows": counts}))
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


@dataclass(frozen=True)
class MicroBatch:
    rows: np.ndarray
    share: float  # its rows' part of its batch: its mean loss is weighted by this
    batches: int  # batches in its optimizer step: the step's loss is their mean
    last: bool  # the last micro-batch of its optimizer step: step after it


def step_batches(split: Split, *, batch_size: int, grad_accum: int, micro_batch: int, seed: int,
                 epoch: int) -> list[MicroBatch]:
    """The micro-batches of an epoch, in order, grouped into optimizer steps.

    The rows of each step come first, the micro-batch after: `train_batches` at the job's
    batch_size, `grad_accum` of them a step, each cut into micro-batches. So an out-of-memory
    retry in smaller micro-batches sees the same rows in the same steps, with the same weights
    (a micro-batch's mean loss times its share of its batch, over the step's batches), and a
    job's answer does not depend on whether a neighbour on its GPU ran it out of memory.
    """
    batches = train_batches(split, batch_size, seed=seed, epoch=epoch)
    out: list[MicroBatch] = []
    for start in range(0, len(batches), grad_accum):
        step = batches[start : start + grad_accum]
        parts = [(b[i : i + micro_batch], len(b)) for b in step for i in range(0, len(b), micro_batch)]
        for k, (rows, whole) in enumerate(parts):
            out.append(MicroBatch(rows=rows, share=len(rows) / whole, batches=len(step), last=k == len(parts) - 1))
    return out


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
    types = np.zeros((len(rows), width), dtype=np.int64) if split.types is not None else None
    for i, (s, e) in enumerate(zip(starts, ends, strict=False)):
        ids[i, : e - s] = split.ids[s:e]
        mask[i, : e - s] = 1
        if types is not None:
            types[i, : e - s] = split.types[s:e]  # type: ignore[index]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(np.asarray(split.labels[rows], dtype=np.int64)),
    }
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch


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


def load_rows(cfg: DataConfig) -> tuple[Any, str]:
    """The table that the test rows' positions index (train+test merged with fractions, the
    test split's own with `given`) and the data's fingerprint: where `sweep analyze` reads texts."""
    task = load(cfg)
    return task.tables[task.parts["test"].source], task.fingerprint
