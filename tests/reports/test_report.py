"""The reporter on synthetic stored results with known numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution
from scipy import stats as sps
from typer.testing import CliRunner

from reports.build import generate
from reports.stats import mcnemar_p, mean_std
from sweeper.cli import app
from sweeper.spec import Job
from sweeper.storage import open_storage
from sweeper.store import SweepStore
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
    swept = {"pooling": CategoricalDistribution(["cls", "mean", "pooler"]), "seed": CategoricalDistribution([1, 2, 3])}
    for (pooling, seed), (status, val_acc, test_target, runtime) in JOBS.items():
        job = Job(config=build_job({"pooling": pooling, "seed": seed}), point={"pooling": pooling, "seed": seed})
        store.enqueue(job)
        trial = store.canonical(store.trials_by_job()[job.id])
        assert trial is not None and store.claim(trial, swept)  # as a grid claims: its values become params
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


def test_table_counts_every_run_means_stds_bold_and_failures(sweep: tuple[Path, dict]) -> None:
    runs, known = sweep
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False)
    assert report.keys == ["model", "pooling"]
    # every configuration is a row, pooler too, whose only run failed
    assert [row.label["pooling"] for row in report.rows] == ["cls", "mean", "pooler"]
    cls_row, mean_row, pooler_row = report.rows
    assert (pooler_row.n, len(pooler_row.runs), pooler_row.count("failed"), pooler_row.stats) == (0, 1, 1, {})
    assert (cls_row.n, len(cls_row.runs), mean_row.n, len(mean_row.runs)) == (3, 3, 2, 3)
    cls_test = [known[("cls", s)]["test_acc"] for s in (1, 2, 3)]
    assert cls_row.stats["test_acc"][0] == pytest.approx(np.mean(cls_test))
    assert cls_row.stats["test_acc"][1] == pytest.approx(np.std(cls_test, ddof=1))
    assert mean_row.stats["val_acc"] == pytest.approx((0.87, np.std([0.86, 0.88], ddof=1)))
    # over all runs, the collapsed seed counts as what it scored
    assert mean_row.stats_all["val_acc"] == pytest.approx((np.mean([0.86, 0.88, 0.5]), np.std([0.86, 0.88, 0.5], ddof=1)))
    all_test = [known[("mean", s)]["test_acc"] for s in (1, 2, 3)]
    assert mean_row.stats_all["test_acc"][0] == pytest.approx(np.mean(all_test))
    # best by the mean selection metric over all runs: cls (0.81) beats mean (0.747 with its collapsed seed)
    assert report.metric == "val_acc" and report.best == 0
    md = (runs / "demo" / "report.md").read_text()
    table = md.split("## Across seeds")[0]
    lines = {line.split(" | ")[1]: line for line in table.splitlines() if line.startswith("| bert |")}
    # over completed runs, mean pooling wins accuracy (bold), cls wins runtime (bold); best epoch is never bold
    assert f"**{np.mean([0.86, 0.88]):.4f} ± {np.std([0.86, 0.88], ddof=1):.4f}**" in lines["mean"]
    assert "| 2/3 (1 collapsed) |" in lines["mean"] and "| 3/3 |" in lines["cls"]
    assert "| 0/1 (1 failed) |" in lines["pooler"]
    assert "**105.0 ± 5.0**" in lines["cls"] and "**" not in lines["cls"].split(" | ")[7]
    assert f"{np.mean([0.80, 0.82, 0.81]):.4f} ± {np.std([0.80, 0.82, 0.81], ddof=1):.4f}" in lines["cls"]
    assert lines["cls"].endswith("| best |") and "(all runs)" in table
    failures = md.split("## Runs that did not complete")[1]
    assert "pooling=mean, seed=3 | collapsed" in failures and "val_acc 0.5000 at chance" in failures
    assert "pooling=pooler, seed=1 | failed | exit code 1: RuntimeError: boom" in failures
    assert "Trials per state: COMPLETE 6, FAIL 1" in md  # a collapsed job is a finished trial
    # a grid's trials carry their values as params (for optuna-dashboard), but a grid was not sampled:
    # its best trial is one seed's luck, and fANOVA over its seeds is no parameter importance
    assert "Best single run (one seed; the table's best is by mean)" in md and "Parameter importances" not in md
    index = (runs / "REPORT.md").read_text()
    assert index.startswith("# Sweep reports")
    assert "7 job(s): 5 completed, 1 collapsed, 1 failed, 0 running, 0 waiting" in index
    assert "  - model=bert, pooling=pooler: 0/1 (1 failed)" in index


def test_a_collapsed_seed_is_never_marked_best_without_saying_so(sweep: tuple[Path, dict]) -> None:
    from reports.markdown import to_markdown
    from reports.tables import best_note

    runs, _ = sweep
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    report.best = 1  # as if mean pooling, with its collapsed seed, had come out on top
    md = to_markdown(report)
    assert "| best (not every run completed) |" in md
    assert "1 collapsed of 3 runs" in best_note(report)


def test_across_seed_comparison_matches_an_independent_computation(sweep: tuple[Path, dict]) -> None:
    runs, known = sweep
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False)
    h = report.rows[1].headline
    assert h is not None and h.seeds == (3, 3) and h.examples == N_TEST
    # per-seed test scores: the collapsed seed included, as it scored
    base = np.array([known[("cls", s)]["test_acc"] for s in (1, 2, 3)])
    other = np.array([known[("mean", s)]["test_acc"] for s in (1, 2, 3)])
    assert h.result.diff == pytest.approx(other.mean() - base.mean())
    assert h.p_better == pytest.approx(np.mean(other[:, None] > base[None, :]))
    assert h.result.p_adjusted == pytest.approx(h.result.p_value)  # one row compared: Holm changes nothing
    assert h.aso is not None and h.verdict == "cannot tell"  # a collapsed seed makes the spread huge
    ens = report.rows[1].ensemble  # the secondary, seed-ensemble comparison
    assert ens is not None and ens.n == N_TEST
    ens_base = np.mean([known[("cls", s)]["probs"] for s in (1, 2, 3)], axis=0).argmax(1) == LABELS
    ens_other = np.mean([known[("mean", s)]["probs"] for s in (1, 2, 3)], axis=0).argmax(1) == LABELS
    assert ens.diff == pytest.approx(ens_other.mean() - ens_base.mean())
    b, c = int(np.sum(ens_base & ~ens_other)), int(np.sum(~ens_base & ens_other))
    assert ens.p_value == pytest.approx(sps.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    d = ens_other.astype(float) - ens_base.astype(float)  # the paired bootstrap by hand: resampled indices
    idx = np.random.default_rng(5).integers(0, N_TEST, size=(20_000, N_TEST))
    lo, hi = np.quantile(d[idx].mean(1), [0.025, 0.975])
    assert ens.low == pytest.approx(lo, abs=0.1 * (hi - lo)) and ens.high == pytest.approx(hi, abs=0.1 * (hi - lo))
    md = (runs / "demo" / "report.md").read_text()
    assert f"| {h.result.diff:+.4f} | [{h.result.low:+.4f}, {h.result.high:+.4f}] |" in md
    assert "Holm–Bonferroni" in md and "reports.verdict.compare" in md and "ensemble of n seeds" in md
    assert f"| 3 vs 3 | {ens.diff:+.4f} | [{ens.low:+.4f}, {ens.high:+.4f}] | {ens.p_value:.4g} | {N_TEST} |" in md


def test_statistics_against_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(500) < 0.7, rng.random(500) < 0.75
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert mcnemar_p(a, b) == pytest.approx(sps.binomtest(n01, n01 + n10, 0.5).pvalue, rel=1e-9)
    assert mcnemar_p(a, a) == 1.0
    assert mean_std([1.0]) == (1.0, None)


def test_same_inputs_give_byte_identical_markdown(sweep: tuple[Path, dict]) -> None:
    runs, _ = sweep
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs)
    first = (runs / "demo" / "report.md").read_bytes()
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs)
    assert (runs / "demo" / "report.md").read_bytes() == first
    for png in ("val_acc_per_epoch.png", "test_acc_by_pooling.png", "budget.png", "reliability_best.png"):
        assert (runs / "demo" / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(report/{png})" in first.decode()


def test_cli_formats_baseline_and_errors(sweep: tuple[Path, dict]) -> None:
    runs, _ = sweep
    out = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--format", "json", "--no-plots",
                                   "--baseline", "pooling=mean"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    rows = payload[0]["rows"]
    assert [r["baseline"] for r in rows] == [False, True, False] and rows[0]["verdict"] == "cannot tell"
    assert (rows[2]["pooling"], rows[2]["completed"], rows[2]["failed"], rows[2]["verdict"]) == ("pooler", 0, 1, None)
    assert rows[0]["diff_test_acc"] > 0 and (rows[0]["completed"], rows[0]["runs"]) == (3, 3)
    assert payload[0]["budget"][0]["k"][0] == 1
    assert {x["status"] for x in payload[0]["excluded"]} == {"collapsed", "failed"}
    csv_out = CliRunner().invoke(app, ["report", "demo", "--runs-dir", str(runs), "--format", "csv", "--no-plots"])
    assert csv_out.exit_code == 0 and csv_out.stdout.splitlines()[0].startswith("sweep,model,pooling,completed,runs,collapsed")
    assert (runs / "demo" / "report.csv").exists()
    bad = CliRunner().invoke(app, ["report", "nope", "--runs-dir", str(runs)])
    assert bad.exit_code == 2 and "no sweep named 'nope'" in bad.output
    bad_effect = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--effect", "2"])
    assert bad_effect.exit_code == 2 and "--effect: 2.0 is out of range" in bad_effect.output
    narrow = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--no-plots", "--effect", "0.01"],
                                env={"COLUMNS": "80"})
    assert narrow.exit_code == 0 and "Full report:" in narrow.stdout
    assert "at --effect" in (runs / "demo" / "report.md").read_text()
    bad_base = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--baseline", "pooling=max"])
    assert bad_base.exit_code == 2 and "matches no row" in bad_base.output


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


def test_a_damaged_predictions_file_is_said_and_the_report_goes_on(sweep: tuple[Path, dict],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    runs, _ = sweep

    def npz(pooling: str, seed: int) -> Path:
        job = Job(config=build_job({"pooling": pooling, "seed": seed}), point={"pooling": pooling, "seed": seed})
        return runs / "demo" / job.id / "test_predictions.npz"

    flipped = npz("mean", 2)
    data = bytearray(flipped.read_bytes())
    data[len(data) - 3000] ^= 0xFF  # a flipped byte inside the probabilities: their CRC no longer matches
    flipped.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    assert [r.getMessage().split(": damaged, not used")[0] for r in caplog.records] == [str(flipped)]
    h = report.rows[1].headline
    assert h is not None and h.examples == 0 and h.scope == "seeds (scores only)"  # its row: stored scores
    assert (runs / "demo" / "report.md").exists()
    torn = npz("cls", 1)  # the baseline's: every row falls back to the stored scores
    torn.write_bytes(torn.read_bytes()[:500])
    caplog.clear()
    with caplog.at_level("WARNING"):
        (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    assert [r.getMessage().split(": damaged, not used")[0] for r in caplog.records] == [str(torn)]
    assert all(row.headline is None or row.headline.examples == 0 for row in report.rows)


def test_a_second_report_reads_the_cache_not_the_predictions(sweep: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Each job's right/wrong bits and each configuration's ensemble's are kept in
    runs/<sweep>/report-cache.npz; the next report reads no test_predictions.npz, and a job whose
    files changed is read again."""
    import reports.build
    from reports.cache import CACHE_FILE

    runs, known = sweep
    storage = str(runs / "sweeps.journal")
    generate(storage=storage, runs_dir=runs, plots=False, html=False)
    first = (runs / "demo" / "report.md").read_text()
    assert (runs / "demo" / CACHE_FILE).is_file()
    read: list[str] = []
    real = reports.build.load_predictions

    def counting(job_dir: Path):  # type: ignore[no-untyped-def]
        read.append(job_dir.name)
        return real(job_dir)

    monkeypatch.setattr(reports.build, "load_predictions", counting)
    generate(storage=storage, runs_dir=runs, plots=False, html=False)
    assert read == [] and (runs / "demo" / "report.md").read_text() == first
    # mean's first seed is run again and now gets every example right: read again, the report moves
    job = Job(config=build_job({"pooling": "mean", "seed": 1}), point={"pooling": "mean", "seed": 1})
    probs = np.zeros((N_TEST, 2))
    probs[np.arange(N_TEST), LABELS] = 1.0
    np.savez(runs / "demo" / job.id / "test_predictions.npz", rows=ROWS, labels=LABELS, probs=probs)
    write_json(runs / "demo" / job.id / "result.json", {**known[("mean", 1)], "probs": None, "test_acc": 1.0})
    (report,) = generate(storage=storage, runs_dir=runs, plots=False, html=False)
    mean_jobs = {Job(config=build_job({"pooling": "mean", "seed": s}), point={"pooling": "mean", "seed": s}).id
                 for s in (1, 2, 3)}
    assert read[0] == job.id and set(read) == mean_jobs  # its bits, then its configuration's ensemble (probabilities)
    mat = [np.asarray(known[("mean", s)]["probs"]).argmax(1) == LABELS for s in (2, 3)]
    expected = np.mean([1.0, *(m.mean() for m in mat)]) - np.mean([known[("cls", s)]["test_acc"] for s in (1, 2, 3)])
    assert report.rows[1].headline is not None and report.rows[1].headline.result.diff == pytest.approx(expected)
    # a damaged cache is set aside and said; the report reads the predictions again
    (runs / "demo" / CACHE_FILE).write_bytes(b"PK\x03\x04 not a cache")
    read.clear()
    with caplog.at_level("WARNING"):
        generate(storage=storage, runs_dir=runs, plots=False, html=False)
    assert any("damaged" in r.getMessage() and "set aside" in r.getMessage() for r in caplog.records)
    assert (runs / "demo" / (CACHE_FILE + ".damaged")).is_file() and len(read) == 6
