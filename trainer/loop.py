"""The training core: one job configuration in; checkpoints, events and `result.json` out.

Reads top to bottom: set up, loop over epochs (train, validate, checkpoint), test the best
checkpoint, write the result. A job directory is its own state: started again, a finished
job returns its stored result and an interrupted one resumes from its last epoch.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import resource
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.config import JobConfig
from trainer.data import Split, eval_batches, iterate, prepare, train_batches
from trainer.io import write_json
from trainer.jobdir import FINISHED  # noqa: F401 - re-exported
from trainer.metrics import accuracy, expected_calibration_error, majority_fraction
from trainer.model import Classifier, check_encoder, load_encoder, save_model_files
from trainer.tracking import Tracker

log = logging.getLogger(__name__)

LOG_EVERY = 10  # optimizer steps between `step` events (one host sync each)
CHANCE_MARGIN = 0.02  # "collapsed": validation accuracy within 2 points of the majority class
# "diverged": a non-finite loss, or a logged mean loss this many times the untrained loss
# ln(classes) (a run with lr 1e4 can sit at a finite 1e9 without ever producing a NaN).
DIVERGED_FACTOR = 100.0


def resolve_device_and_dtype(precision: str) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "auto":
        return device, torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def make_optimizer(cfg: JobConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    # Biases and normalisation weights are not decayed (as in the HF Trainer and BERT's recipe).
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # The fused kernels exist for CUDA and the CPU; on a CPU they take an optimizer step for
    # MiniLM from 78 ms to 10 ms (docs/benchmarks.md).
    return cls(groups, lr=cfg.lr, fused=device.type in ("cuda", "cpu"))


def make_scheduler(cfg: JobConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = cfg.scheduler
    if name == "constant" and cfg.warmup_ratio > 0:
        name = "constant_with_warmup"
    warmup = int(cfg.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


@torch.inference_mode()
def evaluate(
    model: Classifier, split: Split, *, batch_size: int, pad_id: int, device: torch.device, autocast: Any
) -> tuple[float, float, np.ndarray]:
    """Loss, accuracy and per-row class probabilities (in the split's row order). The
    probabilities stay on the device until the end: one copy back, no sync per batch."""
    model.eval()
    losses = torch.zeros((), device=device)
    batches = eval_batches(split, batch_size)
    outputs = []
    for batch in iterate(split, batches, pad_id, pin=device.type == "cuda"):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast():
            logits = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids")).float()
        losses += F.cross_entropy(logits, batch["labels"], reduction="sum")
        outputs.append(logits.softmax(-1))
    probs = np.zeros((len(split), model.head.out_features), dtype=np.float32)
    if batches:
        probs[np.concatenate(batches)] = torch.cat(outputs).cpu().numpy()
    labels = np.asarray(split.labels)
    return losses.item() / len(split), accuracy(probs, labels), probs


def _finished_result(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("status") in FINISHED else None


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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_job(cfg: JobConfig, out_dir: Path, *, cache_dir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or resume, or just report) one job in `out_dir`; returns the result dict.

    Raises ConfigError if the directory holds another job, JobBusy if a live process runs it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.lock(out_dir)
    try:
        checkpoint.claim(out_dir, cfg)
        return _run(cfg, out_dir, cache_dir=cache_dir, progress=progress)
    finally:
        checkpoint.unlock(out_dir)


def _run(cfg: JobConfig, out_dir: Path, *, cache_dir: Path | None, progress: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer, set_seed
    from transformers.utils import logging as hf_logging

    stored = _finished_result(out_dir)
    if stored is not None:
        log.info("%s already finished (%s); nothing to do", out_dir, stored["status"])
        return stored

    # -- set up -----------------------------------------------------------------------------
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    set_seed(cfg.seed)
    device, dtype = resolve_device_and_dtype(cfg.precision)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    data = prepare(cfg.data, tokenizer, cfg.max_len, cache_dir=cache_dir)  # the data's errors before the model loads
    encoder = load_encoder(cfg.model_path)
    check_encoder(cfg, encoder, tokenizer)
    model = Classifier(encoder, num_labels=data.num_labels, pooling=cfg.pooling, dropout=cfg.dropout).to(device)
    optimizer = make_optimizer(cfg, model, device)
    batches_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    use_autocast = dtype != torch.float32

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype) if use_autocast else nullcontext()

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eval_batch = max(64, 2 * cfg.batch_size)
    loss_limit = DIVERGED_FACTOR * math.log(max(data.num_labels, 2))
    majority = majority_fraction(np.asarray(data.val.labels))
    save_model_files(out_dir / "model", model, tokenizer, data.label_names)

    state = checkpoint.load_state(out_dir, model, optimizer, scheduler, scaler)
    resumed = state is not None
    state = state or {"epoch": 0, "history": [], "best_val_acc": -1.0, "best_epoch": 0, "global_step": 0,
                      "train_seconds": 0.0, "train_samples": 0, "train_tokens": 0, "sessions_seconds": 0.0}
    tracker = Tracker(out_dir, job_id=cfg.job_id(), config=cfg.to_dict())
    tracker.event("start", job_id=cfg.job_id(), resumed_from_epoch=state["epoch"], device=str(device),
                  train_rows=len(data.train), val_rows=len(data.val), test_rows=len(data.test),
                  cache_hit=data.cache_hit)
    log.info("job %s on %s (%s): %d train / %d val / %d test rows, %s", cfg.job_id(), device, dtype, len(data.train),
             len(data.val), len(data.test), f"resuming after epoch {state['epoch']}" if resumed else "new")

    # -- train ------------------------------------------------------------------------------
    status = "completed"
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            model.train()
            batches = train_batches(data.train, cfg.batch_size, seed=cfg.seed, epoch=epoch)
            t0 = time.perf_counter()
            epoch_loss = torch.zeros((), device=device)
            window_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            window_n = 0
            seen = 0
            bar = _progress(progress, epoch, cfg.epochs, len(batches))
            for i, batch in enumerate(iterate(data.train, batches, pad_id, pin=device.type == "cuda")):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                group_start = (i // cfg.grad_accum) * cfg.grad_accum
                group_size = min(cfg.grad_accum, len(batches) - group_start)
                with autocast():
                    logits = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"))
                loss = F.cross_entropy(logits.float(), batch["labels"])
                scaler.scale(loss / group_size).backward()
                detached = loss.detach()
                epoch_loss += detached * len(batch["labels"])
                window_loss += detached
                window_n += 1
                correct += (logits.argmax(-1) == batch["labels"]).sum()
                seen += len(batch["labels"])
                if i + 1 == group_start + group_size:  # end of an accumulation group: step
                    if cfg.clip > 0:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state["global_step"] += 1
                    if state["global_step"] % LOG_EVERY == 0 or i + 1 == len(batches):
                        mean_loss = window_loss.item() / window_n  # the one host sync per window
                        if not mean_loss <= loss_limit:  # also true for NaN
                            status = "diverged"
                            break
                        tracker.step(step=state["global_step"], epoch=epoch - 1 + (i + 1) / len(batches),
                                     loss=mean_loss, lr=scheduler.get_last_lr()[0])
                        window_loss.zero_()
                        window_n = 0
                if bar is not None:
                    bar.advance()
            if bar is not None:
                bar.close()
            if status == "diverged":
                log.error("epoch %d: the training loss is not finite or exploded; stopping (status diverged)", epoch)
                tracker.event("warning", kind="diverged", epoch=epoch, step=state["global_step"])
                break
            state["train_tokens"] += int(data.train.lengths.sum())  # real tokens, padding excluded
            seconds = time.perf_counter() - t0
            state["train_seconds"] += seconds
            state["train_samples"] += seen

            # -- validate, checkpoint ---------------------------------------------------------
            val_loss, val_acc, _ = evaluate(model, data.val, batch_size=eval_batch, pad_id=pad_id,
                                            device=device, autocast=autocast)
            row = {"epoch": epoch, "train_loss": epoch_loss.item() / seen, "train_acc": correct.item() / seen,
                   "val_loss": val_loss, "val_acc": val_acc, "seconds": round(seconds, 3)}
            state["history"].append(row)
            log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs", epoch, cfg.epochs,
                     row["train_loss"], row["train_acc"], val_loss, val_acc, seconds)
            if val_acc > state["best_val_acc"]:
                state["best_val_acc"], state["best_epoch"] = val_acc, epoch
                checkpoint.save_best(out_dir, model)
            if epoch == 1 and val_acc <= majority + CHANCE_MARGIN:
                log.warning("epoch 1: validation accuracy %.4f is at chance (majority class %.4f)", val_acc, majority)
                tracker.event("warning", kind="at_chance", epoch=epoch, val_acc=val_acc, majority=majority)
            state["epoch"] = epoch
            state["sessions_seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint.save_state(out_dir, model, optimizer, scheduler, scaler, state)
            tracker.epoch(row)
    except BaseException:
        tracker.abort()
        raise

    # -- test the best checkpoint -----------------------------------------------------------
    history = state["history"]
    result: dict[str, Any] = {
        "status": status,
        "job_id": cfg.job_id(),
        "config": cfg.to_dict(),
        "epochs": history,
        "best_epoch": state["best_epoch"] or None,
        "val_acc": state["best_val_acc"] if state["best_epoch"] else None,
        "test_acc": None,
        "test_loss": None,
        "test_ece": None,
    }
    if status != "diverged" and state["best_epoch"]:
        checkpoint.load_best(out_dir, model, device)
        test_loss, test_acc, probs = evaluate(model, data.test, batch_size=eval_batch, pad_id=pad_id,
                                              device=device, autocast=autocast)
        labels = np.asarray(data.test.labels)
        checkpoint.save_predictions(out_dir, rows=np.asarray(data.test.rows), labels=labels, probs=probs)
        result.update(test_acc=test_acc, test_loss=test_loss, test_ece=expected_calibration_error(probs, labels))
        if history[0]["val_acc"] <= majority + CHANCE_MARGIN and history[-1]["val_acc"] <= majority + CHANCE_MARGIN:
            result["status"] = "collapsed"
            log.error("validation accuracy stayed at chance (majority class %.4f): status collapsed", majority)
    state["sessions_seconds"] += time.perf_counter() - started
    train_s = state["train_seconds"]
    result.update(
        majority_class_acc=majority,
        num_labels=data.num_labels,
        rows={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        effective_batch_size=cfg.batch_size * cfg.grad_accum,
        global_steps=state["global_step"],
        runtime_s=round(state["sessions_seconds"], 3),
        train_seconds=round(state["train_seconds"], 3),
        train_samples_per_s=state["train_samples"] / train_s if train_s else None,
        train_tokens_per_s=state["train_tokens"] / train_s if train_s else None,
        peak_memory_mb=round(_peak_memory_mb(device), 1),
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        precision=str(dtype).removeprefix("torch."),
        resumed=resumed,
        tokenization_cache_hit=data.cache_hit,
        versions=_versions(),
    )
    result["data"] = data.summary()
    write_json(out_dir / "result.json", result)
    # The result is final: the resume state (weights + optimizer, ~3x the model) is not needed.
    (out_dir / checkpoint.STATE_FILE).unlink(missing_ok=True)
    tracker.finish(result)
    return result


class _Bar:
    def __init__(self, epoch: int, epochs: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            f"epoch {epoch}/{epochs}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total)
        self.progress.start()

    def advance(self) -> None:
        self.progress.advance(self.task)

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, epoch: int, epochs: int, total: int) -> _Bar | None:
    return _Bar(epoch, epochs, total) if enabled else None
