from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.devices import make_slots
from sweeper.spec import load_grid
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from tests.conftest import REPO, sigint_like_a_terminal, write_dataset
from trainer.jobdir import STATE_FILE


def grid_file(tmp_path: Path, model: Path, data: Path, *, name: str = "g", seeds: tuple = (1, 2),
              models: list[str] | None = None, epochs: int = 2) -> Path:
    grid = {
        "name": name,
        "base": {"model": str(model), "max_len": 32, "batch_size": 16, "lr": 3e-3, "epochs": epochs,
                 "data": {"name": str(data)}},
        "axes": {"pooling": ["cls", "mean"]} if models is None else {"model": models},
        "seeds": list(seeds),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def sweep_cmd(path: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweeper.cli", "grid", str(path), "--runs-dir", str(runs), "--no-live", *extra]


def trials(runs: Path, name: str) -> dict[str, list]:
    return SweepStore(open_storage(str(runs / "sweeps.journal")), name).trials_by_job()


def events(job_dir: Path, kind: str) -> int:
    return sum(json.loads(line)["event"] == kind for line in (job_dir / "events.jsonl").read_text().splitlines())


def test_a_four_job_grid_with_parallel_2_completes(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(runs), "--parallel", "2", "--no-live"])
    assert result.exit_code == 0, result.output
    grid = load_grid(path)
    by_job = trials(runs, "g")
    assert set(by_job) == {j.id for j in grid.jobs}
    for job in grid.jobs:
        (trial,) = by_job[job.id]
        stored = json.loads((runs / "g" / job.id / "result.json").read_text())
        assert trial.state == TrialState.COMPLETE and trial.value == stored["val_acc"]
        assert trial.user_attrs["result"]["test_acc"] == stored["test_acc"]  # results live in the storage
        assert trial.user_attrs["point"] == job.point
    # `sweep status` reads the same from the storage
    status = CliRunner().invoke(app, ["status", "g", "--runs-dir", str(runs)])
    assert status.exit_code == 0 and "4 completed" in status.output
    # and the same command again does nothing new
    again = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(runs), "--no-live"])
    assert again.exit_code == 0 and all(len(t) == 1 for t in trials(runs, "g").values())


def test_kill_9_of_the_orchestrator_then_the_same_command_finishes_every_job_once(
    tiny_models: dict, tmp_path: Path
) -> None:
    data = write_dataset(tmp_path / "data", n_train=800, n_test=100, seed=4)
    path = grid_file(tmp_path, tiny_models["bert"], data, epochs=3)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(sweep_cmd(path, runs, "--parallel", "2"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    grid = load_grid(path)
    while time.monotonic() < deadline:  # kill once some job has finished an epoch
        if any((runs / "g" / j.id / "events.jsonl").exists() and events(runs / "g" / j.id, "epoch") >= 1
               for j in grid.jobs):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    unfinished = [j for j in grid.jobs if not (runs / "g" / j.id / "result.json").exists()]
    assert unfinished, "the sweep finished before it could be killed"
    time.sleep(0.5)  # the children die with their parent (PDEATHSIG)
    done = subprocess.run(sweep_cmd(path, runs, "--parallel", "2"), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    ok = subprocess.run(sweep_cmd(path, straight, "--parallel", "2"), cwd=REPO, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    for job in grid.jobs:
        a = json.loads((runs / "g" / job.id / "result.json").read_text())
        b = json.loads((straight / "g" / job.id / "result.json").read_text())
        assert events(runs / "g" / job.id, "end") == 1  # finished exactly once
        assert [t.state for t in trials(runs, "g")[job.id]].count(TrialState.COMPLETE) == 1
        assert a["status"] == b["status"]
        for key in ("best_epoch", "val_acc", "test_acc", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (job.id, key)


def test_a_failing_job_is_recorded_with_its_log_tail_retried_and_does_not_stop_the_sweep(
    tiny_models: dict, tiny_data: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["bert"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, models=[str(tiny_models["bert"]), str(broken)],
                     seeds=(1,))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(runs), "--retries", "1", "--no-live"])
    assert result.exit_code == 1
    grid = load_grid(path)
    good, bad = grid.jobs
    by_job = trials(runs, "g")
    assert by_job[good.id][0].state == TrialState.COMPLETE
    (trial,) = by_job[bad.id]
    assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "failed"
    assert trial.user_attrs["reason"].startswith("exit code 1")
    assert any("safetensors" in line.lower() or "error" in line.lower() for line in trial.user_attrs["log_tail"])
    assert "attempt_1_failure" in trial.user_attrs  # the first failure, then its retry
    log = (runs / "g" / bad.id / "job.log").read_text()
    assert "== attempt 1" in log and "== attempt 2" in log and "== attempt 3" not in log
    status = CliRunner().invoke(app, ["status", "--runs-dir", str(runs)])
    assert "1 completed" in status.output and "1 failed" in status.output


def test_two_orchestrators_at_once_never_run_the_same_job(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, seeds=(1, 2, 3))
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two orchestrators on two cores: one thread each
    procs = [subprocess.Popen(sweep_cmd(path, runs), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    grid = load_grid(path)
    by_job = trials(runs, "g")
    workers = set()
    for job in grid.jobs:
        assert events(runs / "g" / job.id, "start") == 1, job.id  # started once, by one worker
        states = [t.state for t in by_job[job.id]]
        assert states.count(TrialState.COMPLETE) == 1 and TrialState.FAIL not in states
        workers.add(next(t for t in by_job[job.id] if t.state == TrialState.COMPLETE).user_attrs["pid"])
    assert len(workers) == 2  # both shared the work


def test_gpu_slots_share_devices_and_cpu_lanes() -> None:
    slots = make_slots(gpus=["0", "1"], jobs_per_gpu=2, parallel=1)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "0", "1", "1"]
    assert [s.name for s in make_slots(gpus=[], jobs_per_gpu=2, parallel=3)] == ["cpu:0", "cpu:1", "cpu:2"]


def test_status_without_a_storage_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no sweep storage" in result.output


def test_ctrl_c_stops_the_jobs_writes_their_state_and_the_next_run_continues(tiny_models: dict, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=800, n_test=100, seed=6)
    path = grid_file(tmp_path, tiny_models["bert"], data, epochs=3, seeds=(1,))
    runs = tmp_path / "runs"
    proc = subprocess.Popen(sweep_cmd(path, runs, "--parallel", "2"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_like_a_terminal)
    grid = load_grid(path)
    deadline = time.monotonic() + 180
    # Ctrl-C once a job's first epoch is checkpointed: the `epoch` event comes before the
    # checkpoint, and a Ctrl-C between them rightly repeats the epoch (nothing to resume from).
    while time.monotonic() < deadline and not any((runs / "g" / j.id / STATE_FILE).exists() for j in grid.jobs):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "run the same command" in stderr
    interrupted = [j for j in grid.jobs if not (runs / "g" / j.id / "result.json").exists()]
    assert interrupted, "the sweep finished before Ctrl-C"
    by_job = trials(runs, "g")
    for job in interrupted:  # interrupted, and queued again at once: not failed
        *_, stopped, queued = by_job[job.id]
        assert stopped.state == TrialState.FAIL and stopped.user_attrs["status"] == "interrupted"
        assert queued.state == TrialState.WAITING
    status = CliRunner().invoke(app, ["status", "g", "--runs-dir", str(runs)])
    assert "interrupted" in status.output and "failed" not in status.output
    done = subprocess.run(sweep_cmd(path, runs, "--parallel", "2"), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    for job in grid.jobs:
        result = json.loads((runs / "g" / job.id / "result.json").read_text())
        assert result["status"] in ("completed", "collapsed") and events(runs / "g" / job.id, "end") == 1
    assert any(json.loads((runs / "g" / j.id / "result.json").read_text())["resumed"] for j in interrupted)


def spare_processes(marker: Path, *, spares: bool = True) -> list[int]:
    """Live `sweeper.process --spare` processes whose early log lies under MARKER (or, with
    spares=False, the job processes running a job under MARKER)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"sweeper.process" in cmdline and (b"--spare" in cmdline) == spares
                and any(str(marker).encode() in arg for arg in cmdline)):
            pids.append(int(proc.name))
    return pids


def test_warm_started_jobs_give_the_cold_results_and_leave_no_process_behind(
    tiny_models: dict, tiny_data: Path, tmp_path: Path
) -> None:
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, models=[str(tiny_models["bert"])], seeds=(1, 2, 3),
                     epochs=1)
    grid = load_grid(path)
    results = {}
    for mode in ("--warm-start", "--no-warm-start"):
        runs = tmp_path / mode.strip("-")
        done = subprocess.run(sweep_cmd(path, runs, "--parallel", "1", mode), cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results[mode] = {j.id: json.loads((runs / "g" / j.id / "result.json").read_text()) for j in grid.jobs}
        logs = {j.id: (runs / "g" / j.id / "job.log").read_text() for j in grid.jobs}
        warm = [log for log in logs.values() if "(warm start)" in log]
        # one slot: the first job starts cold, each later one in the spare started while its predecessor ran
        assert len(warm) == (len(grid.jobs) - 1 if mode == "--warm-start" else 0), logs
        for job_id, log in logs.items():  # the job's own output is in its log either way
            assert "epoch 1/1" in log and f"job {job_id}: " in log, log
        assert not (runs / "g" / ".warm").exists()  # the spares' early logs are gone
        assert spare_processes(runs) == []
    for job in grid.jobs:
        a, b = results["--warm-start"][job.id], results["--no-warm-start"][job.id]
        assert (a["status"], a["best_epoch"]) == (b["status"], b["best_epoch"])
        for key in ("val_acc", "test_acc", "test_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), (job.id, key)


def test_a_spare_that_died_means_a_cold_start_and_an_unused_one_is_killed(
    tiny_models: dict, tiny_data: Path, tmp_path: Path
) -> None:
    from sweeper.grid_source import GridSource
    from sweeper.process import WarmPool
    from sweeper.scheduler import Scheduler

    slot = make_slots(gpus=None, jobs_per_gpu=1, parallel=1)[0]
    pool = WarmPool(tmp_path / ".warm")
    pool.prime([slot])
    (spare,) = pool.spares.values()
    assert spare.early_log.exists()
    # Only its import thread is niced: the process's main thread (the job's) keeps priority 0.
    assert os.getpriority(os.PRIO_PROCESS, spare.proc.pid) == 0
    spare.proc.kill()
    spare.proc.wait()
    grid = load_grid(grid_file(tmp_path, tiny_models["bert"], tiny_data, models=[str(tiny_models["bert"])],
                               seeds=(1,), epochs=1))
    store = SweepStore(open_storage(str(tmp_path / "runs" / "sweeps.journal")), "g")
    scheduler = Scheduler(GridSource(grid, store, runs_dir=tmp_path / "runs"), runs_dir=tmp_path / "runs", slots=[slot],
                          retries=0)
    scheduler.warm = pool
    scheduler.source.tick()
    scheduler._fill()
    (run,) = scheduler.running.values()
    job_dir = tmp_path / "runs" / "g" / grid.jobs[0].id
    proc = run.proc
    assert proc is not None and proc.pid != spare.proc.pid and proc.wait(timeout=120) == 0
    assert "(warm start)" not in (job_dir / "job.log").read_text()
    assert "test_acc" in json.loads((job_dir / "result.json").read_text())  # it ran to the end
    assert not spare.early_log.exists() and pool.spares == {}
    pool.prime([slot])  # a spare nobody needs: closing the pool kills it and tidies up
    (unused,) = pool.spares.values()
    pool.close()
    assert unused.proc.poll() is not None and not (tmp_path / ".warm").exists()


def test_a_job_process_exits_with_its_command_s_code(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    from sweeper.process import COMMAND

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": str(tiny_models["bert"]), "data": {"name": str(tiny_data)},
                                   "pooling": "max"}))
    done = subprocess.run([*COMMAND, str(bad), "--out", str(tmp_path / "out")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pooling" in done.stderr and "bad.yaml" in done.stderr


def test_a_warm_started_job_closes_its_wandb_run_like_a_cold_one(tiny_models: dict, tiny_data: Path,
                                                                  tmp_path: Path) -> None:
    """The quick exit still runs the exit handlers: the offline W&B run on disk is the same as
    the one a plain `sweep run` (normal interpreter shutdown) leaves."""
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, models=[str(tiny_models["bert"])], seeds=(1, 2),
                     epochs=1)
    grid = load_grid(path)
    env = {**os.environ, "WANDB_MODE": "offline"}
    runs = tmp_path / "runs"
    done = subprocess.run(sweep_cmd(path, runs, "--parallel", "1"), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    warm = next(runs / "g" / j.id for j in grid.jobs if "(warm start)" in (runs / "g" / j.id / "job.log").read_text())
    plain = tmp_path / "plain"
    cold = subprocess.run([sys.executable, "-m", "sweeper.cli", "run", str(warm / "job.json"), "--out", str(plain),
                           "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert cold.returncode == 0, cold.stderr

    def run_files(job_dir: Path) -> dict[str, int]:
        (run,) = (job_dir / "wandb").glob("offline-run-*")
        return {str(p.relative_to(run)): p.stat().st_size for p in run.rglob("*") if p.is_file()}

    def last_line(job_dir: Path) -> str:
        (run,) = (job_dir / "wandb").glob("offline-run-*")
        return (run / "logs" / "debug.log").read_text().splitlines()[-1].split("]", 1)[-1]

    a, b = run_files(warm), run_files(plain)
    assert a.keys() == b.keys() and all(a.values())
    assert last_line(warm) == last_line(plain)


def test_the_loop_wakes_when_a_job_process_exits_not_at_the_next_poll() -> None:
    from sweeper.process import wait_for_exit

    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        t0 = time.monotonic()
        wait_for_exit([slow, quick], timeout=30)
        assert time.monotonic() - t0 < 20  # woken by quick's exit, long before the timeout
        assert quick.wait(timeout=5) == 0 and slow.poll() is None
        t0 = time.monotonic()
        wait_for_exit([quick], timeout=0.3)  # reaped already: nothing to wait on, a plain sleep
        assert time.monotonic() - t0 >= 0.3
    finally:
        slow.kill()
        slow.wait()
