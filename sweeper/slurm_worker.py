"""One SLURM worker inside its allocation (`Worker`: runs the orchestrator command, stops it on
SIGTERM and has submitit requeue itself unless cancelled), and the files the workers, the
sweep's storage proxy (sweeper/slurm_proxy.py), `sweep status` and `sweep cancel` share under
runs/<sweep>/slurm/: `workers.json` (every submitted array), `worker-<id>.json` (each worker's
own record) and, with --slurm-proxy, `proxy-<id>-address.json` (where the proxy listens).

With a proxy, a worker waits for its address file when it starts (a requeued worker too: the
proxy may have moved) and runs its orchestrator with --storage grpc://HOST:PORT; when the
proxy moves while it runs (requeued, or served again after a crash), the worker restarts its
orchestrator on the new address (its jobs resume from their last finished epoch)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import submitit

from sweeper.process import die_with_parent
from trainer.io import write_json
from trainer.jobdir import FAILED, RUNNING, set_aside

log = logging.getLogger(__name__)

STOP_WAIT_S = 60  # how long a worker waits for its orchestrator to stop before killing it
# When SLURM signals the whole job (preemption, scancel --full) the orchestrator got SIGTERM too and
# is stopping already: a second signal from the worker could cut its stop short. So the worker
# gives it this long to exit by itself before it sends SIGINT (needed when only the worker was
# signalled: the B:TERM@90 warning, scancel --batch).
SIGNAL_GRACE_S = float(os.environ.get("SWEEP_SLURM_GRACE_S", "10"))  # env: tests shorten it
# How long a worker waits for the proxy's address: the proxy job started before it (the workers
# depend on it, `after:`), so this covers the proxy's start and its first database connection.
PROXY_WAIT_S = float(os.environ.get("SWEEP_PROXY_WAIT_S", "600"))
PROXY_CHECK_S = 5.0  # how often a running worker looks whether its proxy moved
MOVED_STOP_S = 20  # how long an orchestrator whose proxy moved gets to stop before it is killed


def slurm_dir(sweep_dir: Path) -> Path:
    return sweep_dir / "slurm"


@contextmanager
def workers_file(folder: Path) -> Iterator[list[dict[str, Any]]]:
    """workers.json's arrays, to change in place; written back atomically, under a lock."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".workers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        arrays = read_arrays(folder)
        yield arrays
        write_json(folder / "workers.json", {"arrays": arrays})


def read_arrays(folder: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((folder / "workers.json").read_text())
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as exc:
        moved = set_aside(folder / "workers.json", f"unreadable ({exc})")
        log.warning("%s was unreadable and is set aside as %s", folder / "workers.json", moved)
        return []
    return list(data.get("arrays", []))


def proxy_address_file(folder: Path, job_id: str) -> Path:
    # Named for its proxy job, not one proxy.json per sweep: a worker reads only its own proxy's
    # address, never one left by an earlier submission's proxy (killed before it could remove it).
    return folder / f"proxy-{job_id}-address.json"


def read_address(path: Path) -> str | None:
    """HOST:PORT from a `sweep storage serve --address-file` file; None while there is none."""
    try:
        data = json.loads(path.read_text())
        return f"{data['host']}:{int(data['port'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def proxy_record_file(folder: Path, job_id: str) -> Path:
    return folder / f"proxy-{job_id}.json"


def wait_for_address(folder: Path, job_id: str, timeout_s: float | None = None) -> str:
    """The HOST:PORT of the proxy job `job_id` once its address file is there; RuntimeError
    after `timeout_s` (default PROXY_WAIT_S), or at once when the proxy has ended."""
    path = proxy_address_file(folder, job_id)
    deadline = time.monotonic() + (PROXY_WAIT_S if timeout_s is None else timeout_s)
    while (address := read_address(path)) is None:
        ended = (read_record(proxy_record_file(folder, job_id)) or {}).get("state") in (FAILED, "done", "cancelled")
        if ended or time.monotonic() > deadline:
            why = "has ended" if ended else f"did not say where it listens ({path} is absent after " \
                                             f"{PROXY_WAIT_S if timeout_s is None else timeout_s:.0f} s)"
            raise RuntimeError(f"the sweep's storage proxy (SLURM job {job_id}) {why}; see its log, "
                               f"{folder}/{job_id}_0_log.out and .err, and squeue -j {job_id}")
        time.sleep(1)
    return address


def with_storage(command: list[str], url: str) -> list[str]:
    """`command` with the value of its --storage option replaced by `url`."""
    at = command.index("--storage")
    return [*command[:at + 1], url, *command[at + 2:]]


def slurm_cancelling(job_id: str, who: str) -> bool:
    """SLURM says the job is being cancelled (scancel: COMPLETING, then CANCELLED); `who` starts the log line."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False).stdout
    state = next((w for w in shown.split() if w.startswith("JobState=")), "JobState=?")
    print(f"{who}: SIGTERM with SLURM {state}", flush=True)
    # scancel: COMPLETING (then CANCELLED); scancel --signal, the B:TERM@90 warning: RUNNING.
    return state in ("JobState=CANCELLED", "JobState=COMPLETING")


def update_record(path: Path, task: str, **changes: Any) -> None:
    """A worker's (or the proxy's) own record: `changes` over what it holds, with where it runs."""
    record = read_record(path) or {"task": task}
    if changes.pop("end", False):  # every start's end, kept: what stopped it, the orchestrator's exit code
        record.setdefault("history", []).append({"state": changes["state"], "exit_code": changes["exit_code"],
                                                 "at": changes["ended"]})
    record.update(changes, slurm_job_id=os.environ.get("SLURM_JOB_ID"), host=os.uname().nodename,
                  pid=os.getpid(), updated=time.time())
    write_json(path, record)


def child_setup() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """The orchestrator takes SIGINT as Ctrl-C (a batch shell may start us with it ignored) and
    dies with its worker."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()


class Worker(submitit.helpers.Checkpointable):
    """One array task: runs the orchestrator command until the sweep is done; on SIGTERM, stops it
    and has submitit requeue this task (unless it was cancelled)."""

    def __init__(self, *, command: list[str], sweep_dir: Path, env: dict[str, str], proxy_job: str | None = None) -> None:
        self.command = command
        self.sweep_dir = sweep_dir
        self.env = env
        self.proxy_job = proxy_job  # the sweep's storage proxy (--slurm-proxy): its SLURM job id
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def __getstate__(self) -> dict[str, Any]:  # what submitit pickles to requeue: no process handle
        return {"command": self.command, "sweep_dir": self.sweep_dir, "env": self.env, "proxy_job": self.proxy_job}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None, _stopping=False)

    def __call__(self, index: int) -> int:
        task = _task_id()
        starts = int((read_record(slurm_dir(self.sweep_dir) / f"worker-{task}.json") or {}).get("starts") or 0)
        self._record(task, state=RUNNING, starts=starts + 1, orchestrator_pid=None, exit_code=None, ended=None)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if "OMP_NUM_THREADS" not in os.environ and cpus and cpus.isdigit():
            env["OMP_NUM_THREADS"] = str(max(1, int(cpus) // max(1, int(self.env.get("SWEEP_SLURM_SLOTS", "1")))))
        while True:
            command, address = self.command, None
            if self.proxy_job:
                address = wait_for_address(slurm_dir(self.sweep_dir), self.proxy_job)
                command = with_storage(command, f"grpc://{address}")
            print(f"worker {task} (SLURM job {os.environ.get('SLURM_JOB_ID')}) on {os.uname().nodename}: "
                  f"{shlex.join(command)}", flush=True)
            self._proc = subprocess.Popen(command, env=env, preexec_fn=child_setup)  # noqa: PLW1509
            self._record(task, orchestrator_pid=self._proc.pid, proxy=address)
            if (code := self._wait(address)) is not None:
                break
        self._record(task, state="done" if code == 0 else FAILED, exit_code=code, ended=time.time(), end=True)
        if code != 0:
            raise RuntimeError(f"the orchestrator exited with code {code} (its output is above, in this log)")
        return code

    def _wait(self, address: str | None) -> int | None:
        """The orchestrator's exit code; None when the proxy moved (the orchestrator stopped for a restart)."""
        assert self._proc is not None
        checked = time.monotonic()
        while (code := self._proc.poll()) is None:  # not wait(): a SIGTERM handler must be able to wait too
            time.sleep(0.5)
            if address is None or self.proxy_job is None or time.monotonic() - checked < PROXY_CHECK_S:
                continue
            checked = time.monotonic()
            moved = read_address(proxy_address_file(slurm_dir(self.sweep_dir), self.proxy_job))
            if moved is not None and moved != address and not self._stopping:
                print(f"worker {_task_id()}: the storage proxy moved from {address} to {moved}; restarting the "
                      "orchestrator there", flush=True)
                # Its stop cannot reach the old proxy to record anything: SIGINT at once (the jobs stop
                # at a safe point), a short wait, then SIGKILL; the next orchestrator takes the trials over.
                self._stop_orchestrator(grace_s=0, wait_s=MOVED_STOP_S)
                return None
        if code != 0 and address is not None and not self._stopping and self._proxy_came_back(address):
            print(f"worker {_task_id()}: the orchestrator exited with code {code} while its storage proxy moved; "
                  "restarting it on the new address", flush=True)
            return None
        return code

    def _proxy_came_back(self, address: str) -> bool:
        """After the orchestrator failed: whether its proxy is gone from `address` and comes back
        elsewhere within PROXY_WAIT_S (False at once while it still answers there: the failure was
        the orchestrator's own)."""
        assert self.proxy_job is not None
        folder = slurm_dir(self.sweep_dir)
        deadline = time.monotonic() + PROXY_WAIT_S
        while time.monotonic() < deadline:
            now = read_address(proxy_address_file(folder, self.proxy_job))
            if now is not None and now != address:
                return True
            if now == address and _answers(address):
                return False
            if (read_record(proxy_record_file(folder, self.proxy_job)) or {}).get("state") in (FAILED, "done", "cancelled"):
                return False
            time.sleep(1)
        return False

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SIGTERM: stop the orchestrator like Ctrl-C; requeue this task (the same call, returned for
        submitit to pickle) unless it was cancelled (None: submitit does not requeue)."""
        # Requeueing (and scancel) sends SIGTERM again: this worker is stopping already; it exits
        # right after the requeue, or SLURM's SIGKILL comes KillWait later.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        task = _task_id()
        cancelled = self._cancelled(task)
        if not self._stopping:
            self._stopping = True
            code = self._stop_orchestrator()
            self._record(task, state="cancelled" if cancelled else "requeued", exit_code=code, ended=time.time(),
                         end=True)
        if cancelled:
            print(f"worker {task}: cancelled; not requeued", flush=True)
            return None
        print(f"worker {task}: stopped; asking SLURM to requeue it", flush=True)
        return submitit.helpers.DelayedSubmission(Worker(command=self.command, sweep_dir=self.sweep_dir,
                                                         env=self.env, proxy_job=self.proxy_job), *args, **kwargs)

    def _stop_orchestrator(self, grace_s: float | None = None, wait_s: float = STOP_WAIT_S) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        grace = time.time() + (SIGNAL_GRACE_S if grace_s is None else grace_s)
        while proc.poll() is None and time.time() < grace:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        deadline = time.time() + wait_s
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def _cancelled(self, task: str) -> bool:
        """`sweep cancel` marked this task's array, or SLURM says the job is being cancelled (scancel)."""
        array = task.split("_")[0]
        if any(a.get("array_id") == array and a.get("cancelled") for a in read_arrays(slurm_dir(self.sweep_dir))):
            return True
        return slurm_cancelling(os.environ.get("SLURM_JOB_ID", task), f"worker {task}")

    def _record(self, task: str, **changes: Any) -> None:
        update_record(slurm_dir(self.sweep_dir) / f"worker-{task}.json", task, **changes)


def _answers(address: str) -> bool:
    """Something listens at HOST:PORT (a TCP connection opens)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return True
    except (OSError, ValueError):
        return False


def _task_id() -> str:
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID", "local")


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except (OSError, json.JSONDecodeError):
        return None
