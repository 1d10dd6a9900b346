"""The training core: one job configuration in; checkpoints, events and `result.json` out.

Reads top to bottom (`_run`): set up, loop over epochs (train one epoch, validate, keep the
best, checkpoint), test the best checkpoint, build and write the result. A job directory is
its own state: started again, a finished job returns its stored result and an interrupted one
resumes from its last finished epoch (`LoopState`, saved in `last.pt` after every epoch). An
exception or an interrupt (Ctrl-C, SIGTERM turned into one) at any point leaves the last
finished epoch's files whole: every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.config import JobConfig
from trainer.data import Prepared, Split, eval_batches, iterate, prepare, step_batches
from trainer.io import remove_temporaries, write_json
from trainer.jobdir import FINISHED, RESULT_FILE, SMALL_EVAL_ROWS, STATE_FILE, better, set_aside
from trainer.metrics import (
    ChanceLine,
    accuracy,
    chance_line,
    class_report,
    collapse_reason,
    expected_calibration_error,
    macro_f1,
    top_share,
)
from trainer.model import Classifier, check_encoder, load_encoder, save_model_files
from trainer.tracking import Tracker

__all__ = ["FINISHED", "LoopState", "evaluate", "run_job"]  # FINISHED: re-exported

log = logging.getLogger(__name__)

LOG_EVERY = 10  # optimizer steps between `step` events (one host sync each)
# "diverged": a non-finite loss, or a logged mean loss this many times the untrained loss
# ln(classes) (a run with lr 1e4 can sit at a finite 1e9 without ever producing a NaN).
DIVERGED_FACTOR = 100.0


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype  # the compute dtype (autocast); the weights stay fp32
    reason: str  # why: recorded in result.json


def resolve_precision(precision: str) -> Precision:
    """The device and the compute dtype `precision` means here.

    auto: bf16 on a GPU that runs it natively (compute capability 8.0 and later: A100, RTX 30xx,
    L4, H100), fp16 with the GradScaler below that (V100, T4, RTX 20xx: their autocast accepts
    bf16 but emulates it, far slower than fp16), fp32 on the CPU (bf16 trains faster there on CPUs
    with AMX, but `auto` keeps the CPU's results those of fp32, the same on every machine: bf16 is
    asked for by name). An explicit bf16 on a card without native bf16 runs, with a warning.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card, native_bf16 = "", False
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        card = f"compute capability {major}.{minor}"
        native_bf16 = major >= 8
    if precision != "auto":
        reason = f"precision: {precision}"
        if precision == "bf16" and device.type == "cuda" and not native_bf16:
            log.warning("precision bf16 on a GPU of %s: it has no native bf16 (emulated: slower than fp16, which "
                        "precision auto would choose)", card)
            reason += f" (emulated: {card} has no native bf16)"
        return Precision(device, DTYPES[precision], reason)
    if device.type == "cpu":
        return Precision(device, torch.float32, "auto: fp32 on the CPU")
    if native_bf16:
        return Precision(device, torch.bfloat16, f"auto: bf16, native on {card}")
    return Precision(device, torch.float16, f"auto: fp16 with loss scaling ({card} has no native bf16)")


def set_tf32() -> None:
    """fp32 means fp32: matrix products in IEEE fp32, not TF32, on Ampere and later too (torch's
    own default, set here so no library changes it behind the job's back), so an fp32 job gives
    the same numbers on every generation. Speed on those cards is bf16's job (`auto`)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


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
    if name == "constant" and (cfg.warmup_ratio > 0 or cfg.warmup_steps > 0):
        name = "constant_with_warmup"
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def eval_batch_size(cfg: JobConfig) -> int:
    """Rows per evaluation batch: no gradients to keep, so twice the training batch, at least 64;
    an out-of-memory retry's micro-batch shrinks it in proportion (the longest evaluation batch
    would otherwise run out of memory again on every retry)."""
    return cfg.eval_batch_size or max(1, max(64, 2 * cfg.batch_size) * cfg.micro_batch // cfg.batch_size)


@dataclass
class Scores:
    loss: float
    acc: float
    macro_f1: float
    probs: np.ndarray  # per row (in the split's row order) and class


@torch.inference_mode()
def evaluate(
    model: Classifier, split: Split, *, batch_size: int, pad_id: int, device: torch.device, autocast: Any
) -> Scores:
    """Loss, accuracy, macro-F1 and per-row class probabilities. The probabilities stay on the
    device until the end: one copy back, no sync per batch."""
    model.eval()
    losses = torch.zeros((), device=device)
    batches = eval_batches(split, batch_size)
    outputs = []
    lengths = split.lengths
    for rows, batch in zip(batches, iterate(split, batches, pad_id, pin=device.type == "cuda"), strict=True):
        padded = bool(lengths[rows].min() != lengths[rows].max())  # on the host: see _train_epoch
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast():
            logits = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"),
                           padded=padded)
        logits = logits.float()
        losses += F.cross_entropy(logits, batch["labels"], reduction="sum")
        outputs.append(logits.softmax(-1))
    probs = np.zeros((len(split), model.head.out_features), dtype=np.float32)
    if batches:
        probs[np.concatenate(batches)] = torch.cat(outputs).cpu().numpy()
    labels = np.asarray(split.labels)
    return Scores(losses.item() / len(split), accuracy(probs, labels), macro_f1(probs, labels), probs)


# -- what a job carries from epoch to epoch -------------------------------------------------------


@dataclass
class LoopState:
    """What survives a kill: saved with the weights in `last.pt` after every epoch, as plain data."""

    epoch: int = 0  # the last finished epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch
    best_epoch: int = 0  # 0: none yet
    best_metric: float | None = None  # the job's `metric` at best_epoch
    since_best: int = 0  # finished epochs since best_epoch: what `patience` counts
    stopped_early: dict[str, int] | None = None  # {"epoch", "patience"} once patience ran out
    global_step: int = 0  # optimizer steps
    train_seconds: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0  # real tokens, padding excluded
    sessions_seconds: float = 0.0  # wall time of every session, up to its last checkpoint
    peak_memory_mb: float = 0.0  # the highest peak of every session so far (see _peak_memory_mb)

    @classmethod
    def from_dict(cls, progress: dict[str, Any]) -> LoopState:
        """The state stored in `last.pt`; ValueError when it is not one this code wrote (a state
        written before a field was ADDED_LATER lacks it: it keeps its default)."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        if set(progress) - names or names - set(progress) - ADDED_LATER:
            raise ValueError(f"holds {sorted(progress)}; expected {sorted(f.name for f in fields)}")
        for f in fields:
            allowed = {t.strip().split("[")[0] for t in str(f.type).split("|")}  # e.g. "float | None"
            if f.name not in progress:
                continue
            value = progress[f.name]
            if ("None" if value is None else type(value).__name__) not in allowed:
                raise ValueError(f"{f.name}: {value!r} is not {f.type}")
        return cls(**progress)


ADDED_LATER = frozenset({"peak_memory_mb"})  # LoopState fields that older last.pt files lack


class _Stopwatch:
    """Wall time since the session started, in laps (a session's time is added at each checkpoint)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        return seconds


# -- set up ---------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What a session builds before its first epoch: device, data, model, optimizer, schedule."""

    cfg: JobConfig
    out_dir: Path
    device: torch.device
    dtype: torch.dtype
    precision_reason: str
    tokenizer: Any
    data: Prepared
    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    pad_id: int
    eval_batch: int
    loss_limit: float  # a logged mean training loss above this is divergence
    chance: ChanceLine  # what always answering the majority class scores on validation: collapse's yardstick

    def autocast(self) -> Any:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def majority(self) -> float:
        return self.chance.majority

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names or [str(i) for i in range(self.data.num_labels)]


def _set_up(cfg: JobConfig, out_dir: Path, cache_dir: Path | None) -> Setup:
    """Seed, then build in a fixed order (the RNG draws, e.g. the head's initialisation, follow it)."""
    from transformers import AutoTokenizer, set_seed

    set_seed(cfg.seed)
    precision = resolve_precision(cfg.precision)
    device, dtype = precision.device, precision.dtype
    if device.type == "cuda":
        set_tf32()
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    data = prepare(cfg.data, tokenizer, cfg.max_len, cache_dir=cache_dir)  # the data's errors before the model loads
    encoder = load_encoder(cfg.model_path)
    check_encoder(cfg, encoder, tokenizer)
    model = Classifier(encoder, num_labels=data.num_labels, pooling=cfg.pooling, dropout=cfg.dropout).to(device)
    optimizer = make_optimizer(cfg, model, device)
    batches_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)  # whatever the micro-batch: step_batches
    scheduler = make_scheduler(cfg, optimizer, steps_per_epoch * cfg.epochs)
    save_model_files(out_dir / "model", model, tokenizer, data.label_names)
    return Setup(
        cfg=cfg, out_dir=out_dir, device=device, dtype=dtype, precision_reason=precision.reason, tokenizer=tokenizer,
        data=data, model=model, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        eval_batch=eval_batch_size(cfg),
        loss_limit=DIVERGED_FACTOR * math.log(max(data.num_labels, 2)),
        chance=chance_line(np.asarray(data.val.labels), data.num_labels),
    )


def _resume(s: Setup) -> LoopState | None:
    """The last finished epoch's state, restored into the model, optimizer, schedule and RNGs
    (None: none, or an unusable one set aside, so the job starts from epoch 1)."""
    progress = checkpoint.load_state(s.out_dir, s.model, s.optimizer, s.scheduler, s.scaler)
    if progress is None:
        return None
    try:
        return LoopState.from_dict(progress)
    except ValueError as exc:  # the weights are in already: the objects must be built again
        set_aside(s.out_dir / STATE_FILE, f"not a resume state of this code ({exc}); the job starts over")
        raise checkpoint.SetAside(f"{s.out_dir / STATE_FILE}: the resume state was unusable") from exc


# -- one epoch ------------------------------------------------------------------------------------


@dataclass
class EpochTraining:
    loss: float
    acc: float
    seconds: float


def _train_epoch(s: Setup, state: LoopState, epoch: int, tracker: Tracker, progress: bool) -> EpochTraining | None:
    """One pass over the training rows, an optimizer step per `grad_accum` batches (each run in
    micro-batches: `step_batches`); None when the loss diverged.

    No host sync in a step but the one every LOG_EVERY steps (`window_loss.item()`): the CPU
    queues work ahead of the GPU. A batch without padding passes no attention mask (whether it
    has padding is known on the host, from the rows' lengths), since the encoders' masking code
    checks a mask on the device (`mask.all()`, a sync) on every forward."""
    cfg, model, optimizer, scheduler, scaler = s.cfg, s.model, s.optimizer, s.scheduler, s.scaler
    model.train()
    micro = step_batches(s.data.train, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                         micro_batch=cfg.micro_batch, seed=cfg.seed, epoch=epoch)
    lengths = s.data.train.lengths
    t0 = time.perf_counter()
    epoch_loss = torch.zeros((), device=s.device)
    window_loss = torch.zeros((), device=s.device)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    window_n = 0.0
    seen = 0
    bar = _progress(progress, epoch, cfg.epochs, len(micro))
    try:
        for i, batch in enumerate(iterate(s.data.train, [m.rows for m in micro], s.pad_id,
                                          pin=s.device.type == "cuda")):
            part = micro[i]
            n = len(part.rows)
            padded = bool(lengths[part.rows].min() != lengths[part.rows].max())  # numpy, on the host
            batch = {k: v.to(s.device, non_blocking=True) for k, v in batch.items()}
            with s.autocast():
                logits = model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch.get("token_type_ids"),
                               padded=padded)
            loss = F.cross_entropy(logits.float(), batch["labels"])
            # A micro-batch's mean loss, as its share of its batch's mean, over the step's batches.
            scaler.scale(loss * part.share / part.batches).backward()
            detached = loss.detach()
            epoch_loss += detached * n
            window_loss += detached * part.share  # a batch's mean loss, whatever its micro-batches
            window_n += part.share  # batches
            correct += (logits.argmax(-1) == batch["labels"]).sum()
            seen += n
            if part.last:  # end of an optimizer step's rows: step
                if cfg.clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                if state.global_step % LOG_EVERY == 0 or i + 1 == len(micro):
                    mean_loss = window_loss.item() / window_n  # the one host sync per window
                    if not mean_loss <= s.loss_limit:  # also true for NaN
                        return None
                    tracker.step(step=state.global_step, epoch=epoch - 1 + (i + 1) / len(micro),
                                 loss=mean_loss, lr=scheduler.get_last_lr()[0])
                    window_loss.zero_()
                    window_n = 0.0
            if bar is not None:
                bar.advance()
    finally:
        if bar is not None:
            bar.close()
    state.train_tokens += int(s.data.train.lengths.sum())
    seconds = time.perf_counter() - t0
    state.train_seconds += seconds
    state.train_samples += seen
    return EpochTraining(loss=epoch_loss.item() / seen, acc=correct.item() / seen, seconds=seconds)


def _improved(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return True
    return better(value, best, metric)


def _end_epoch(s: Setup, state: LoopState, epoch: int, train: EpochTraining, tracker: Tracker,
               clock: _Stopwatch) -> None:
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
    if epoch == 1 and (why := _collapse_reason(s, row)):
        log.warning("epoch 1: collapsed onto the majority class: %s", why)
        tracker.event("warning", kind="at_chance", epoch=epoch, val_acc=val.acc, majority=s.majority,
                      val_macro_f1=val.macro_f1, val_top_share=row["val_top_share"], reason=why)
    state.epoch = epoch
    state.peak_memory_mb = max(state.peak_memory_mb, _peak_memory_mb(s.device))
    state.sessions_seconds += clock.lap()
    tracker.epoch(row)
    checkpoint.save_state(s.out_dir, s.model, s.optimizer, s.scheduler, s.scaler, dataclasses.asdict(state))


# -- test the best --------------------------------------------------------------------------------


TEST_KEYS = ("test_acc", "test_loss", "test_ece", "test_macro_f1", "test_per_class", "test_confusion")


def _test_best(s: Setup) -> dict[str, Any]:
    """The best checkpoint on the test split: metrics for result.json, per-row probabilities to
    test_predictions.npz. A damaged best checkpoint raises checkpoint.SetAside (train again)."""
    checkpoint.load_best(s.out_dir, s.model, s.device)
    test = evaluate(s.model, s.data.test, batch_size=s.eval_batch, pad_id=s.pad_id, device=s.device,
                    autocast=s.autocast)
    labels = np.asarray(s.data.test.labels)
    checkpoint.save_predictions(s.out_dir, rows=np.asarray(s.data.test.rows), labels=labels, probs=test.probs)
    per_class, confusion = class_report(test.probs, labels, s.label_names)
    return {"test_acc": test.acc, "test_loss": test.loss, "test_ece": expected_calibration_error(test.probs, labels),
            "test_macro_f1": test.macro_f1, "test_per_class": per_class, "test_confusion": confusion}


# -- build the result -----------------------------------------------------------------------------


def _collapse_reason(s: Setup, row: dict[str, Any]) -> str | None:
    return collapse_reason(s.chance, acc=row["val_acc"], macro_f1=row["val_macro_f1"], top=row.get("val_top_share"))


def _collapse(s: Setup, state: LoopState) -> dict[str, Any]:
    """The collapse judgement and the figures it used (result.json's `collapse`): collapsed when
    the validation predictions after epoch 1 *and* after the last epoch are collapsed
    (`trainer.metrics.collapse_reason`), whatever the selection metric."""
    judged = {}
    for which, row in (("first", state.history[0]), ("last", state.history[-1])) if state.history else ():
        judged[which] = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_macro_f1": row["val_macro_f1"],
                         "val_top_share": row.get("val_top_share"), "reason": _collapse_reason(s, row)}
    collapsed = bool(judged) and all(j["reason"] for j in judged.values())
    return {"collapsed": collapsed, "reason": judged["last"]["reason"] if collapsed else None,
            **s.chance.to_dict(), "epochs": judged,
            "rule": "collapsed when after epoch 1 and after the last epoch the validation predictions are all one "
                    "class while the labels are not, or their macro-F1 <= macro_f1_line (the constant predictor's "
                    "plus min(margin, half the way to 1)), unless val_acc > majority_class_acc + margin; margin = "
                    "2 * sqrt(majority * (1 - majority) / val_rows); not judged when the labels are one class"}


def _status(s: Setup, state: LoopState, *, diverged: bool) -> str:
    if diverged:
        return "diverged"
    collapse = _collapse(s, state)
    if collapse["collapsed"]:
        log.error("validation predictions collapsed after epoch 1 and at the end: %s; status collapsed",
                  collapse["reason"])
        return "collapsed"
    return "completed"


def _build_result(s: Setup, state: LoopState, *, status: str, test: dict[str, Any] | None,
                  resumed: bool, warnings: list[dict[str, Any]]) -> dict[str, Any]:
    cfg, data, device = s.cfg, s.data, s.device
    best = state.history[state.best_epoch - 1] if state.best_epoch else {}
    train_s = state.train_seconds
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
        # -- the data
        "majority_class_acc": s.majority,
        "collapse": _collapse(s, state) if status != "diverged" else None,
        "num_labels": data.num_labels,
        "label_names": s.label_names,
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "tokenization_cache_hit": data.cache_hit,
        "data": data.summary(),
        # -- the run
        "effective_batch_size": min(cfg.effective_batch, len(data.train)),  # what an optimizer step saw at most
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
        "peak_memory_mb": round(max(state.peak_memory_mb, _peak_memory_mb(device)), 1),  # every session's
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "precision": str(s.dtype).removeprefix("torch."),  # the compute dtype used
        "precision_reason": s.precision_reason,
        "tf32": False if device.type == "cuda" else None,  # see set_tf32
        "resumed": resumed,
        "versions": _versions(),
        "warnings": warnings,  # settings that could not work as written (`start_warnings`)
    }


# -- settings that cannot work as written ---------------------------------------------------------


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


# -- the job --------------------------------------------------------------------------------------


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
    clock = _Stopwatch()
    s = _set_up(cfg, out_dir, cache_dir)
    restored = _resume(s)
    state = restored or LoopState()
    tracker = Tracker(out_dir, job_id=cfg.job_id(), config=cfg.to_dict())
    tracker.event("start", job_id=cfg.job_id(), resumed_from_epoch=state.epoch, device=str(s.device),
                  train_rows=len(s.data.train), val_rows=len(s.data.val), test_rows=len(s.data.test),
                  cache_hit=s.data.cache_hit)
    log.info("job %s on %s (%s: %s), batch %d%s: %d train / %d val / %d test rows, %s", cfg.job_id(), s.device,
             str(s.dtype).removeprefix("torch."), s.precision_reason, cfg.batch_size,
             f" in micro-batches of {cfg.micro_batch} (x{cfg.accumulation} accumulation)" if cfg.micro_batch_size else "",
             len(s.data.train), len(s.data.val), len(s.data.test),
             f"resuming after epoch {state.epoch}" if restored else "new")
    warnings = start_warnings(cfg, train_rows=len(s.data.train), val_rows=len(s.data.val), test_rows=len(s.data.test))
    for warning in warnings:
        log.warning("%s", warning["message"])
        tracker.event("warning", **warning)

    try:
        # -- train: one epoch at a time, each ending in a checkpoint
        diverged = False
        for epoch in range(state.epoch + 1, cfg.epochs + 1):
            if state.stopped_early:
                break
            train = _train_epoch(s, state, epoch, tracker, progress)
            if train is None:
                log.error("epoch %d: the training loss is not finite or exploded; stopping (status diverged)", epoch)
                tracker.event("warning", kind="diverged", epoch=epoch, step=state.global_step)
                diverged = True
                break
            _end_epoch(s, state, epoch, train, tracker, clock)

        # -- test the best checkpoint
        test = _test_best(s) if not diverged and state.best_epoch else None

        # -- the result
        status = _status(s, state, diverged=diverged)
        state.sessions_seconds += clock.lap()
        result = _build_result(s, state, status=status, test=test, resumed=restored is not None, warnings=warnings)
        write_json(out_dir / RESULT_FILE, result)
    except BaseException:
        tracker.abort()
        raise
    # The result is final: the resume state (weights + optimizer, ~3x the model) is not needed.
    (out_dir / STATE_FILE).unlink(missing_ok=True)
    tracker.finish(result)
    return result


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
    """This session's peak. On a GPU: what the caching allocator reserved at most, the memory the
    job held on the card (allocated tensors and the allocator's cache), which is what a neighbour
    on the same GPU cannot have; without the CUDA context (about 0.5 GiB a process, nvidia-smi
    shows it). On the CPU: the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


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
