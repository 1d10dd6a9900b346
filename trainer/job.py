"""A job's process: one configuration in, an exit code out.

`sweep run` calls `execute` in the foreground; the sweeper starts `python -m trainer.job
JOB_FILE --out DIR` (sweeper/process.py), which is the same call. The exit codes are the
contract of `trainer/jobdir.py`: 0 a final result, 1 a failure (its `result.json` says why),
2 a configuration error (never retried), 75 the directory is run by another live process,
130/143 stopped by SIGINT/SIGTERM at a safe point (the next run resumes after the last
finished epoch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from trainer.config import ConfigError, JobConfig
from trainer.jobdir import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TERMINATED,
    FAILED,
    FINISHED,
    JOB_FILE,
    LOG_FILE,
    RESULT_FILE,
    finished_result,
    out_of_memory,
)
from trainer.jobfile import load_job, trusted
from trainer.preflight import check
from trainer.signals import exit_code, stop_signals

log = logging.getLogger("sweep")
NOISY = ("httpx", "httpcore", "urllib3", "filelock", "datasets", "fsspec")


def setup_logging(log_file: Path, console: logging.Handler | None = None) -> None:
    """The job's log file, and the console (plain stderr unless the caller brings a handler)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if console is None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def execute(cfg: JobConfig, out: Path, *, cache_dir: Path | None = None,
            progress: bool = False) -> tuple[int, dict[str, Any] | None]:
    """Run (resume, or just report) the job in `out`: (exit code, result or None).

    Logging must be set up by the caller (`setup_logging`). SIGTERM stops the job like Ctrl-C.
    Raises ConfigError for bad input found once the model or data is read (exit code 2)."""
    from trainer.checkpoint import JobBusy
    from trainer.loop import run_job

    with stop_signals():
        try:
            result = run_job(cfg, out, cache_dir=cache_dir, progress=progress)
        except JobBusy as exc:
            log.warning("busy: %s", exc)
            return EXIT_BUSY, None
        except ConfigError:
            raise  # bad input: the caller says so (exit 2), no failure result
        except KeyboardInterrupt as exc:
            log.warning("stopped (%s): run the same command again to resume from the last finished epoch",
                        "SIGTERM" if exit_code(exc) == EXIT_TERMINATED else "SIGINT")
            return exit_code(exc), None
        except Exception as exc:
            log.exception("job failed")
            return EXIT_FAILED, _record_failure(cfg, out, exc)
    log.info("job %s: %s (best epoch %s, val_acc %s, test_acc %s)", result.get("job_id"), result["status"],
             result.get("best_epoch"), _number(result.get("val_acc")), _number(result.get("test_acc")))
    return (EXIT_OK if result["status"] in FINISHED else EXIT_FAILED), result


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _record_failure(cfg: JobConfig, out: Path, exc: Exception) -> dict[str, Any] | None:
    """A failure `result.json` (error, traceback), unless a final result is already there. When
    even that cannot be written (a full disk), the log says so and nothing else is touched."""
    from trainer.io import write_json

    if finished_result(out) is not None:
        return None
    error = f"{type(exc).__name__}: {exc}"
    failure = {"status": FAILED, "job_id": cfg.job_id(), "config": cfg.to_dict(), "error": error,
               "out_of_memory": out_of_memory(error), "traceback": traceback.format_exc().splitlines()[-30:]}
    try:
        write_json(out / RESULT_FILE, failure)
    except OSError as write_error:
        log.error("could not write %s either: %s", out / RESULT_FILE, write_error)
    return failure


def read_config(job_file: Path, out: Path, overrides: list[str]) -> JobConfig:
    """The job's configuration. The sweeper's `job.json` in its own directory was built and checked
    in the sweeper: it is taken as it is once its id is the directory's. Any other file (or one
    with overrides) is read and checked here (`load_job`)."""
    if not overrides and job_file.name == JOB_FILE and job_file.parent.resolve() == out.resolve():
        try:
            cfg = trusted(json.loads(job_file.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            cfg = None  # not the sweeper's file after all: checked below, with every problem named
        if cfg is not None and cfg.job_id() == out.name:
            return cfg
    return load_job(job_file, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.job", description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, help="job configuration file (YAML or JSON)")
    parser.add_argument("--out", type=Path, required=True, help="the job directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    parser.add_argument("--cache-dir", type=Path, default=None, help="tokenization cache")
    args = parser.parse_args(argv)
    try:
        cfg = read_config(args.job, args.out, args.overrides)
        check([cfg], strict=True, source=str(args.job))  # the pre-flight (trainer/preflight.py), as `sweep run` runs it
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(args.out / LOG_FILE)
    try:
        code, _ = execute(cfg, args.out, cache_dir=args.cache_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return code


if __name__ == "__main__":
    sys.exit(main())
