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

With --slurm-proxy (or `proxy: true` in the file's `slurm:` block) one more job runs the sweep's
storage proxy (sweeper/slurm_proxy.py), submitted first; the array starts `after:` it, and its
workers reach the database through it (--storage grpc://…, from its address file).

Files, under runs/<sweep>/slurm/: `workers.json` (every submitted array: id, workers, command,
options, its proxy's job id; whether `sweep cancel` cancelled it), `worker-<id>.json` (each
worker's own record: its SLURM job, host, orchestrator pid, starts, last exit code; a state that
needs no slurmdbd), `proxy-<id>.json` and `proxy-<id>-address.json` (the proxy's record, and
where it listens while it does), and submitit's files: each job's stdout/stderr
(`<id>_0_log.out`, `.err`), batch script and pickles.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from sweeper.options import SlurmRequest, Workers
from sweeper.reconnect import safe_url
from sweeper.slurm_options import SIGNAL_DELAY_S, SlurmOptions, check_proxy, check_reachable, resolve_options
from sweeper.slurm_options import parse_time as parse_time  # re-exported: part of this module's interface
from sweeper.slurm_proxy import Proxy
from sweeper.slurm_worker import (
    Worker,
    proxy_address_file,
    proxy_record_file,
    read_address,
    read_arrays,
    read_record,
    slurm_dir,
    workers_file,
)
from sweeper.storage import default_storage
from trainer.config import ConfigError

# CPUs a GPU worker asks for per job it runs at once (gpus_per_task x --jobs-per-gpu of them): a
# job's host side (collating batches, the Python loop, tokenizing on a cache miss) keeps about
# this many busy while it feeds one GPU. Override with --slurm-extra cpus-per-task=N.
CPUS_PER_GPU_JOB = 4
MAX_TIMEOUTS = 50  # requeues after a time limit (preemptions are not counted), as submitit counts them
# The --slurm-extra options the proxy job takes too (it needs no GPU, nor the workers' CPUs or memory).
PROXY_EXTRA = {"account", "qos", "reservation", "wckey", "comment", "clusters", "mail-type", "mail-user"}


class SlurmError(Exception):
    """SLURM refused or failed (sbatch, squeue, scancel): the message says what it said."""


# -- submitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    array_id: str
    job_ids: list[str]
    folder: Path


def _executor(folder: Path, name: str, options: SlurmOptions, extra: dict[str, str]) -> submitit.SlurmExecutor:
    """A submitit executor for the sweep's jobs: requeued on SIGTERM, warned SIGNAL_DELAY_S before the time limit."""
    folder.mkdir(parents=True, exist_ok=True)
    # `exec`: the job replaces the batch shell, so SIGTERM to the batch step reaches it, not a shell.
    executor = submitit.SlurmExecutor(folder=folder, python=f"exec {shlex.quote(sys.executable)}",
                                      max_num_timeout=MAX_TIMEOUTS)
    params: dict[str, Any] = {
        "job_name": name, "time": options.time_min, "use_srun": False, "ntasks_per_node": 1,
        "signal_delay_s": SIGNAL_DELAY_S,
        # submitit reads its preemption signal when it is imported: the job's shell sets it first.
        "setup": ["export SUBMITIT_PREEMPT_SIGNAL=TERM"],
        "additional_parameters": {"signal": f"B:TERM@{SIGNAL_DELAY_S}", "requeue": True, **extra},
    }
    if options.partition:
        params["partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def submit_proxy(*, sweep: str, sweep_dir: Path, database: str, options: SlurmOptions) -> str:
    """Submit the sweep's storage proxy job (sweeper/slurm_proxy.py); returns its job id at once."""
    extra = {k: v for k, v in options.extra.items() if k in PROXY_EXTRA}
    executor = _executor(slurm_dir(sweep_dir), f"sweep-{sweep}-proxy", options, extra)
    executor.update_parameters(cpus_per_task=1)
    try:
        job = executor.submit(Proxy(database=database, sweep_dir=sweep_dir))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
        raise SlurmError(f"sbatch refused the storage proxy: {_said(exc)}") from None
    return str(job.job_id)


def submit(*, sweep: str, sweep_dir: Path, command: list[str], options: SlurmOptions, cpus_per_task: int | None,
           env: dict[str, str], proxy_job: str | None = None) -> Submission:
    """Submit `options.workers` workers running `command` as one job array (with a proxy job: to
    start after it, reaching the storage through it); returns at once."""
    folder = slurm_dir(sweep_dir)
    extra = dict(options.extra)
    if proxy_job:
        extra["dependency"] = ",".join(d for d in (f"after:{proxy_job}", extra.get("dependency")) if d)
    executor = _executor(folder, f"sweep-{sweep}", options, extra)
    if options.gpus_per_task:
        executor.update_parameters(gpus_per_task=options.gpus_per_task)
    if cpus_per_task and "cpus-per-task" not in options.extra:
        executor.update_parameters(cpus_per_task=cpus_per_task)
    worker = Worker(command=command, sweep_dir=sweep_dir, env=env, proxy_job=proxy_job)
    try:
        jobs = executor.map_array(worker, list(range(options.workers)))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as exc:
        if proxy_job:  # no workers: their proxy goes too
            subprocess.run(["scancel", proxy_job], capture_output=True, check=False, timeout=60)
        raise SlurmError(f"sbatch refused the workers: {_said(exc)}") from None
    job_ids = [job.job_id for job in jobs]
    array_id = job_ids[0].split("_")[0]
    record = {"array_id": array_id, "job_ids": job_ids, "workers": options.workers, "submitted": time.time(),
              "command": command, "options": asdict(options), "cancelled": None, "proxy_job": proxy_job}
    with workers_file(folder) as arrays:
        arrays.append(record)
    return Submission(array_id=array_id, job_ids=job_ids, folder=folder)


def launch(name: str, sweep_file: Path, args: list[str], *, workers: Workers, request: SlurmRequest) -> list[str]:
    """Check the options and paths, submit the workers (each runs `sweep ARGS …` with absolute
    paths); returns the lines that say what was submitted and how to follow it. Raises ConfigError
    for bad options or paths, SlurmError when sbatch refuses."""
    if workers.gpus is not None:
        raise ConfigError("--gpus: not with --slurm: SLURM chooses each worker's GPUs (--slurm-gpus-per-task)")
    opts = resolve_options(sweep_file, partition=request.partition, gpus_per_task=request.gpus_per_task,
                           time=request.time, workers=request.workers, extra=request.extra, proxy=request.proxy)
    if opts.proxy:  # before the storage is reached: a journal or grpc:// storage is refused as it is
        check_proxy("--slurm-proxy" if request.proxy else f"{sweep_file}: slurm.proxy: true",
                    workers.storage or default_storage(workers.runs_dir.expanduser().absolute()))
    runs, url = check_reachable(workers.runs_dir, workers.storage)
    lanes = None if opts.gpus_per_task else (workers.parallel or 1)
    command = [sys.executable, "-m", "sweeper.cli", *args, "--runs-dir", str(runs), "--storage", url,
               "--retries", str(workers.retries), "--jobs-per-gpu", str(workers.jobs_per_gpu), "--no-live",
               "--warm-start" if workers.warm_start else "--no-warm-start"]
    if lanes is not None:
        command += ["--parallel", str(lanes)]
    if workers.cache_dir is not None:
        command += ["--cache-dir", str(workers.cache_dir.absolute())]
    slots = lanes or opts.gpus_per_task * workers.jobs_per_gpu
    env = {"SWEEP_SLURM_SLOTS": str(slots), **({"CUDA_VISIBLE_DEVICES": ""} if lanes is not None else {})}
    proxy_job = submit_proxy(sweep=name, sweep_dir=runs / name, database=url, options=opts) if opts.proxy else None
    submission = submit(sweep=name, sweep_dir=runs / name, command=command, options=opts,
                        cpus_per_task=lanes or slots * CPUS_PER_GPU_JOB, env=env, proxy_job=proxy_job)
    where = f"{opts.gpus_per_task} GPU(s)" if opts.gpus_per_task else f"{lanes} CPU lane(s)"
    lines = [f"{name}: submitted {opts.workers} worker(s) as SLURM job array {submission.array_id} "
             f"({where} each, time limit {opts.time_min} min{', partition ' + opts.partition if opts.partition else ''})"]
    if proxy_job:
        lines.append(f"{name}: and its storage proxy in front of {safe_url(url)} as SLURM job {proxy_job}; the workers "
                     f"start after it, reach it at the address in {proxy_address_file(submission.folder, proxy_job)} "
                     "and it stops when they are done")
    return [*lines, follow_hint(submission, name, runs)]


def _said(exc: BaseException) -> str:
    text = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return " ".join(text.split())[-500:]


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
    """Every submitted worker of a sweep, and its storage proxy, with its state: squeue while SLURM
    knows it, sacct where accounting is on, else the job's own record."""
    folder = slurm_dir(sweep_dir)
    arrays = read_arrays(folder)
    if not arrays:
        return []
    ids = [a["array_id"] for a in arrays] + [a["proxy_job"] for a in arrays if a.get("proxy_job")]
    queued = _squeue(ids) if shutil.which("squeue") else {}
    accounted = _sacct(ids) if shutil.which("sacct") else {}
    rows = []
    for array in arrays:
        tasks = [(task, folder / f"worker-{task}.json") for task in array["job_ids"]]
        if proxy := array.get("proxy_job"):
            tasks.append((proxy, proxy_record_file(folder, proxy)))
        for task, path in tasks:
            row = _row(task, read_record(path) or {}, queued, accounted, bool(array.get("cancelled")))
            if task == proxy:
                listening = read_address(proxy_address_file(folder, proxy))
                row = replace(row, task=f"{task} (proxy)", where=f"{row.where} {listening or ''}".strip())
            rows.append(row)
    return rows


def _row(task: str, record: dict[str, Any], queued: dict[str, tuple[str, str]], accounted: dict[str, str],
         cancelled: bool) -> WorkerRow:
    starts, code = int(record.get("starts") or 0), record.get("exit_code")
    if task in queued:
        state, where = queued[task]
        return WorkerRow(task, state, "squeue", where, starts, code)
    if task in accounted:
        return WorkerRow(task, accounted[task], "sacct", record.get("host", ""), starts, code)
    if record:
        return WorkerRow(task, str(record.get("state")), "record", record.get("host", ""), starts, code)
    return WorkerRow(task, "cancelled" if cancelled else "unknown", "none", "not in squeue; never started", starts, code)


def cancel(sweep_dir: Path) -> list[str]:
    """Mark every array of the sweep cancelled (so its workers and proxy do not requeue themselves),
    then scancel them and their proxies. Returns the job ids. Raises SlurmError when there is nothing to cancel or
    scancel fails."""
    folder = slurm_dir(sweep_dir)
    if not read_arrays(folder):
        raise SlurmError(f"no SLURM workers were submitted for this sweep ({folder / 'workers.json'} is absent)")
    with workers_file(folder) as arrays:
        for array in arrays:
            array["cancelled"] = array.get("cancelled") or time.time()
        ids = [a["array_id"] for a in arrays] + [a["proxy_job"] for a in arrays if a.get("proxy_job")]
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
