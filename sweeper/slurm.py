"""Run a sweep's orchestrators as SLURM jobs: N workers, one job array, submitted with submitit.

Each worker runs the same `sweep grid FILE …` / `sweep optuna …` command as a local run (same
runs directory, storage and options, `--no-live`) inside its allocation, on the GPUs SLURM gave
it, claiming jobs from the one storage: exactly-once, resume and retries are the orchestrator's.

Signals. A worker is submitit's `_submit` process, exec'd as the batch step's main process
(no shell in between to die first), with `--signal=B:TERM@90` (SIGTERM 90 s before the time
limit, to that process) and submitit's preemption signal set to SIGTERM (the one SLURM sends on
preemption, a time limit and scancel). On SIGTERM submitit calls `Worker.checkpoint`, which
stops the orchestrator like Ctrl-C (its jobs stop at a safe point, their trials return to the
queue) and, unless the worker was cancelled (`sweep cancel`, or scancel: SLURM's job state says
CANCELLED), returns the same call, which submitit requeues (`scontrol requeue`). A requeued or
new worker runs the same command, which resumes every job from its last finished epoch.

Files, under runs/<sweep>/slurm/: `workers.json` (every submitted array: id, workers, command,
options; whether `sweep cancel` cancelled it), `worker-<id>.json` (each worker's own record:
its SLURM job, host, orchestrator pid, starts, last exit code; a state that needs no slurmdbd),
and submitit's files: each worker's stdout/stderr (`<id>_0_log.out`, `.err`), batch script and
pickles.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import submitit

from trainer import yamlfile
from trainer.config import ConfigError
from trainer.names import nearest

log = logging.getLogger(__name__)

SLURM_KEYS = ["partition", "gpus_per_task", "time", "workers", "extra"]
# CPUs a GPU worker asks for per job it runs at once (gpus_per_task x --jobs-per-gpu of them): a
# job's host side (collating batches, the Python loop, tokenizing on a cache miss) keeps about
# this many busy while it feeds one GPU. Override with --slurm-extra cpus-per-task=N.
CPUS_PER_GPU_JOB = 4
DEFAULT_TIME_MIN = 60  # submitit's own default is 5 minutes; a worker requeues itself at its limit anyway
SIGNAL_DELAY_S = 90  # SIGTERM this long before the time limit: time to stop jobs at a safe point and requeue
STOP_WAIT_S = 60  # how long a worker waits for its orchestrator to stop before killing it
# When SLURM signals the whole job (preemption, scancel --full) the orchestrator got SIGTERM too and
# is stopping already: a second signal from the worker could cut its stop short. So the worker
# gives it this long to exit by itself before it sends SIGINT (needed when only the worker was
# signalled: the B:TERM@90 warning, scancel --batch).
SIGNAL_GRACE_S = float(os.environ.get("SWEEP_SLURM_GRACE_S", "10"))  # env: tests shorten it
MAX_TIMEOUTS = 50  # requeues after a time limit (preemptions are not counted), as submitit counts them
# sbatch options the launcher sets itself: overriding them would break logs, arrays or requeueing.
RESERVED = {"array", "output", "error", "signal", "open-mode", "requeue", "no-requeue", "parsable", "wrap",
            "chdir", "export"}
EXTRA_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


class SlurmError(Exception):
    """SLURM refused or failed (sbatch, squeue, scancel): the message says what it said."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_task: int = 0
    time_min: int = DEFAULT_TIME_MIN
    workers: int = 1
    extra: dict[str, str] = field(default_factory=dict)


# -- options --------------------------------------------------------------------------------------


def parse_time(value: str) -> int | None:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes."""
    match = TIME.match(str(value).strip())
    if not match:
        return None
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is None:
        parts = [x for x in (a, b, c) if x is not None]
        seconds = {1: lambda: parts[0] * 60, 2: lambda: parts[0] * 60 + parts[1],
                   3: lambda: parts[0] * 3600 + parts[1] * 60 + parts[2]}[len(parts)]()
    else:
        seconds = days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    return max(1, -(-seconds // 60)) if seconds > 0 else None


def _check(where: str, key: str, value: Any) -> Any:
    """One option's value, checked; `where` says where it came from (a file line, or --slurm-…)."""
    if key == "partition":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {value!r} is not a partition name")
        return value.strip()
    if key in ("gpus_per_task", "workers"):
        least = 0 if key == "gpus_per_task" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected an integer >= {least}")
        return value
    if key == "time":
        minutes = parse_time(str(value))
        if minutes is None or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a SLURM time; expected minutes, HH:MM:SS or D-HH:MM:SS")
        if minutes * 60 <= SIGNAL_DELAY_S:
            raise ConfigError(f"{where}: {value!r} is too short; a worker is told to stop {SIGNAL_DELAY_S} s before "
                              "its time limit, so give it at least 2 minutes")
        return minutes
    raise AssertionError(key)


def _check_extra(where: str, key: Any, value: Any) -> tuple[str, str]:
    key = str(key).removeprefix("--").replace("_", "-")
    if not EXTRA_KEY.match(key):
        raise ConfigError(f"{where}: {key!r} is not an sbatch option name (e.g. account, qos, mem, cpus-per-task)")
    if key in RESERVED:
        raise ConfigError(f"{where}: {key} is set by the launcher itself and cannot be changed "
                          f"(reserved: {', '.join(sorted(RESERVED))})")
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{where}: {value!r} is not allowed; expected a single value for sbatch --{key}")
    return key, str(value).lower() if isinstance(value, bool) else str(value)


def file_options(path: Path) -> dict[str, Any]:
    """The `slurm:` block of a grid or space file, checked, with the file and line in every message."""
    from sweeper.spec import Reporter

    doc = yamlfile.read(path)
    raw = doc.data
    block = raw.get("slurm") if isinstance(raw, dict) else None
    if block is None:
        return {}
    report = Reporter(doc)
    if not isinstance(block, dict):
        raise report.error(("slurm",), f"slurm: expected a mapping with keys {', '.join(SLURM_KEYS)}")
    found: dict[str, Any] = {}
    for key, value in block.items():
        where = ("slurm", str(key))
        if key not in SLURM_KEYS:
            raise report.error(where, f"slurm.{key}: unknown key; {nearest(str(key), SLURM_KEYS)}")
        try:
            if key == "extra":
                if not isinstance(value, dict):
                    raise ConfigError(f"slurm.extra: expected a mapping of sbatch option -> value, got {value!r}")
                found["extra"] = dict(_check_extra(f"slurm.extra.{k}", k, v) for k, v in value.items())
            else:
                found[key] = _check(f"slurm.{key}", key, value)
        except ConfigError as exc:
            raise report.error(where, str(exc)) from None
    return found


def resolve_options(path: Path, *, partition: str | None, gpus_per_task: int | None, time: str | None,
                    workers: int | None, extra: list[str] | None) -> SlurmOptions:
    """The file's `slurm:` block, with the command line's --slurm-… options over it."""
    found = file_options(path)
    cli = {"partition": partition, "gpus_per_task": gpus_per_task, "time": time, "workers": workers}
    for key, value in cli.items():
        if value is not None:
            found[key] = _check(f"--slurm-{key.replace('_', '-')}", key, value)
    extras = dict(found.get("extra", {}))
    for item in extra or []:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--slurm-extra: {item!r} is not KEY=VALUE (e.g. --slurm-extra account=mylab)")
        k, v = _check_extra(f"--slurm-extra {item}", key, value)
        extras[k] = v
    return SlurmOptions(partition=found.get("partition"), gpus_per_task=found.get("gpus_per_task", 0),
                        time_min=found.get("time", DEFAULT_TIME_MIN), workers=found.get("workers", 1), extra=extras)


def check_reachable(runs_dir: Path, storage: str | None) -> tuple[Path, str]:
    """The runs directory and storage as the workers will see them: absolute, existing, writable
    from here. Raises ConfigError saying what is wrong."""
    from sweeper.store import default_storage

    runs = runs_dir.expanduser().absolute()
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--runs-dir: {runs} cannot be created ({exc.strerror})") from None
    _writable("--runs-dir", runs)
    url = storage or default_storage(runs)
    if "://" not in url:
        journal = Path(url.removeprefix("journal:")).expanduser().absolute()
        if not journal.parent.is_dir():
            raise ConfigError(f"--storage: {journal.parent} does not exist; the journal's directory must be on "
                              "a file system every node mounts at the same path")
        _writable("--storage", journal.parent)
        _clients()
        return runs, str(journal)
    if url.startswith("grpc://"):  # a `sweep storage serve` proxy (issue 28)
        from sweeper.store import open_storage

        try:
            open_storage(url, connect_timeout_s=10)
        except (ValueError, ConnectionError, ImportError) as exc:
            raise ConfigError(str(exc)) from None
        return runs, url
    if url.startswith("sqlite"):
        raise ConfigError(f"--storage: {url}: SQLite is not safe for several workers on a shared file system; use "
                          "the journal file (the default) or postgresql://")
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as exc:  # any driver's error: say it and stop before submitting
        raise ConfigError(f"--storage: {url} cannot be reached from this host ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    _clients()
    return runs, url


def _clients() -> None:
    for command in ("sbatch", "squeue", "scancel", "scontrol", "srun"):  # submitit looks for srun too
        if shutil.which(command) is None:
            raise ConfigError(f"--slurm: {command} is not on PATH; submit from a host of the SLURM cluster")


def _writable(option: str, directory: Path) -> None:
    probe = directory / f".sweep-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{option}: {directory} is not writable from this host ({exc.strerror})") from None


# -- submitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    array_id: str
    job_ids: list[str]
    folder: Path


def slurm_dir(sweep_dir: Path) -> Path:
    return sweep_dir / "slurm"


def submit(*, sweep: str, sweep_dir: Path, command: list[str], options: SlurmOptions, cpus_per_task: int | None,
           env: dict[str, str]) -> Submission:
    """Submit `options.workers` workers running `command` as one job array; returns at once."""
    folder = slurm_dir(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # `exec`: the worker replaces the batch shell, so SIGTERM to the batch step reaches it, not a shell.
    executor = submitit.SlurmExecutor(folder=folder, python=f"exec {shlex.quote(sys.executable)}",
                                      max_num_timeout=MAX_TIMEOUTS)
    params: dict[str, Any] = {
        "job_name": f"sweep-{sweep}", "time": options.time_min, "use_srun": False, "ntasks_per_node": 1,
        "signal_delay_s": SIGNAL_DELAY_S,
        # submitit reads its preemption signal when it is imported: the worker's shell sets it first.
        "setup": ["export SUBMITIT_PREEMPT_SIGNAL=TERM"],
        "additional_parameters": {"signal": f"B:TERM@{SIGNAL_DELAY_S}", "requeue": True, **options.extra},
    }
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_task:
        params["gpus_per_task"] = options.gpus_per_task
    if cpus_per_task and "cpus-per-task" not in options.extra:
        params["cpus_per_task"] = cpus_per_task
    executor.update_parameters(**params)
    worker = Worker(command=command, sweep_dir=sweep_dir, env=env)
    try:
        jobs = executor.map_array(worker, list(range(options.workers)))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
        raise SlurmError(f"sbatch refused the workers: {_said(exc)}") from None
    job_ids = [job.job_id for job in jobs]
    array_id = job_ids[0].split("_")[0]
    record = {"array_id": array_id, "job_ids": job_ids, "workers": options.workers, "submitted": time.time(),
              "command": command, "options": asdict(options), "cancelled": None}
    with _workers_file(folder) as arrays:
        arrays.append(record)
    return Submission(array_id=array_id, job_ids=job_ids, folder=folder)


def _said(exc: BaseException) -> str:
    text = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return " ".join(text.split())[-500:]


@contextmanager
def _workers_file(folder: Path) -> Iterator[list[dict[str, Any]]]:
    """workers.json's arrays, to change in place; written back atomically, under a lock."""
    from trainer.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".workers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        arrays = read_arrays(folder)
        yield arrays
        write_json(folder / "workers.json", {"arrays": arrays})


def read_arrays(folder: Path) -> list[dict[str, Any]]:
    import json

    try:
        data = json.loads((folder / "workers.json").read_text())
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as exc:
        from trainer.jobdir import set_aside

        moved = set_aside(folder / "workers.json", f"unreadable ({exc})")
        log.warning("%s was unreadable and is set aside as %s", folder / "workers.json", moved)
        return []
    return list(data.get("arrays", []))


# -- the worker -----------------------------------------------------------------------------------


def _child_setup() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """The orchestrator takes SIGINT as Ctrl-C (a batch shell may start us with it ignored) and
    dies with its worker."""
    from sweeper.process import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    die_with_parent()


class Worker(submitit.helpers.Checkpointable):
    """One array task: runs the orchestrator command until the sweep is done; on SIGTERM, stops it
    and has submitit requeue this task (unless it was cancelled)."""

    def __init__(self, *, command: list[str], sweep_dir: Path, env: dict[str, str]) -> None:
        self.command = command
        self.sweep_dir = sweep_dir
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def __getstate__(self) -> dict[str, Any]:  # what submitit pickles to requeue: no process handle
        return {"command": self.command, "sweep_dir": self.sweep_dir, "env": self.env}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None, _stopping=False)

    def __call__(self, index: int) -> int:
        task = _task_id()
        starts = int((_read_record(slurm_dir(self.sweep_dir) / f"worker-{task}.json") or {}).get("starts") or 0)
        self._record(task, state="running", starts=starts + 1, orchestrator_pid=None, exit_code=None, ended=None)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if "OMP_NUM_THREADS" not in os.environ and cpus and cpus.isdigit():
            env["OMP_NUM_THREADS"] = str(max(1, int(cpus) // max(1, int(self.env.get("SWEEP_SLURM_SLOTS", "1")))))
        print(f"worker {task} (SLURM job {os.environ.get('SLURM_JOB_ID')}) on {os.uname().nodename}: "
              f"{shlex.join(self.command)}", flush=True)
        self._proc = subprocess.Popen(self.command, env=env, preexec_fn=_child_setup)  # noqa: PLW1509
        self._record(task, orchestrator_pid=self._proc.pid)
        while (code := self._proc.poll()) is None:  # not wait(): a SIGTERM handler must be able to wait too
            time.sleep(0.5)
        self._record(task, state="done" if code == 0 else "failed", exit_code=code, ended=time.time(), end=True)
        if code != 0:
            raise RuntimeError(f"the orchestrator exited with code {code} (its output is above, in this log)")
        return code

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
                                                         env=self.env), *args, **kwargs)

    def _stop_orchestrator(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        grace = time.time() + SIGNAL_GRACE_S
        while proc.poll() is None and time.time() < grace:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        deadline = time.time() + STOP_WAIT_S
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
        shown = subprocess.run(["scontrol", "show", "job", os.environ.get("SLURM_JOB_ID", task)],
                               capture_output=True, text=True, check=False).stdout
        state = next((w for w in shown.split() if w.startswith("JobState=")), "JobState=?")
        print(f"worker {task}: SIGTERM with SLURM {state}", flush=True)
        # scancel: COMPLETING (then CANCELLED); scancel --signal, the B:TERM@90 warning: RUNNING.
        return state in ("JobState=CANCELLED", "JobState=COMPLETING")

    def _record(self, task: str, **changes: Any) -> None:
        from trainer.io import write_json

        path = slurm_dir(self.sweep_dir) / f"worker-{task}.json"
        record = _read_record(path) or {"task": task}
        if changes.pop("end", False):  # every start's end, kept: what stopped it, the orchestrator's exit code
            record.setdefault("history", []).append({"state": changes["state"], "exit_code": changes["exit_code"],
                                                     "at": changes["ended"]})
        record.update(changes, slurm_job_id=os.environ.get("SLURM_JOB_ID"), host=os.uname().nodename,
                      pid=os.getpid(), updated=time.time())
        write_json(path, record)


def _task_id() -> str:
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID", "local")


def _read_record(path: Path) -> dict[str, Any] | None:
    import json

    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except (OSError, json.JSONDecodeError):
        return None


# -- watching and cancelling ----------------------------------------------------------------------


@dataclass
class WorkerRow:
    task: str  # "12_0"
    state: str  # SLURM's (PENDING, RUNNING, …), else the worker's own record (done, requeued, …)
    source: str  # squeue, sacct, record, or none
    where: str = ""  # node, or why it waits
    starts: int = 0
    exit_code: int | None = None


def _squeue(array_ids: list[str]) -> dict[str, tuple[str, str]]:
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(array_ids), "-o", "%i|%T|%R"],
                              capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            found[parts[0]] = (parts[1], parts[2])
    return found


def _sacct(array_ids: list[str]) -> dict[str, str]:
    """Finished tasks' states; empty where accounting is off (no slurmdbd: sacct fails)."""
    try:
        done = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(array_ids), "-o", "JobID,State"],
                              capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    return {line.split("|")[0]: line.split("|")[1].split()[0] for line in done.stdout.splitlines() if "|" in line}


def worker_rows(sweep_dir: Path) -> list[WorkerRow]:
    """Every submitted worker of a sweep, with its state: squeue while SLURM knows it, sacct where
    accounting is on, else the worker's own record."""
    folder = slurm_dir(sweep_dir)
    arrays = read_arrays(folder)
    if not arrays:
        return []
    ids = [a["array_id"] for a in arrays]
    queued = _squeue(ids) if shutil.which("squeue") else {}
    accounted = _sacct(ids) if shutil.which("sacct") else {}
    rows = []
    for array in arrays:
        for task in array["job_ids"]:
            record = _read_record(folder / f"worker-{task}.json") or {}
            starts, code = int(record.get("starts") or 0), record.get("exit_code")
            if task in queued:
                state, where = queued[task]
                rows.append(WorkerRow(task, state, "squeue", where, starts, code))
            elif task in accounted:
                rows.append(WorkerRow(task, accounted[task], "sacct", record.get("host", ""), starts, code))
            elif record:
                rows.append(WorkerRow(task, str(record.get("state")), "record", record.get("host", ""), starts, code))
            else:
                state = "cancelled" if array.get("cancelled") else "unknown"
                rows.append(WorkerRow(task, state, "none", "not in squeue; never started", starts, code))
    return rows


def cancel(sweep_dir: Path) -> list[str]:
    """Mark every array of the sweep cancelled (so its workers do not requeue themselves), then
    scancel them. Returns the array ids. Raises SlurmError when there is nothing to cancel or
    scancel fails."""
    folder = slurm_dir(sweep_dir)
    if not read_arrays(folder):
        raise SlurmError(f"no SLURM workers were submitted for this sweep ({folder / 'workers.json'} is absent)")
    with _workers_file(folder) as arrays:
        for array in arrays:
            array["cancelled"] = array.get("cancelled") or time.time()
        ids = [a["array_id"] for a in arrays]
    try:
        done = subprocess.run(["scancel", *ids], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"scancel {' '.join(ids)} could not run ({exc}); the arrays are marked cancelled, "
                         "so their workers will not requeue themselves") from None
    if done.returncode != 0 and "Invalid job id" not in done.stderr:  # an array that ended already is fine
        raise SlurmError(f"scancel {' '.join(ids)} failed: {done.stderr.strip()}")
    return ids


def follow_hint(submission: Submission, sweep: str, runs_dir: Path) -> str:
    return (f"follow: sweep status {sweep} --runs-dir {runs_dir}  (or squeue -j {submission.array_id}); "
            f"logs: {submission.folder}/{submission.array_id}_*log.out; stop: sweep cancel {sweep} --runs-dir {runs_dir}")
