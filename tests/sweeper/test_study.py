from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.search import load_space
from tests.conftest import REPO, sigint_like_a_terminal, write_dataset
from trainer.config import ConfigError


def space_file(tmp_path: Path, model: Path, data: Path, *, epochs: int = 2, lrs: list | None = None,
               pruner: object = "none", sampler: object = None) -> Path:
    space = {
        "name": "s",
        "base": {"model": str(model), "max_len": 32, "batch_size": 16, "epochs": epochs, "data": {"name": str(data)}},
        "params": {"lr": {"values": lrs} if lrs else {"min": 1.0e-3, "max": 5.0e-3, "log": True},
                   "pooling": {"values": ["cls", "mean"]}},
        "sampler": sampler or {"name": "random", "seed": 0},
        "pruner": pruner,
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def cmd(space: Path, runs: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweeper.cli", "optuna", "--trials", str(trials), "--space", str(space),
            "--runs-dir", str(runs), "--no-live", *extra]


def study(runs: Path, name: str = "s", storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage or optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "sweeps.journal"))))


def finished(s: optuna.Study) -> list:
    return [t for t in s.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


BAD = [
    ("name: s\nparams: {lr: {min: 1.0e-3}}\n", "line 2: params.lr: {'min': 0.001} is not allowed"),
    ("name: s\nparams:\n  lr: {min: 1.0e-3, max: 1.0e-4}\n", "line 3: params.lr: min 0.001, max 0.0001"),
    ("name: s\nparams:\n  dropout: {min: 0.0, max: 1.5}\n", "line 3: params.dropout: 1.5 is out of range"),
    ("name: s\nparams:\n  pooling: {values: [cls, max]}\n", "line 3: params.pooling: 'max' is not allowed"),
    ("name: s\nparams:\n  learning_rate: {values: [1]}\n", "line 3: params.learning_rate: unknown or unsearchable key"),
    ("name: s\nparams: {lr: {values: [1.0e-5]}}\nsampler: grid\n", "line 3: sampler: 'grid' is not allowed"),
    ("name: s\nparams: {lr: {values: [1.0e-5]}}\npruner: {name: median, bogus: 1}\n", "line 3: pruner.bogus: not an argument"),
    ("name: s\nparams: {lr: {values: [1.0e-5]}}\nmetric: loss\n", "line 3: metric: 'loss' is not allowed"),
    ("name: s\nparam: {}\n", "line 2: param: unknown key; did you mean 'params'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_spaces_are_refused_before_any_trial(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert message in str(info.value) and str(path) in str(info.value)
    result = CliRunner().invoke(app, ["optuna", "--trials", "2", "--space", str(path), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and not (tmp_path / "r").exists()


def test_the_shipped_space_validates() -> None:
    space = load_space(REPO / "grids" / "optuna.yaml")
    assert {p.name for p in space.params} == {"model", "pooling", "lr", "dropout"}
    assert space.sampler[0] == "tpe" and space.pruner[0] == "median"
    lr = next(p for p in space.params if p.name == "lr")
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-5, 1e-4, True, False)


def test_a_six_trial_study_completes(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run(cmd(space_file(tmp_path, tiny_models["bert"], tiny_data), runs, 6, "--parallel", "2"),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    s = study(runs)
    assert len(finished(s)) == 6 and len(s.trials) == 6
    for t in s.trials:
        assert t.state == TrialState.COMPLETE and 1e-3 <= t.params["lr"] <= 5e-3
        result = json.loads((runs / "s" / t.user_attrs["job_id"] / "result.json").read_text())
        assert t.value == result["val_acc"] and t.user_attrs["result"]["test_acc"] == result["test_acc"]
        assert sorted(t.intermediate_values) == [1, 2]  # each epoch reported
    logs = [(runs / "s" / t.user_attrs["job_id"] / "job.log").read_text() for t in s.trials]
    assert sum("(warm start)" in log for log in logs) >= 2  # later trials start in processes made ready for them
    assert not (runs / "s" / ".warm").exists()
    assert "best trial" in done.stdout
    # a second run with the same total does nothing more
    again = subprocess.run(cmd(space_file(tmp_path, tiny_models["bert"], tiny_data), runs, 6), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(study(runs).trials) == 6


def test_a_lagging_trial_is_pruned_before_its_last_epoch(tiny_models: dict, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=500, n_test=100, seed=9)
    path = space_file(tmp_path, tiny_models["bert"], data, epochs=3, lrs=[3e-3, 1e-9],
                      pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0})
    runs = tmp_path / "runs"
    s = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(_mk(runs) / "sweeps.journal"))), direction="maximize")
    for lr, pooling in ((3e-3, "cls"), (3e-3, "mean"), (1e-9, "cls")):  # two good trials first, then a hopeless one
        s.enqueue_trial({"lr": lr, "pooling": pooling})
    done = subprocess.run(cmd(path, runs, 3), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    trials = study(runs).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    lagging = trials[2]
    assert max(lagging.intermediate_values) < 3  # stopped before its last epoch
    assert lagging.user_attrs["status"] == "pruned"


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_interrupting_and_rerunning_continues_the_same_study_to_its_total(tiny_models: dict, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=800, n_test=100, seed=2)
    path = space_file(tmp_path, tiny_models["bert"], data, epochs=3)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(cmd(path, runs, 4), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=sigint_like_a_terminal)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (runs / "sweeps.journal").exists() and len(finished(study(runs))) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert 1 <= len(finished(study(runs))) < 4
    done = subprocess.run(cmd(path, runs, 4), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    s = study(runs)
    assert len(finished(s)) == 4
    interrupted = [t for t in s.trials if t.state == TrialState.FAIL]
    assert interrupted and all(t.user_attrs.get("status") == "interrupted" for t in interrupted)
    assert all(t.user_attrs["reason"].startswith("interrupted at ") for t in interrupted)
    retried = [t for t in s.trials if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retried} == {t.number for t in interrupted}
    assert all(t.state == TrialState.COMPLETE for t in retried)
    for t in retried:  # the same configuration, resumed in the same job directory
        assert t.params == s.trials[t.user_attrs["retry_of"]].params
        result = json.loads((runs / "s" / t.user_attrs["job_id"] / "result.json").read_text())
        assert result["status"] == "completed"


# -- PostgreSQL: several workers on one study ----------------------------------------------------


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (run as the postgres user when we are root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs Debian's postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    # Not under pytest's tmp (mode 700, root's): the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = subprocess.run([*as_user, initdb, "-D", str(data), "-U", "sweep", "--auth=trust", "-E", "UTF8"],
                          capture_output=True, text=True)
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                            f"-h 127.0.0.1 -p {port} -k {root}", "start"], capture_output=True, text=True)
    if start.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    createdb = str(Path(pg_ctl).resolve().with_name("createdb"))
    subprocess.run([*as_user, createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "sweep", "sweep"], check=True)
    yield f"postgresql://sweep@127.0.0.1:{port}/sweep"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_a_trial_asked_by_a_worker_stopped_before_it_recorded_itself_does_not_block_the_study(
        tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    """Ctrl-C between ask() and the worker's first attributes left a RUNNING trial that nobody
    runs and nobody can recognise as dead (no pid): the study waited for it for ever."""
    path = space_file(tmp_path, tiny_models["bert"], tiny_data, epochs=1)
    runs = _mk(tmp_path / "runs")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(runs / "sweeps.journal")))
    orphan = optuna.create_study(study_name="s", storage=storage, direction="maximize").ask()
    time.sleep(1.5)
    env = {**os.environ, "SWEEP_STALE_S": "1"}
    done = subprocess.run(cmd(path, runs, 2), cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    s = study(runs)
    assert len(finished(s)) == 2
    lost = s.trials[orphan.number]
    assert lost.state == TrialState.FAIL and lost.user_attrs["status"] == "lost"


def test_two_workers_on_postgres_finish_exactly_n_trials(postgres: str, tiny_models: dict, tiny_data: Path,
                                                         tmp_path: Path) -> None:
    path = space_file(tmp_path, tiny_models["bert"], tiny_data)
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd(path, runs, 6, "--storage", postgres, "--study", "pg1"), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    s = optuna.load_study(study_name="pg1", storage=postgres)
    done = finished(s)
    assert len(done) == 6
    assert all(t.state != TrialState.RUNNING for t in s.trials)
    assert len({t.user_attrs["pid"] for t in done}) == 2  # both workers ran trials
    assert len({t.number for t in done}) == 6  # no trial counted twice


def test_a_killed_workers_trial_is_failed_by_heartbeat_and_retried_by_the_survivor(
    postgres: str, tiny_models: dict, tmp_path: Path
) -> None:
    """The victim and the survivor pose as two machines (SWEEP_HOST), so the survivor cannot see
    the victim's pid: only the lapsed heartbeat tells it the trial is nobody's."""
    data = write_dataset(tmp_path / "data", n_train=1000, n_test=100, seed=8)
    path = space_file(tmp_path, tiny_models["bert"], data, epochs=3)
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SWEEP_HEARTBEAT_S": "1", "SWEEP_STALE_S": "4"}
    # One slot per worker: the victim holds exactly one trial when it is killed.
    victim = subprocess.Popen(cmd(path, runs, 3, "--storage", postgres, "--study", "pg2", "--parallel", "1"),
                              cwd=REPO, env={**env, "SWEEP_HOST": "machine-a"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the victim runs a trial
        try:
            s = optuna.load_study(study_name="pg2", storage=postgres)
            if any(t.state == TrialState.RUNNING and t.user_attrs.get("pid") == victim.pid and t.user_attrs.get("job_id")
                   for t in s.trials):  # its job launched
                break
        except KeyError:
            pass
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = subprocess.run(cmd(path, runs, 3, "--storage", postgres, "--study", "pg2", "--parallel", "1"),
                              cwd=REPO, env={**env, "SWEEP_HOST": "machine-b"},
                              capture_output=True, text=True, timeout=600)
    assert survivor.returncode == 0, survivor.stderr
    s = optuna.load_study(study_name="pg2", storage=postgres)
    failed = [t for t in s.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["pid"] == victim.pid and t.user_attrs["status"] == "lost" for t in failed)
    retries = [t for t in s.trials if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retries} == {t.number for t in failed}
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["pid"] != victim.pid for t in retries)
    done = finished(s)
    assert len(done) == 3
    # the retry is the dead trial's configuration, counted once: 3 trials, 3 configurations
    assert len({t.user_attrs["job_id"] for t in done}) == 3


def test_a_target_stops_the_study_once_its_best_value_reaches_it(tiny_models: dict, tiny_data: Path,
                                                                   tmp_path: Path) -> None:
    path = space_file(tmp_path, tiny_models["bert"], tiny_data, epochs=1)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "target": 0.0}))  # any result reaches it
    runs = tmp_path / "runs"
    done = subprocess.run(cmd(path, runs, 5, "--parallel", "1"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(finished(study(runs))) == 1 and "target val_acc 0 reached" in done.stderr
