"""The SLURM launcher (sweeper/slurm.py) on a real one-node SLURM started by the test
(tests/slurm_cluster.py): workers submitted as a job array, scancel, requeue after SIGTERM,
sweep cancel, a study. Without slurm-wlm and munge the cluster tests skip, saying why; CI
(.ci/run) installs them and sets SWEEP_REQUIRE_SLURM=1, which turns that skip into a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweeper import slurm
from tests import slurm_cluster
from tests.conftest import REPO, write_dataset
from trainer.config import ConfigError

# -- options and paths (no cluster needed) ---------------------------------------------------------


@pytest.mark.parametrize(("value", "minutes"), [("30", 30), ("90:00", 90), ("1:30:00", 90), ("2-00", 2880),
                                                ("1-02:03", 1563), ("0:30", 1), ("1-00:00:01", 1441),
                                                ("soon", None), ("1:2:3:4", None)])
def test_slurm_time_formats(value: str, minutes: int | None) -> None:
    assert slurm.parse_time(value) == minutes


BAD_BLOCKS = [
    ("slurm: {workers: 0}", "line 4: slurm.workers: 0 is not allowed; expected an integer >= 1"),
    ("slurm: {time: soon}", "line 4: slurm.time: 'soon' is not a SLURM time"),
    ("slurm: {time: 1}", "line 4: slurm.time: 1 is too short"),
    ("slurm: {worker: 2}", "line 4: slurm.worker: unknown key; did you mean 'workers'?"),
    ("slurm: {extra: {output: x.log}}", "line 4: slurm.extra.output: output is set by the launcher itself"),
    ("slurm: [a]", "line 4: slurm: expected a mapping"),
]


def grid_file(tmp_path: Path, model: Path, data: Path, *, epochs: int = 2, lrs: tuple = (1e-3, 2e-3),
              seeds: tuple = (1, 2), block: str = "", name: str = "g") -> Path:
    grid = {"name": name, "base": {"model": str(model), "max_len": 32, "batch_size": 16, "epochs": epochs,
                                   "data": {"name": str(data)}},
            "axes": {"lr": list(lrs)}, "seeds": list(seeds)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False) + block + ("\n" if block else ""))
    return path


@pytest.mark.parametrize(("block", "message"), BAD_BLOCKS)
def test_a_bad_slurm_block_is_refused_with_its_line(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\n" + block + "\n")
    with pytest.raises(ConfigError) as info:
        slurm.resolve_options(path, partition=None, gpus_per_task=None, time=None, workers=None, extra=None)
    assert str(info.value).startswith(f"{path}: {message}")


def test_command_line_options_override_the_block(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("name: g\naxes: {lr: [0.001]}\nslurm: {partition: gpu, workers: 4, time: '2:00:00', "
                    "extra: {account: lab, qos: low}}\n")
    opts = slurm.resolve_options(path, partition=None, gpus_per_task=2, time="30", workers=None,
                                 extra=["qos=high", "mem=16G"])
    assert opts == slurm.SlurmOptions(partition="gpu", gpus_per_task=2, time_min=30, workers=4,
                                      extra={"account": "lab", "qos": "high", "mem": "16G"})
    for bad, message in (("qos", "is not KEY=VALUE"), ("array=0-3", "array is set by the launcher"),
                         ("Bad Key=1", "is not an sbatch option name")):
        with pytest.raises(ConfigError, match=message):
            slurm.resolve_options(path, partition=None, gpus_per_task=None, time=None, workers=None, extra=[bad])


def test_unreachable_paths_and_storages_are_refused_before_submitting(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"--runs-dir: .*file/runs cannot be created"):
        slurm.check_reachable(tmp_path / "file" / "runs", None)
    with pytest.raises(ConfigError, match="--storage: /nonexistent-dir does not exist"):
        slurm.check_reachable(tmp_path / "runs", "/nonexistent-dir/sweeps.journal")
    with pytest.raises(ConfigError, match="SQLite is not safe"):
        slurm.check_reachable(tmp_path / "runs", f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(ConfigError, match=r"--storage: postgresql://sweep@127.0.0.1:1/x cannot be reached"):
        slurm.check_reachable(tmp_path / "runs", "postgresql://sweep@127.0.0.1:1/x")


def test_the_cli_refuses_bad_slurm_input_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\nslurm: {workers: -1}\n")
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", "grid", str(path), "--slurm", "--runs-dir",
                           str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "slurm.workers: -1 is not allowed" in done.stderr
    local = subprocess.run([sys.executable, "-m", "sweeper.cli", "grid", str(path), "--runs-dir", str(tmp_path / "runs")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert local.returncode == 2 and "line 4: slurm.workers: -1" in local.stderr  # checked without --slurm too
    good = tmp_path / "good.yaml"
    good.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\n")
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", "grid", str(good), "--slurm-workers", "2", "--runs-dir",
                           str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--slurm-workers: only with --slurm" in done.stderr
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", "cancel", "nothing", "--runs-dir",
                           str(tmp_path / "runs")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no SLURM workers were submitted" in done.stderr


# -- on a real one-node SLURM ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[slurm_cluster.Cluster]:
    why = slurm_cluster.missing()
    if why:
        if os.environ.get("SWEEP_REQUIRE_SLURM"):
            pytest.fail(f"SWEEP_REQUIRE_SLURM is set but {why}")
        pytest.skip(why)
    with slurm_cluster.one_node_cluster() as c:
        yield c


@pytest.fixture
def env(cluster: slurm_cluster.Cluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a submitting shell on the cluster (the workers inherit it, as sbatch does)."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    return {**os.environ, **cluster.env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def sweep(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 240, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def queued(env: dict[str, str], array: str) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], env=env, capture_output=True,
                         text=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def drained(env: dict[str, str], array: str, runs: Path, sweep_name: str, timeout: float = 300) -> None:
    """Wait until SLURM has no task of the array left; show the workers' logs if it takes too long."""
    try:
        wait_for(f"array {array} to finish", lambda: not queued(env, array), timeout=timeout, every=1)
    except AssertionError:
        logs = "\n".join(p.read_text()[-2000:] for p in sorted((runs / sweep_name / "slurm").glob("*log.*")))
        raise AssertionError(f"array {array} still queued: {queued(env, array)}\n{logs}") from None


def submitted(out: str) -> str:
    """The array id the submit command printed."""
    line = next(line for line in out.splitlines() if "SLURM job array" in line)
    return line.split("SLURM job array ")[1].split()[0]


def journal(runs: Path, name: str = "g") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "sweeps.journal"))))


def completed_once(runs: Path, name: str, n_jobs: int) -> dict[str, Any]:
    """Every job has exactly one COMPLETE trial; returns each job's stored result."""
    by_job: dict[str, list] = {}
    for t in journal(runs, name).trials:
        by_job.setdefault(t.user_attrs["job_id"], []).append(t)
    assert len(by_job) == n_jobs
    for job_id, trials in by_job.items():
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(done) == 1, (job_id, [(t.state, t.user_attrs.get("reason")) for t in trials])
    return {job_id: next(t for t in trials if t.state == TrialState.COMPLETE).user_attrs["result"]
            for job_id, trials in by_job.items()}


def record(runs: Path, name: str, task: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((runs / name / "slurm" / f"worker-{task}.json").read_text())
    return data


def epochs_done(job_dir: Path) -> int:
    try:
        lines = (job_dir / "events.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return sum('"event":"epoch"' in line for line in lines)


def starts(job_dir: Path) -> list[int]:
    """resumed_from_epoch of each start of the job."""
    return [json.loads(line)["resumed_from_epoch"] for line in (job_dir / "events.jsonl").read_text().splitlines()
            if '"event":"start"' in line]


def mid_job(runs: Path, name: str, epochs: int) -> Path | None:
    """A job directory with at least one finished epoch and more to go."""
    for job_dir in sorted((runs / name).glob("*/")):
        if (job_dir / "events.jsonl").exists() and 1 <= epochs_done(job_dir) < epochs \
                and not (job_dir / "result.json").exists():
            return job_dir
    return None


def test_what_sbatch_refuses_is_said_and_nothing_is_recorded(cluster: slurm_cluster.Cluster, env: dict[str, str],
                                                             tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--slurm", "--slurm-partition", "nowhere")
    assert done.returncode == 1 and "sbatch refused the workers" in done.stderr and "partition" in done.stderr
    assert slurm.read_arrays(runs / "g" / "slurm") == []


def test_a_grid_on_two_workers_runs_each_job_once_with_the_local_results(
        cluster: slurm_cluster.Cluster, env: dict[str, str], tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--slurm", "--slurm-workers", "2", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    array = submitted(done.stdout)
    assert f"sweep status g --runs-dir {runs}" in done.stdout
    early = sweep(env, "status", "g", "--runs-dir", str(runs))  # before or after a worker created the storage
    assert early.returncode == 0 and "SLURM workers" in early.stdout and f"{array}_0" in early.stdout, early.stderr
    arrays = json.loads((runs / "g" / "slurm" / "workers.json").read_text())["arrays"]
    assert [a["array_id"] for a in arrays] == [array] and arrays[0]["job_ids"] == [f"{array}_0", f"{array}_1"]
    drained(env, array, runs, "g")
    on_slurm = completed_once(runs, "g", 4)
    assert len(journal(runs).trials) == 4  # nothing ran twice, nothing was retried
    for task in (f"{array}_0", f"{array}_1"):
        rec = record(runs, "g", task)
        assert (rec["state"], rec["exit_code"], rec["starts"]) == ("done", 0, 1)
        log = (runs / "g" / "slurm" / f"{task}_0_log.out").read_text()
        assert f"worker {task} (SLURM job" in log and "Job completed successfully" in log, log
    shown = sweep(env, "status", "g", "--runs-dir", str(runs))
    assert shown.returncode == 0 and "SLURM workers" in shown.stdout and f"{array}_1" in shown.stdout

    local = tmp_path / "local"
    done = sweep(env, "grid", str(path), "--runs-dir", str(local), "--parallel", "2", "--no-live")
    assert done.returncode == 0, done.stderr
    here = completed_once(local, "g", 4)
    for job_id, result in on_slurm.items():
        assert {k: result[k] for k in ("val_acc", "test_acc", "test_loss", "best_epoch")} == \
               {k: here[job_id][k] for k in ("val_acc", "test_acc", "test_loss", "best_epoch")}


@pytest.fixture
def long_data(tmp_path: Path) -> Path:
    """Enough rows that an epoch of the tiny model lasts a few seconds: time to interrupt a job mid-way."""
    return write_dataset(tmp_path / "long", n_train=1500, n_test=100, seed=3)


def test_scancel_of_one_worker_mid_job_the_other_finishes_the_sweep(
        cluster: slurm_cluster.Cluster, env: dict[str, str], tiny_models: dict, long_data: Path, tmp_path: Path) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], long_data, epochs=3, lrs=(1e-3, 2e-3, 3e-3), seeds=(1,))
    runs = tmp_path / "runs"
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--slurm", "--slurm-workers", "2", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    array = submitted(done.stdout)
    job_dir = wait_for("a job with one epoch done", lambda: mid_job(runs, "g", 3), every=0.2)
    owner = next(t for t in journal(runs).trials if t.user_attrs["job_id"] == job_dir.name and "pid" in t.user_attrs)
    task = next(t for t in (f"{array}_0", f"{array}_1") if record(runs, "g", t).get("orchestrator_pid")
                == owner.user_attrs["pid"])
    subprocess.run(["scancel", task], env=env, check=True)
    drained(env, array, runs, "g")
    completed_once(runs, "g", 3)
    assert starts(job_dir)[0] == 0 and max(starts(job_dir)[1:]) >= 1  # resumed from its last finished epoch
    cancelled, other = record(runs, "g", task), record(runs, "g", next(t for t in (f"{array}_0", f"{array}_1")
                                                                          if t != task))
    assert (cancelled["state"], cancelled["starts"]) == ("cancelled", 1)  # a scancel is not undone by a requeue
    assert (other["state"], other["exit_code"]) == ("done", 0)


@pytest.mark.parametrize("reach", ["batch", "full"])
def test_a_requeue_after_sigterm_resumes(cluster: slurm_cluster.Cluster, env: dict[str, str], tiny_models: dict,
                                         long_data: Path, tmp_path: Path, reach: str) -> None:
    """SIGTERM to the worker alone (--batch: what --signal=B:TERM@90 does before a time limit) or to
    every process of the job (--full: what preemption does). The worker stops its orchestrator like
    Ctrl-C, requeues itself, and the requeued worker resumes the job from its last epoch."""
    # The worker's grace before it signals its orchestrator, shortened so the job outlasts it.
    env = {**env, "SWEEP_SLURM_GRACE_S": "1"}
    path = grid_file(tmp_path, tiny_models["bert"], long_data, epochs=8, lrs=(1e-3,), seeds=(1,))
    runs = tmp_path / "runs"
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--slurm", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    task = submitted(done.stdout)  # one worker: a plain job id
    job_dir = wait_for("a job with one epoch done", lambda: mid_job(runs, "g", 8), every=0.2)
    subprocess.run(["scancel", "--signal=TERM", f"--{reach}", task], env=env, check=True)
    # scontrol requeue holds a job ~2 minutes (BeginTime); let it start now.
    wait_for("the worker to be requeued", lambda: queued(env, task).get(task) == "PENDING", every=0.2)
    # Not within the second its last run was killed: slurmctld then refuses the new run ("Killing
    # non-startable batch JobId=1: Job credential revoked", the reason requeue waits 2 minutes).
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"jobid={task}", "StartTime=now"], env=env, check=True)
    drained(env, task, runs, "g")
    completed_once(runs, "g", 1)
    assert max(starts(job_dir)[1:]) >= 1
    rec = record(runs, "g", task)
    assert (rec["state"], rec["starts"]) == ("done", 2)
    assert [h["state"] for h in rec["history"]] == ["requeued", "done"]
    assert "asking SLURM to requeue it" in (runs / "g" / "slurm" / f"{task}_0_log.out").read_text()
    # A clean stop: the orchestrator exited as on Ctrl-C (130) or SIGTERM (143), and queued its trial
    # again as "interrupted" (rather than dying and being taken over as "worker lost").
    assert rec["history"][0]["exit_code"] in (130, 143)
    stopped = {t.user_attrs.get("status") for t in journal(runs).trials if t.state == TrialState.FAIL}
    assert stopped == {"interrupted"}


def test_sweep_cancel_stops_the_workers_and_a_later_submit_resumes(
        cluster: slurm_cluster.Cluster, env: dict[str, str], tiny_models: dict, long_data: Path, tmp_path: Path) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], long_data, epochs=3, lrs=(1e-3,), seeds=(1,))
    runs = tmp_path / "runs"
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--slurm", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    first = submitted(done.stdout)
    job_dir = wait_for("a job with one epoch done", lambda: mid_job(runs, "g", 3), every=0.2)
    cancelled = sweep(env, "cancel", "g", "--runs-dir", str(runs))
    assert cancelled.returncode == 0 and f"cancelled SLURM job array(s) {first}" in cancelled.stdout
    drained(env, first, runs, "g")
    rec = record(runs, "g", first)
    assert (rec["state"], rec["starts"]) == ("cancelled", 1)
    assert not (job_dir / "result.json").exists()

    again = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--slurm", "--parallel", "1")
    assert again.returncode == 0, again.stderr
    second = submitted(again.stdout)
    drained(env, second, runs, "g")
    completed_once(runs, "g", 1)
    assert max(starts(job_dir)[1:]) >= 1
    shown = sweep(env, "status", "g", "--runs-dir", str(runs)).stdout
    assert first in shown and second in shown and "cancelled" in shown


def test_a_study_on_two_workers_finishes_exactly_its_trials(
        cluster: slurm_cluster.Cluster, env: dict[str, str], tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    space = {"name": "s", "base": {"model": str(tiny_models["bert"]), "max_len": 32, "batch_size": 16, "epochs": 1,
                                   "data": {"name": str(tiny_data)}},
             "params": {"lr": {"min": 1.0e-3, "max": 5.0e-3, "log": True}, "pooling": {"values": ["cls", "mean"]}},
             "sampler": {"name": "random", "seed": 0}, "pruner": "none",
             "slurm": {"workers": 2, "time": "10:00"}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    runs = tmp_path / "runs"
    done = sweep(env, "optuna", "--trials", "4", "--space", str(path), "--runs-dir", str(runs), "--slurm",
                 "--parallel", "1")
    assert done.returncode == 0, done.stderr
    array = submitted(done.stdout)
    assert "time limit 10 min" in done.stdout
    drained(env, array, runs, "s")
    study = journal(runs, "s")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert all(t.user_attrs.get("status") == "surplus" for t in study.trials if t.state == TrialState.FAIL)
    for task in (f"{array}_0", f"{array}_1"):
        assert record(runs, "s", task)["state"] == "done"
