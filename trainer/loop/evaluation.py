"""Scoring a split: the validation after every epoch, and the best checkpoint on the test split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.data import Split, eval_batches, iterate
from trainer.loop.setup import Setup
from trainer.metrics import accuracy, class_report, expected_calibration_error, macro_f1
from trainer.model import Classifier


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
        padded = bool(lengths[rows].min() != lengths[rows].max())  # on the host: see epoch.train_epoch
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


TEST_KEYS = ("test_acc", "test_loss", "test_ece", "test_macro_f1", "test_per_class", "test_confusion")


def score_best(s: Setup) -> dict[str, Any]:
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

