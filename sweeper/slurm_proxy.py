"""The sweep's storage proxy as a SLURM job (`--slurm-proxy`): one `sweep storage serve` in front
of the sweep's database, shared by the workers of one array instead of a connection pool each.

`Proxy` is submitted (sweeper/slurm.py) before the array, whose workers start `after:` it. It runs
`sweep storage serve --host 0.0.0.0 --port 0 --address-file …` (a free port on its node; the
database URL goes through SWEEP_DATABASE, not the command line, so `ps` does not show a password)
and watches the array: when SLURM lists none of its tasks any more (every worker done, failed or
cancelled), it stops the proxy and ends; a proxy that dies before (a crash, a kill) is started
again, on a new port, up to MAX_RESTARTS times. On SIGTERM (a time limit, preemption, scancel) it stops
the proxy and, unless it was cancelled or the workers are done, requeues itself like a worker;
its workers then restart their orchestrators on the address the requeued proxy writes.
Its record is `proxy-<id>.json` under runs/<sweep>/slurm/, in a worker record's shape.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from sweeper.slurm_worker import (
    child_setup,
    proxy_address_file,
    proxy_record_file,
    read_arrays,
    read_record,
    slurm_cancelling,
    slurm_dir,
    update_record,
)
from trainer.jobdir import FAILED, RUNNING

POLL_S = float(os.environ.get("SWEEP_PROXY_POLL_S", "10"))  # how often it asks squeue whether its workers are done
ARRAY_WAIT_S = 300  # the launcher records the array right after sbatch returns; longer means it failed
STOP_WAIT_S = 30
MAX_RESTARTS = 5  # a `sweep storage serve` that dies under its workers is started again this many times a run


def workers_done(array_ids: list[str]) -> bool:
    """SLURM lists no task of these arrays any more (pending, running, requeued or completing)."""
    try:
        done = subprocess.run(["squeue", "-h", "-j", ",".join(array_ids), "-o", "%i"], capture_output=True, text=True,
                              check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False  # unknown: keep serving
    if done.returncode != 0:  # arrays SLURM has forgotten (MinJobAge) are "invalid"; any other error: unknown
        return "Invalid job id" in done.stderr
    return not done.stdout.strip()


class Proxy(submitit.helpers.Checkpointable):
    """The proxy job: serves until its workers are done; requeued on SIGTERM unless cancelled."""

    def __init__(self, *, database: str, sweep_dir: Path, threads: int = 16) -> None:
        self.database = database
        self.sweep_dir = sweep_dir
        self.threads = threads
        self._proc: subprocess.Popen[bytes] | None = None
        self._arrays: list[str] = []

    def __getstate__(self) -> dict[str, Any]:  # what submitit pickles to requeue: no process handle
        return {"database": self.database, "sweep_dir": self.sweep_dir, "threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None, _arrays=[])

    def __call__(self) -> int:
        job = os.environ.get("SLURM_JOB_ID", "local")
        folder = slurm_dir(self.sweep_dir)
        address = proxy_address_file(folder, job)
        address.unlink(missing_ok=True)  # a killed run's: its workers must not take it for this one's
        starts = int((read_record(proxy_record_file(folder, job)) or {}).get("starts") or 0)
        self._record(job, state=RUNNING, starts=starts + 1, exit_code=None, ended=None)
        command = [sys.executable, "-m", "sweeper.cli", "storage", "serve", "--host", "0.0.0.0", "--port", "0",
                   "--threads", str(self.threads), "--address-file", str(address)]
        print(f"storage proxy (SLURM job {job}) on {os.uname().nodename}: {shlex.join(command)} "
              "(the database from SWEEP_DATABASE)", flush=True)
        env = {**os.environ, "SWEEP_DATABASE": self.database, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(command, env=env, preexec_fn=child_setup)  # noqa: PLW1509
        self._arrays = self._wait_for_arrays(job)
        finished, restarts = not self._arrays, 0
        while not finished:
            time.sleep(POLL_S)
            finished = workers_done(self._arrays)
            if not finished and self._proc.poll() is not None:  # it died under its workers: serve again
                if restarts == MAX_RESTARTS:
                    break
                restarts += 1
                print(f"storage proxy: exited with code {self._proc.returncode} while its workers run; starting it "
                      f"again ({restarts} of {MAX_RESTARTS}); the workers follow its new address", flush=True)
                self._proc = subprocess.Popen(command, env=env, preexec_fn=child_setup)  # noqa: PLW1509
        if finished:
            print(f"storage proxy: the workers of array(s) {', '.join(self._arrays) or 'none'} are done; stopping",
                  flush=True)
        code = self._stop()
        self._record(job, state="done" if finished else FAILED, exit_code=code, ended=time.time(), end=True)
        if not finished:
            raise RuntimeError(f"the storage proxy exited with code {code} while its workers ran, {MAX_RESTARTS + 1} "
                               "times (its output is above)")
        return 0

    def _wait_for_arrays(self, job: str) -> list[str]:
        """The arrays submitted with this proxy, once the launcher has recorded them ([]: none came)."""
        deadline = time.monotonic() + ARRAY_WAIT_S
        while time.monotonic() < deadline:
            ids = [a["array_id"] for a in read_arrays(slurm_dir(self.sweep_dir)) if a.get("proxy_job") == job]
            if ids:
                return ids
            time.sleep(1)
        print(f"storage proxy: no worker array was recorded for it in {ARRAY_WAIT_S} s; stopping", flush=True)
        return []

    def _stop(self) -> int | None:
        """SIGTERM to `sweep storage serve` (a clean stop), SIGKILL if it has not stopped in STOP_WAIT_S."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """SIGTERM: stop the proxy; requeue this job unless it was cancelled or its workers are done."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        job = os.environ.get("SLURM_JOB_ID", "local")
        code = self._stop()
        cancelled = any(a.get("proxy_job") == job and a.get("cancelled") for a in read_arrays(slurm_dir(self.sweep_dir)))
        cancelled = cancelled or slurm_cancelling(job, "storage proxy")
        done = bool(self._arrays) and workers_done(self._arrays)
        state = "cancelled" if cancelled else "done" if done else "requeued"
        self._record(job, state=state, exit_code=code, ended=time.time(), end=True)
        if cancelled or done:
            print(f"storage proxy: {state}; not requeued", flush=True)
            return None
        print("storage proxy: stopped; asking SLURM to requeue it (its workers wait for its new address)", flush=True)
        return submitit.helpers.DelayedSubmission(Proxy(database=self.database, sweep_dir=self.sweep_dir,
                                                        threads=self.threads), *args, **kwargs)

    def _record(self, job: str, **changes: Any) -> None:
        update_record(proxy_record_file(slurm_dir(self.sweep_dir), job), job, **changes)
