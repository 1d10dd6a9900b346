"""What a report keeps of a sweep's predictions between runs: each job's right/wrong on its test
rows (bits, 625 bytes for 5,000 rows) and each configuration's seed ensemble's, in
`runs/<sweep>/report-cache.npz`. A report reads this file instead of every job's
`test_predictions.npz` (1.2 GB over 10,000 jobs); an entry is used only while the job's
predictions and result files are the ones it was made from (size and modification time), so a
job run again is read again. A damaged cache is set aside (`.damaged`), said, and rebuilt; a
read-only runs directory keeps none."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trainer.io import atomic_write
from trainer.jobdir import PREDICTIONS_FILE, RESULT_FILE
from trainer.npz import read_npz

log = logging.getLogger(__name__)

CACHE_FILE = "report-cache.npz"
_VERSION = 1

Bits = tuple[np.ndarray, np.ndarray]  # (sorted test rows, right/wrong on them)


class Cache:
    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir
        self._base = os.fspath(sweep_dir)  # stat by string: pathlib's joins cost more than the stats
        self.path = sweep_dir / CACHE_FILE
        self._runs: dict[str, tuple[tuple[int, ...], Bits]] = {}  # job -> (stamp, bits)
        self._ensembles: dict[str, tuple[tuple[int, ...], Bits]] = {}  # "job,job,..." -> (stamps, bits)
        self._stamps: dict[str, tuple[int, ...] | None] = {}
        self._row_sets: list[np.ndarray] = []
        self._changed = False
        self._load()

    def stamp(self, job_id: str) -> tuple[int, ...] | None:
        """(size, mtime) of the job's predictions and result files (0, 0 for a result file that is
        not there); None without predictions."""
        if job_id not in self._stamps:
            try:
                p = os.stat(f"{self._base}/{job_id}/{PREDICTIONS_FILE}")
            except OSError:
                self._stamps[job_id] = None
                return None
            try:
                r = os.stat(f"{self._base}/{job_id}/{RESULT_FILE}")
                result = (r.st_size, r.st_mtime_ns)
            except OSError:
                result = (0, 0)
            self._stamps[job_id] = (p.st_size, p.st_mtime_ns, *result)
        return self._stamps[job_id]

    def owns(self, rows: np.ndarray) -> bool:
        """Whether `rows` is one of the row arrays this cache read from its file."""
        return any(rows is r for r in self._row_sets)

    def run(self, job_id: str) -> Bits | None:
        hit = self._runs.get(job_id)
        return hit[1] if hit is not None and hit[0] == self.stamp(job_id) else None

    def put_run(self, job_id: str, bits: Bits) -> None:
        stamp = self.stamp(job_id)
        if stamp is not None:
            self._runs[job_id] = (stamp, bits)
            self._changed = True

    def _ensemble_stamp(self, job_ids: Iterable[str]) -> tuple[int, ...] | None:
        stamps = [self.stamp(j) for j in job_ids]
        return None if any(s is None for s in stamps) else tuple(x for s in stamps for x in s)  # type: ignore[union-attr]

    def ensemble(self, job_ids: list[str]) -> Bits | None:
        hit = self._ensembles.get(",".join(job_ids))
        return hit[1] if hit is not None and hit[0] == self._ensemble_stamp(job_ids) else None

    def put_ensemble(self, job_ids: list[str], bits: Bits) -> None:
        stamp = self._ensemble_stamp(job_ids)
        if stamp is not None:
            self._ensembles[",".join(job_ids)] = (stamp, bits)
            self._changed = True

    # -- the file ------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = read_npz(self.path)
        except FileNotFoundError:
            return
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            self._set_aside(exc)
            return
        try:
            if int(data["version"][0]) != _VERSION:
                return
            rows = self._row_sets = [data[f"rows{i}"] for i in range(int(data["row_sets"][0]))]
            self._runs = _unpack(data, "run", rows)
            self._ensembles = _unpack(data, "ens", rows)
        except (KeyError, ValueError, IndexError) as exc:
            self._runs, self._ensembles = {}, {}
            self._set_aside(exc)

    def _set_aside(self, exc: BaseException) -> None:
        aside = self.path.with_name(self.path.name + ".damaged")
        try:
            os.replace(self.path, aside)
        except OSError:
            aside = self.path
        log.warning("%s: damaged (%s: %s), set aside as %s; the report reads the predictions again", self.path,
                    type(exc).__name__, exc, aside.name)
        self._changed = True

    def save(self) -> None:
        """Write the cache (atomically) when anything was added; a read-only runs directory keeps none."""
        if not self._changed or not (self._runs or self._ensembles):
            return
        rows: list[np.ndarray] = []
        arrays: dict[str, np.ndarray] = {}
        for prefix, entries in (("run", self._runs), ("ens", self._ensembles)):
            arrays.update(_pack(prefix, entries, rows))
        arrays.update({f"rows{i}": r for i, r in enumerate(rows)})
        arrays["row_sets"] = np.array([len(rows)])
        arrays["version"] = np.array([_VERSION])

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]

        try:
            atomic_write(self.path, write)
        except OSError as exc:
            log.debug("%s: not written (%s)", self.path, exc)
            return
        self._changed = False


def _row_set(rows: list[np.ndarray], r: np.ndarray) -> int:
    for i, known in enumerate(rows):
        if known is r or (len(known) == len(r) and np.array_equal(known, r)):
            return i
    rows.append(r)
    return len(rows) - 1


def _pack(prefix: str, entries: dict[str, tuple[tuple[int, ...], Bits]], rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    keys = list(entries)
    stamps = [entries[k][0] for k in keys]
    width = max((len(s) for s in stamps), default=0)
    packed = [np.packbits(entries[k][1][1]) for k in keys]
    return {
        f"{prefix}_keys": np.array(keys, dtype=str),
        f"{prefix}_stamps": np.array([list(s) + [-1] * (width - len(s)) for s in stamps], dtype=np.int64).reshape(
            len(keys), width),
        f"{prefix}_rows": np.array([_row_set(rows, entries[k][1][0]) for k in keys], dtype=np.int32),
        f"{prefix}_lengths": np.array([len(entries[k][1][1]) for k in keys], dtype=np.int64),
        f"{prefix}_bits": np.concatenate(packed) if packed else np.empty(0, np.uint8),
    }


def _unpack(data: dict[str, np.ndarray], prefix: str, rows: list[np.ndarray]) -> dict[str, tuple[tuple[int, ...], Bits]]:
    keys, stamps, which = data[f"{prefix}_keys"], data[f"{prefix}_stamps"], data[f"{prefix}_rows"]
    lengths, bits = data[f"{prefix}_lengths"], data[f"{prefix}_bits"]
    ends = np.cumsum((lengths + 7) // 8)
    if len(bits) != (ends[-1] if len(ends) else 0) or not len(keys) == len(stamps) == len(which) == len(lengths):
        raise ValueError(f"{prefix}: arrays of different lengths")
    every = np.unpackbits(bits).view(bool)  # one pass; each entry a view on it
    out = {}
    start = 0
    for key, stamp, w, n, end in zip(keys.tolist(), stamps.tolist(), which.tolist(), lengths.tolist(), ends.tolist(),
                                     strict=True):
        r = rows[w]
        if len(r) != n:
            raise ValueError(f"{prefix} {key}: {n} bits for {len(r)} rows")
        out[key] = (tuple(stamp) if stamp[-1] != -1 else tuple(x for x in stamp if x != -1),
                    (r, every[8 * start:8 * start + n]))
        start = end
    return out
