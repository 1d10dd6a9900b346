"""Stopping at a safe point on Ctrl-C (SIGINT) and on SIGTERM, the same way.

SIGTERM is what a cluster scheduler sends on preemption or at a time limit, and what `kill`
sends by default. Both raise a KeyboardInterrupt (SIGTERM's subclass `Terminated`), so every
`except KeyboardInterrupt` and `finally` on the way out runs: a job keeps its last finished
epoch, an orchestrator stops its jobs and puts their trials back in the queue. Torch-free.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from trainer.jobdir import EXIT_INTERRUPTED, EXIT_TERMINATED


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C; the process then exits 143."""


def exit_code(exc: BaseException) -> int:
    """The exit code of a process stopped by `exc` (143 for SIGTERM, 130 for Ctrl-C)."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], None]]:
    """SIGINT and SIGTERM raise at once (KeyboardInterrupt, Terminated), and are remembered: one
    that Python drops (it lands in a fork handler while a child is being started, "Exception
    ignored in ...") is raised again by the returned check, which loops call at each tick.
    Once one has been raised, later ones are ignored: a stop in progress (jobs being stopped and
    queued again, which Ctrl-C on a terminal and a cluster's SIGTERM-then-SIGINT both repeat) is
    never cut short. An inherited "ignore SIGINT" (a background command of a non-interactive
    shell) is kept; outside the main thread nothing is installed."""
    pending: list[BaseException] = []

    def check() -> None:
        if pending:
            raise pending[0]

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def handler(kind: type[KeyboardInterrupt]) -> Callable[[int, Any], None]:
        def on_signal(signum: int, frame: Any) -> None:
            if pending:  # already stopping: a second signal must not cut the stop short
                return
            exc = kind()
            pending.append(exc)
            raise exc

        return on_signal

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] != signal.SIG_IGN:
        signal.signal(signal.SIGINT, handler(KeyboardInterrupt))
    signal.signal(signal.SIGTERM, handler(Terminated))
    try:
        yield check
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
