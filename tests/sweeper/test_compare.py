"""`sweep compare`: the plan, bad input before any work, a real run on tiny models (equal tuning on
the same points, seeds, the answer files), a kill -9 mid-run, and P(A beats B) by hand."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from reports.experiment import p_beats
from sweeper.cli import app
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from tests.conftest import REPO


def compare_grid(tmp_path: Path, model: Path, data: Path, *, lrs: tuple = (3e-3, 1e-3, 3e-4), epochs: int = 1) -> Path:
    grid = {"name": "cmp",
            "base": {"model": str(model), "max_len": 32, "batch_size": 16, "epochs": epochs, "data": {"name": str(data)}},
            "axes": {"pooling": ["cls", "mean"], "lr": list(lrs)}, "seeds": [1]}
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_dry_run_prints_the_three_phases_and_creates_no_job_directory(tiny_models: dict, tiny_data: Path,
                                                                      tmp_path: Path) -> None:
    path = compare_grid(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    out = CliRunner().invoke(app, ["compare", str(path), "--axis", "pooling", "--budget", "2", "--seeds", "2",
                                   "--runs-dir", str(runs), "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "phase 1, equal tuning: the same 2 point(s) of the rest of the grid for every value (seed 1), 4 jobs" in out.output
    assert "phase 2, seeds: each value's best configuration by val_acc on 2 seed(s)" in out.output
    assert "phase 3" in out.output and "estimate: 6 jobs" in out.output
    assert not runs.exists() or not any(p.is_dir() for p in runs.rglob("*"))


@pytest.mark.parametrize(("args", "message"), [
    (["--axis", "dropout", "--budget", "2"], "--axis dropout: "),
    (["--axis", "pooling", "--values", "cls,pooler", "--budget", "2"], "--values: pooler not among the values"),
    (["--axis", "pooling", "--budget", "4"], "--budget: 4 is larger than the rest of the grid: 3 point(s)"),
    (["--axis", "pooling", "--budget", "2", "--seeds", "5", "--max-seeds", "3"], "--max-seeds: 3 is below --seeds 5"),
    (["--axis", "pooling", "--budget", "2", "--seeds", "many"], "--seeds: 'many' is not allowed"),
    (["--axis", "pooling", "--values", "cls", "--budget", "2"], "1 value(s) to compare"),
])
def test_bad_input_is_refused_before_any_work(tiny_models: dict, tiny_data: Path, tmp_path: Path, args: list[str],
                                              message: str) -> None:
    path = compare_grid(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    out = CliRunner().invoke(app, ["compare", str(path), *args, "--runs-dir", str(runs)])
    assert out.exit_code == 2 and message in out.output, out.output
    assert not runs.exists()


def test_p_beats_against_drawing_by_hand() -> None:
    rng = np.random.default_rng(0)
    a, b = [0.80, 0.82, 0.85, 0.82], [0.81, 0.83, 0.79, 0.84]
    ks = np.array([1, 2, 3, 4])
    got = p_beats(a, b, ks)
    for k, p in zip(ks, got, strict=True):
        ma = np.max(rng.choice(a, (200_000, k)), axis=1)
        mb = np.max(rng.choice(b, (200_000, k)), axis=1)
        assert p == pytest.approx(np.mean((ma > mb) + 0.5 * (ma == mb)), abs=0.005)
    assert p_beats([0.9], [0.8], ks)[0] == 1.0 and p_beats([0.8], [0.8], ks)[0] == 0.5
    assert p_beats([0.1, 0.2], [0.3], ks, maximize=False)[-1] == 1.0  # a loss: lower is better


def _cmd(path: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweeper.cli", "compare", str(path), "--axis", "pooling", "--budget", "2",
            "--seeds", "2", "--runs-dir", str(runs), "--no-live", "--parallel", "2", "--json", *extra]


def test_a_comparison_runs_killed_and_again_each_job_once(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = compare_grid(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(path, runs), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(runs.glob("cmp-compare-pooling/*/events.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # while the first tuning jobs run
    proc.wait()
    time.sleep(0.5)  # the children die with their parent (PDEATHSIG)
    done = subprocess.run(_cmd(path, runs), cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    assert "phase 1, equal tuning" in done.stdout and "Written:" in done.stdout
    out = runs / "cmp-compare-pooling"
    assert (out / "compare.md").is_file() and (out / "compare.html").is_file()
    payload = json.loads((out / "compare.json").read_text())
    assert payload["axis"] == "pooling" and payload["values"] == ["cls", "mean"] and payload["budget"] == 2
    backend = open_storage(str(runs / "sweeps.journal"))
    tuning = SweepStore(backend, "cmp-compare-pooling", create=False).trials_by_job()
    seeds = SweepStore(backend, "cmp-compare-pooling-seeds", create=False).trials_by_job()
    assert len(tuning) == 4 and len(seeds) == 2  # 2 values x 2 points; each best on a second seed
    for trials in (*tuning.values(), *seeds.values()):  # each job finished once, kill or not
        assert [t.state for t in trials].count(TrialState.COMPLETE) == 1
    points = {v: [json.loads((runs / "cmp-compare-pooling" / r["job"] / "config.json").read_text())["lr"]
                  for r in payload["by_value"][v]["tuning_runs"]] for v in ("cls", "mean")}
    assert points["cls"] == points["mean"] and len(points["cls"]) == 2  # the same two points of the rest
    for v in ("cls", "mean"):
        assert len(payload["by_value"][v]["seeds"]) == 2
        assert payload["by_value"][v]["seeds"][0]["job"] == payload["by_value"][v]["best"]["job"]  # the tuning run
    (pair,) = payload["pairs"]
    assert (pair["a"], pair["b"]) == ("cls", "mean") and {"diff", "low", "high", "p_value", "winner"} <= set(pair)
    (beats,) = payload["p_beats"]
    assert beats["k"] == [1, 2] and all(0 <= x <= 1 for x in beats["p"])
    md = (out / "compare.md").read_text()
    assert md.startswith("# sweep compare: pooling") and "P(A beats B) at every tuning budget" in md
    assert (out / "p_beats.png").is_file() and (out / "budget.png").is_file()
    again = subprocess.run(_cmd(path, runs), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and payload["answer"] in json.loads((out / "compare.json").read_text())["answer"]


@pytest.mark.slow
def test_two_real_encoders_minilm_against_its_first_3_layers(tmp_path: Path) -> None:
    """The issue's case with two real local encoders: all-MiniLM-L6-v2 from ../shared and its first 3
    layers (bench/cut_model.py), on real IMDB rows; budget 1 (each on the same learning rate), 2 seeds."""
    from bench.cut_model import cut
    from tests.conftest import SHARED

    model, data = SHARED / "models" / "all-MiniLM-L6-v2", SHARED / "data" / "imdb"
    if not (model.is_dir() and data.is_dir()):
        pytest.skip(f"no real model and data at {SHARED}")
    small = cut(model, tmp_path / "minilm-l3", 3)
    grid = {"name": "real", "base": {"epochs": 1, "max_len": 64, "batch_size": 16, "lr": 1e-4,
                                     "data": {"name": str(data), "limit": 160, "eval_limit": 100}},
            "axes": {"model": [str(model), str(small)]}, "seeds": [1]}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(grid))
    runs = tmp_path / "runs"
    out = CliRunner().invoke(app, ["compare", str(path), "--axis", "model", "--budget", "1", "--seeds", "2",
                                   "--runs-dir", str(runs), "--no-live", "--parallel", "2", "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads((runs / "real-compare-model" / "compare.json").read_text())
    assert payload["values"] == ["all-MiniLM-L6-v2", "minilm-l3"]
    for v in payload["values"]:
        (tuning,) = payload["by_value"][v]["tuning_runs"]
        assert tuning["val_acc"] is not None and len(payload["by_value"][v]["seeds"]) == 2
        assert all(0.3 < s["test_acc"] <= 1 for s in payload["by_value"][v]["seeds"])
    (pair,) = payload["pairs"]
    assert pair["low"] <= pair["diff"] <= pair["high"] and payload["answer"]


def test_a_search_space_is_tuned_as_one_study_per_value_with_the_same_sampler_seed(tiny_models: dict, tiny_data: Path,
                                                                                    tmp_path: Path) -> None:
    space = {"name": "sp", "base": {"model": str(tiny_models["bert"]), "max_len": 32, "batch_size": 16, "epochs": 1,
                                    "data": {"name": str(tiny_data)}},
             "params": {"pooling": {"values": ["cls", "mean"]}, "lr": {"min": 1e-4, "max": 3e-3, "log": True}},
             "sampler": {"name": "tpe", "seed": 7}}
    path = tmp_path / "sp.yaml"
    path.write_text(yaml.safe_dump(space))
    runs = tmp_path / "runs"
    dry = CliRunner().invoke(app, ["compare", str(path), "--axis", "pooling", "--budget", "1", "--seeds", "2",
                                   "--runs-dir", str(runs), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "one study per value, 1 trial(s) each, the same sampler and sampler seed" in dry.output
    assert "sp-compare-pooling-0, sp-compare-pooling-1" in dry.output and not runs.exists()
    ranged = CliRunner().invoke(app, ["compare", str(path), "--axis", "lr", "--budget", "1", "--runs-dir", str(runs)])
    assert ranged.exit_code == 2 and "a range cannot be compared value by value" in ranged.output
    out = CliRunner().invoke(app, ["compare", str(path), "--axis", "pooling", "--budget", "1", "--seeds", "2",
                                   "--runs-dir", str(runs), "--no-live", "--parallel", "2", "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads((runs / "sp-compare-pooling" / "compare.json").read_text())
    lrs = {v: json.loads((runs / f"sp-compare-pooling-{i}" / payload["by_value"][v]["tuning_runs"][0]["job"]
                          / "config.json").read_text())["lr"] for i, v in enumerate(("cls", "mean"))}
    assert lrs["cls"] == lrs["mean"]  # the same sampler seed: the same learning rate drawn for each value
    for v in ("cls", "mean"):
        assert len(payload["by_value"][v]["seeds"]) == 2


def test_slurm_submits_workers_that_run_this_same_comparison(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--slurm submits N workers, each running the same `sweep compare` (each phase's jobs claimed
    once across them); the worker command, run here as a worker would, completes the comparison."""
    from sweeper import slurm

    submitted: dict = {}

    def fake_submit(**kwargs):  # type: ignore[no-untyped-def]
        submitted.update(kwargs)
        return slurm.Submission(array_id="77", job_ids=["77_0", "77_1"], folder=tmp_path / "slurm")

    monkeypatch.setattr(slurm, "submit", fake_submit)
    path = compare_grid(tmp_path, tiny_models["bert"], tiny_data, lrs=(3e-3, 1e-3))
    runs = tmp_path / "runs"
    out = CliRunner().invoke(app, ["compare", str(path), "--axis", "pooling", "--budget", "1", "--seeds", "2", "--json",
                                   "--runs-dir", str(runs), "--slurm", "--slurm-workers", "2"])
    assert out.exit_code == 0, out.output
    command = submitted["command"]
    assert command[1:5] == ["-m", "sweeper.cli", "compare", str(path.absolute())]
    assert command[5:13] == ["--axis", "pooling", "--budget", "1", "--seeds", "2", "--max-seeds", "10"]
    assert "--json" in command and "--runs-dir" in command and submitted["options"].workers == 2
    assert not list(runs.glob("cmp-compare-pooling/*/"))  # nothing ran here
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={
        **__import__("os").environ, **submitted["env"]})
    assert done.returncode == 0, done.stderr
    assert (runs / "cmp-compare-pooling" / "compare.json").is_file()


def test_jobs_finished_in_another_sweep_on_the_storage_are_not_run_again(tiny_models: dict, tiny_data: Path,
                                                                         tmp_path: Path) -> None:
    """The grid itself was run first (`sweep grid`): the comparison adopts its finished jobs (the same
    job id is the same configuration) and runs only the seeds it lacks."""
    path = compare_grid(tmp_path, tiny_models["bert"], tiny_data, lrs=(3e-3, 1e-3))
    runs = tmp_path / "runs"
    first = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(runs), "--no-live", "--parallel", "2"])
    assert first.exit_code == 0, first.output
    out = CliRunner().invoke(app, ["compare", str(path), "--axis", "pooling", "--budget", "2", "--seeds", "2",
                                   "--runs-dir", str(runs), "--no-live", "--parallel", "2", "--json"])
    assert out.exit_code == 0, out.output
    assert "4 tuning job(s) finished in other sweeps of this storage, not run again" in out.output
    backend = open_storage(str(runs / "sweeps.journal"))
    tuning = SweepStore(backend, "cmp-compare-pooling", create=False).trials_by_job()
    assert len(tuning) == 4 and all(t[-1].user_attrs.get("reused_from") == "cmp" for t in tuning.values())
    for job in tuning:  # read through a link to the grid's own directory: one run, one directory
        linked = runs / "cmp-compare-pooling" / job
        assert linked.is_symlink() and (linked / "result.json").is_file()
    payload = json.loads((runs / "cmp-compare-pooling" / "compare.json").read_text())
    assert all(len(payload["by_value"][v]["seeds"]) == 2 for v in ("cls", "mean"))
