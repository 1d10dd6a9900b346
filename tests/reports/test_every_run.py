"""Every run in the report, told truthfully (issue 32): every configuration is a row whatever
became of its runs, the design comes from the storage, REPORT.md keeps every sweep's entry."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from reports.build import generate
from sweeper.cli import app
from sweeper.spec import Job
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from tests.conftest import tiny_job
from trainer.config import build_job


def _store(runs: Path, name: str) -> SweepStore:
    return SweepStore(open_storage(str(runs / "sweeps.journal")), name)


def _add(store: SweepStore, point: dict, state: str, val_acc: float | None = 0.8) -> str:
    """One job of a grid: enqueued (waiting), claimed by this live process (running), or finished."""
    job = Job(config=build_job({k: v for k, v in point.items()}), point=point)
    store.enqueue(job)
    if state == "waiting":
        return job.id
    trial = store.canonical(store.trials_by_job()[job.id])
    assert trial is not None and store.claim(trial)
    if state == "failed":
        store.fail(trial._trial_id, "exit code 1: OSError: model.safetensors is damaged")
    elif state != "running":
        store.finish(trial._trial_id, {"status": state, "val_acc": val_acc if state != "diverged" else None,
                                       "test_acc": val_acc if state != "diverged" else None, "metric": "val_acc",
                                       "epochs": [], "runtime_s": 10.0})
    return job.id


def test_a_mid_sweep_report_shows_every_swept_key_and_the_unfinished_configurations(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = _store(runs, "mid")
    _add(store, {"pooling": "cls", "seed": 1}, "completed")
    _add(store, {"pooling": "mean", "seed": 1}, "running")
    _add(store, {"pooling": "pooler", "seed": 1}, "waiting")
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    # before: the keys came from the finished job alone (no pooling column) and one row
    assert report.keys == ["model", "pooling"]
    assert [(row.label["pooling"], row.n, len(row.runs)) for row in report.rows] == [
        ("cls", 1, 1), ("mean", 0, 1), ("pooler", 0, 1)]
    md = (runs / "mid" / "report.md").read_text()
    assert "| bert | mean | 0/1 (1 running) |" in md and "| bert | pooler | 0/1 (1 waiting) |" in md
    out = CliRunner().invoke(app, ["report", "mid", "--runs-dir", str(runs), "--no-plots"], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    first = out.stdout.splitlines()[0]
    assert first == "mid: 3 job(s): 1 completed, 0 collapsed, 0 failed, 1 running, 1 waiting"
    assert "0/1 1 running" in out.stdout and "0/1 1 waiting" in out.stdout and "3 configuration(s)" in out.stdout


def test_sweep_report_name_updates_its_entry_of_report_md_and_keeps_the_others(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    a, b = _store(runs, "a"), _store(runs, "b")
    _add(a, {"lr": 1e-3, "seed": 1}, "completed")
    _add(b, {"lr": 2e-3, "seed": 1}, "completed")
    assert CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--no-plots"]).exit_code == 0
    _add(a, {"lr": 3e-3, "seed": 1}, "failed")  # the sweep goes on: a new job in a
    out = CliRunner().invoke(app, ["report", "a", "--runs-dir", str(runs), "--no-plots"])
    assert out.exit_code == 0, out.output
    index = (runs / "REPORT.md").read_text()
    assert "- [a](a/report.md)" in index and "- [b](b/report.md)" in index  # before: b's entry was dropped
    assert "[a](a/report.md) ([html](a/report.html)): 2 job(s): 1 completed, 0 collapsed, 1 failed" in index
    assert "  - model=bert, lr=0.003: 0/1 (1 failed)" in index
    assert index.index("- [a]") < index.index("- [b]")


def test_a_diverged_grid_has_every_row_and_no_empty_replicates(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = _store(runs, "div")
    _add(store, {"lr": 1e3, "seed": 1}, "diverged")
    _add(store, {"lr": 1e4, "seed": 1}, "diverged")
    (report,) = generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    assert [row.count("diverged") for row in report.rows] == [1, 1]
    md = (runs / "div" / "report.md").read_text()
    assert "( replicates" not in md and "0/1 (1 diverged)" in md
    # a grid has no pruner: its diverged jobs are not "PRUNED" trials
    assert "PRUNED" not in md and "Trials per state: DIVERGED 2" in md


def test_a_damaged_model_directory_is_a_failed_row_in_the_console_report_md_and_report_index(
    tiny_models: dict, tiny_data: Path, tmp_path: Path
) -> None:
    # config.json and the tokenizer pass the pre-flight check; the weights fail while loading
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["bert"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    grid = {"name": "models", "base": tiny_job(tiny_models["bert"], tiny_data, epochs=1),
            "axes": {"model": [str(tiny_models["bert"]), str(broken)]}, "seeds": [1]}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(grid))
    runs = tmp_path / "runs"
    ran = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(runs), "--retries", "0", "--no-live",
                                   "--no-warm-start"])
    assert ran.exit_code == 1, ran.output
    # the sweep's summary says what the finished job warned of at its start (24 validation rows)
    assert "warning: job " in ran.output and "24 validation / 24 test rows" in ran.output, ran.output
    out = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--no-plots"], env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    first = out.stdout.splitlines()[0]  # the good model's one epoch may end completed or collapsed
    assert first.startswith("models: 2 job(s): ") and first.endswith(", 1 failed, 0 running, 0 waiting"), first
    assert "2 configuration(s)" in out.stdout and "0/1 1 failed" in out.stdout  # before: "1 configuration(s)"
    md = (runs / "models" / "report.md").read_text()
    assert "| broken | 0/1 (1 failed) |" in md
    assert "<td>broken</td><td class=\"num\">0/1 (1 failed)</td>" in (runs / "models" / "report.html").read_text()
    assert "  - model=broken: 0/1 (1 failed)" in (runs / "REPORT.md").read_text()


def test_the_report_says_beside_the_figures_what_a_run_warned_of(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    store = _store(runs, "small")
    job_id = _add(store, {"lr": 1e-3, "seed": 1}, "running")
    trial = store.canonical(store.trials_by_job()[job_id])
    assert trial is not None
    warning = {"kind": "small_eval_set", "val_rows": 2, "test_rows": 2,
               "message": "2 validation / 2 test rows: one standard error of an accuracy on 2 rows is up to 0.354"}
    store.finish(trial._trial_id, {"status": "completed", "val_acc": 1.0, "test_acc": 1.0, "metric": "val_acc",
                                   "epochs": [], "warnings": [warning]})
    generate(storage=str(runs / "sweeps.journal"), runs_dir=runs, plots=False, html=False)
    table = (runs / "small" / "report.md").read_text().split("## ")[0]  # beside the table, before any section
    assert ("Evaluation set too small for these statistics: model=bert (1 of 1 run(s)): 2 validation / 2 test rows"
            in table), table
    out = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--no-plots"], env={"COLUMNS": "100"})
    assert "1 run(s) warned at their start" in " ".join(out.stdout.split())
