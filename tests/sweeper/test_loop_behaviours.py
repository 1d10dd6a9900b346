"""The scheduling loop's behaviours, each tested once for each source (a grid, a study): they
are one behaviour, in one loop (sweeper/scheduler.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.devices import make_slots
from sweeper.grid_source import GridSource
from sweeper.samplers import open_study
from sweeper.scheduler import Running, Scheduler
from sweeper.search import load_space
from sweeper.spec import load_grid
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from sweeper.study import StudySource
from tests.sweeper.test_scheduler import grid_file
from tests.sweeper.test_study import space_file


def _scheduler(kind: str, tmp_path: Path, model: Path, data: Path, *, retries: int = 1) -> Scheduler:
    runs = tmp_path / "runs"
    storage = open_storage(str(runs / "sweeps.journal"))
    if kind == "grid":
        grid = load_grid(grid_file(tmp_path, model, data, seeds=(1,)))
        source: GridSource | StudySource = GridSource(grid, SweepStore(storage, grid.name, lock_dir=runs), runs_dir=runs)
    else:
        space = load_space(space_file(tmp_path, model, data))
        source = StudySource(space, open_study(space, storage, "s"), runs_dir=runs, trials=2, retries=retries)
    slots = make_slots(gpus=["0"], jobs_per_gpu=1, parallel=1)
    return Scheduler(source, runs_dir=runs, slots=slots, retries=retries, warm=False)


def _claimed(scheduler: Scheduler, code: int, log: str = "") -> Running:
    """A job handed out by the source, whose process has exited with `code` (having logged `log`)."""
    scheduler.source.tick()
    ticket = scheduler.source.take()
    assert ticket is not None
    job_dir = scheduler.dir / ticket.job.id
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.log").write_text(log)
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait()
    run = Running(ticket, scheduler.slots[0], proc)
    scheduler.running[ticket.key] = run
    scheduler.source.progress[ticket.job.id].state = "running"
    return run


def _trial(scheduler: Scheduler, run: Running) -> optuna.trial.FrozenTrial:
    source = scheduler.source
    store = source.store
    number = run.ticket.handle[0] if isinstance(source, StudySource) else next(
        t.number for t in store.study.get_trials() if store.trial_id(t) == run.ticket.handle)
    return store.study.get_trials()[number]


@pytest.fixture(params=["grid", "study"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_out_of_memory_runs_the_same_job_again_with_half_the_micro_batch(
        kind: str, tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = _scheduler(kind, tmp_path, tiny_models["bert"], tiny_data, retries=0)
    run = _claimed(scheduler, 1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    launched = []
    monkeypatch.setattr(scheduler, "_launch", lambda r: launched.append(r.ticket.config))
    scheduler._exited(run, 1, scheduler.dir / run.ticket.job.id)
    (config,) = launched
    assert (config.batch_size, config.micro_batch, config.accumulation) == (16, 8, 2)  # the same effective batch
    assert config.job_id() == run.ticket.job.id  # the same job, in the same directory
    assert run.failures == 0 and run.attempt == 2  # a second attempt, but not one `retries` counts


def test_a_busy_directory_is_tried_again_after_a_back_off_not_failed(
        kind: str, tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = _scheduler(kind, tmp_path, tiny_models["bert"], tiny_data)
    run = _claimed(scheduler, 75)
    launched = []
    monkeypatch.setattr(scheduler, "_launch", lambda r: launched.append(r))
    scheduler._exited(run, 75, scheduler.dir / run.ticket.job.id)
    assert run.proc is None and run.retry_at > time.time() + 4 and not launched
    assert _trial(scheduler, run).state == TrialState.RUNNING  # still this worker's
    scheduler._poll()
    assert not launched  # not before its time
    run.retry_at = 0
    scheduler._poll()
    assert launched == [run]


def test_a_failure_is_retried_then_recorded_with_its_log_tail(
        kind: str, tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = _scheduler(kind, tmp_path, tiny_models["bert"], tiny_data, retries=1)
    run = _claimed(scheduler, 1, "Traceback\nRuntimeError: boom\n")
    monkeypatch.setattr(scheduler, "_launch", lambda r: None)
    job_dir = scheduler.dir / run.ticket.job.id
    scheduler._exited(run, 1, job_dir)
    assert run.attempt == 2 and run.ticket.key in scheduler.running
    assert "attempt_1_failure" in _trial(scheduler, run).user_attrs
    scheduler._exited(run, 1, job_dir)
    trial = _trial(scheduler, run)
    assert run.ticket.key not in scheduler.running
    assert trial.state == TrialState.FAIL and trial.user_attrs["status"] == "failed"
    assert trial.user_attrs["reason"] == "exit code 1" and trial.user_attrs["log_tail"][-1] == "RuntimeError: boom"


def test_a_configuration_error_is_never_retried(
        kind: str, tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = _scheduler(kind, tmp_path, tiny_models["bert"], tiny_data, retries=3)
    run = _claimed(scheduler, 2, "error: pooling: 'pooler' is not available\n")
    monkeypatch.setattr(scheduler, "_launch", lambda r: pytest.fail("a configuration error was retried"))
    scheduler._exited(run, 2, scheduler.dir / run.ticket.job.id)
    assert _trial(scheduler, run).state == TrialState.FAIL


def test_an_interrupted_job_goes_back_to_the_queue_not_to_failed(
        kind: str, tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    scheduler = _scheduler(kind, tmp_path, tiny_models["bert"], tiny_data)
    run = _claimed(scheduler, 130)
    scheduler._stop_all(2)
    source = scheduler.source
    trials = source.store.study.get_trials()
    stopped = _trial(scheduler, run)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["status"] == "interrupted"
    queued = [t for t in trials if t.state == TrialState.WAITING and t.number > stopped.number
              and t.user_attrs.get("job_id", run.ticket.job.id) == run.ticket.job.id]
    assert len(queued) == 1  # queued again: the grid's job, or the study's trial with its parameters
    if kind == "study":
        assert queued[0].user_attrs["retry_of"] == stopped.number
        assert queued[0].system_attrs["fixed_params"] == stopped.params
    assert source.progress[run.ticket.job.id].state == "waiting"
