"""What a job says of itself: the warnings at its start, and its `result.json`."""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import numpy as np
import torch

from trainer.config import JobConfig
from trainer.jobdir import DIVERGED, SMALL_EVAL_ROWS
from trainer.loop import collapse, devices
from trainer.loop.evaluation import TEST_KEYS
from trainer.loop.setup import Setup
from trainer.loop.state import LoopState


def start_warnings(cfg: JobConfig, *, train_rows: int, val_rows: int, test_rows: int) -> list[dict[str, Any]]:
    """What in the configuration cannot work as written on these rows, said at the job's start
    (log, `warning` events, result.json's `warnings`): the job still runs as configured."""
    steps = math.ceil(math.ceil(train_rows / cfg.micro_batch) / cfg.accumulation) * cfg.epochs
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * steps)
    out = []
    if warmup >= steps:
        out.append({"kind": "warmup_longer_than_run", "warmup_steps": warmup, "total_steps": steps,
                    "message": f"warmup of {warmup} optimizer steps is not shorter than the run's {steps}: the "
                               f"learning rate reaches at most {steps / warmup:.1%} of lr {cfg.lr:g}; lower "
                               "warmup_steps (or use warmup_ratio)"})
    if cfg.effective_batch > train_rows:
        out.append({"kind": "batch_larger_than_data", "effective_batch": cfg.effective_batch,
                    "train_rows": train_rows,
                    "message": f"batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} = {cfg.effective_batch} "
                               f"rows per optimizer step, but there are {train_rows} training rows: each step sees "
                               f"at most {train_rows} (effective_batch_size is recorded as {train_rows})"})
    small = min(val_rows, test_rows)
    if small < SMALL_EVAL_ROWS:
        out.append({"kind": "small_eval_set", "val_rows": val_rows, "test_rows": test_rows,
                    "message": f"{val_rows} validation / {test_rows} test rows: one standard error of an accuracy "
                               f"on {small} rows is up to {0.5 / math.sqrt(max(small, 1)):.3f}; fewer than {SMALL_EVAL_ROWS} "
                               "rows are too few for the report's statistics (intervals, ECE, the collapse margin)"})
    return out


def build_result(s: Setup, state: LoopState, *, status: str, test: dict[str, Any] | None,
                 resumed: bool, warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """result.json: the scores, then what the job ran on (`_data`), then how it ran (`_run`)."""
    cfg = s.cfg
    best = state.history[state.best_epoch - 1] if state.best_epoch else {}
    return {
        "status": status,
        "job_id": cfg.job_id(),
        "config": cfg.to_dict(),
        "epochs": state.history,
        "best_epoch": state.best_epoch or None,
        "val_acc": best.get("val_acc"),
        **(test or dict.fromkeys(TEST_KEYS)),  # a diverged job has no test: every key, null
        "metric": cfg.metric,  # what chose best_epoch
        "val_macro_f1": best.get("val_macro_f1"),
        "val_loss": best.get("val_loss"),
        "stopped_early": state.stopped_early,
        **_data(s, state, status),
        **_run(s, state, resumed),
        "warnings": warnings,  # settings that could not work as written (`start_warnings`)
    }


def _data(s: Setup, state: LoopState, status: str) -> dict[str, Any]:
    data = s.data
    return {
        "majority_class_acc": s.majority,
        "collapse": collapse.judge(s, state) if status != DIVERGED else None,
        "num_labels": data.num_labels,
        "label_names": s.label_names,
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "tokenization_cache_hit": data.cache_hit,
        "data": data.summary(),
    }


def _run(s: Setup, state: LoopState, resumed: bool) -> dict[str, Any]:
    cfg, device = s.cfg, s.device
    train_s = state.train_seconds
    return {
        "effective_batch_size": min(cfg.effective_batch, len(s.data.train)),  # what an optimizer step saw at most
        # how this session ran it: an out-of-memory retry trains in smaller micro-batches (the same
        # rows in the same steps: data.step_batches); the attempt and its cause come from the sweeper
        "micro_batch": cfg.micro_batch,
        "accumulation_steps": cfg.accumulation,
        "attempt": int(os.environ.get("SWEEP_ATTEMPT") or 1),
        "retry_reason": os.environ.get("SWEEP_RETRY_REASON") or None,
        "global_steps": state.global_step,
        "runtime_s": round(state.sessions_seconds, 3),
        "train_seconds": round(state.train_seconds, 3),
        "train_samples_per_s": state.train_samples / train_s if train_s else None,
        "train_tokens_per_s": state.train_tokens / train_s if train_s else None,
        "peak_memory_mb": round(max(state.peak_memory_mb, devices.peak_memory_mb(device)), 1),  # every session's
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "precision": str(s.dtype).removeprefix("torch."),  # the compute dtype used
        "precision_reason": s.precision_reason,
        "tf32": False if device.type == "cuda" else None,  # see devices.set_tf32
        "resumed": resumed,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import datasets
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "numpy": np.__version__,
    }
