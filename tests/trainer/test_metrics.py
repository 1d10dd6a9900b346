from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support

from trainer.metrics import accuracy, class_report, confusion_matrix, macro_f1


def _probs(predicted: np.ndarray, num_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Random probabilities whose argmax is `predicted`."""
    probs = rng.random((len(predicted), num_labels)) * 0.5
    probs[np.arange(len(predicted)), predicted] = 1.0
    return probs / probs.sum(axis=1, keepdims=True)


CASES = {
    "random": lambda rng: (rng.integers(0, 4, 50), rng.integers(0, 4, 50), 4),
    "a class never predicted": lambda rng: (rng.integers(0, 3, 40), rng.integers(0, 2, 40), 3),
    "a class never present": lambda rng: (rng.integers(0, 2, 40), rng.integers(0, 3, 40), 3),
    "a class neither present nor predicted": lambda rng: (rng.integers(0, 2, 30), rng.integers(0, 2, 30), 3),
    "all one class predicted": lambda rng: (rng.integers(0, 2, 20), np.zeros(20, dtype=int), 2),
    "perfect": lambda rng: (np.arange(12) % 3, np.arange(12) % 3, 3),
    "all wrong": lambda rng: (np.zeros(10, dtype=int), np.ones(10, dtype=int), 2),
    "one example": lambda rng: (np.array([1]), np.array([0]), 2),
    "imbalanced": lambda rng: (np.array([0] * 45 + [1] * 4 + [2]), rng.choice(3, 50, p=[0.8, 0.15, 0.05]), 3),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_scikit_learn(case: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels, predicted, k = CASES[case](rng)
    probs = _probs(predicted, k, rng)
    assert accuracy(probs, labels) == pytest.approx(float((labels == predicted).mean()))
    assert macro_f1(probs, labels) == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0))
    confusion = confusion_matrix(labels, predicted, k)
    np.testing.assert_array_equal(confusion, sk_confusion(labels, predicted, labels=list(range(k))))
    rows, matrix = class_report(probs, labels, [f"c{i}" for i in range(k)])
    assert matrix == confusion.tolist() and all(type(x) is int for row in matrix for x in row)
    p, r, f, n = precision_recall_fscore_support(labels, predicted, labels=list(range(k)), zero_division=0)
    assert [row["label"] for row in rows] == [f"c{i}" for i in range(k)]
    np.testing.assert_allclose([row["precision"] for row in rows], p)
    np.testing.assert_allclose([row["recall"] for row in rows], r)
    np.testing.assert_allclose([row["f1"] for row in rows], f)
    assert [row["support"] for row in rows] == n.tolist()


def test_a_class_never_predicted_has_f1_zero() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = _probs(np.array([0, 0, 1, 1, 1, 1]), 3, np.random.default_rng(0))
    rows, _ = class_report(probs, labels, ["a", "b", "c"])
    assert rows[2] == {"label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert macro_f1(probs, labels) == pytest.approx((1 + 2 / 3 + 0) / 3)


# -- collapse, judged by predictions ---------------------------------------------------------------


def _onehot(predicted: list[int] | np.ndarray, num_labels: int = 2) -> np.ndarray:
    return np.eye(num_labels, dtype=np.float32)[np.asarray(predicted)]


def _judge(labels: list[int] | np.ndarray, predicted: list[int] | np.ndarray, num_labels: int = 2) -> str | None:
    from trainer.metrics import chance_line, collapse_reason, top_share

    labels, probs = np.asarray(labels), _onehot(predicted, num_labels)
    return collapse_reason(chance_line(labels, num_labels), acc=accuracy(probs, labels),
                           macro_f1=macro_f1(probs, labels), top=top_share(probs))


def test_a_perfect_score_on_a_tiny_validation_set_is_not_collapsed() -> None:
    # data.eval_limit: 2 (and 1): the old rule (val_acc <= majority + 0.02) called 1.0 "at chance"
    assert _judge([0, 1], [0, 1]) is None
    assert _judge([1, 1], [1, 1]) is None  # labels all one class: nothing to judge
    assert _judge([0], [0]) is None
    assert _judge([0, 1], [0, 0]) is not None  # the constant predictor itself


def test_a_good_model_on_imbalanced_labels_is_not_collapsed() -> None:
    # validation 95% one class, the model at 96.5%: it finds 13 of the 20 minority rows
    labels = np.array([0] * 380 + [1] * 20)
    predicted = labels.copy()
    predicted[380:387] = 0  # 7 minority rows missed
    assert accuracy(_onehot(predicted), labels) == pytest.approx(0.9825)
    assert _judge(labels, predicted) is None
    predicted[:7] = 1  # 7 majority rows wrong too: 96.5%, below majority + margin, F1 still far above
    assert accuracy(_onehot(predicted), labels) == pytest.approx(0.965)
    assert _judge(labels, predicted) is None


def test_predictions_all_one_class_or_no_better_than_it_are_collapsed() -> None:
    labels = np.array([0] * 150 + [1] * 150)
    assert "one class" in _judge(labels, np.zeros(300, dtype=int))
    assert "one class" in _judge(labels, np.ones(300, dtype=int))
    nearly = np.zeros(300, dtype=int)
    nearly[[0, 1, 150, 151, 152]] = 1  # 98% one class: macro-F1 0.36, no better than the constant's 0.33 + margin
    why = _judge(labels, nearly)
    assert why is not None and "macro-F1" in why
    # a model that learned, on the same rows, clearly beats the majority
    learned = labels.copy()
    learned[:60] = 1
    assert _judge(labels, learned) is None


def test_the_chance_line_records_the_figures_the_rule_uses() -> None:
    from trainer.metrics import chance_line

    line = chance_line(np.array([0] * 95 + [1] * 5), 2)
    assert (line.rows, line.classes, line.majority) == (100, 2, 0.95)
    assert line.constant_macro_f1 == pytest.approx(0.95 / 1.95)  # F1 2p/(1+p) of the majority class, over 2 classes
    assert line.margin == pytest.approx(2 * (0.95 * 0.05 / 100) ** 0.5)
    assert set(line.to_dict()) >= {"majority_class_acc", "constant_macro_f1", "margin", "val_rows"}
