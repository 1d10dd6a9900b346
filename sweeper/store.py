"""A sweep's jobs and their states, kept in an Optuna storage (one study per sweep).

Each job (grid point x seed) is a trial, enqueued once with its job id, configuration and
swept values as user attributes. Who runs a job is decided per job id, not per trial:
- the job's *canonical* trial is its lowest-numbered trial that did not fail; every worker
  computes the same one, so a point that two workers enqueued at once still runs once;
- a worker claims a job by moving its canonical trial from WAITING to RUNNING, which Optuna's
  storages do atomically (the second claimant gets False and moves on); the claim also records
  the swept values as the trial's parameters (so `trials_dataframe()` and optuna-dashboard show
  them), its owner (host, pid) and a heartbeat;
- liveness is one rule for grids and studies (`owner_gone`): a RUNNING trial whose owner is a
  dead pid on this host, or whose heartbeat is older than STALE_S, belongs to nobody.
Results (the metrics of `result.json`) are stored with the trial, so a report needs only the
storage.

The journal file (the default storage) is repaired when it is opened for writing: a crash in the
middle of a write leaves a torn last line, which Optuna would glue the next record onto, breaking
every later read. Reading needs no write access (`sweep status`, `report` on a read-only copy).

A network storage (postgresql://…, or grpc://host:port: Optuna's gRPC proxy, `sweep storage
serve`, in front of one database for many workers) is wrapped in `ReconnectingStorage`: a call
that fails because the database or the proxy went away (a restart, a dropped connection, "too
many clients") waits with back-off and is made again, for up to SWEEP_STORAGE_RETRY_S, with one
line of log when the outage starts and one when it ends. So every worker rides out a database
restart in its own claim, heartbeat and finish calls.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import optuna.storages.journal
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeper.process import pid_alive
from sweeper.spec import Job
from trainer.jobdir import FINISHED, RESULT_KEYS  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

# A busy worker writes a heartbeat every HEARTBEAT_S; a trial silent for STALE_S is taken over
# (environment overrides, for tests and for clusters with slow shared storage).
HEARTBEAT_S = float(os.environ.get("SWEEP_HEARTBEAT_S", "10"))
STALE_S = float(os.environ.get("SWEEP_STALE_S", "120"))
# How long a call to a network storage is retried while the database or proxy is unreachable, and
# the longest wait between tries (the first is STORAGE_BACKOFF_S[0], doubling, with jitter).
STORAGE_RETRY_S = float(os.environ.get("SWEEP_STORAGE_RETRY_S", "600"))
STORAGE_BACKOFF_S = (0.5, 10.0)
GRPC_SCHEME = "grpc://"
# Who a worker is: its host (SWEEP_HOST overrides: containers that share a host name) and pid.
HOST = os.environ.get("SWEEP_HOST") or socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


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
                                _safe_url(url), _first_line(exc), STORAGE_RETRY_S)
                time.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(STORAGE_BACKOFF_S[1], wait * 2)
    path = _journal_path(url)
    if not readonly:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            repair_journal(path)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend)


def rdb_storage(url: str, *, cached: bool = True) -> optuna.storages.BaseStorage:
    """A database as Optuna opens a URL itself (its RDB storage behind its in-process trial cache),
    with connections checked before use: after a database restart the pool's dead connections are
    replaced instead of failing the next call.

    `cached=False` for the gRPC proxy: Optuna's cache answers a write to a trial it has not read
    with KeyError, and a restarted proxy has read none (its clients' next claims failed so)."""
    rdb = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    return optuna.storages._CachedStorage(rdb) if cached else rdb


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


def transient(exc: BaseException) -> bool:
    """Whether a storage call failed because the database or the proxy could not be reached (worth
    trying again) rather than because of what was asked. Looks through the causes: Optuna wraps
    SQLAlchemy's errors in StorageInternalError."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, StorageUnavailable):
            return True
        kind = type(seen).__name__
        module = type(seen).__module__
        if module.startswith(("sqlalchemy", "psycopg")) and kind in ("OperationalError", "InterfaceError"):
            return True
        if getattr(seen, "connection_invalidated", False):
            return True
        code = getattr(seen, "code", None)
        if module.startswith("grpc") and callable(code):
            name = getattr(code(), "name", "")
            if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL"):
                return True
            details = getattr(seen, "details", None)
            details = details() if callable(details) else ""
            # The proxy's own call to the database failed: it answers UNKNOWN with the error's text.
            return name == "UNKNOWN" and "storage unreachable" in (details or "")
        seen = seen.__cause__ or seen.__context__
    return False


class StorageUnavailable(ConnectionError):
    """A network storage stayed unreachable past its retry budget. Its text starts "storage
    unreachable", which is how a worker knows the proxy's database is down (the proxy answers
    UNKNOWN with the text of its error)."""


if TYPE_CHECKING:  # its methods are made below, from BaseStorage's: mypy cannot see them
    _Storage = Any
else:
    _Storage = optuna.storages.BaseStorage


class ReconnectingStorage(_Storage):
    """An Optuna storage whose every call rides out an unreachable database or proxy: it waits with
    back-off (STORAGE_BACKOFF_S, jittered so a thousand workers do not come back at once) and tries
    again, for up to STORAGE_RETRY_S, then raises the last error. One warning when an outage starts
    and one line when the storage answers again, per storage object (per worker).

    A call made again after an answer was lost may find its own first attempt done: a claim then
    loses (the trial is RUNNING with no owner, and is taken over after STALE_S), a finish finds the
    trial finished (SweepStore.finish checks whose result it holds)."""

    def __init__(self, backend: optuna.storages.BaseStorage, url: str, *, retry_s: float | None = None) -> None:
        self.backend = backend
        self.url = url
        self.retry_s = STORAGE_RETRY_S if retry_s is None else retry_s
        self.outages = 0
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method: Callable[..., Any] = getattr(self.backend, name)
        wait = STORAGE_BACKOFF_S[0]
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.time()
                with self._lock:
                    if self._down_since is None:
                        self._down_since, self.outages = now, self.outages + 1
                        log.warning("storage %s unreachable (%s); trying again with back-off for up to %.0f s",
                                    _safe_url(self.url), _first_line(exc), self.retry_s)
                    down_since = self._down_since
                if now - down_since > self.retry_s:
                    raise StorageUnavailable(f"storage unreachable for {now - down_since:.0f} s: "
                                             f"{_safe_url(self.url)} ({_first_line(exc)})") from exc
                time.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(STORAGE_BACKOFF_S[1], wait * 2)
                continue
            if self._down_since is not None:
                with self._lock:
                    if self._down_since is not None:
                        log.info("storage %s reachable again after %.1f s; going on", _safe_url(self.url),
                                 time.time() - self._down_since)
                        self._down_since = None
            return result

    def __getattr__(self, name: str) -> Any:  # anything not part of BaseStorage (e.g. the proxy's close)
        return getattr(self.backend, name)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _retried(name: str) -> Callable[..., Any]:
    def method(self: ReconnectingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name, _value in vars(optuna.storages.BaseStorage).items():
    if callable(_value) and not _name.startswith("__"):
        setattr(ReconnectingStorage, _name, _retried(_name))
ReconnectingStorage.__abstractmethods__ = frozenset()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _safe_url(url: str) -> str:
    """A storage URL without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':')[0]}@{host}"
    return url


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


@dataclass
class JobState:
    """What the storage says of one job."""

    status: str  # waiting, running, completed, collapsed, diverged, failed
    trial: FrozenTrial | None
    result: dict[str, Any] | None = None
    owner: str = ""
    note: str = ""  # e.g. "interrupted, queued", "worker gone"


# What `fail` writes; found on a COMPLETE or PRUNED trial only when it lost a race to a finish.
FAILED_STATUSES = ("failed", "lost", "interrupted")


def owner_gone(trial: FrozenTrial, *, me: int | None = None) -> bool:
    """The one liveness rule: a RUNNING trial's owner is gone when it is a dead pid on this host,
    or when its heartbeat (or, before the first one, its start) is older than STALE_S."""
    attrs = trial.user_attrs
    pid = attrs.get("pid")
    if attrs.get("host") == HOST and isinstance(pid, int) and pid != me:
        return not pid_alive(pid)
    beat = attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else 0)
    return time.time() - float(beat) > STALE_S


class SweepStore:
    """One sweep's study. `create=False` opens an existing one without writing (read-only use)."""

    def __init__(self, storage: optuna.storages.BaseStorage, sweep: str, *, lock_dir: Path | None = None,
                 create: bool = True, sampler: Any = None, pruner: Any = None, direction: Any = "maximize") -> None:
        self.storage = storage
        self.sweep = sweep
        if create:
            self.study = optuna.create_study(study_name=sweep, storage=storage, direction=direction,
                                             sampler=sampler, pruner=pruner, load_if_exists=True)
        else:
            self.study = optuna.load_study(study_name=sweep, storage=storage, sampler=sampler, pruner=pruner)
        self.study_id = storage.get_study_id_from_name(sweep)
        self.host = HOST
        self.pid = os.getpid()
        self.lock_dir = lock_dir
        self._ids: dict[int, int] = {}

    def trial_id(self, trial: FrozenTrial | optuna.Trial) -> int:
        """The storage's id of a trial, through the storage's public API (cached: ids never change)."""
        if trial.number not in self._ids:
            self._ids[trial.number] = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        return self._ids[trial.number]

    @contextmanager
    def _local_lock(self) -> Iterator[None]:
        """Serialises enqueueing among processes of this machine (others are covered by the
        canonical-trial rule)."""
        if self.lock_dir is None:
            yield
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f".{self.sweep}.enqueue.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # -- reading ------------------------------------------------------------------------------

    def trials_by_job(self) -> dict[str, list[FrozenTrial]]:
        by_job: dict[str, list[FrozenTrial]] = {}
        for trial in self.study.get_trials(deepcopy=False):
            job_id = trial.user_attrs.get("job_id")
            if job_id:
                by_job.setdefault(job_id, []).append(trial)
        for trials in by_job.values():
            trials.sort(key=lambda t: t.number)
        return by_job

    @staticmethod
    def canonical(trials: list[FrozenTrial]) -> FrozenTrial | None:
        live = [t for t in trials if t.state != TrialState.FAIL]
        return live[0] if live else None

    def state(self, trials: list[FrozenTrial]) -> JobState:
        trial = self.canonical(trials)
        last = trials[-1] if trials else None
        if trial is None:
            if last is not None and last.user_attrs.get("status") == "interrupted":
                return JobState("waiting", last, note="interrupted; runs again (resumes) with the next sweep command")
            return JobState("failed" if last else "waiting", last, None)
        if trial.state == TrialState.WAITING:
            earlier = [t for t in trials if t.number < trial.number]
            if earlier and earlier[-1].user_attrs.get("status") == "interrupted":
                return JobState("waiting", trial, note="interrupted, queued (resumes from its last epoch)")
            return JobState("waiting", trial)
        if trial.state == TrialState.RUNNING:
            owner = f"{trial.user_attrs.get('host', '?')}:{trial.user_attrs.get('pid', '?')}"
            if owner_gone(trial):
                return JobState("waiting", trial, owner=owner,
                                note=f"its worker {owner} is gone; the next sweep command resumes it")
            return JobState("running", trial, None, owner)
        result = trial.user_attrs.get("result")
        status = trial.user_attrs.get("status", "completed")
        if status in FAILED_STATUSES:
            # A worker that took the trial over wrote "lost" just before its owner finished it (the
            # owner's state change won, Optuna takes no attribute after it): the result says.
            status = (result or {}).get("status") or ("completed" if trial.state == TrialState.COMPLETE else "diverged")
        return JobState(status, trial, result)

    # -- writing ------------------------------------------------------------------------------

    def sync(self, jobs: list[Job]) -> int:
        """Enqueue every job that has no live trial yet; returns how many were enqueued."""
        with self._local_lock():
            by_job = self.trials_by_job()
            added = 0
            for job in jobs:
                if self.canonical(by_job.get(job.id, [])) is None:
                    self.enqueue(job, attempt=len(by_job.get(job.id, [])) + 1)
                    added += 1
            return added

    def enqueue(self, job: Job, *, attempt: int = 1) -> None:
        self.study.enqueue_trial(
            {},
            user_attrs={"job_id": job.id, "point": job.point, "config": job.config.to_dict(), "attempt": attempt},
        )

    def claim(self, trial: FrozenTrial, distributions: dict[str, CategoricalDistribution] | None = None) -> bool:
        """WAITING -> RUNNING, atomically; False when another worker got there first. The winner
        records its owner, a first heartbeat and the trial's swept values as parameters."""
        trial_id = self.trial_id(trial)
        try:
            won = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        if not won:
            return False
        try:
            self.mark_owner(trial_id)
            self._record_params(trial, trial_id, distributions or {})
        except optuna.exceptions.UpdateFinishedTrialError:
            # The storage was unreachable between the claim and its owner's name for longer than
            # STALE_S, and another worker took the owner-less trial over: it is theirs now.
            log.warning("trial %d: claimed, then taken over while the storage was unreachable; leaving it", trial_id)
            return False
        return True

    def _record_params(self, trial: FrozenTrial, trial_id: int, distributions: dict[str, CategoricalDistribution]) -> None:
        for key, value in (trial.user_attrs.get("point") or {}).items():
            dist = distributions.get(key)
            choice = param_choice(value)
            if dist is None or choice not in dist.choices:
                continue
            try:
                self.storage.set_trial_param(trial_id, key, dist.to_internal_repr(choice), dist)
            except ValueError:  # the grid file's values changed since earlier trials: Optuna wants one space
                log.debug("trial %d: %s not recorded as a parameter (its values differ from earlier trials')",
                          trial.number, key)

    def mark_owner(self, trial_id: int) -> None:
        for key, value in (("host", self.host), ("pid", self.pid), ("heartbeat", time.time())):
            self.storage.set_trial_user_attr(trial_id, key, value)

    def heartbeat(self, trial_id: int) -> bool:
        """False when the trial has finished meanwhile: another worker took it over (this one was
        silent for longer than STALE_S) and failed it as lost."""
        try:
            self.storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was taken over by another worker (no heartbeat from here for %.0f s)", trial_id, STALE_S)
            return False
        return True

    def set_attr(self, trial_id: int, key: str, value: Any) -> None:
        try:
            self.storage.set_trial_user_attr(trial_id, key, value)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %d was taken over by another worker; %s not recorded", trial_id, key)

    def finish(self, trial_id: int, result: dict[str, Any]) -> bool:
        """Store the job's result with its trial: COMPLETE (value val_acc), or PRUNED when it
        diverged (no value). True when this call recorded it (or a first try of it whose answer was
        lost did); False when the trial was taken over meanwhile (the job's result stays in its job
        directory and the other worker's trial records it): never an error (optuna#5582)."""
        stored = {k: result.get(k) for k in RESULT_KEYS}
        try:
            self.storage.set_trial_user_attr(trial_id, "result", stored)
            self.storage.set_trial_user_attr(trial_id, "status", result["status"])
            if result["status"] == "diverged" or result.get("val_acc") is None:
                self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
            else:
                self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [float(result["val_acc"])])
        except optuna.exceptions.UpdateFinishedTrialError:
            trial = self.storage.get_trial(trial_id)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.user_attrs.get("result") == stored:
                return True  # our own first try, whose answer a dropped connection lost
            log.warning("trial %d was taken over by another worker (no heartbeat from here for %.0f s); its result "
                        "is not recorded twice", trial_id, STALE_S)
            return False
        return True

    def fail(self, trial_id: int, reason: str, log_tail: list[str] | None = None, *, status: str = "failed") -> bool:
        """FAIL the trial (False when it had finished already: another worker got there first)."""
        try:  # two workers that both found its owner gone: the second finds it failed already
            self.storage.set_trial_user_attr(trial_id, "status", status)
            self.storage.set_trial_user_attr(trial_id, "reason", reason)
            if log_tail is not None:
                self.storage.set_trial_user_attr(trial_id, "log_tail", log_tail)
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True


def param_choice(value: Any) -> Any:
    """A swept value as an Optuna categorical choice (lists and mappings as JSON text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)


def sweep_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(optuna.study.get_all_study_names(storage))

