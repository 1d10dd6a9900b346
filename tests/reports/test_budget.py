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


def test_one_budget_curve_per_model_when_the_sweep_varies_the_model() -> None:
    from reports.collect import Record
    from reports.tables import build_report

    records = [Record(job_id=f"{m}{s}", point={"model": m, "seed": s}, config={"model": m, "seed": s},
                      status="completed", reason="", result={"status": "completed", "val_loss": v, "metric": "val_loss"})
               for m, vals in (("bert", [0.40, 0.35, 0.38]), ("roberta", [0.30, 0.33])) for s, v in enumerate(vals)]
    report = build_report("m", records, states={}, predictions=lambda _: None)
    assert report.metric == "val_loss" and not report.maximize
    by_model = {c.label: c for c in report.budget}
    assert set(by_model) == {"bert", "roberta"} and by_model["bert"].n == 3
    assert by_model["roberta"].mean[-1] == pytest.approx(_dodge(-np.array([0.30, 0.33]), 2) * -1)
    assert report.rows[report.best].label["model"] == "roberta"  # lowest mean val_loss


def test_macro_f1_columns_appear_when_the_results_have_them() -> None:
    from reports.collect import Record
    from reports.markdown import to_markdown
    from reports.tables import build_report

    def rec(i: int, **extra: float) -> Record:
        return Record(job_id=str(i), point={"seed": i}, config={"seed": i}, status="completed", reason="",
                      result={"status": "completed", "val_acc": 0.8, "test_acc": 0.79, **extra})

    plain = to_markdown(build_report("p", [rec(1), rec(2)], states={}, predictions=lambda _: None))
    assert "macro_f1" not in plain
    with_f1 = build_report("f", [rec(1, val_macro_f1=0.78, test_macro_f1=0.77), rec(2, val_macro_f1=0.8, test_macro_f1=0.75)],
                           states={}, predictions=lambda _: None)
    header = next(line for line in to_markdown(with_f1).splitlines() if line.startswith("| model"))
    assert header.index("val_acc") < header.index("val_macro_f1") < header.index("test_acc") < header.index("test_macro_f1")
    assert with_f1.rows[0].stats["test_macro_f1"] == pytest.approx((0.76, np.std([0.77, 0.75], ddof=1)))
