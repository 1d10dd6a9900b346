"""The job-directory contract, torch-free: what a job directory holds, the statuses and exit
codes a job ends with, and the readers of its events and result.

The training core writes these files; the sweeper (scheduling, status) and the reporter read
them. Nothing here imports torch, so `sweep status`, `sweep report` and a job lookup stay cheap.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

# -- files --------------------------------------------------------------------------------------
CONFIG_FILE = "config.json"  # the resolved configuration; a directory belongs to one job
JOB_FILE = "job.json"  # what the sweeper started the job with
RESULT_FILE = "result.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
JOB_LOG_FILE = "job.log"  # the job process's output, as the sweeper captured it
STATE_FILE = "last.pt"  # the last finished epoch's resumable state
WEIGHTS_FILE = "best.safetensors"
MODEL_DIR = "model"
CLASSIFIER_FILE = "classifier.json"  # inside MODEL_DIR
PREDICTIONS_FILE = "test_predictions.npz"
LOCK_FILE = ".lock"

# -- statuses -----------------------------------------------------------------------------------
# A job's own, in result.json's `status`:
COMPLETED = "completed"
COLLAPSED = "collapsed"  # ran to its end, but its validation predictions collapsed onto one class
DIVERGED = "diverged"  # stopped when the training loss was not finite or exploded; no test
FAILED = "failed"  # an exception: `error` and `traceback` in result.json
# What the sweeper records of a job besides those (its storage, `sweep status`, the report):
WAITING = "waiting"
RUNNING = "running"
PRUNED = "pruned"  # a study's trial its pruner stopped
INTERRUPTED = "interrupted"  # a trial stopped by a signal: its job runs again (resumes)
SURPLUS = "surplus"  # a trial asked past a study's total of trials: ended at once, never run
LOST = "lost"  # a trial whose worker went away: its job is queued again

FINISHED = (COMPLETED, COLLAPSED, DIVERGED)  # a final result: never run again
SCORED = (COMPLETED, COLLAPSED)  # a final result with a test score
PENDING = (WAITING, RUNNING)  # not ended yet
STATUSES = (COMPLETED, COLLAPSED, DIVERGED, FAILED, PRUNED, RUNNING, WAITING)  # in the order a report lists them

# -- exit codes ---------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_FAILED = 1  # an exception: `error` and `traceback` in result.json
EXIT_CONFIG = 2  # bad input, found before any work: never retried
EXIT_BUSY = 75  # EX_TEMPFAIL: another live process runs this job directory
EXIT_INTERRUPTED = 130  # SIGINT: resumable from the last finished epoch
EXIT_TERMINATED = 143  # SIGTERM (preemption, a time limit): resumable likewise

# What a job's failure says when the device ran out of memory: torch's OutOfMemoryError, and the
# allocation failures of cuBLAS and cuDNN (raised as a plain RuntimeError when a library could not
# get its workspace). A process the kernel killed (SIGKILL) is not one: that is the host's memory,
# or a lost node, and a smaller micro-batch does not help it.
OOM_PATTERN = re.compile(r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED|"
                         r"CUDNN_STATUS_ALLOC_FAILED|CUDNN_STATUS_NOT_ALLOCATED", re.IGNORECASE)


def out_of_memory(text: str) -> bool:
    """Whether an error message or log says the device ran out of memory."""
    return OOM_PATTERN.search(text) is not None


# -- metrics ------------------------------------------------------------------------------------
# The selection metrics a job may keep its best checkpoint by, and which way is better.
METRICS = {"val_acc": "maximize", "val_macro_f1": "maximize", "val_loss": "minimize"}

# What of result.json is stored with a job's trial (a report needs only the storage).
RESULT_KEYS = ("status", "best_epoch", "val_acc", "val_macro_f1", "val_loss", "test_acc", "test_macro_f1",
               "test_loss", "test_ece", "runtime_s", "train_samples_per_s", "train_tokens_per_s", "peak_memory_mb",
               "effective_batch_size", "epochs", "metric", "label_names", "stopped_early", "warnings", "micro_batch",
               "attempt", "retry_reason")

# Fewer validation or test rows than this and the report's statistics (its intervals, ECE over 15
# bins, the collapse margin) rest on too little: the job warns at its start, the report beside
# the figures. At 100 rows one standard error of an accuracy is up to 0.05.
SMALL_EVAL_ROWS = 100


def metric_value(result: dict[str, Any], metric: str) -> float | None:
    """The selection metric of a result (None when it has none)."""
    value = result.get(metric)
    return None if value is None else float(value)


def better(a: float, b: float, metric: str) -> bool:
    """True when `a` is strictly better than `b` under `metric`."""
    return a < b if METRICS.get(metric, "maximize") == "minimize" else a > b


# -- readers ------------------------------------------------------------------------------------


def read_event_stream(path: Path) -> list[dict[str, Any]]:
    """A job's events.jsonl, parsed; a line still being written (or torn) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class EventTail:
    """A job's events.jsonl read as it grows: each `read` parses only what was appended since the
    last one (from the byte offset it reached), so a poll costs what is new, not the whole file
    (a long GPU job writes tens of thousands of step events). A last line still being written is
    kept for the next read; a file that shrank or was replaced is read again from its start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None
        self.partial = b""

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """The events appended since the last read, and whether the file was read from its start
        again (what was read before is then void)."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                restarted = st.st_ino != self.inode or st.st_size < self.offset
                if restarted:
                    self.offset, self.partial, self.inode = 0, b"", st.st_ino
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return [], False
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:  # torn by a kill (the next append ended it), or not UTF-8
                continue
            if isinstance(event, dict):
                events.append(event)
        return events, restarted


def epoch_rows(path: Path) -> list[dict[str, Any]]:
    """The job's finished epochs, in order: a resumed run's `start` drops any epoch rows after
    the one it resumed from (a kill between the event and the checkpoint), so none is doubled."""
    rows: list[dict[str, Any]] = []
    for event in read_event_stream(path):
        if event.get("event") == "epoch":
            rows.append(event)
        elif event.get("event") == "start" and event.get("resumed_from_epoch", 0) < len(rows):
            rows = rows[: event["resumed_from_epoch"]]
    return rows


def progress(path: Path) -> tuple[float, float | None]:
    """How far a job is (in epochs, fractional within one) and its last validation accuracy."""
    epoch: float = 0
    val_acc = None
    for event in read_event_stream(path):
        if event.get("event") == "epoch":
            epoch, val_acc = event["epoch"], event.get("val_acc")
        elif event.get("event") == "step":
            epoch = max(epoch, event.get("epoch", 0))
    return epoch, val_acc


def read_result(path: Path) -> dict[str, Any] | None:
    """A result.json (or any JSON object file), or None when it is missing or unreadable."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def finished_result(job_dir: Path) -> dict[str, Any] | None:
    """The job's final result, or None when it has none (not finished, failed, or unreadable)."""
    result = read_result(job_dir / RESULT_FILE)
    return result if result is not None and result.get("status") in FINISHED else None


def log_tail(path: Path, lines: int = 30, *, offset: int = 0) -> list[str]:
    """The last `lines` lines of a log, from byte `offset` on (one attempt's part of an appended log)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines else text.splitlines()


def set_aside(path: Path, why: str) -> Path | None:
    """Move a damaged file out of the way (`NAME.corrupt-<time>`), keeping it for a look; returns
    where it went (None when it was already gone)."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        n += 1
    try:
        path.rename(target)
    except FileNotFoundError:
        return None
    import logging

    logging.getLogger(__name__).warning("%s: %s; set aside as %s", path, why, target.name)
    return target
