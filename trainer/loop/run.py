"""One job, top to bottom: set up, loop over epochs (train one epoch, validate, keep the best,
checkpoint), test the best checkpoint, build and write the result."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trainer import checkpoint
from trainer.config import JobConfig
from trainer.io import remove_temporaries, write_json
from trainer.jobdir import DIVERGED, FINISHED, RESULT_FILE, STATE_FILE, set_aside
from trainer.loop import collapse
from trainer.loop.epoch import end_epoch, train_epoch
from trainer.loop.evaluation import score_best
from trainer.loop.result import build_result, start_warnings
from trainer.loop.setup import Setup, resume, set_up
from trainer.loop.state import LoopState, Stopwatch
from trainer.tracking import Tracker

log = logging.getLogger(__name__)


def run_job(cfg: JobConfig, out_dir: Path, *, cache_dir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or resume, or just report) one job in `out_dir`; returns the result dict.

    Raises ConfigError if the directory holds another job, JobBusy if a live process runs it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.lock(out_dir)
    try:
        for path in remove_temporaries(out_dir):  # no one else writes here while the lock is held
            log.warning("%s: removed (left by a write that was interrupted)", path)
        checkpoint.claim(out_dir, cfg)
        try:
            return _run(cfg, out_dir, cache_dir=cache_dir, progress=progress)
        except checkpoint.SetAside as exc:
            log.warning("%s; starting the job again from what is left", exc)
            return _run(cfg, out_dir, cache_dir=cache_dir, progress=progress)
    finally:
        checkpoint.unlock(out_dir)


def _run(cfg: JobConfig, out_dir: Path, *, cache_dir: Path | None, progress: bool) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    stored = _finished_result(out_dir)
    if stored is not None:
        log.info("%s already finished (%s); nothing to do", out_dir, stored["status"])
        return stored

    # -- set up
    hf_logging.disable_progress_bar()
    clock = Stopwatch()
    s = set_up(cfg, out_dir, cache_dir)
    restored = resume(s)
    state = restored or LoopState()
    tracker = Tracker(out_dir, job_id=cfg.job_id(), config=cfg.to_dict())
    warnings = _start(s, state, tracker, resumed=restored is not None)

    try:
        # -- train: one epoch at a time, each ending in a checkpoint
        diverged = False
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if state.stopped_early:
                break
            train = train_epoch(s, state, epoch, tracker, progress)
            if train is None:
                log.error("epoch %d: the training loss is not finite or exploded; stopping (status diverged)", epoch)
                tracker.event("warning", kind=DIVERGED, epoch=epoch, step=state.global_step)
                diverged = True
                break
            end_epoch(s, state, epoch, train, tracker, clock)

        # -- test the best checkpoint
        test = score_best(s) if not diverged and state.best_epoch else None

        # -- the result
        status = collapse.status(s, state, diverged=diverged)
        state.sessions_seconds += clock.lap()
        result = build_result(s, state, status=status, test=test, resumed=restored is not None, warnings=warnings)
        write_json(out_dir / RESULT_FILE, result)
    except BaseException:
        tracker.abort()
        raise
    # The result is final: the resume state (weights + optimizer, ~3x the model) is not needed.
    (out_dir / STATE_FILE).unlink(missing_ok=True)
    tracker.finish(result)
    return result


def _start(s: Setup, state: LoopState, tracker: Tracker, *, resumed: bool) -> list[dict[str, Any]]:
    """The `start` event and log line, and the settings that cannot work as written (returned)."""
    cfg, data = s.cfg, s.data
    tracker.event("start", job_id=cfg.job_id(), resumed_from_epoch=state.epoch, device=str(s.device),
                  train_rows=len(data.train), val_rows=len(data.val), test_rows=len(data.test),
                  cache_hit=data.cache_hit)
    log.info("job %s on %s (%s: %s), batch %d%s: %d train / %d val / %d test rows, %s", cfg.job_id(), s.device,
             str(s.dtype).removeprefix("torch."), s.precision_reason, cfg.batch_size,
             f" in micro-batches of {cfg.micro_batch} (x{cfg.accumulation} accumulation)" if cfg.micro_batch_size else "",
             len(data.train), len(data.val), len(data.test),
             f"resuming after epoch {state.epoch}" if resumed else "new")
    warnings = start_warnings(cfg, train_rows=len(data.train), val_rows=len(data.val), test_rows=len(data.test))
    for warning in warnings:
        log.warning("%s", warning["message"])
        tracker.event("warning", **warning)
    return warnings


def _finished_result(out_dir: Path) -> dict[str, Any] | None:
    """The stored final result, if any. An unreadable result.json (torn, garbage) is set aside:
    the job then resumes from what is left, or runs again."""
    path = out_dir / RESULT_FILE
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:  # not JSON, not UTF-8
        set_aside(path, f"not readable as JSON ({exc})")
        return None
    if not isinstance(result, dict) or not isinstance(result.get("status"), str):
        set_aside(path, f"not a job result (a {type(result).__name__} without a status)")
        return None
    return result if result["status"] in FINISHED else None
