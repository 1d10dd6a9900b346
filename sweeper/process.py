"""A job's own process: how the orchestrator starts it (warm or cold) and how it ends.

Warm starts. A fresh job process spends about 4 s importing torch, transformers and datasets
before it even loads its model (docs/benchmarks.md), and its slot does nothing meanwhile. So
while a slot's job runs, the orchestrator starts the slot's next process, `python -m
sweeper.process --spare`: it does those imports in a thread at the lowest CPU priority (nice 19,
that thread only: it takes only what the running jobs leave idle), then waits on its stdin. When
the slot frees, the orchestrator writes the next job's arguments there and the process runs them
exactly as a fresh job process would (`trainer.job.main`): the same arguments, environment (the
slot's, set when it started, plus the job's own), log, and exit code. One process still runs one
job, and only one.

A spare that died or cannot be reached is dropped and the job starts cold (`python -m
sweeper.process ARGS`); a spare nobody needed is killed when the sweep ends (and dies with the
orchestrator, like any job). A spare's early log is named after its orchestrator (host, pid), so
a later run removes the ones a killed orchestrator left (`remove_leftovers`).

Quick exits. Once the job has returned (its result, checkpoints, events and logs written
and closed), a job process waits for its threads and runs its exit handlers (W&B's among them),
as Python's own shutdown does, then leaves with `os._exit`: tearing down the interpreter with
torch and transformers loaded takes another 1.3 s per job (docs/benchmarks.md), for nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

COMMAND = (sys.executable, "-m", "sweeper.process")  # + the job's arguments (cold) or `--spare EARLY_LOG`
# What every job imports before its model loads; the model's own module (BERT, ModernBERT, ...)
# is left to the job.
HEAVY = ("trainer.loop", "trainer.job", "transformers.models.auto.modeling_auto",
         "transformers.models.auto.tokenization_auto")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", os.environ.get("SWEEP_HOST") or socket.gethostname())  # as sweeper.store.HOST
EARLY_LOG = re.compile(r"^(?P<slot>.+)\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[^.]+\.log$")


def die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Spare:
    proc: subprocess.Popen[bytes]
    early_log: Path  # what it printed before it had a job (import warnings): copied into the job's log

    def give(self, args: list[str], env: dict[str, str], log: Path) -> bool:
        """Hand it its job: the job process's ARGS with ENV added, writing to LOG. False if it is gone."""
        order = json.dumps({"args": args, "env": env, "log": str(log)}) + "\n"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(order.encode())
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            self.discard()
            return False
        return True

    def discard(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.early_log.unlink(missing_ok=True)


class WarmPool:
    """At most one spare process per slot."""

    def __init__(self, directory: Path, *, enabled: bool = True) -> None:
        self.directory = directory
        self.enabled = enabled
        self.spares: dict[str, Spare] = {}

    def prime(self, slots: list[Any]) -> None:
        """Start a spare for each of these slots that has none."""
        if not self.enabled:
            return
        for slot in slots:
            if slot.name in self.spares:
                continue
            self.directory.mkdir(parents=True, exist_ok=True)
            # unique: other orchestrators (on this or another machine) may share the sweep's directory;
            # a MIG name may hold slashes (MIG-GPU-<uuid>/1/0), which a file name may not
            slot_name = re.sub(r"[^A-Za-z0-9_:#-]", "_", slot.name)
            fd, name = tempfile.mkstemp(prefix=f"{slot_name}.{_HOST}.{os.getpid()}.", suffix=".log",
                                        dir=self.directory)
            early = Path(name)
            with os.fdopen(fd, "wb") as out:
                proc = subprocess.Popen([*COMMAND, "--spare", str(early)], stdin=subprocess.PIPE,
                                        stdout=out, stderr=subprocess.STDOUT,
                                        env={**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"},
                                        preexec_fn=die_with_parent)  # noqa: PLW1509 - only a prctl call
            self.spares[slot.name] = Spare(proc, early)

    def take(self, slot: Any) -> Spare | None:
        """The slot's spare, if it has a live one (else start the job cold)."""
        spare = self.spares.pop(slot.name, None)
        if spare is not None and spare.proc.poll() is not None:
            spare.discard()
            return None
        return spare

    def release(self, keep: int) -> None:
        """Keep at most this many spares (fewer jobs are left than spares wait)."""
        for name in list(self.spares)[keep:]:
            self.spares.pop(name).discard()

    def close(self) -> None:
        self.release(0)
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def remove_leftovers(directory: Path) -> int:
    """Remove the early logs of spares whose orchestrator on this host is gone (a kill -9 leaves
    them); those of live orchestrators, and of other hosts, are theirs. Returns how many went."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        m = EARLY_LOG.match(name)
        if m is None or m["host"] != _HOST or pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            (directory / name).unlink()
            removed += 1
    with contextlib.suppress(OSError):
        directory.rmdir()
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with this pid is alive (one we may not signal is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_exit(procs: Iterable[subprocess.Popen[Any]], timeout: float) -> None:
    """Sleep up to `timeout` seconds, waking as soon as one of `procs` exits (Linux pidfds), so
    the orchestrator refills a finished job's slot at once instead of at its next poll. Where
    pidfds are missing (another OS, an old kernel) it just sleeps."""
    fds = []
    try:
        for proc in procs:
            try:
                fds.append(os.pidfd_open(proc.pid))
            except (AttributeError, OSError):  # no pidfds; or the child is already reaped (polled)
                continue
        if fds:
            select.select(fds, [], [], timeout)  # a pidfd turns readable when its process exits
        else:
            time.sleep(timeout)
    finally:
        for fd in fds:
            os.close(fd)


# -- the spare process --------------------------------------------------------------------------


def _import_heavy() -> None:
    with contextlib.suppress(OSError):  # this thread only (Linux): the job's own threads keep theirs
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    try:
        for name in HEAVY:
            importlib.import_module(name)
    except Exception:  # the job imports them again, and fails in its own log if it must
        pass


def run_and_exit(args: list[str]) -> NoReturn:
    """The job process (`trainer.job.main(ARGS)`), then a quick exit with its exit code (see the
    module's docstring)."""
    from trainer.job import main as job_main  # torch and transformers: a warm process imported them while it waited

    try:
        code = job_main(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    for thread in threading.enumerate():  # what Python's shutdown does, in its order
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def wait_for_job(early_log: Path) -> NoReturn:
    """A spare: import, wait for the job on stdin, then run it with its output in the job's log."""
    importer = threading.Thread(target=_import_heavy, name="warm-imports", daemon=True)
    importer.start()
    try:
        line = sys.stdin.readline()
    except KeyboardInterrupt:  # Ctrl-C on the terminal reaches the whole process group
        os._exit(130)  # at once: the import thread may be half-way through a module
    if not line.strip():  # the orchestrator closed its end: no job for this one
        os._exit(0)
    order = json.loads(line)
    importer.join()
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    with contextlib.suppress(OSError):
        early = early_log.read_bytes()
        early_log.unlink()
        os.write(1, early)
    os.environ.update(order["env"])
    sys.argv = ["python -m trainer.job", *order["args"]]
    run_and_exit(order["args"])


def main(argv: list[str]) -> NoReturn:
    if argv[:1] == ["--spare"]:
        wait_for_job(Path(argv[1]))
    run_and_exit(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
