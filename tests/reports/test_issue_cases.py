"""The cases the reporter once got wrong, as stored sweeps: seed ensembles that reversed a
comparison, and a study whose trials ran several seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from rich.console import Console

from reports.build import generate
from reports.console import summary
from sweeper.spec import Job
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from trainer.config import build_job
from trainer.io import write_json

N = 1000
RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, N)
ROWS = np.arange(N)


def _probs(right: np.ndarray) -> np.ndarray:
    predicted = np.where(right, LABELS, 1 - LABELS)
    probs = np.full((N, 2), 0.2)
    probs[np.arange(N), predicted] = 0.8
    return probs


def _store_job(store: SweepStore, runs: Path, point: dict, right: np.ndarray, val_acc: float) -> None:
    job = Job(config=build_job(point), point=point)
    store.enqueue(job)
    trial = store.canonical(store.trials_by_job()[job.id])
    assert trial is not None and store.claim(trial)
    acc = float(right.mean())
    result = {"status": "completed", "val_acc": val_acc, "test_acc": acc, "test_loss": 1 - acc, "metric": "val_acc",
              "epochs": [{"epoch": 1, "val_acc": val_acc}]}
    store.finish(trial._trial_id, result)
    job_dir = runs / store.sweep / job.id
    job_dir.mkdir(parents=True)
    np.savez(job_dir / "test_predictions.npz", rows=ROWS, labels=LABELS, probs=_probs(right))
    write_json(job_dir / "result.json", result)


def test_seed_ensembles_do_not_reverse_the_headline(tmp_path: Path) -> None:
    """A: 3 seeds at 0.80, each wrong on different examples; B: 3 seeds at 0.82, all wrong on the
    same ones. B is ahead on every seed; A's seed ensemble is far better than B's (averaging A's
    different errors away), which the old report called 'A better, significant'."""
    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "issue")
    order = RNG.permutation(N)
    for s in range(3):  # A: disjoint blocks of 200 errors
        right = np.ones(N, bool)
        right[order[200 * s: 200 * (s + 1)]] = False
        _store_job(store, runs, {"pooling": "cls", "seed": s}, right, 0.80)
    same = np.ones(N, bool)
    same[order[600:780]] = False
    for s in range(3):
        _store_job(store, runs, {"pooling": "mean", "seed": s}, same, 0.82)
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    a, b = report.rows
    h = b.headline
    assert h is not None and abs(h.result.diff - 0.02) < 1e-9
    assert h.verdict in ("better", "cannot tell")  # never "worse" (A better), significant or not
    assert not (h.significant and h.result.diff < 0)
    assert h.p_better == 1.0 and h.aso is not None and h.aso.eps_a_over_b < 0.5
    assert b.ensemble is not None and b.ensemble.diff < -0.1  # the ensemble comparison still says the opposite
    md = (runs / "issue" / "report.md").read_text()
    assert "Secondary: seed ensembles" in md and "ensemble of n seeds" in md


def test_study_trials_with_seeds_become_one_record_per_seed(tmp_path: Path) -> None:
    """A study trial that ran `seeds: [...]` carries them in user_attrs["seeds"]; the report
    treats them like a grid's: one row per sampled point, one run per seed."""
    runs = tmp_path / "runs"
    storage = open_storage(str(runs / "sweeps.journal"))
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}
    scores = {1e-4: [0.80, 0.82, 0.81], 3e-5: [0.85, 0.86, 0.50]}
    for lr, accs in scores.items():
        cfg = build_job({"lr": lr, "seed": 42})
        entries = []
        for seed, acc in zip((42, 43, 44), accs, strict=True):
            job_id = build_job({"lr": lr, "seed": seed}).job_id()
            status = "collapsed" if acc == 0.5 else "completed"
            entries.append({"job_id": job_id, "seed": seed, "status": status,
                            "result": {"status": status, "val_acc": acc, "test_acc": acc - 0.01, "metric": "val_acc"}})
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions=dist, value=float(np.mean(accs)),
            user_attrs={"point": {"lr": lr}, "config": cfg.to_dict(), "seeds": entries,
                        "result": {"val_acc": float(np.mean(accs))}, "status": "completed"}))
    # a failed first attempt of the first point, retried above: its seeds must not be counted twice
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"lr": 1e-4}, distributions=dist,
        user_attrs={"point": {"lr": 1e-4}, "seeds": [{"job_id": build_job({"lr": 1e-4, "seed": 42}).job_id(),
                                                      "seed": 42, "status": "failed", "result": None}]}))
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    assert report.keys == ["model", "lr"]
    by_lr = {row.label["lr"]: row for row in report.rows}
    assert set(by_lr) == {1e-4, 3e-5}
    assert [len(by_lr[lr].runs) for lr in (1e-4, 3e-5)] == [3, 3]
    assert (by_lr[3e-5].n, by_lr[3e-5].count("collapsed")) == (2, 1)
    assert by_lr[1e-4].stats["val_acc"][0] == np.mean([0.80, 0.82, 0.81])
    assert by_lr[3e-5].stats_all["val_acc"][0] == np.mean([0.85, 0.86, 0.50])
    h = report.rows[1].headline
    assert h is not None and h.seeds == (3, 3) and h.examples == 0  # no predictions: seeds only
    assert report.budget[0].n == 6


def test_console_summary_reads_at_80_columns(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "narrow")
    rng = np.random.default_rng(3)
    for pooling in ("cls", "mean", "pooler"):
        for s in range(3):
            right = rng.random(N) < (0.8 if pooling != "mean" else 0.84)
            point = {"pooling": pooling, "seed": s, "dropout": 0.1 + 0.1 * (pooling == "pooler")}
            _store_job(store, runs, point, right, 0.8 + s / 100)
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    console = Console(width=80, record=True, color_system=None)
    for item in summary(report, runs / "narrow"):
        console.print(item)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text  # no column cut to val_a…
    for row in report.rows:  # every number of the table on one line, whole
        mean, std = row.stats["test_acc"]
        assert sum(f"{mean:.3f}±{std:.3f}" in line for line in lines) == 1
        assert any(line.startswith(f" bert, {row.label['pooling']},") for line in lines)  # the configuration shows
        if row.headline is not None:
            h = row.headline
            assert any(f"{h.result.diff:+.3f} [{h.result.low:+.3f},{h.result.high:+.3f}]" in line for line in lines)
    assert "unclear" in text and "Full report:" in text and any(line.startswith("Full report:") for line in lines)


def test_a_plot_along_every_swept_axis_categorical_ones_never_joined(tmp_path: Path) -> None:
    from reports import draw, plots
    from reports.collect import load_predictions, load_records

    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "axes")
    rng = np.random.default_rng(4)
    for pooling in ("cls", "mean"):
        for lr in (1e-5, 1e-4, 1e-3):
            for s in range(2):
                _store_job(store, runs, {"pooling": pooling, "lr": lr, "seed": s}, rng.random(N) < 0.8, 0.8)
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, html=False)
    titles = [t for t, _ in report.plots]
    assert "test accuracy along pooling" in titles and "test accuracy along lr" in titles
    for _, path in report.plots:  # drawn (by the helper process), whole
        assert (runs / "axes" / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    planned = plots.plan_plots(report, load_records(store), tmp_path / "again",
                               lambda job: load_predictions(runs / "axes" / job))
    assert [p.caption for p in planned] == titles
    seen = {}
    for plot in planned:  # drawn here, the same data: what is on the axes
        ax = draw.draw(plot)
        seen[plot.path.name] = [c.lines[0].get_linestyle() for c in ax.containers if c.lines[0] is not None]
        seen[plot.path.name + ":xticks"] = [t.get_text() for t in ax.get_xticklabels()]
    assert seen["test_acc_by_pooling.png"] and set(seen["test_acc_by_pooling.png"]) == {"None"}  # points, no line
    assert set(seen["test_acc_by_lr.png"]) == {"-"}  # a numeric axis may be joined
    assert seen["val_acc_per_epoch.png:xticks"] == ["1"]  # a 1-epoch sweep: one integer tick


def test_plots_drawn_by_the_helper_process_are_the_ones_drawn_here(tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """The helper process (drawing while the report computes) and this process give the same
    files; a helper that cannot start, or fails, leaves the drawing to this process."""
    from reports import draw

    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "same")
    rng = np.random.default_rng(5)
    for pooling in ("cls", "mean"):
        for s in range(3):
            _store_job(store, runs, {"pooling": pooling, "seed": s}, rng.random(N) < 0.8, 0.8)

    def pngs() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((runs / "same" / "report").glob("*.png"))}

    caplog.set_level("WARNING", logger="reports.draw")
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, html=False)
    helper = pngs()
    assert len(helper) == len(report.plots) == 4
    assert not caplog.records  # the helper drew them: nothing fell back to this process
    monkeypatch.setenv(draw.ENV, "0")
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, html=False)
    assert pngs() == helper
    monkeypatch.delenv(draw.ENV)
    monkeypatch.setattr(draw, "_CHILD", "import sys; sys.exit(3)")  # a helper that dies at once
    for p in (runs / "same" / "report").glob("*.png"):
        p.unlink()
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, html=False)
    assert pngs() == helper
    assert any("exited with 3" in r.getMessage() for r in caplog.records)  # said, then drawn here


def test_one_seed_a_side_without_predictions_is_never_significant() -> None:
    from reports.collect import Record
    from reports.markdown import to_markdown
    from reports.tables import build_report

    records = [Record(job_id=p, point={"pooling": p, "seed": 1}, config={"pooling": p, "seed": 1}, status="completed",
                      reason="", result={"status": "completed", "val_acc": v, "test_acc": v}) for p, v in
               (("cls", 0.80), ("mean", 0.90))]
    report = build_report("one", records, states={}, predictions=lambda _: None)
    h = report.rows[1].headline
    assert h is not None and not h.testable and not h.significant and h.verdict == "cannot tell"
    assert "one seed a side and no configuration with several seeds to pool" in to_markdown(report)


def test_a_diverged_run_left_out_of_the_headline_is_said() -> None:
    """A diverged run is never tested: the across-seed Δ is over the other seeds, which flatters
    the configuration; the verdict cell and a note say how many runs were left out."""
    from reports.collect import Record
    from reports.markdown import to_markdown
    from reports.tables import compare_report, tabulate

    def record(pooling: str, seed: int, status: str, acc: float | None) -> Record:
        result = {"status": status, "val_acc": acc, "test_acc": acc, "metric": "val_acc"}
        return Record(job_id=f"{pooling}{seed}", point={"pooling": pooling, "seed": seed},
                      config={"pooling": pooling, "seed": seed}, status=status, reason="", result=result)

    records = [record("cls", s, "completed", 0.80 + 0.01 * s) for s in range(3)]
    records += [record("mean", 0, "diverged", None)] + [record("mean", s, "completed", 0.84 + 0.01 * s) for s in (1, 2)]
    report = tabulate("div", records, states={})
    compare_report(report, lambda job: None)
    h = report.rows[1].headline
    assert h is not None and h.unscored == (0, 1) and h.seeds == (3, 2)
    md = to_markdown(report)
    assert "left out: 1 row run(s) without a test score" in md and "a diverged run is never tested" in md


def _records(spec: dict[tuple[str, str, int], tuple[str, float | None]]) -> tuple[list, dict]:
    """Records and predictions for {(model, pooling, seed): (status, test accuracy)}: each job
    right on the first round(acc * 1000) of 1,000 shuffled test rows of its own."""
    from reports.collect import Predictions, Record

    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 1000)
    records, preds = [], {}
    for (model, pooling, seed), (status, acc) in spec.items():
        job = f"{model}-{pooling}-{seed}"
        result = None if acc is None else {"status": status, "val_acc": acc, "test_acc": acc, "metric": "val_acc"}
        records.append(Record(job_id=job, point={"model": model, "pooling": pooling, "seed": seed},
                              config={"model": model, "pooling": pooling, "seed": seed}, status=status,
                              reason="boom" if status == "failed" else "", result=result))
        if acc is not None:
            right = np.zeros(1000, bool)
            right[rng.permutation(1000)[: round(acc * 1000)]] = True
            probs = np.zeros((1000, 2))
            probs[np.arange(1000), np.where(right, labels, 1 - labels)] = 1.0
            preds[job] = Predictions(np.arange(1000), labels, probs)
    return records, preds


def test_a_one_seed_sweep_names_no_winner_from_test_noise_and_says_what_to_run() -> None:
    """0.70 against 0.90 on 1,000 test examples is far outside the test set's noise, but with one
    seed each it may be seed luck: no winner, and the page leads with the grid change to make."""
    from reports.console import summary
    from reports.markdown import to_markdown
    from reports.tables import build_report

    records, preds = _records({("bert", "cls", 42): ("completed", 0.70), ("bert", "mean", 42): ("completed", 0.90)})
    report = build_report("one", records, states={}, predictions=preds.get)
    h = report.rows[1].headline
    assert h is not None and not h.significant and h.verdict == "cannot tell"
    (lead,) = report.lead
    assert lead.kind == "best vs baseline" and lead.result.winner is None
    md = to_markdown(report)
    first = md.split("\n")[2]  # the line after the title: the answer
    assert first.startswith("- model=bert, pooling=mean against model=bert, pooling=cls")
    assert "**cannot tell**" in first and "`seeds: [42, 43, 44, 45, 46]`" in first
    console = [str(getattr(r, "plain", "")) for r in summary(report, Path("runs/one"))]
    assert console[0].startswith("one: 2 job(s): 2 completed")  # the job counts, then the answer
    assert console[1].startswith("model=bert, pooling=mean against") and "cannot tell" in console[1]


def test_one_seed_rows_take_the_spread_pooled_from_configurations_with_several() -> None:
    from reports.markdown import to_markdown
    from reports.tables import build_report

    spec = {("bert", "cls", s): ("completed", a) for s, a in enumerate((0.80, 0.81, 0.79, 0.80))}
    spec[("bert", "mean", 0)] = ("completed", 0.95)
    records, preds = _records(spec)
    report = build_report("pool", records, states={}, predictions=preds.get)
    h = report.rows[1].headline
    assert h is not None and h.pooled is not None and h.pooled.configurations == 1 and h.pooled.df == 3
    sd = float(np.std([0.80, 0.81, 0.79, 0.80], ddof=1))
    assert h.pooled.sd == pytest.approx(sd, abs=1e-9) and h.result.winner == "b"
    md = to_markdown(report)
    assert "pooled from 1 configuration(s) with several seeds" in md.split("\n")[2]
    assert f"pooled over the 1 configuration(s) with several seeds (sd {sd:.4f}, 3 degrees of freedom)" in md


def test_a_model_sweep_leads_with_each_models_best_against_the_overall_best() -> None:
    from reports.markdown import to_markdown
    from reports.tables import build_report

    spec = {}
    for model, pooling, base in (("bert", "cls", 0.80), ("bert", "mean", 0.82), ("roberta", "cls", 0.86),
                                 ("roberta", "mean", 0.85), ("modernbert", "cls", 0.84), ("modernbert", "mean", 0.79)):
        for s in range(3):
            spec[(model, pooling, s)] = ("completed", base + 0.005 * s)
    records, preds = _records(spec)
    report = build_report("models", records, states={}, predictions=preds.get)
    kinds = [(report.rows[x.a].label["model"], report.rows[x.b].label["model"], x.kind) for x in report.lead]
    assert kinds == [("bert", "roberta", "best vs baseline"),
                     ("roberta", "modernbert", "model best vs overall best"),
                     ("roberta", "bert", "model best vs overall best")]
    assert [report.rows[x.b].label["pooling"] for x in report.lead] == ["cls", "cls", "mean"]
    lines = to_markdown(report).split("\n")
    assert lines[2].startswith("- model=roberta, pooling=cls against model=bert, pooling=cls (the best configuration")
    assert "this model's best configuration against the overall best" in lines[3]
    # the two model leads are one family: Holm over them, said in the sentence
    from reports.seeds import holm

    models = report.lead[1:]
    assert [x.result.p_adjusted for x in models] == pytest.approx(holm([x.result.p_value for x in models]))
    assert all(x.result.winner is None or x.result.p_adjusted < 0.05 for x in models)
    changed = [x for x in models if x.result.p_adjusted != x.result.p_value]
    assert changed and "after Holm over the comparisons made with it" in lines[2 + report.lead.index(changed[0])]


def test_the_budget_curve_counts_failed_and_diverged_runs_at_the_worst_score() -> None:
    """Dodge et al. 2019 count every trial launched: leaving out failed runs biases the curve up."""
    from reports.budget import expected_best
    from reports.markdown import to_markdown
    from reports.tables import build_report

    records, preds = _records({("bert", "cls", 0): ("completed", 0.80), ("bert", "cls", 1): ("completed", 0.84),
                               ("bert", "mean", 0): ("failed", None), ("bert", "mean", 1): ("diverged", None),
                               ("bert", "pooler", 0): ("collapsed", 0.5)})
    report = build_report("budget", records, states={}, predictions=preds.get)
    (curve,) = report.budget
    assert curve.n == 5
    mean, _ = expected_best([0.80, 0.84, 0.5, 0.5, 0.5], ks=curve.ks)
    assert np.allclose(curve.mean, mean)
    md = to_markdown(report)
    assert "2 completed, 1 collapsed, 1 diverged, 1 failed" in md
    assert "2 run(s) without a val_acc (failed, or diverged before validating) at the worst score" in md
