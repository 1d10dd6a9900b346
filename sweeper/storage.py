"""Which Optuna storage a `--storage` URL names, opened: a journal file (the default), a
database (postgresql://…, sqlite:///…) or Optuna's gRPC proxy (grpc://host:port), the last two
through `ReconnectingStorage`.

The journal file is repaired when it is opened for writing: a crash in the middle of a write
leaves a torn last line, which Optuna would glue the next record onto, breaking every later
read. Reading needs no write access (`sweep status`, `report` on a read-only copy)."""

from __future__ import annotations

import json
import logging
import os
import random
import time
import warnings
from pathlib import Path

import optuna
import optuna.storages.journal

from sweeper.reconnect import STORAGE_BACKOFF_S, STORAGE_RETRY_S, ReconnectingStorage, first_line, safe_url, transient

log = logging.getLogger("sweeper.store")

GRPC_SCHEME = "grpc://"


def default_storage(runs_dir: Path) -> str:
    return str(runs_dir / "sweeps.journal")


def _journal_path(url: str) -> Path:
    return Path(url.removeprefix("journal:"))


def missing_storage(url: str) -> str | None:
    """Why `url` holds no sweeps yet (a journal file that does not exist), or None."""
    if "://" not in url and not _journal_path(url).exists():
        return f"no sweep storage at {url}; run `sweep grid` first or pass --storage"
    return None


def grpc_address(url: str) -> tuple[str, int]:
    """grpc://HOST:PORT as (host, port); ValueError saying what is allowed."""
    rest = url.removeprefix(GRPC_SCHEME)
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")  # grpc://[::1]:13000
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise ValueError(f"--storage: {url!r} is not a gRPC proxy address; expected grpc://HOST:PORT "
                         "(the host and port `sweep storage serve` listens on, a port 1-65535)")
    return host, int(port)


def open_storage(url: str, *, readonly: bool = False, connect_timeout_s: float = 20.0) -> optuna.storages.BaseStorage:
    """A storage URL (postgresql://…, sqlite:///…, grpc://host:port) or a journal file path (the
    default). A network storage comes wrapped in `ReconnectingStorage`.

    `readonly`: for commands that only read (status, report, a job lookup): nothing is created,
    locked or repaired, so a read-only runs directory works. A proxy that does not answer within
    `connect_timeout_s` is an error (ConnectionError) rather than a wait."""
    if url.startswith(GRPC_SCHEME):
        return ReconnectingStorage(_grpc_proxy(url, connect_timeout_s), url)
    if "://" in url:
        attempt, wait, started = 0, STORAGE_BACKOFF_S[0], time.time()
        while True:
            try:
                return ReconnectingStorage(rdb_storage(url), url)
            except Exception as exc:
                if "already exists" in str(exc) and attempt < 4:  # two workers creating the schema at once
                    attempt += 1
                    time.sleep(0.5 + attempt)
                    continue
                # A worker waits for a database that is restarting or full (too many clients); a
                # command that only reads (status, report) says at once that it cannot reach it.
                if readonly or not transient(exc) or time.time() - started > STORAGE_RETRY_S:
                    raise
                if wait == STORAGE_BACKOFF_S[0]:
                    log.warning("storage %s unreachable (%s); trying again with back-off for up to %.0f s",
                                safe_url(url), first_line(exc), STORAGE_RETRY_S)
                time.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(STORAGE_BACKOFF_S[1], wait * 2)
    path = _journal_path(url)
    if not readonly:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            repair_journal(path)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


def rdb_storage(url: str) -> optuna.storages.BaseStorage:
    """A database as Optuna opens a URL itself: its RDB storage (`database`) behind its in-process
    trial cache."""
    return TrialCache(database(url))


class TrialCache(optuna.storages._CachedStorage):
    """Optuna's in-process trial cache, which answers KeyError for a parameter of a trial it has not
    read (a worker reads past it, sweeper/trial_reads.py; a restarted proxy has read none): the
    database is asked directly then."""

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: optuna.distributions.BaseDistribution) -> None:
        with self._lock:
            known = trial_id in self._trial_id_to_study_id_and_number
        if known:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        else:
            self._backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)


def database(url: str, *, connections: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage, with connections checked before use: after a database restart the
    pool's dead connections are replaced instead of failing the next call. `connections`: the
    pool's size (SQLAlchemy's default, 5 + 10 overflow, otherwise), for the gRPC proxy, which
    serves that many calls at once (and puts a cache of its own on it: sweeper/proxy_service.py)."""
    engine: dict[str, object] = {"pool_pre_ping": True}
    if connections is not None and not url.startswith("sqlite"):
        engine.update(pool_size=connections, max_overflow=0)
    return Database(url, engine_kwargs=engine)


class Database(optuna.storages.RDBStorage):
    """Optuna's RDB storage, refusing a write to a finished trial without reading the trial first:
    Optuna loads it whole for its error message's trial number, which was a third of the proxy's
    time when a thousand workers' lost claims landed on trials just finished (issue 28)."""

    def check_trial_is_updatable(self, trial_id: int, trial_state: optuna.trial.TrialState) -> None:
        if trial_state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial (id {trial_id}) has already finished and can not be updated.")


def _grpc_proxy(url: str, timeout_s: float) -> optuna.storages.BaseStorage:
    host, port = grpc_address(url)
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise ImportError(f"--storage {url}: the gRPC proxy needs grpcio: pip install -e '.[cluster]'") from None
    with warnings.catch_warnings():  # "experimental": for Optuna's users, not sweep's
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout_s)
    except (TimeoutError, ConnectionError):  # Optuna says ConnectionError("GRPC connection timeout")
        raise ConnectionError(f"--storage: no gRPC storage proxy answers at {host}:{port} within {timeout_s:.0f} s; "
                              "start one with `sweep storage serve --storage postgresql://… --port "
                              f"{port}`") from None
    return proxy


def repair_journal(path: Path) -> str | None:
    """Cut a journal file back to its last whole record, keeping the damaged bytes beside it
    (`NAME.damaged-<time>`), under the journal's own lock (a writer mid-append holds it).

    Damage is what a crash during a write leaves: a last line without its newline, or (written
    by an earlier version that did not repair) such a line with the next record glued onto it;
    a glued record is recovered. Returns what was done, or None when the file was whole."""
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept, damaged = _whole_records(data)
        if not damaged:
            return None
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        aside.write_bytes(b"".join(damaged))
        tmp = path.with_name(f".{path.name}.repair-{os.getpid()}")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
    finally:
        lock.release()
    message = (f"{path}: the journal had {sum(len(d) for d in damaged)} damaged byte(s) (a write cut short); "
               f"cut back to its last whole record, the damaged bytes kept in {aside.name}")
    log.warning("%s", message)
    return message


def _whole_records(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The journal's lines split into whole records (each ending in a newline) and damage."""
    kept: list[bytes] = []
    damaged: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.endswith(b"\n") and _record(line):
            kept.append(line)
            continue
        # A torn record with the next one glued on: the last '{' that starts a whole record.
        body = line.rstrip(b"\n")
        for start in (i for i in range(len(body) - 1, 0, -1) if body[i:i + 1] == b"{"):
            if line.endswith(b"\n") and _record(body[start:]):
                damaged.append(body[:start])
                kept.append(body[start:] + b"\n")
                break
        else:
            damaged.append(line)
    return kept, damaged


def _record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def sweep_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(optuna.study.get_all_study_names(storage))
