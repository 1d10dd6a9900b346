"""The reporter on synthetic stored results with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from reports.build import generate
from reports.stats import mcnemar_p, mean_std, paired_bootstrap
from sweeper.cli import app
from sweeper.spec import Job
from sweeper.store import SweepStore, open_storage
from trainer.config import build_job
from trainer.io import write_json

N_TEST = 400
RNG = np.random.default_rng(7)
LABELS = RNG.integers(0, 2, N_TEST)
ROWS = RNG.permutation(10_000)[:N_TEST]  # positions in the merged data, shared by every job


def probs_with_accuracy(acc: float, seed: int) -> np.ndarray:
    """Probabilities whose argmax is right on a known fraction of the examples."""
    rng = np.random.default_rng(seed)
    right = rng.random(N_TEST) < acc
    predicted = np.where(right, LABELS, 1 - LABELS)
    confidence = 0.55 + 0.4 * rng.random(N_TEST)
    probs = np.empty((N_TEST, 2))
    probs[np.arange(N_TEST), predicted] = confidence
    probs[np.arange(N_TEST), 1 - predicted] = 1 - confidence
    return probs


# (pooling, seed) -> (status, val_acc, test accuracy of its predictions, runtime)
JOBS = {
    ("cls", 1): ("completed", 0.80, 0.78, 100.0),
    ("cls", 2): ("completed", 0.82, 0.80, 110.0),
    ("cls", 3): ("completed", 0.81, 0.79, 105.0),
    ("mean", 1): ("completed", 0.86, 0.85, 120.0),
    ("mean", 2): ("completed", 0.88, 0.87, 125.0),
    ("mean", 3): ("collapsed", 0.50, 0.50, 90.0),
    ("pooler", 1): ("failed", None, None, None),
}


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, dict]:
    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "demo")
    known: dict = {}
    for (pooling, seed), (status, val_acc, test_target, runtime) in JOBS.items():
        job = Job(config=build_job({"pooling": pooling, "seed": seed}), point={"pooling": pooling, "seed": seed})
        store.enqueue(job)
        trial = store.canonical(store.trials_by_job()[job.id])
        assert trial is not None and store.claim(trial)
        if status == "failed":
            store.fail(trial._trial_id, "exit code 1: RuntimeError: boom", ["Traceback", "RuntimeError: boom"])
            continue
        probs = probs_with_accuracy(test_target, seed=10 * seed + len(pooling))
        test_acc = float((probs.argmax(1) == LABELS).mean())
        result = {"status": status, "val_acc": val_acc, "test_acc": test_acc, "test_loss": 1 - test_acc,
                  "test_ece": 0.05 * seed, "best_epoch": seed, "runtime_s": runtime,
                  "train_samples_per_s": 1000 / runtime, "epochs": [{"epoch": 1, "val_acc": val_acc}]}
        store.finish(trial._trial_id, result)
        job_dir = runs / "demo" / job.id
        job_dir.mkdir(parents=True)
        np.savez(job_dir / "test_predictions.npz", rows=ROWS, labels=LABELS, probs=probs)
        write_json(job_dir / "result.json", result)
        known[(pooling, seed)] = {**result, "probs": probs}
    return runs, known


def test_table_rows_means_stds_bold_and_failures(sweep: tuple[Path, dict]) -> None:
    runs, known = sweep
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False)
    assert report.keys == ["model", "pooling"]
    assert [row.label["pooling"] for row in report.rows] == ["cls", "mean"]  # collapsed and failed not rows
    cls_row, mean_row = report.rows
    assert (cls_row.n, mean_row.n) == (3, 2)
    cls_test = [known[("cls", s)]["test_acc"] for s in (1, 2, 3)]
    assert cls_row.stats["test_acc"][0] == pytest.approx(np.mean(cls_test))
    assert cls_row.stats["test_acc"][1] == pytest.approx(np.std(cls_test, ddof=1))
    assert mean_row.stats["val_acc"] == pytest.approx((0.87, np.std([0.86, 0.88], ddof=1)))
    md = (runs / "demo" / "report.md").read_text()
    table = md.split("## Paired comparison")[0]
    lines = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| bert |")}
    # mean pooling wins accuracy (bold), cls wins runtime (bold); best epoch is never bold
    assert f"**{np.mean([0.86, 0.88]):.4f} ± {np.std([0.86, 0.88], ddof=1):.4f}**" in lines["mean"]
    assert "**105.0 ± 5.0**" in lines["cls"] and "**" not in lines["cls"].split(" | ")[7]
    assert f"{np.mean([0.80, 0.82, 0.81]):.4f} ± {np.std([0.80, 0.82, 0.81], ddof=1):.4f}" in lines["cls"]
    failures = md.split("## Not averaged into the table")[1]
    assert "pooling=mean, seed=3 | collapsed" in failures and "val_acc 0.5 at chance" in failures
    assert "pooling=pooler, seed=1 | failed | exit code 1: RuntimeError: boom" in failures
    assert "Trials per state: COMPLETE 6, FAIL 1" in md  # a collapsed job is a finished trial
    assert (runs / "REPORT.md").read_text().startswith("# Sweep reports")


def test_paired_comparison_matches_an_independent_computation(sweep: tuple[Path, dict]) -> None:
    runs, known = sweep
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False)
    comparison = report.rows[1].comparison
    assert comparison is not None and comparison.n == N_TEST
    # by hand: seed-averaged probabilities of each row, then paired on the same examples
    base = np.mean([known[("cls", s)]["probs"] for s in (1, 2, 3)], axis=0).argmax(1) == LABELS
    other = np.mean([known[("mean", s)]["probs"] for s in (1, 2)], axis=0).argmax(1) == LABELS
    assert comparison.diff == pytest.approx(other.mean() - base.mean())
    b, c = int(np.sum(base & ~other)), int(np.sum(~base & other))
    assert comparison.p_value == pytest.approx(sps.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    ci = sps.bootstrap((other.astype(float) - base.astype(float),), np.mean, n_resamples=10_000,
                       confidence_level=0.95, method="percentile", random_state=1).confidence_interval
    assert comparison.low == pytest.approx(ci.low, abs=0.006) and comparison.high == pytest.approx(ci.high, abs=0.006)
    assert comparison.significant == (comparison.low > 0 and comparison.p_value < 0.05)
    md = (runs / "demo" / "report.md").read_text()
    assert f"{comparison.diff:+.4f} | [{comparison.low:+.4f}, {comparison.high:+.4f}]" in md
    assert "averaged over its seeds" in md


def test_statistics_against_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(500) < 0.7, rng.random(500) < 0.75
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert mcnemar_p(a, b) == pytest.approx(sps.binomtest(n01, n01 + n10, 0.5).pvalue, rel=1e-9)
    assert mcnemar_p(a, a) == 1.0
    assert mean_std([1.0]) == (1.0, None)
    diff, lo, hi = paired_bootstrap(a, b)
    assert diff == pytest.approx(b.mean() - a.mean()) and lo < diff < hi


def test_same_inputs_give_byte_identical_markdown(sweep: tuple[Path, dict]) -> None:
    runs, _ = sweep
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs)
    first = (runs / "demo" / "report.md").read_bytes()
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs)
    assert (runs / "demo" / "report.md").read_bytes() == first
    for png in ("val_acc_per_epoch.png", "test_acc_by_axis.png", "reliability_best.png"):
        assert (runs / "demo" / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(report/{png})" in first.decode()


def test_cli_formats_baseline_and_errors(sweep: tuple[Path, dict]) -> None:
    runs, _ = sweep
    out = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--format", "json", "--no-plots",
                                   "--baseline", "pooling=mean"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    rows = payload[0]["rows"]
    assert [r["baseline"] for r in rows] == [False, True] and rows[0]["diff_test_acc"] < 0
    assert {x["status"] for x in payload[0]["excluded"]} == {"collapsed", "failed"}
    csv_out = CliRunner().invoke(app, ["report", "demo", "--runs-dir", str(runs), "--format", "csv", "--no-plots"])
    assert csv_out.exit_code == 0 and csv_out.stdout.splitlines()[0].startswith("sweep,model,pooling,n,baseline")
    assert (runs / "demo" / "report.csv").exists()
    bad = CliRunner().invoke(app, ["report", "nope", "--runs-dir", str(runs)])
    assert bad.exit_code == 2 and "no sweep named 'nope'" in bad.output
    bad_base = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--baseline", "pooling=max"])
    assert bad_base.exit_code == 2 and "matches no row" in bad_base.output


def test_multinomial_bootstrap_equals_index_resampling_in_distribution() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.random(300) < 0.6, rng.random(300) < 0.7
    diff = b.astype(float) - a.astype(float)
    idx = np.random.default_rng(5).integers(0, 300, size=(20_000, 300))
    lo, hi = np.quantile(diff[idx].mean(1), [0.025, 0.975])  # the textbook resampling, by hand
    _, low, high = paired_bootstrap(a, b)
    assert low == pytest.approx(lo, abs=0.006) and high == pytest.approx(hi, abs=0.006)


def test_best_trial_and_parameter_importances_of_a_study(tmp_path: Path) -> None:
    import optuna

    runs = tmp_path / "runs"
    storage = open_storage(str(runs / "sweeps.journal"))
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize")
    dists = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
             "dropout": optuna.distributions.FloatDistribution(0.0, 0.3)}
    rng = np.random.default_rng(0)
    for _ in range(12):
        lr, dropout = float(10 ** rng.uniform(-5, -3)), float(rng.uniform(0, 0.3))
        value = 0.9 - abs(np.log10(lr) + 4) * 0.1  # only lr matters
        cfg = build_job({"lr": lr, "dropout": dropout})
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "dropout": dropout}, distributions=dists, value=value,
            user_attrs={"job_id": cfg.job_id(), "config": cfg.to_dict(), "point": {"lr": lr, "dropout": dropout},
                        "status": "completed", "result": {"status": "completed", "val_acc": value}}))
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False)
    best = max(study.trials, key=lambda t: t.value)
    assert report.study["best"]["number"] == best.number and report.study["best"]["params"] == best.params
    assert list(report.study["importances"])[0] == "lr"
    md = (runs / "search" / "report.md").read_text()
    assert f"Best trial: #{best.number}" in md and "Parameter importances" in md
