"""Expected validation performance against budget (Dodge et al. 2019)."""

from __future__ import annotations

import numpy as np
import pytest

from reports.budget import budget_points, curves, expected_best


def _dodge(values: np.ndarray, k: int) -> float:
    """Dodge et al.'s closed form, written with the empirical CDF: sum_v v (P(V<=v)^k - P(V<v)^k)."""
    distinct = np.unique(values)
    return float(sum(v * (np.mean(values <= v) ** k - np.mean(values < v) ** k) for v in distinct))


def test_expected_best_equals_dodges_closed_form_and_a_simulation() -> None:
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(0.85, 0.03, 25), 2)  # rounded: ties, as accuracies on a small set have
    mean, std = expected_best(values)
    for k in (1, 2, 5, 25):
        assert mean[k - 1] == pytest.approx(_dodge(values, k), abs=1e-12)
    assert mean[0] == pytest.approx(values.mean()) and np.all(np.diff(mean) >= -1e-12)
    draws = values[rng.integers(0, len(values), size=(200_000, 5))].max(1)  # brute force, k = 5
    assert mean[4] == pytest.approx(draws.mean(), abs=5e-4) and std[4] == pytest.approx(draws.std(), abs=5e-4)
    # lower is better (val_loss): the expected minimum
    low, _ = expected_best(values, maximize=False)
    assert low[4] == pytest.approx(values[rng.integers(0, len(values), size=(200_000, 5))].min(1).mean(), abs=5e-4)
    assert expected_best([0.7])[0].tolist() == [0.7]


def test_curves_cover_every_budget_the_table_shows() -> None:
    (curve,) = curves({"all": list(np.linspace(0.5, 0.9, 1200))})
    assert set(budget_points(1200)) <= set(curve.ks.tolist()) and curve.ks[-1] == 1200
    assert len(curve.ks) < 300  # a 10,000-trial study does not build a 10,000 x 10,000 matrix
