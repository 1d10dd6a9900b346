"""A network storage (postgresql://…, or grpc://host:port: Optuna's gRPC proxy, `sweep storage
serve`, in front of one database for many workers) that rides out the database or the proxy
going away: `ReconnectingStorage` makes a call that failed because either was unreachable (a
restart, a dropped connection, "too many clients") again, with back-off, for up to
SWEEP_STORAGE_RETRY_S, with one line of log when the outage starts and one when it ends. So
every worker rides out a database restart in its own claim, heartbeat and finish calls."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

log = logging.getLogger("sweeper.store")

# How long a call to a network storage is retried while the database or proxy is unreachable, and
# the longest wait between tries (the first is STORAGE_BACKOFF_S[0], doubling, with jitter).
STORAGE_RETRY_S = float(os.environ.get("SWEEP_STORAGE_RETRY_S", "600"))
STORAGE_BACKOFF_S = (0.5, 10.0)


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
        return self.run(lambda: method(*args, **kwargs))

    def run(self, fn: Callable[[], Any]) -> Any:
        """`fn()` (a call to `self.backend`), made again while the storage is unreachable."""
        wait = STORAGE_BACKOFF_S[0]
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.time()
                with self._lock:
                    if self._down_since is None:
                        self._down_since, self.outages = now, self.outages + 1
                        log.warning("storage %s unreachable (%s); trying again with back-off for up to %.0f s",
                                    safe_url(self.url), first_line(exc), self.retry_s)
                    down_since = self._down_since
                if now - down_since > self.retry_s:
                    raise StorageUnavailable(f"storage unreachable for {now - down_since:.0f} s: "
                                             f"{safe_url(self.url)} ({first_line(exc)})") from exc
                time.sleep(wait * random.uniform(0.5, 1.0))
                wait = min(STORAGE_BACKOFF_S[1], wait * 2)
                continue
            if self._down_since is not None:
                with self._lock:
                    if self._down_since is not None:
                        log.info("storage %s reachable again after %.1f s; going on", safe_url(self.url),
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def safe_url(url: str) -> str:
    """A storage URL without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':')[0]}@{host}"
    return url
