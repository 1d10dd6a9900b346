"""Evaluation metrics on per-example class probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE over equal-width confidence bins (Guo et al., 2017): sum_b |B|/n * |acc(B) - conf(B)|.

    Bins are (lo, hi], the first also closed at 0.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def majority_fraction(labels: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class: the chance line."""
    return float(np.bincount(labels).max() / len(labels))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_labels: int) -> np.ndarray:
    """counts[i, j]: examples of class i predicted as j (rows true, columns predicted, as sklearn)."""
    counts = np.bincount(labels * num_labels + predicted, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class; a ratio with nothing to divide by is 0
    (scikit-learn's `zero_division=0`): a class never predicted has precision 0 and F1 0."""
    true_pos = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(true_pos), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """The unweighted mean of the per-class F1 over the classes that occur in `labels` or in the
    predictions (scikit-learn's `f1_score(average="macro", zero_division=0)`): a class never
    predicted counts with F1 0; a class neither present nor predicted says nothing and is left
    out, so a perfect model scores 1 on a split that lacks a class."""
    confusion = confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1])
    seen = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    return float(per_class(confusion)["f1"][seen].mean()) if seen.any() else 0.0


def class_report(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Per-class rows ({label, precision, recall, f1, support}) and the confusion matrix, as
    plain data for result.json."""
    confusion = confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1])
    stats = per_class(confusion)
    rows = [
        {"label": name, "precision": float(stats["precision"][i]), "recall": float(stats["recall"][i]),
         "f1": float(stats["f1"][i]), "support": int(stats["support"][i])}
        for i, name in enumerate(names)
    ]
    return rows, confusion.tolist()


# -- collapse: judged by what the model predicts --------------------------------------------------

COLLAPSE_Z = 2.0  # the noise band: two standard errors of the majority baseline's accuracy


@dataclass(frozen=True)
class ChanceLine:
    """What always answering the majority class scores on the validation labels, and how far
    above it a score must be to be told apart from it on that many rows."""

    rows: int
    classes: int  # distinct classes among the labels
    majority: float  # accuracy of the constant (majority-class) predictor
    constant_macro_f1: float  # its macro-F1
    margin: float  # COLLAPSE_Z * sqrt(majority * (1 - majority) / rows)

    @property
    def f1_line(self) -> float:
        """Macro-F1 at or below this is no better than the constant predictor's: its F1 plus the
        margin, but never more than halfway to 1 (on 2 rows the margin alone would swallow a
        perfect score)."""
        return self.constant_macro_f1 + min(self.margin, (1.0 - self.constant_macro_f1) / 2)

    def to_dict(self) -> dict[str, Any]:
        return {"val_rows": self.rows, "label_classes": self.classes, "majority_class_acc": self.majority,
                "constant_macro_f1": self.constant_macro_f1, "margin": self.margin, "macro_f1_line": self.f1_line}


def chance_line(labels: np.ndarray, num_labels: int) -> ChanceLine:
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_labels)
    majority = float(counts.max() / len(labels))
    constant = np.zeros((len(labels), num_labels), dtype=np.float32)
    constant[:, counts.argmax()] = 1.0
    return ChanceLine(rows=len(labels), classes=int((counts > 0).sum()), majority=majority,
                      constant_macro_f1=macro_f1(constant, labels),
                      margin=COLLAPSE_Z * math.sqrt(majority * (1 - majority) / len(labels)))


def top_share(probs: np.ndarray) -> float:
    """The share of rows predicted as the most predicted class (1.0: one class for every row)."""
    return float(np.bincount(probs.argmax(axis=1)).max() / len(probs)) if len(probs) else 0.0


def collapse_reason(line: ChanceLine, *, acc: float, macro_f1: float, top: float | None) -> str | None:
    """Why a model's validation predictions are collapsed, or None when they are not.

    Collapsed: the predictions are all one class while the labels are not, or the macro-F1 is
    no better than the constant predictor's (`ChanceLine.f1_line`: its F1 plus a margin that
    shrinks with the rows). Never when the accuracy clearly beats the majority baseline (above
    it by more than the margin), and never judged when the labels are all one class."""
    if line.classes < 2:
        return None
    if top is not None and top >= 1.0:
        return f"every validation row predicted as one class (majority class {line.majority:.4f})"
    if acc > line.majority + line.margin:
        return None
    if macro_f1 <= line.f1_line:
        return (f"validation macro-F1 {macro_f1:.4f} is no better than always answering the majority class "
                f"({line.constant_macro_f1:.4f} + margin {line.f1_line - line.constant_macro_f1:.4f} "
                f"on {line.rows} rows; accuracy {acc:.4f}, majority {line.majority:.4f}"
                + (f", {top:.1%} of rows predicted as one class" if top is not None else "") + ")")
    return None
