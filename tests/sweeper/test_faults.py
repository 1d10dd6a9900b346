"""Every fault of issue #17, injected and survived: duplicate trials of seeded workers, a torn
journal, hostile grid files, a read-only runs directory, SIGTERM, leaked temporary files, and
random kill -9s of orchestrators and jobs (the chaos tests)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.spec import load_grid
from sweeper.storage import open_storage, repair_journal
from sweeper.store import SweepStore
from tests.conftest import REPO, write_dataset
from tests.sweeper.test_scheduler import events, grid_file, spare_processes, sweep_cmd, trials
from tests.sweeper.test_study import cmd, finished, space_file, study
from trainer.config import ConfigError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def job_processes(marker: Path) -> list[int]:
    """Live job processes (`sweeper.process` with a job under MARKER, spares excluded)."""
    return spare_processes(marker, spares=False)


def wait_for(condition, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


# -- 1: seeded samplers in parallel workers ---------------------------------------------------------


def test_two_workers_with_a_seeded_sampler_never_run_the_same_configuration(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = space_file(tmp_path, tiny_models["bert"], tiny_data, epochs=1, sampler={"name": "random", "seed": 0})
    runs = tmp_path / "runs"
    procs = [subprocess.Popen(cmd(path, runs, 6, "--parallel", "1"), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    s = study(runs)
    done = finished(s)
    assert len(done) == 6
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 6  # six distinct configurations
    assert len({t.user_attrs["sampler_seed"] for t in done}) == 6  # each trial its own recorded stream
    assert len({t.user_attrs["pid"] for t in done}) == 2


def test_a_seeded_study_draws_the_same_values_whoever_asks() -> None:
    from sweeper.samplers import PerTrialSeeded

    def draws(n_studies: int) -> list[float]:
        storage = optuna.storages.InMemoryStorage()
        name = optuna.create_study(storage=storage).study_name
        workers = [optuna.load_study(study_name=name, storage=storage,
                                     sampler=PerTrialSeeded(lambda s: optuna.samplers.RandomSampler(seed=s), 0))
                   for _ in range(n_studies)]
        values = []
        for i in range(6):
            trial = workers[i % n_studies].ask()
            values.append(trial.suggest_float("lr", 1e-5, 1e-3, log=True))
            workers[i % n_studies].tell(trial, 0.0)
        return values

    one, two = draws(1), draws(2)
    assert one == two and len(set(one)) == 6  # two workers: the same, distinct values as one


def test_a_configuration_the_study_completed_is_reused_not_run_again(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = space_file(tmp_path, tiny_models["bert"], tiny_data, epochs=1, lrs=[2e-3])
    runs = tmp_path / "runs"
    runs.mkdir()
    s = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "sweeps.journal"))), direction="maximize")
    for _ in range(2):
        s.enqueue_trial({"lr": 2e-3, "pooling": "cls"})
    done = subprocess.run(cmd(path, runs, 2, "--parallel", "1"), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    first, second = study(runs).trials
    assert first.state == second.state == TrialState.COMPLETE and first.value == second.value
    assert second.user_attrs["reused_from"] == first.number and "reused" in done.stderr
    assert events(runs / "s" / first.user_attrs["job_id"], "start") == 1  # it ran once


def test_a_study_with_seeds_runs_each_trial_once_per_seed_and_tells_their_mean(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = space_file(tmp_path, tiny_models["bert"], tiny_data, epochs=2)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "seeds": [1, 2]}))
    runs = tmp_path / "runs"
    done = subprocess.run(cmd(path, runs, 2, "--parallel", "2"), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    s = study(runs)
    assert len(s.trials) == 2
    for trial in s.trials:
        seeds = trial.user_attrs["seeds"]
        assert [row["seed"] for row in seeds] == [1, 2] and len({row["job_id"] for row in seeds}) == 2
        vals = [json.loads((runs / "s" / row["job_id"] / "result.json").read_text())["val_acc"] for row in seeds]
        assert [row["result"]["val_acc"] for row in seeds] == vals
        assert trial.value == pytest.approx(sum(vals) / 2)
        per_epoch = [[json.loads(line)["val_acc"] for line in (runs / "s" / row["job_id"] / "events.jsonl")
                      .read_text().splitlines() if json.loads(line)["event"] == "epoch"] for row in seeds]
        # each epoch is reported once, as the mean of the seeds that had reached it by then
        assert sorted(trial.intermediate_values) == [1, 2]
        for e, (a, b) in enumerate(zip(*per_epoch, strict=True)):
            assert trial.intermediate_values[e + 1] in (pytest.approx(a), pytest.approx(b), pytest.approx((a + b) / 2))


# -- 2: a torn journal ------------------------------------------------------------------------------


def _journal_of_a_real_grid(tmp_path: Path, tiny_models: dict, tiny_data: Path) -> tuple[Path, Path]:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, seeds=(1,), epochs=1)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(runs), "--no-live", "--no-warm-start"])
    assert result.exit_code == 0, result.output
    return path, runs / "sweeps.journal"


def test_a_journal_torn_at_any_byte_of_its_last_record_is_repaired_and_the_sweep_goes_on(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    grid_path, journal = _journal_of_a_real_grid(tmp_path, tiny_models, tiny_data)
    whole = journal.read_bytes()
    last = len(whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]) + 1
    for cut in range(1, last):  # every torn length of the last record (its newline included)
        torn = tmp_path / "torn" / "sweeps.journal"
        shutil.rmtree(torn.parent, ignore_errors=True)
        torn.parent.mkdir()
        torn.write_bytes(whole[: len(whole) - cut])
        store = SweepStore(open_storage(str(torn)), "g", create=False)
        assert len(store.trials_by_job()) == 2
        kept = list(torn.parent.glob("sweeps.journal.damaged-*"))
        assert len(kept) == 1 and kept[0].read_bytes() == whole[len(whole) - last: len(whole) - cut]
        assert torn.read_bytes() == whole[: len(whole) - last]  # cut back to the last whole record
        store.study.set_user_attr("probe", cut)  # and it takes writes again
        assert optuna.load_study(study_name="g", storage=open_storage(str(torn), readonly=True)).trials
    # the worst case of the old code: a torn record with the next write glued onto it
    glued = tmp_path / "glued" / "sweeps.journal"
    glued.parent.mkdir()
    lines = whole.splitlines(keepends=True)
    glued.write_bytes(b"".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2] + lines[-1])
    assert repair_journal(glued) is not None
    assert glued.read_bytes() == b"".join(lines[:-2]) + lines[-1]  # the glued record is kept
    # and `status` and the rest of the grid run on a torn journal
    runs = journal.parent
    journal.write_bytes(whole[: len(whole) - last // 2])
    status = CliRunner().invoke(app, ["status", "g", "--runs-dir", str(runs)])
    assert status.exit_code == 0, status.output
    more = grid_file(tmp_path, tiny_models["bert"], tiny_data, seeds=(1, 2), epochs=1)
    assert more == grid_path
    again = CliRunner().invoke(app, ["grid", str(more), "--runs-dir", str(runs), "--no-live", "--no-warm-start"])
    assert again.exit_code == 0, again.output
    assert "damaged" in again.output or list(runs.glob("sweeps.journal.damaged-*"))
    by_job = trials(runs, "g")
    assert len(by_job) == 4 and all(state in ("completed", "collapsed") for state in _statuses(runs))


def _statuses(runs: Path) -> list[str]:
    store = SweepStore(open_storage(str(runs / "sweeps.journal"), readonly=True), "g", create=False)
    return [store.state(t).status for t in store.trials_by_job().values()]


# -- 3: hostile grid files ----------------------------------------------------------------------------

TEN_AXES = {"model": None, "pooling": ["cls", "mean"] * 5, "dropout": [i / 20 for i in range(10)],
            "max_len": list(range(16, 26)), "batch_size": list(range(1, 11)), "lr": [1e-5 * (i + 1) for i in range(10)],
            "weight_decay": [i / 100 for i in range(10)], "clip": [float(i) for i in range(10)],
            "epochs": list(range(1, 11)), "data.limit": list(range(10, 20))}


def _peak_rss_mb(args: list[str]) -> tuple[int, float, str]:
    """Exit code, peak resident memory (MB) and stderr of one command, measured by a fresh parent."""
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
             "sys.stderr.write(p.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    code, mb = done.stdout.split()
    return int(code), float(mb), done.stderr


def test_a_grid_too_large_and_a_yaml_alias_bomb_are_refused_in_little_memory(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    axes = {**TEN_AXES, "model": [str(tiny_models["bert"])] * 10}
    big.write_text(yaml.safe_dump({"name": "big", "base": {"data": {"name": str(tiny_data)}}, "axes": axes}))
    code, mb, err = _peak_rss_mb([sys.executable, "-m", "sweeper.cli", "grid", str(big), "--dry-run"])
    assert code == 2 and "10,000,000,000 jobs" in err and "--max-jobs 10,000" in err and mb < 100, (mb, err)
    bomb = tmp_path / "bomb.yaml"
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'] + [
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefg", "bcdefgh", strict=True)]
    bomb.write_text("name: bomb\n" + "\n".join(levels) + "\naxes: {pooling: *h}\n")
    for command in ("grid", "run"):
        args = ["grid", str(bomb), "--dry-run"] if command == "grid" else ["run", str(bomb), "--out", str(tmp_path / "o")]
        code, mb, err = _peak_rss_mb([sys.executable, "-m", "sweeper.cli", *args])
        assert code == 2 and "line 3: YAML aliases (*a) are not allowed" in err and mb < 100, (mb, err)
    with pytest.raises(ConfigError, match="more than --max-jobs 3"):
        load_grid(grid_file(tmp_path, tiny_models["bert"], tiny_data), max_jobs=3)  # 2 points x 2 seeds


# -- 5: a read-only runs directory ----------------------------------------------------------------------


def _read_only(runs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sweep ARGS` with RUNS mounted read-only (a private mount namespace: root cannot write either)."""
    inner = f"mount --bind -o ro {runs} {runs} && exec {sys.executable} -m sweeper.cli " + " ".join(
        f"'{a}'" for a in args)
    return subprocess.run(["unshare", "-m", "sh", "-c", inner], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_status_report_and_predict_work_on_a_read_only_runs_directory(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {tmp_path} {tmp_path}"], capture_output=True).returncode:
        pytest.skip("cannot make a read-only bind mount here (unshare -m needs CAP_SYS_ADMIN)")
    _, journal = _journal_of_a_real_grid(tmp_path, tiny_models, tiny_data)
    runs = journal.parent
    probe = _read_only(runs, "run", "/dev/null", "--out", str(runs / "probe"))
    assert "Read-only file system" in probe.stderr or probe.returncode != 0
    status = _read_only(runs, "status", "g", "--runs-dir", str(runs))
    assert status.returncode == 0 and "g: " in status.stdout and "completed" in status.stdout, status.stderr
    report = _read_only(runs, "report", "g", "--runs-dir", str(runs))
    assert report.returncode == 0 and "printed, not written" in report.stderr, report.stderr
    assert "Read-only file system" in report.stderr and "pooling" in report.stdout
    predict = _read_only(runs, "predict", "best:g", "a wonderful film", "--runs-dir", str(runs))
    assert predict.returncode == 0 and "a wonderful film" in predict.stdout, predict.stderr


# -- 6, 7: SIGTERM; leftovers ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grid", "study"])
def test_sigterm_stops_like_ctrl_c_queues_the_jobs_and_the_next_run_resumes_them(
        kind: str, tiny_models: dict, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=800, n_test=100, seed=6)
    runs = tmp_path / "runs"
    if kind == "grid":
        command = sweep_cmd(grid_file(tmp_path, tiny_models["bert"], data, epochs=3, seeds=(1,)), runs, "--parallel", "2")
        name = "g"
    else:
        command = cmd(space_file(tmp_path, tiny_models["bert"], data, epochs=3), runs, 2, "--parallel", "2")
        name = "s"
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # once a job has checkpointed an epoch (its epoch event comes just before last.pt: a SIGTERM
    # between the two found no job resumable, and the test failed now and then)
    wait_for(lambda: any((d / "last.pt").exists() for d in (runs / name).glob("*/")))
    proc.send_signal(signal.SIGTERM)  # to the orchestrator alone, as a cluster scheduler does
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 143, err
    assert job_processes(runs) == []  # its jobs stopped with it
    stopped = [d for d in (runs / name).glob("*/") if (d / "job.json").exists() and not (d / "result.json").exists()]
    assert stopped, "everything finished before SIGTERM"
    for job_dir in stopped:  # nothing half-written
        assert not list(job_dir.glob(".*.tmp*"))
    resumable = [d for d in stopped if (d / "last.pt").exists()]  # those that had finished an epoch kept it
    assert resumable
    s = optuna.load_study(study_name=name, storage=open_storage(str(runs / "sweeps.journal"), readonly=True))
    assert not [t for t in s.trials if t.state == TrialState.RUNNING]
    assert [t for t in s.trials if t.user_attrs.get("status") == "interrupted"]
    status = CliRunner().invoke(app, ["status", name, "--runs-dir", str(runs)], env={"COLUMNS": "250"})
    assert "running" not in status.output.split("\n", 1)[0] and "interrupted" in status.output
    again = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    for job_dir in stopped:
        result = json.loads((job_dir / "result.json").read_text())
        assert result["resumed"] == (job_dir in resumable) and events(job_dir, "end") == 1


# -- chaos ------------------------------------------------------------------------------------------------


def _chaos(command: list[str], runs: Path, name: str, rng: random.Random, rounds: int) -> int:
    """Run `command` and kill -9 it, or one of its jobs, at random moments; returns the kills."""
    kills = 0
    for _ in range(rounds):
        proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # A moment at random: now and then while the orchestrator starts, mostly while its jobs
        # run (a wall-clock window alone let a fast machine finish the grid before the kills).
        early = rng.random() < 0.25
        deadline = time.monotonic() + (rng.uniform(0.5, 3.0) if early else 60.0)
        while time.monotonic() < deadline and proc.poll() is None and (early or not job_processes(runs)):
            time.sleep(0.05)
        if not early:
            time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is not None:
            break  # it finished everything
        jobs = job_processes(runs)
        if jobs and rng.random() < 0.5:
            os.kill(rng.choice(jobs), signal.SIGKILL)  # a job dies; the orchestrator retries it
            kills += 1
            time.sleep(rng.uniform(0.5, 2.0))
        proc.send_signal(signal.SIGKILL)  # the orchestrator dies; its jobs die with it
        proc.wait()
        kills += 1
        wait_for(lambda: job_processes(runs) == [], timeout=30)
    return kills


def test_chaos_a_grid_under_random_kill_9s_ends_with_every_job_done_once_as_if_uninterrupted(
        tiny_models: dict, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=600, n_test=100, seed=12)
    path = grid_file(tmp_path, tiny_models["bert"], data, epochs=3, seeds=(1, 2))
    runs = tmp_path / "runs"
    kills = _chaos(sweep_cmd(path, runs, "--parallel", "2"), runs, "g", random.Random(0), rounds=5)
    assert kills >= 3
    done = subprocess.run(sweep_cmd(path, runs, "--parallel", "2"), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not (runs / "g" / ".warm").exists()  # the killed orchestrators' leftovers were removed
    straight = tmp_path / "straight"
    ok = subprocess.run(sweep_cmd(path, straight, "--parallel", "2"), cwd=REPO, env=ENV, capture_output=True,
                        text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    for job in load_grid(path).jobs:
        by_job = trials(runs, "g")[job.id]
        assert [t.state for t in by_job].count(TrialState.COMPLETE) == 1 and events(runs / "g" / job.id, "end") == 1
        a = json.loads((runs / "g" / job.id / "result.json").read_text())
        b = json.loads((straight / "g" / job.id / "result.json").read_text())
        assert (a["status"], a["best_epoch"]) == (b["status"], b["best_epoch"]), job.id
        for key in ("val_acc", "test_acc", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (job.id, key)


def test_chaos_a_study_under_random_kill_9s_finishes_its_trials_once_each_as_if_uninterrupted(
        tiny_models: dict, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=600, n_test=100, seed=13)
    path = space_file(tmp_path, tiny_models["bert"], data, epochs=3)
    runs = tmp_path / "runs"
    command = cmd(path, runs, 4, "--parallel", "2")
    kills = _chaos(command, runs, "s", random.Random(1), rounds=5)
    assert kills >= 3
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    s = study(runs)
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    assert len(finished(s)) == 4 and not [t for t in s.trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["job_id"] for t in complete}) == len(complete)  # no configuration twice
    for t in complete:  # each result equals the same job run straight through
        job_dir = runs / "s" / t.user_attrs["job_id"]
        assert events(job_dir, "end") == 1
        out = tmp_path / "straight" / t.user_attrs["job_id"]
        ok = subprocess.run([sys.executable, "-m", "trainer.job", str(job_dir / "job.json"), "--out", str(out)],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr
        a, b = (json.loads((d / "result.json").read_text()) for d in (job_dir, out))
        assert t.value == a["val_acc"]
        assert (a["status"], a["best_epoch"]) == (b["status"], b["best_epoch"]), t.number
        for key in ("val_acc", "test_acc", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (t.number, key)


# -- grid trials carry their parameters -----------------------------------------------------------------


def test_grid_trials_carry_their_swept_values_as_optuna_parameters(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    _, journal = _journal_of_a_real_grid(tmp_path, tiny_models, tiny_data)
    s = optuna.load_study(study_name="g", storage=open_storage(str(journal), readonly=True))
    frame = s.trials_dataframe()
    assert {"params_pooling", "params_seed"} <= set(frame.columns)
    assert sorted(frame["params_pooling"]) == ["cls", "mean"]
    assert all(isinstance(t.distributions["pooling"], optuna.distributions.CategoricalDistribution) for t in s.trials)


def test_two_trials_of_one_configuration_at_once_run_it_once_and_both_finish(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    """A space with one point, two slots: both trials get the same job (directory); the second
    waits for the first (busy) and takes its result. (Keyed by job id, the loop lost one.)"""
    path = space_file(tmp_path, tiny_models["bert"], tiny_data, epochs=1, lrs=[2e-3])
    raw = yaml.safe_load(path.read_text())
    raw["params"]["pooling"] = {"values": ["cls"]}
    path.write_text(yaml.safe_dump(raw))
    runs = tmp_path / "runs"
    done = subprocess.run(cmd(path, runs, 2, "--parallel", "2"), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    s = study(runs)
    assert len(finished(s)) == 2 and len({t.user_attrs["job_id"] for t in s.trials}) == 1
    assert len({t.value for t in s.trials}) == 1
    assert events(runs / "s" / s.trials[0].user_attrs["job_id"], "end") == 1  # trained once
