"""One epoch: a pass over the training rows, then validation, the best weights, patience, the
epoch's report and its checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.data import MicroBatch, iterate, step_batches
from trainer.jobdir import better
from trainer.loop import collapse, devices
from trainer.loop.evaluation import evaluate
from trainer.loop.setup import Setup
from trainer.loop.state import LoopState, Stopwatch
from trainer.metrics import top_share
from trainer.tracking import Tracker

log = logging.getLogger(__name__)

LOG_EVERY = 10  # optimizer steps between `step` events (one host sync each)


@dataclass
class EpochTraining:
    loss: float
    acc: float
    seconds: float


class _Totals:
    """An epoch's running sums, kept on the device: read on the host only when reported."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)  # over rows
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0
        self.window_loss = torch.zeros((), device=device)  # batch means since the last `step` event
        self.window_n = 0.0  # batches in the window


def train_epoch(s: Setup, state: LoopState, epoch: int, tracker: Tracker, progress: bool) -> EpochTraining | None:
    """One pass over the training rows, an optimizer step per `grad_accum` batches (each run in
    micro-batches: `step_batches`); None when the loss diverged.

    No host sync in a step but the one every LOG_EVERY steps (`window_loss.item()`): the CPU
    queues work ahead of the GPU. A batch without padding passes no attention mask (whether it
    has padding is known on the host, from the rows' lengths), since the encoders' masking code
    checks a mask on the device (`mask.all()`, a sync) on every forward."""
    cfg = s.cfg
    s.model.train()
    micro = step_batches(s.data.train, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                         micro_batch=cfg.micro_batch, seed=cfg.seed, epoch=epoch)
    lengths = s.data.train.lengths
    t0 = time.perf_counter()
    totals = _Totals(s.device)
    bar = _Bar(epoch, cfg.epochs, len(micro)) if progress else None
    try:
        for i, batch in enumerate(iterate(s.data.train, [m.rows for m in micro], s.pad_id,
                                          pin=s.device.type == "cuda")):
            part = micro[i]
            padded = bool(lengths[part.rows].min() != lengths[part.rows].max())  # numpy, on the host
            _forward_backward(s, batch, part, padded, totals)
            if part.last:  # end of an optimizer step's rows: step
                _optimizer_step(s)
                state.global_step += 1
                if state.global_step % LOG_EVERY == 0 or i + 1 == len(micro):
                    mean_loss = totals.window_loss.item() / totals.window_n  # the one host sync per window
                    if not mean_loss <= s.loss_limit:  # also true for NaN
                        return None
                    tracker.step(step=state.global_step, epoch=epoch - 1 + (i + 1) / len(micro),
                                 loss=mean_loss, lr=s.scheduler.get_last_lr()[0])
                    totals.window_loss.zero_()
                    totals.window_n = 0.0
            if bar is not None:
                bar.advance()
    finally:
        if bar is not None:
            bar.close()
    state.train_tokens += int(s.data.train.lengths.sum())
    seconds = time.perf_counter() - t0
    state.train_seconds += seconds
    state.train_samples += totals.seen
    return EpochTraining(loss=totals.loss.item() / totals.seen, acc=totals.correct.item() / totals.seen,
                         seconds=seconds)


def _forward_backward(s: Setup, batch: dict[str, torch.Tensor], part: MicroBatch, padded: bool,
                      totals: _Totals) -> None:
    """One micro-batch: its loss, its gradients added to the step's, its sums added to the epoch's."""
    n = len(part.rows)
    batch = {k: v.to(s.device, non_blocking=True) for k, v in batch.items()}
    with s.autocast():
        logits = s.model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"),
                         padded=padded)
    loss = F.cross_entropy(logits.float(), batch["labels"])
    # A micro-batch's mean loss, as its share of its batch's mean, over the step's batches.
    s.scaler.scale(loss * part.share / part.batches).backward()
    detached = loss.detach()
    totals.loss += detached * n
    totals.window_loss += detached * part.share  # a batch's mean loss, whatever its micro-batches
    totals.window_n += part.share  # batches
    totals.correct += (logits.argmax(-1) == batch["labels"]).sum()
    totals.seen += n


def _optimizer_step(s: Setup) -> None:
    if s.cfg.clip > 0:
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.cfg.clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)


def _improved(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return True
    return better(value, best, metric)


def end_epoch(s: Setup, state: LoopState, epoch: int, train: EpochTraining, tracker: Tracker,
              clock: Stopwatch) -> None:
    """Validate, keep the best weights, count patience, report the epoch, then checkpoint.

    The `epoch` event comes before the checkpoint: a kill between them repeats the epoch, and
    readers drop the first report of it (`jobdir.epoch_rows`)."""
    cfg = s.cfg
    val = evaluate(s.model, s.data.val, batch_size=s.eval_batch, pad_id=s.pad_id, device=s.device,
                   autocast=s.autocast)
    row = {"epoch": epoch, "train_loss": train.loss, "train_acc": train.acc, "val_loss": val.loss,
           "val_acc": val.acc, "val_macro_f1": val.macro_f1, "val_top_share": top_share(val.probs),
           "seconds": round(train.seconds, 3)}
    state.history.append(row)
    log.info("epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f | %.1fs", epoch,
             cfg.epochs, train.loss, train.acc, val.loss, val.acc, val.macro_f1, train.seconds)
    if _improved(row[cfg.metric], state.best_metric, cfg.metric):
        state.best_metric, state.best_epoch, state.since_best = row[cfg.metric], epoch, 0
        checkpoint.save_best(s.out_dir, s.model)
    else:
        state.since_best += 1
    if cfg.patience is not None and state.since_best >= cfg.patience and epoch < cfg.epochs:
        state.stopped_early = {"epoch": epoch, "patience": cfg.patience}
        log.info("epoch %d: no better %s for %d epochs (best: epoch %d); stopping early", epoch, cfg.metric,
                 cfg.patience, state.best_epoch)
    if epoch == 1 and (why := collapse.row_reason(s, row)):
        log.warning("epoch 1: collapsed onto the majority class: %s", why)
        tracker.event("warning", kind="at_chance", epoch=epoch, val_acc=val.acc, majority=s.majority,
                      val_macro_f1=val.macro_f1, val_top_share=row["val_top_share"], reason=why)
    state.epoch = epoch
    state.peak_memory_mb = max(state.peak_memory_mb, devices.peak_memory_mb(s.device))
    state.sessions_seconds += clock.lap()
    tracker.epoch(row)
    checkpoint.save_state(s.out_dir, s.model, s.optimizer, s.scheduler, s.scaler, dataclasses.asdict(state))


class _Bar:
    """An epoch's progress bar (on a terminal)."""

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
