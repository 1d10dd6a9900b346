"""Evaluation metrics on per-example class probabilities."""

from __future__ import annotations

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
