"""The one scheduling loop of `sweep grid` and `sweep optuna`: launch jobs into free slots, wait
on their exits, beat their hearts, record what they end with, retry, stop.

Where the jobs come from is plugged in, as Optuna has one `_optimize` loop whatever the sampler:
a *source* hands out claimed jobs and is told how each went. `sweeper.grid_source.GridSource`
claims the pre-expanded jobs of a grid; `sweeper.study.StudySource` asks Optuna for trials,
reports their epochs, prunes and tells. Every behaviour here is one behaviour for both:
- a job runs in its own process (`trainer.job`, warm-started when it can: sweeper/process.py)
  on a slot (a GPU share or a CPU lane); the process dies with the orchestrator (PDEATHSIG);
- its exit code decides (trainer/jobdir.py): a final result is recorded; "busy" (another live
  process runs its directory) is tried again after a back-off; an out-of-memory failure, judged
  from this attempt alone (its result, its part of the appended job.log), is run again with the
  largest divisor of batch_size below its micro-batch (same effective batch, same job:
  `JobConfig.with_micro_batch`); any other failure (a SIGKILL included) is retried `retries`
  times, then recorded with the tail of its log and the sweep goes on without it; a
  configuration error is never retried;
- Ctrl-C and SIGTERM stop every job at a safe point (the same signal is passed on), put them
  back in the queue, and leave with KeyboardInterrupt / `trainer.signals.Terminated`.

The orchestrator never imports torch: it talks to jobs through their config file, their
`events.jsonl`, their `result.json` and their exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.devices import Slot
from sweeper.process import COMMAND, WarmPool, die_with_parent, remove_leftovers, wait_for_exit
from sweeper.source import Progress, Source, Ticket
from trainer.config import ConfigError
from trainer.io import write_json
from trainer.jobdir import (
    EVENTS_FILE,
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_OK,
    FINISHED,
    JOB_FILE,
    JOB_LOG_FILE,
    RESULT_FILE,
    RUNNING,
    EventTail,
    log_tail,
    out_of_memory,
    read_result,
)
from trainer.signals import Terminated, stop_signals

log = logging.getLogger(__name__)

BUSY_BACKOFF_S = (5.0, 60.0)  # first wait, longest wait (doubling in between)
STOP_GRACE_S = 30.0  # a stopped job gets this long to reach its safe point before it is killed
HEARTBEAT_S = float(os.environ.get("SWEEP_HEARTBEAT_S", "10"))


@dataclass
class Running:
    ticket: Ticket
    slot: Slot
    proc: subprocess.Popen[bytes] | None  # None while it waits to try a busy directory again
    attempt: int = 1  # launches of the job by this worker, retries of either kind included
    failures: int = 0  # failures other than out-of-memory so far: what `retries` counts
    started: float = field(default_factory=time.time)
    last_beat: float = 0.0
    retry_at: float = 0.0
    busy_waits: int = 0
    why: str = ""  # why this attempt runs (a retry's cause), for the log header
    events: EventTail | None = None  # its events.jsonl, read as it grows
    epochs: list[dict[str, Any]] = field(default_factory=list)  # its finished epochs so far
    log_offset: int = 0  # where this attempt's part of job.log starts
    result_before: tuple[int, int] | None = None  # result.json's (inode, mtime) at launch: an older attempt's


class Scheduler:
    def __init__(self, source: Source, *, runs_dir: Path, slots: list[Slot], retries: int,
                 cache_dir: Path | None = None, poll_s: float = 0.5, warm: bool = True) -> None:
        self.source = source
        self.dir = runs_dir / source.name
        self.slots = slots
        self.retries = retries
        self.cache_dir = cache_dir
        self.poll_s = poll_s
        # By ticket: two trials of a study may run the same configuration (the same job directory) at
        # once; the second then waits for the first ("busy") and reads its result.
        self.running: dict[tuple[str, str], Running] = {}
        self.warm = WarmPool(self.dir / ".warm", enabled=warm)
        self.launched = 0

    @property
    def progress(self) -> dict[str, Progress]:
        return self.source.progress

    # -- the loop -------------------------------------------------------------------------------

    def run(self, on_tick: Callable[[Scheduler], None] | None = None) -> dict[str, Progress]:
        if n := remove_leftovers(self.dir / ".warm"):
            log.info("removed %d file(s) a killed orchestrator left in %s", n, self.dir / ".warm")
        with stop_signals() as check_stop:
            try:
                while True:
                    check_stop()
                    self._poll()
                    self.source.tick()
                    if not self.running and self.source.exhausted():
                        break
                    self._fill()
                    self._prime()
                    self._heartbeats()
                    if on_tick is not None:
                        on_tick(self)
                    wait_for_exit((r.proc for r in self.running.values() if r.proc is not None), self.poll_s)
                check_stop()
            except BaseException as exc:
                self._stop_all(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
                raise
            finally:
                self.warm.close()
        if on_tick is not None:
            on_tick(self)
        return self.progress

    def _fill(self) -> None:
        busy = {r.slot.name for r in self.running.values()}
        free = [s for s in self.slots if s.name not in busy]
        while free:
            ticket = self.source.take()
            if ticket is None:
                return
            run = Running(ticket, free.pop(0), None)
            self.running[ticket.key] = run
            self._launch(run)

    def _prime(self) -> None:
        """Warm processes for the busy slots, as many as jobs may still start here."""
        wanted = self.source.waiting()
        self.warm.release(keep=wanted)
        self.warm.prime([r.slot for r in self.running.values() if r.proc is not None][:wanted])

    def _launch(self, run: Running) -> None:
        """Start the job in a child that dies with this process: the slot's warm spare when it has
        one (sweeper/process.py), else a fresh process."""
        ticket = run.ticket
        job_dir = self.dir / ticket.job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        write_json(job_dir / JOB_FILE, ticket.config.to_dict())
        args = [str(job_dir / JOB_FILE), "--out", str(job_dir)]
        if self.cache_dir is not None:
            args += ["--cache-dir", str(self.cache_dir)]
        log_path = job_dir / JOB_LOG_FILE
        run.result_before = _identity(job_dir / RESULT_FILE)
        spare = self.warm.take(run.slot)
        cfg = ticket.config
        batch = (f"micro-batch {cfg.micro_batch} x{cfg.accumulation} accumulation" if cfg.micro_batch_size
                 else f"batch {cfg.batch_size}")
        env = {**ticket.env, "SWEEP_ATTEMPT": str(run.attempt), "SWEEP_RETRY_REASON": run.why}
        with open(log_path, "ab") as out:
            run.log_offset = out.tell()
            out.write(f"\n== attempt {run.attempt} on {run.slot.name} at {time.strftime('%F %T')}, {batch}"
                      f"{f' ({run.why})' if run.why else ''}{' (warm start)' if spare else ''}\n".encode())
            out.flush()
            proc = None
            if spare is not None:
                if spare.give(args, env, log_path):
                    proc = spare.proc
                else:
                    out.write(b"(its warm process was gone: starting a fresh one)\n")
                    out.flush()
            if proc is None:
                proc = subprocess.Popen([*COMMAND, *args], stdout=out, stderr=subprocess.STDOUT,
                                        env={**os.environ, **run.slot.env, "PYTHONUNBUFFERED": "1", **env},
                                        preexec_fn=die_with_parent)  # noqa: PLW1509 - only a prctl call
        run.proc, run.started = proc, time.time()
        run.last_beat = run.started  # the claim wrote the first heartbeat
        p = self.progress[ticket.job.id]
        last = run.epochs[-1] if run.epochs else {}  # a retry resumes after them (events are not read again)
        p.state, p.started, p.note = RUNNING, time.time(), run.slot.name
        p.epoch, p.val_acc = last.get("epoch", 0), last.get("val_acc")
        self.launched += 1

    # -- watching -------------------------------------------------------------------------------

    def _poll(self) -> None:
        for key, run in list(self.running.items()):
            job_id = run.ticket.job.id
            if run.proc is None:
                if time.time() >= run.retry_at:
                    self._launch(run)
                continue
            job_dir = self.dir / job_id
            epochs = self._watch(run, job_dir / EVENTS_FILE)
            reason = self.source.report(run.ticket, epochs)
            if reason is not None:
                _stop(run.proc, signal.SIGINT)  # it keeps its last epoch's state
                del self.running[key]
                self.source.stopped(run.ticket, reason)
                continue
            code = run.proc.poll()
            if code is not None:
                self._exited(run, code, job_dir)

    def _watch(self, run: Running, events: Path) -> list[dict[str, Any]]:
        """Update the job's progress from what its event stream gained since the last poll;
        return its finished epochs."""
        if run.events is None:
            run.events = EventTail(events)
        new, restarted = run.events.read()
        if restarted:
            run.epochs = []
        p = self.progress[run.ticket.job.id]
        for event in new:
            kind = event.get("event")
            if kind == "epoch":
                run.epochs.append(event)
                p.epoch, p.val_acc = event.get("epoch", 0), event.get("val_acc")
            elif kind == "step":
                p.epoch = max(p.epoch, event.get("epoch", 0))
            elif kind == "start" and event.get("resumed_from_epoch", 0) < len(run.epochs):
                del run.epochs[event["resumed_from_epoch"]:]  # a kill between the event and the checkpoint
        return list(run.epochs)  # a copy: a source may keep it

    def _exited(self, run: Running, code: int, job_dir: Path) -> None:
        ticket = run.ticket
        result = read_result(job_dir / RESULT_FILE)
        if code == EXIT_OK and result is not None and result.get("status") in FINISHED:
            del self.running[ticket.key]
            self.source.finish(ticket, result)
            return
        if code == EXIT_BUSY:  # another live process runs this directory: try again once it is done
            first, longest = BUSY_BACKOFF_S
            wait = min(longest, first * 2 ** run.busy_waits)
            run.proc, run.retry_at, run.busy_waits = None, time.time() + wait, run.busy_waits + 1
            self.progress[ticket.job.id].note = f"its directory is busy (another process runs it): again in {wait:.0f} s"
            return
        # Judged from this attempt alone: an older attempt's result or log lines say nothing of it.
        if _identity(job_dir / RESULT_FILE) == run.result_before:
            result = None
        lines = log_tail(job_dir / JOB_LOG_FILE, 0, offset=run.log_offset)
        tail = lines[-30:]
        reason = _failure_reason(code, result)
        if code != EXIT_CONFIG and self._retry_smaller(run, result, lines, reason):
            return
        if code != EXIT_CONFIG and run.failures < self.retries:
            run.failures += 1
            log.warning("job %s failed (%s); retry %d of %d", ticket.job.id, reason, run.failures, self.retries)
            self.source.retrying(ticket, run.attempt, reason, tail)
            run.attempt += 1
            run.why = f"retry {run.failures} of {self.retries} after: {reason}"
            self._launch(run)
            return
        del self.running[ticket.key]
        self.source.fail(ticket, reason, tail)

    def _retry_smaller(self, run: Running, result: dict[str, Any] | None, lines: list[str], reason: str) -> bool:
        """Run the job again in smaller micro-batches if this attempt ran out of device memory;
        False when it did not, or no smaller micro-batch is left (then it failed like any job)."""
        ticket = run.ticket
        said = (line for line in lines if not line.startswith("== attempt "))  # our header may quote an old error
        oom = bool(result and result.get("out_of_memory")) or any(out_of_memory(line) for line in said)
        size = ticket.config.smaller_micro_batch() if oom else None
        if size is None:
            return False
        try:
            smaller = ticket.config.with_micro_batch(size)
        except ConfigError as exc:  # cannot happen for a divisor; never let it stop the sweep
            log.error("job %s: no smaller micro-batch (%s)", ticket.job.id, exc)
            return False
        log.warning("job %s ran out of memory at micro-batch %d: again with micro-batch %d (x%d accumulation, the "
                    "same effective batch %d)", ticket.job.id, ticket.config.micro_batch, smaller.micro_batch,
                    smaller.accumulation, smaller.effective_batch)
        self.source.retrying(ticket, run.attempt, reason, lines[-30:])
        run.why = f"out of memory at micro-batch {ticket.config.micro_batch}"
        ticket.config = smaller
        run.attempt += 1
        self._launch(run)
        return True

    def _heartbeats(self) -> None:
        now = time.time()
        for run in self.running.values():
            if now - run.last_beat >= HEARTBEAT_S:
                self.source.heartbeat(run.ticket)
                run.last_beat = now

    def _stop_all(self, signum: int) -> None:
        """Stop every job with the signal this process got (each keeps its last finished epoch)
        and put it back in the queue; the next run resumes it."""
        for run in self.running.values():
            if run.proc is not None and run.proc.poll() is None:
                run.proc.send_signal(signum)
        deadline = time.time() + STOP_GRACE_S
        for run in self.running.values():
            if run.proc is not None:
                _wait_or_kill(run.proc, max(0.1, deadline - time.time()))
            self.source.interrupt(run.ticket)
        self.running.clear()


def _identity(path: Path) -> tuple[int, int] | None:
    """A file's (inode, mtime): results are written by rename, so a new result has a new inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _failure_reason(code: int, result: dict[str, Any] | None) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (the kernel's out-of-memory killer, a lost node, or kill -9)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{why}"
    return f"exit code {code}" + (f": {result.get('error')}" if result and result.get("error") else "")


def _stop(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        proc.send_signal(signum)
    _wait_or_kill(proc, STOP_GRACE_S)


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
