"""A failed job never stops the sweep (issue #30, item 1): a job killed by SIGKILL, an odd batch
size, an out-of-memory retry judged from its own attempt only. The out-of-memory jobs are a fake
job process (the scheduler talks to jobs through processes and files only), so no GPU is needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeper.devices import make_slots
from sweeper.grid_source import GridSource
from sweeper.scheduler import Scheduler
from sweeper.spec import load_grid
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from tests.conftest import REPO, write_dataset
from tests.sweeper.test_scheduler import spare_processes, sweep_cmd, trials

# A job process that runs out of memory above FAKE_FITS rows per micro-batch, as torch reports
# it, with the failure result trainer.job writes; with FAKE_KILL_AT, it kills itself (SIGKILL)
# at that micro-batch, silently, as the kernel's OOM killer would.
FAKE_JOB = """
import json, os, signal, sys
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[3])
micro = cfg["micro_batch_size"] or cfg["batch_size"]
print("fake job: micro-batch", micro, flush=True)
if str(micro) == os.environ.get("FAKE_KILL_AT"):
    os.kill(os.getpid(), signal.SIGKILL)
if micro > int(os.environ["FAKE_FITS"]):
    error = os.environ.get("FAKE_ERROR", "OutOfMemoryError: CUDA out of memory. Tried to allocate 96.00 MiB")
    print("Traceback (most recent call last):", flush=True)
    (out / "result.json").write_text(json.dumps({"status": "failed", "error": error,
                                                 "out_of_memory": "ALLOC" not in error and "memory" in error}))
    print(error, flush=True)
    sys.exit(1)
(out / "result.json").write_text(json.dumps({"status": "completed", "val_acc": 0.5, "micro": micro,
                                             "attempt": int(os.environ.get("SWEEP_ATTEMPT", 0))}))
"""


def _tiny_grid(tmp_path: Path, model: Path, data: Path, *, batch_size: int, poolings: tuple[str, ...] = ("cls",),
               epochs: int = 1) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({
        "name": "g",
        "base": {"model": str(model), "max_len": 32, "batch_size": batch_size, "lr": 3e-3, "epochs": epochs,
                 "data": {"name": str(data)}},
        "axes": {"pooling": list(poolings)},
        "seeds": [1],
    }))
    return path


def _run_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path, data: Path, *, batch_size: int,
              retries: int, **env: str) -> tuple[dict, Path]:
    script = tmp_path / "fake_job.py"
    script.write_text(FAKE_JOB)
    monkeypatch.setattr("sweeper.scheduler.COMMAND", (sys.executable, str(script)))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    grid = load_grid(_tiny_grid(tmp_path, model, data, batch_size=batch_size))
    runs = tmp_path / "runs"
    store = SweepStore(open_storage(str(runs / "sweeps.journal")), "g")
    source = GridSource(grid, store, runs_dir=runs)
    scheduler = Scheduler(source, runs_dir=runs, slots=make_slots(gpus=None, jobs_per_gpu=1, parallel=1),
                          retries=retries, poll_s=0.05, warm=False)
    progress = scheduler.run()  # must not raise, whatever the job does
    (job,) = grid.jobs
    return {"progress": progress[job.id], "trials": trials(runs, "g")[job.id]}, runs / "g" / job.id


@pytest.mark.parametrize(("batch_size", "fits", "micro_batches"), [
    (7, 3, [7, 1]),  # the largest divisor below 7 is 1 (halving asked for 3, which does not divide 7)
    (28, 5, [28, 14, 7, 4]),
    (15, 6, [15, 5]),
])
def test_an_out_of_memory_job_is_run_again_with_the_largest_divisor_below_its_micro_batch(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        batch_size: int, fits: int, micro_batches: list[int]) -> None:
    got, job_dir = _run_fake(tmp_path, monkeypatch, tiny_models["bert"], tiny_data, batch_size=batch_size,
                             retries=0, FAKE_FITS=str(fits))
    assert got["progress"].state == "completed"
    result = json.loads((job_dir / "result.json").read_text())
    assert result["micro"] == micro_batches[-1] and result["attempt"] == len(micro_batches)
    log = (job_dir / "job.log").read_text()
    assert [int(line.split()[-1]) for line in log.splitlines() if line.startswith("fake job")] == micro_batches
    assert f"== attempt {len(micro_batches)} " in log and f"out of memory at micro-batch {micro_batches[-2]}" in log
    assert json.loads((job_dir / "job.json").read_text())["micro_batch_size"] == micro_batches[-1]


def test_a_cublas_allocation_failure_counts_as_out_of_memory(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got, job_dir = _run_fake(tmp_path, monkeypatch, tiny_models["bert"], tiny_data, batch_size=8, retries=0,
                             FAKE_FITS="4", FAKE_ERROR="RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when "
                                                    "calling `cublasCreate(handle)`")
    assert got["progress"].state == "completed"
    assert json.loads((job_dir / "result.json").read_text())["micro"] == 4


def test_a_silent_kill_after_an_out_of_memory_attempt_is_not_taken_for_one(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempt 1 runs out of memory (its OOM line stays in the appended job.log, its failure in
    result.json); attempt 2 is killed without a word: that is an ordinary failure (no retries
    left), not a second out-of-memory one."""
    got, job_dir = _run_fake(tmp_path, monkeypatch, tiny_models["bert"], tiny_data, batch_size=8, retries=0,
                             FAKE_FITS="2", FAKE_KILL_AT="4")
    assert got["progress"].state == "failed"
    assert got["progress"].note.startswith("killed by SIGKILL")
    assert "OutOfMemoryError" not in got["progress"].note  # not the first attempt's error
    assert "== attempt 3" not in (job_dir / "job.log").read_text()


# -- end to end: a real job process killed by SIGKILL -----------------------------------------------


def _kill_the_first_job(proc: subprocess.Popen, runs: Path) -> str:
    """SIGKILL the first job process once it has started training; its job id."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before a job could be killed"
        for events in (runs / "g").glob("*/events.jsonl"):
            if '"start"' in events.read_text():
                pids = spare_processes(events.parent, spares=False)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    return events.parent.name
        time.sleep(0.05)
    raise AssertionError("no job started")


@pytest.mark.parametrize("retries", [1, 0])
def test_a_job_killed_by_sigkill_with_an_odd_batch_size_does_not_stop_the_sweep(
        tiny_models: dict, tmp_path: Path, retries: int) -> None:
    data = write_dataset(tmp_path / "data", n_train=700, n_test=60, seed=5)
    path = _tiny_grid(tmp_path, tiny_models["bert"], data, batch_size=7, poolings=("cls", "mean"), epochs=2)
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(sweep_cmd(path, runs, "--parallel", "1", "--no-warm-start", "--retries", str(retries)),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_the_first_job(proc, runs)
    out, err = proc.communicate(timeout=600)
    assert "Traceback" not in err and "ConfigError" not in err, err
    grid = load_grid(path)
    other = next(j.id for j in grid.jobs if j.id != killed)
    assert json.loads((runs / "g" / other / "result.json").read_text())["status"] == "completed"
    log = (runs / "g" / killed / "job.log").read_text()
    if retries:
        assert proc.returncode == 0, err
        assert json.loads((runs / "g" / killed / "result.json").read_text())["status"] == "completed"
        assert "== attempt 2" in log and "retry 1 of 1 after: killed by SIGKILL" in log
    else:
        assert proc.returncode == 1, err
        assert f"failed {killed}" in " ".join(err.split()) and "killed by SIGKILL" in err
        assert "== attempt 2" not in log
