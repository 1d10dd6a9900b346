"""What a session builds before its first epoch: device, data, model, optimizer, schedule; and
the last finished epoch's state restored into them."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import checkpoint
from trainer.config import JobConfig
from trainer.data import Prepared, prepare
from trainer.jobdir import MODEL_DIR, STATE_FILE, set_aside
from trainer.loop.devices import resolve_precision, set_tf32
from trainer.loop.state import LoopState
from trainer.metrics import ChanceLine, chance_line
from trainer.model import Classifier, check_encoder, load_encoder, save_model_files

# "diverged": a non-finite loss, or a logged mean loss this many times the untrained loss
# ln(classes) (a run with lr 1e4 can sit at a finite 1e9 without ever producing a NaN).
DIVERGED_FACTOR = 100.0


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


def set_up(cfg: JobConfig, out_dir: Path, cache_dir: Path | None) -> Setup:
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
    save_model_files(out_dir / MODEL_DIR, model, tokenizer, data.label_names)
    return Setup(
        cfg=cfg, out_dir=out_dir, device=device, dtype=dtype, precision_reason=precision.reason, tokenizer=tokenizer,
        data=data, model=model, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        eval_batch=eval_batch_size(cfg),
        loss_limit=DIVERGED_FACTOR * math.log(max(data.num_labels, 2)),
        chance=chance_line(np.asarray(data.val.labels), data.num_labels),
    )


def resume(s: Setup) -> LoopState | None:
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
