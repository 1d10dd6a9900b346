"""What `sweep storage serve` runs: Optuna's gRPC storage proxy in front of one database, so that many
workers (`--storage grpc://HOST:PORT`) share the proxy's few database connections instead of
opening a pool each (PostgreSQL allows 100 connections by default).

The proxy runs in the foreground until SIGTERM or Ctrl-C, which stop it cleanly (calls in flight
are given STOP_GRACE_S to finish); it logs each client the first time it calls. A worker whose
proxy goes away (or whose database does, behind it) waits and reconnects (sweeper/reconnect.py's
ReconnectingStorage): the proxy keeps no state of its own, so a restarted one goes on where the
last one stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sweeper.reconnect import ReconnectingStorage, safe_url
from sweeper.storage import database

log = logging.getLogger("sweeper.storage")

STOP_GRACE_S = 5.0
DATABASE_RETRY_S = 10.0

class StorageError(ValueError):
    """Bad --storage, --host or --port: said before anything starts."""


def check_database_url(url: str) -> str:
    """The URL of a database the proxy can front (Optuna's RDB storage); StorageError otherwise."""
    if url.startswith("grpc://"):
        raise StorageError(f"--storage: {url!r} is a proxy already; give the database it should front: "
                           "postgresql://USER@HOST:PORT/DB (or mysql://…, sqlite:///FILE)")
    if "://" not in url:
        raise StorageError(f"--storage: {url!r} is a journal file; Optuna's gRPC proxy fronts a database only "
                           "(optuna#6084): postgresql://USER@HOST:PORT/DB (or mysql://…, sqlite:///FILE)")
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("postgresql", "postgres", "mysql", "sqlite"):
        raise StorageError(f"--storage: {url!r}: unknown database scheme {scheme!r}; expected postgresql://…, "
                           "mysql://… or sqlite:///FILE")
    return url


class ConnectionLog:
    """A gRPC server interceptor that logs each client (its address) the first time it calls."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def interceptor(self) -> Any:
        import grpc

        outer = self

        class Interceptor(grpc.ServerInterceptor):
            def intercept_service(self, continuation: Any, details: Any) -> Any:
                handler = continuation(details)
                if handler is None or handler.unary_unary is None:
                    return handler
                inner = handler.unary_unary

                def logged(request: Any, context: Any) -> Any:
                    outer.saw(context.peer())
                    return inner(request, context)

                return handler._replace(unary_unary=logged)

        return Interceptor()

    def saw(self, peer: str) -> None:
        if peer in self.seen:
            return
        with self._lock:
            if peer in self.seen:
                return
            self.seen.add(peer)
            count = len(self.seen)
        log.info("client %s connected (%d so far)", peer, count)


def announce(address_file: Path, host: str, port: int) -> str:
    """Write where the proxy listens (host, port, pid) to `address_file`, atomically: a reader
    sees the whole file or none. A wildcard host is written as this machine's name, the address
    other machines reach it by. Returns HOST:PORT."""
    reach = socket.gethostname() if host in ("0.0.0.0", "::", "[::]", "") else host
    tmp = address_file.with_name(f".{address_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"host": reach, "port": port, "pid": os.getpid(), "started": time.time()}) + "\n")
    os.replace(tmp, address_file)
    return f"{reach}:{port}"


def unannounce(address_file: Path) -> None:
    """Remove the address file if it is still this process's (a newer proxy may have written it)."""
    try:
        if json.loads(address_file.read_text()).get("pid") == os.getpid():
            address_file.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def serve(url: str, *, host: str, port: int, threads: int, ready: threading.Event | None = None,
          stop: threading.Event | None = None, address_file: Path | None = None) -> int:
    """Run the proxy until `stop` is set (by SIGTERM or SIGINT when this is the main thread);
    returns how many clients called. Port 0: a free port, chosen when it listens. With
    `address_file`, where it listens is written there once it does, and removed when it stops."""
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    from sweeper.proxy_service import ProxyCache, ProxyService

    stop = stop or threading.Event()
    # A short database outage (a restart) is ridden out here; a longer one is answered "storage
    # unreachable", and each worker waits and tries again (sweeper/reconnect.py).
    storage = ReconnectingStorage(ProxyCache(database(url, connections=threads + 1)), url, retry_s=DATABASE_RETRY_S)
    clients = ConnectionLog()
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="proxy"),
                         interceptors=[clients.interceptor()])
    api_pb2_grpc.add_StorageServiceServicer_to_server(ProxyService(storage), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        bound, why = 0, f" ({exc})"
    else:
        why = ""
    if not bound:
        raise StorageError(f"--port: cannot listen on {host}:{port}{why or ' (in use?)'}")
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    server.start()
    log.info("storage proxy for %s listening on %s:%d (%d threads); stop it with SIGTERM or Ctrl-C",
             safe_url(url), host, bound, threads)
    if address_file is not None:
        log.info("address %s written to %s", announce(address_file, host, bound), address_file)
    if ready is not None:
        ready.set()
    stop.wait()
    log.info("stopping: %d client(s) called; calls in flight get %.0f s", len(clients.seen), STOP_GRACE_S)
    if address_file is not None:
        unannounce(address_file)
    server.stop(STOP_GRACE_S).wait()
    log.info("stopped")
    return len(clients.seen)


def start(url: str, *, host: str, port: int, threads: int, address_file: Path | None = None) -> int:
    """`sweep storage serve`: every problem of the options at once, grpcio there, the database
    reachable (and its tables created) before listening; then `serve`. Raises StorageError."""
    problems = []
    try:
        check_database_url(url)
    except StorageError as exc:
        problems.append(str(exc))
    if not 0 <= port < 65536:
        problems.append(f"--port: {port} is out of range; expected 1-65535 (or 0: a free port)")
    if address_file is not None and not address_file.parent.is_dir():
        problems.append(f"--address-file: {address_file.parent} is not a directory")
    if threads < 1:
        problems.append(f"--threads: {threads} is out of range; expected >= 1")
    if problems:
        raise StorageError("\n".join(problems))
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise StorageError("sweep storage serve needs grpcio: pip install -e '.[cluster]'") from None
    try:
        database(url)
    except Exception as exc:  # any driver's error: say it and stop before serving
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StorageError(f"--storage: {safe_url(url)} cannot be reached ({type(exc).__name__}: {first})") from None
    return serve(url, host=host, port=port, threads=threads, address_file=address_file)
