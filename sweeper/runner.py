"""Run a grid's jobs: each in its own `sweep run` subprocess, on a slot (a GPU share or a
CPU lane), sharing the work with any other orchestrator on the same storage and runs directory.

The orchestrator never imports torch: it talks to jobs through their config file, their
`events.jsonl`, their `result.json` and their exit code. Children die with it (PDEATHSIG), and
each job directory is locked by the job process itself, so a job never runs twice at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from sweeper.process import COMMAND, WarmPool, die_with_parent, wait_for_exit
from sweeper.spec import Grid, Job
from sweeper.store import FINISHED, HEARTBEAT_S, SweepStore

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_BUSY = 75
OOM_PATTERN = re.compile(r"OutOfMemoryError|CUDA out of memory|out of memory", re.IGNORECASE)
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class Slot:
    name: str  # "cpu:0", "gpu:1#0"
    env: dict[str, str]


def make_slots(*, gpus: list[int] | None, jobs_per_gpu: int, parallel: int) -> list[Slot]:
    """GPU shares when there are GPUs (each job sees one through CUDA_VISIBLE_DEVICES), else CPU lanes.

    The machine's cores are divided among the slots: jobs that each start one thread per core
    oversubscribe the CPU and run many times slower (two tiny jobs on 2 cores: 50x).
    """
    n = len(gpus) * jobs_per_gpu if gpus else parallel
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    limits = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if gpus:
        return [Slot(f"gpu:{g}#{i}", {"CUDA_VISIBLE_DEVICES": str(g), **limits})
                for g in gpus for i in range(jobs_per_gpu)]
    return [Slot(f"cpu:{i}", {"CUDA_VISIBLE_DEVICES": "", **limits}) for i in range(parallel)]


def visible_gpus() -> list[int]:
    """GPUs this machine shows (CUDA_VISIBLE_DEVICES, else nvidia-smi), without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip().isdigit()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return list(range(len([line for line in out.splitlines() if line.startswith("GPU ")])))


def launch_job(job_dir: Path, config: dict[str, Any], slot: Slot, *, attempt: int, cache_dir: Path | None,
               env: dict[str, str], warm: WarmPool | None = None) -> subprocess.Popen[bytes]:
    """Start `sweep run` on a job directory in a child that dies with this process: the slot's
    warm spare when it has one (sweeper/process.py), else a fresh process."""
    from trainer.io import write_json

    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / "job.json", config)
    args = ["run", str(job_dir / "job.json"), "--out", str(job_dir), "--no-progress"]
    if cache_dir is not None:
        args += ["--cache-dir", str(cache_dir)]
    log_path = job_dir / "job.log"
    spare = warm.take(slot) if warm is not None else None
    with open(log_path, "ab") as out:
        out.write(f"\n== attempt {attempt} on {slot.name} at {time.strftime('%F %T')}"
                  f"{' (warm start)' if spare else ''}\n".encode())
        out.flush()
        if spare is not None:
            if spare.give(args, env, log_path):
                return spare.proc
            out.write(b"(its warm process was gone: starting a fresh one)\n")
            out.flush()
        return subprocess.Popen([*COMMAND, *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **slot.env, "PYTHONUNBUFFERED": "1", **env},
                                preexec_fn=die_with_parent)  # noqa: PLW1509 - only a prctl call


@dataclass
class Running:
    job: Job
    trial_id: int
    slot: Slot
    proc: subprocess.Popen[bytes]
    started: float
    attempt: int
    config: dict[str, Any]
    last_beat: float = field(default_factory=time.time)


@dataclass
class Progress:
    """What the live view and the summary show of one job."""

    job: Job
    state: str = "waiting"
    epoch: float = 0
    val_acc: float | None = None
    started: float | None = None
    seconds: float | None = None
    note: str = ""


def read_event_stream(path: Path) -> list[dict[str, Any]]:
    """A job's events.jsonl, parsed; a line still being written is skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def read_events(path: Path) -> tuple[float, float | None]:
    """How far a job is (in epochs, fractional within one) and its last validation accuracy."""
    epoch: float = 0
    val_acc = None
    for event in read_event_stream(path):
        if event.get("event") == "epoch":
            epoch, val_acc = event["epoch"], event["val_acc"]
        elif event.get("event") == "step":
            epoch = max(epoch, event["epoch"])
    return epoch, val_acc


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@contextlib.contextmanager
def interrupt_guard() -> Iterator[Callable[[], None]]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt at once, as usual, and is also remembered: one
    that Python drops (it lands in a fork handler while a job is being started, "Exception
    ignored in …") is raised again by the returned check, which the loops call before they look
    at their children (whose exit code 130 must not read as a failure to retry).
    An inherited "ignore SIGINT" (a background command of a non-interactive shell) is kept."""
    pending: list[int] = []

    def check() -> None:
        if pending:
            raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield check
        return

    def on_sigint(signum: int, frame: Any) -> None:
        pending.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


class Orchestrator:
    def __init__(self, grid: Grid, store: SweepStore, *, runs_dir: Path, slots: list[Slot], retries: int,
                 cache_dir: Path | None = None, poll_s: float = 0.5, warm: bool = True) -> None:
        self.grid = grid
        self.store = store
        self.sweep_dir = runs_dir / grid.name
        self.slots = slots
        self.retries = retries
        self.cache_dir = cache_dir
        self.poll_s = poll_s
        self.running: dict[str, Running] = {}
        self.progress = {job.id: Progress(job) for job in grid.jobs}
        self.gave_up: set[str] = set()  # failed in this run after its retries
        self.ran = 0
        self.warm = WarmPool(self.sweep_dir / ".warm", enabled=warm)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, on_tick: Callable[[Orchestrator], None] | None = None) -> dict[str, Progress]:
        self.store.sync(self.grid.jobs)
        with interrupt_guard() as check_interrupt:
            try:
                while True:
                    check_interrupt()
                    self._poll_children()
                    by_job = self.store.trials_by_job()
                    remaining = self._refresh_states(by_job)
                    if not remaining and not self.running:
                        break
                    self._start_jobs(remaining, by_job)
                    self._prime(remaining)
                    self._heartbeats()
                    if on_tick is not None:
                        on_tick(self)
                    wait_for_exit((run.proc for run in self.running.values()), self.poll_s)
                check_interrupt()
            except BaseException:
                self._stop_children()
                raise
            finally:
                self.warm.close()
        if on_tick is not None:
            on_tick(self)
        return self.progress

    def _refresh_states(self, by_job: dict[str, list[Any]]) -> list[Job]:
        """Update every job's state from the storage; return the jobs still to be done by someone."""
        remaining = []
        for job in self.grid.jobs:
            p = self.progress[job.id]
            if job.id in self.running:
                continue
            state = self.store.state(by_job.get(job.id, []))
            p.state = state.status
            if state.result is not None:
                p.val_acc = state.result.get("val_acc")
                p.seconds = state.result.get("runtime_s")
                p.epoch = len(state.result.get("epochs") or [])
            if state.status == "running":
                p.note = f"on {state.owner}"
                p.epoch, p.val_acc = read_events(self.sweep_dir / job.id / "events.jsonl")
            if state.status == "failed" and state.trial is not None:
                p.note = str(state.trial.user_attrs.get("reason", ""))
            if state.status in FINISHED or job.id in self.gave_up:
                continue
            remaining.append(job)
        return remaining

    def _start_jobs(self, remaining: list[Job], by_job: dict[str, list[Any]]) -> None:
        busy = {r.slot.name for r in self.running.values()}
        free = [s for s in self.slots if s.name not in busy]
        if not free:
            return
        for job in remaining:
            if not free:
                break
            trials = by_job.get(job.id, [])
            trial = self.store.canonical(trials)
            if trial is not None and trial.state == TrialState.RUNNING and self.store.is_stale(trial):
                log.warning("job %s: its worker %s:%s is gone; running it again", job.id,
                            trial.user_attrs.get("host"), trial.user_attrs.get("pid"))
                self.store.fail(trial._trial_id, "worker lost")
                trial = None
            if trial is None:  # never enqueued, or its last trial failed (an earlier run's): again
                self.store.sync([job])
                trial = self.store.canonical(self.store.trials_by_job().get(job.id, []))
            if trial is None or trial.state != TrialState.WAITING or not self.store.claim(trial):
                continue  # another worker has it
            self._launch(job, trial._trial_id, free.pop(0), attempt=1)

    def _prime(self, remaining: list[Job]) -> None:
        """Warm processes for the busy slots, as many as jobs still wait to start here."""
        waiting = sum(job.id not in self.running and self.progress[job.id].state != "running" for job in remaining)
        self.warm.release(keep=waiting)
        self.warm.prime([run.slot for run in self.running.values()][:waiting])

    def _job_config(self, job: Job) -> dict[str, Any]:
        """The configuration to run: the grid's, or the one an out-of-memory retry stored."""
        path = self.sweep_dir / job.id / "job.json"
        if path.exists():
            stored: dict[str, Any] = json.loads(path.read_text())
            return stored
        return job.config.to_dict()

    def _launch(self, job: Job, trial_id: int, slot: Slot, *, attempt: int, config: dict | None = None) -> None:
        config = config or self._job_config(job)
        env = {"WANDB_RUN_GROUP": self.grid.name, "WANDB_NAME": f"{self.grid.name}/{job.id}", "WANDB_RUN_ID": job.id}
        proc = launch_job(self.sweep_dir / job.id, config, slot, attempt=attempt, cache_dir=self.cache_dir, env=env,
                          warm=self.warm)
        self.running[job.id] = Running(job, trial_id, slot, proc, time.time(), attempt, config)
        self.store.set_attr(trial_id, "slot", slot.name)
        p = self.progress[job.id]
        p.state, p.started, p.note, p.epoch, p.val_acc = "running", time.time(), slot.name, 0, None
        self.ran += 1

    def _poll_children(self) -> None:
        for job_id, run in list(self.running.items()):
            p = self.progress[job_id]
            job_dir = self.sweep_dir / job_id
            p.epoch, p.val_acc = read_events(job_dir / "events.jsonl")
            code = run.proc.poll()
            if code is None:
                continue
            del self.running[job_id]
            result = _read_result(job_dir / "result.json")
            if code == 0 and result is not None and result.get("status") in FINISHED:
                if run.config != run.job.config.to_dict():
                    result["micro_batch_adjusted"] = {"batch_size": run.config["batch_size"],
                                                      "grad_accum": run.config["grad_accum"]}
                self.store.finish(run.trial_id, result)
                p.state, p.val_acc, p.seconds = result["status"], result.get("val_acc"), result.get("runtime_s")
                continue
            tail = log_tail(job_dir / "job.log")
            if code == EXIT_BUSY:  # another live process runs this directory: it is taken
                self.store.fail(run.trial_id, "job directory busy (run by another process)", tail)
                self.gave_up.add(job_id)
                p.state, p.note = "running", "elsewhere"
                continue
            if any(OOM_PATTERN.search(line) for line in tail) and run.config["batch_size"] > 1:
                config = {**run.config, "batch_size": run.config["batch_size"] // 2,
                          "grad_accum": run.config["grad_accum"] * 2}
                log.warning("job %s ran out of memory: retrying with batch_size %d x grad_accum %d", job_id,
                            config["batch_size"], config["grad_accum"])
                for name in ("config.json", "last.pt", "result.json"):  # a new micro-batch starts over
                    (job_dir / name).unlink(missing_ok=True)
                self._launch(run.job, run.trial_id, run.slot, attempt=run.attempt, config=config)
                continue
            reason = f"exit code {code}" + (f": {result.get('error')}" if result and result.get("error") else "")
            if code != EXIT_CONFIG and run.attempt <= self.retries:
                log.warning("job %s failed (%s); retry %d of %d", job_id, reason, run.attempt, self.retries)
                self.store.set_attr(run.trial_id, f"attempt_{run.attempt}_failure", {"reason": reason, "log_tail": tail})
                self._launch(run.job, run.trial_id, run.slot, attempt=run.attempt + 1, config=run.config)
                continue
            self.store.fail(run.trial_id, reason, tail)
            self.gave_up.add(job_id)
            p.state, p.note = "failed", reason

    def _heartbeats(self) -> None:
        now = time.time()
        for run in self.running.values():
            if now - run.last_beat >= HEARTBEAT_S:
                self.store.heartbeat(run.trial_id)
                run.last_beat = now

    def _stop_children(self) -> None:
        """Ctrl-C or an error: stop the jobs (they resume from their last epoch next time) and
        fail their trials, so the next run enqueues them again."""
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
        deadline = time.time() + 30
        for run in self.running.values():
            try:
                run.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
            self.store.fail(run.trial_id, "interrupted")
        self.running.clear()


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = json.loads(path.read_text())
        return result
    except (OSError, json.JSONDecodeError):
        return None
