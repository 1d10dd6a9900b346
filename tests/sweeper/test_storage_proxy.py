"""Many workers on one storage (issue 28): `sweep storage serve`, --storage grpc://, workers that
ride out a database or proxy going away, and the scale bench's faults at a small N."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from bench.storage_scale import free_port, grid
from sweeper.cli import app
from sweeper.proxy import serve
from sweeper.reconnect import ReconnectingStorage, transient
from sweeper.spec import load_grid
from sweeper.storage import open_storage
from sweeper.store import SweepStore
from tests.conftest import REPO

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install -e '.[dev]')")


class Served:
    """`serve` in a thread of this process, stopped and started again on the same port at will."""

    def __init__(self, url: str, port: int) -> None:
        self.url, self.port = url, port
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=serve, args=(self.url,), daemon=True,
                                       kwargs={"host": "127.0.0.1", "port": self.port, "threads": 4, "ready": ready,
                                               "stop": self.stop})
        self.thread.start()
        assert ready.wait(30)

    def halt(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)


# -- the command -----------------------------------------------------------------------------------


def test_serve_refuses_bad_input_before_starting_with_every_problem_at_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["storage", "serve", "--storage", str(tmp_path / "sweeps.journal"),
                                      "--port", "70000", "--threads", "0"])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "--storage" in out and "is a journal file" in out and "postgresql://" in out
    assert "--port: 70000 is out of range; expected 1-65535" in out
    assert "--threads: 0 is out of range" in out
    proxy = CliRunner().invoke(app, ["storage", "serve", "--storage", "grpc://127.0.0.1:13000"])
    assert proxy.exit_code == 2 and "is a proxy already" in " ".join(proxy.output.split())


def test_serve_runs_in_the_foreground_logs_clients_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "storage", "serve", "--storage",
                             f"sqlite:///{tmp_path / 'db.sqlite'}", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        store = SweepStore(open_storage(f"grpc://127.0.0.1:{port}"), "s")
        store.sync(grid(3).jobs)
        assert len(store.trials_by_job()) == 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    said = "".join(lines) + out
    assert proc.returncode == 0, said
    assert "client ipv4:127.0.0.1:" in said and "connected (1 so far)" in said
    assert "stopping: 1 client(s) called" in said and said.rstrip().endswith("stopped")
    assert "Traceback" not in said


def test_a_grpc_address_is_checked_and_a_proxy_that_is_not_there_is_said() -> None:
    with pytest.raises(ValueError, match=r"expected grpc://HOST:PORT"):
        open_storage("grpc://127.0.0.1")
    with pytest.raises(ValueError, match=r"expected grpc://HOST:PORT"):
        open_storage("grpc://127.0.0.1:99999")
    with pytest.raises(ConnectionError, match=r"no gRPC storage proxy answers at 127.0.0.1:\d+ .*sweep storage serve"):
        open_storage(f"grpc://127.0.0.1:{free_port()}", connect_timeout_s=1)


# -- riding out an outage ------------------------------------------------------------------------


def test_what_counts_as_unreachable() -> None:
    import optuna

    proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=free_port())  # nobody listens
    with pytest.raises(grpc.RpcError) as down:
        proxy.get_all_studies()
    assert transient(down.value)
    assert not transient(KeyError("no study"))
    assert not transient(optuna.exceptions.UpdateFinishedTrialError("finished"))


def test_workers_ride_out_the_proxy_going_away_and_coming_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The proxy stops mid-sweep; a worker's next calls wait, one warning says so, and when a new
    proxy listens on the same port they go on: the claim, the heartbeat and the finish all land."""
    served = Served(f"sqlite:///{tmp_path / 'db.sqlite'}", free_port())
    served.start()
    url = f"grpc://127.0.0.1:{served.port}"
    store = SweepStore(open_storage(url), "s")
    jobs = grid(2).jobs
    store.sync(jobs)
    first = store.trials_by_job()[jobs[0].id][0]
    assert store.claim(first)
    served.halt()
    threading.Timer(2.0, served.start).start()
    caplog.set_level(logging.INFO, logger="sweeper.store")
    trial_id = store.trial_id(first)
    assert store.heartbeat(trial_id)  # waits for the new proxy
    assert store.finish(trial_id, {"status": "completed", "val_acc": 0.75})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and url in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert isinstance(store.storage, ReconnectingStorage) and store.storage.outages == 1
    again = SweepStore(open_storage(url), "s").trials_by_job()
    assert again[jobs[0].id][0].state == TrialState.COMPLETE and again[jobs[0].id][0].values == [0.75]
    served.halt()


def test_a_finish_on_a_trial_another_worker_took_over_is_not_an_error(tmp_path: Path) -> None:
    """Optuna's 'Trial has already finished and can not be updated' (optuna#5582): a worker
    whose heartbeat lapsed finds its trial failed as lost by the worker that took it over."""
    served = Served(f"sqlite:///{tmp_path / 'db.sqlite'}", free_port())
    served.start()
    try:
        url = f"grpc://127.0.0.1:{served.port}"
        slow, other = SweepStore(open_storage(url), "s"), SweepStore(open_storage(url), "s")
        jobs = grid(1).jobs
        slow.sync(jobs)
        trial = slow.trials_by_job()[jobs[0].id][0]
        assert slow.claim(trial)
        trial_id = slow.trial_id(trial)
        assert other.fail(trial_id, "worker lost", status="lost")
        assert not other.fail(trial_id, "worker lost", status="lost")  # a second taker: already failed
        assert not slow.heartbeat(trial_id)
        assert not slow.finish(trial_id, {"status": "completed", "val_acc": 0.5})
        assert other.trials_by_job()[jobs[0].id][0].state == TrialState.FAIL
    finally:
        served.halt()


# -- the scale bench's three faults, at a small N, on a real PostgreSQL and a real proxy ---------


def _bench(*args: str, timeout: float = 420) -> dict:
    bench = subprocess.Popen([sys.executable, "bench/storage_scale.py", *args, "--stale-s", "6", "--heartbeat-s", "1",
                              "--job-s", "0.3"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = bench.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        bench.kill()
        out, err = bench.communicate(timeout=60)
        pytest.fail(f"the bench ran past {timeout} s (its PostgreSQL, proxy and workers may be left running, in "
                    f"/tmp/sweep-scale-*): {err[-3000:]}")
    assert bench.returncode == 0, err[-3000:]
    return json.loads(out)


def _nothing_lost_nothing_twice(out: dict, jobs: int) -> None:
    assert out["completed"] == jobs and out["never_completed"] == 0 and out["completed_more_than_once"] == 0, out
    assert out["worker_errors"] == 0 and out["logs_with_traceback"] == 0, out
    assert set(out["trial_states"]) <= {"completed", "lost", "waiting"}, out  # no failed trial


def test_proxy_with_a_tenth_killed_the_database_restarted_and_the_proxy_restarted(postgres: str) -> None:
    out = _bench("--backend", "proxy", "--workers", "30", "--jobs", "180", "--procs", "6", "--kill-fraction", "0.2",
                 "--restart-db", "--restart-proxy")
    _nothing_lost_nothing_twice(out, 180)
    assert out["killed_workers"] == 6 and out["db_restarts"] == 1 and out["proxy_restarts"] == 1
    assert "SIGKILL to 1 process(es) of 5 workers; 1 worker thread(s)" in out["events"][0]
    # The killed workers' claims (the stopped thread's at least) were taken over after their heartbeat.
    assert out["trial_states"]["lost"] >= 1 and out["claimed_more_than_once"] >= 1
    # Every worker that outlived the faults went on to the end; those that called while the proxy
    # was gone (an idle worker backs off, and may sleep through it) said so in a line each (the
    # proxy itself rode out the database restart).
    assert out["workers_finished_cleanly"] == 24
    assert 1 <= out["workers_that_reconnected"] <= 24
    assert out["workers_that_reconnected"] <= out["reconnect_warnings"] <= 2 * out["workers_that_reconnected"]
    assert out["db_connections_peak"] <= 20  # the proxy's pool, not 24 workers' pools
    assert out["proxy_exit_code"] == 0


def test_postgres_directly_with_a_tenth_killed_and_the_database_restarted(postgres: str) -> None:
    out = _bench("--backend", "postgres", "--workers", "20", "--jobs", "100", "--procs", "3", "--kill-fraction", "0.35",
                 "--restart-db")
    _nothing_lost_nothing_twice(out, 100)
    assert out["killed_workers"] == 7 and out["db_restarts"] == 1
    # Every surviving worker went on to the end. Those that called during the restart lost their
    # connections to it and said so in a line; one whose next call came after the database was back
    # got a fresh connection from its pool without an error (pool_pre_ping), and said nothing.
    assert out["workers_finished_cleanly"] == 13
    assert 1 <= out["workers_that_reconnected"] <= 13
    assert out["workers_that_reconnected"] <= out["reconnect_warnings"] <= 26


# -- the path users take ----------------------------------------------------------------------------


def test_sweep_grid_over_grpc_with_two_workers_runs_each_job_once(postgres: str, tiny_models: dict, tiny_data: Path,
                                                                 tmp_path: Path) -> None:
    served = Served(postgres, free_port())
    served.start()
    try:
        url = f"grpc://127.0.0.1:{served.port}"
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump({
            "name": "grpc", "seeds": [1, 2],
            "base": {"model": str(tiny_models["bert"]), "max_len": 32, "batch_size": 16, "lr": 3e-3, "epochs": 1,
                     "data": {"name": str(tiny_data)}},
            "axes": {"pooling": ["cls", "mean"]}}))
        runs = tmp_path / "runs"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "sweeper.cli", "grid", str(path), "--runs-dir", str(runs), "--no-live",
               "--storage", url]
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err
        by_job = SweepStore(open_storage(url), "grpc").trials_by_job()
        workers = set()
        for job in load_grid(path).jobs:
            states = [t.state for t in by_job[job.id]]
            assert states == [TrialState.COMPLETE], (job.id, states)
            start_events = [line for line in (runs / "grpc" / job.id / "events.jsonl").read_text().splitlines()
                            if json.loads(line)["event"] == "start"]
            assert len(start_events) == 1
            workers.add(by_job[job.id][0].user_attrs["pid"])
        assert len(workers) == 2  # both shared the work
        status = CliRunner().invoke(app, ["status", "grpc", "--storage", url, "--runs-dir", str(runs)])
        assert status.exit_code == 0, status.output
        assert all(job.id in status.output for job in load_grid(path).jobs), status.output
        assert not any(word in status.output for word in ("waiting", "running", "failed")), status.output
    finally:
        served.halt()
        time.sleep(0.1)


def test_slurm_checks_that_the_proxy_answers_before_submitting(tmp_path: Path) -> None:
    from sweeper import slurm
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match=r"no gRPC storage proxy answers at 127.0.0.1:\d+"):
        slurm.check_reachable(tmp_path / "runs", f"grpc://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError, match=r"expected grpc://HOST:PORT"):
        slurm.check_reachable(tmp_path / "runs", "grpc://nohost")
    served = Served(f"sqlite:///{tmp_path / 'db.sqlite'}", free_port())
    served.start()
    try:
        url = f"grpc://127.0.0.1:{served.port}"
        assert slurm.check_reachable(tmp_path / "runs", url) == ((tmp_path / "runs").absolute(), url)
    finally:
        served.halt()


def test_a_takeover_that_loses_the_race_to_a_finish_leaves_the_job_completed(tmp_path: Path) -> None:
    """fail() writes its status before its state change; when the owner's finish lands in
    between, the trial is COMPLETE with status "lost": the job read as unfinished for ever and
    100 workers polled it without end (bench/storage_scale.py)."""
    journal = str(tmp_path / "sweeps.journal")
    owner, taker = SweepStore(open_storage(journal), "s"), SweepStore(open_storage(journal), "s")
    jobs = grid(1).jobs
    owner.sync(jobs)
    trial = owner.trials_by_job()[jobs[0].id][0]
    assert owner.claim(trial)
    trial_id = owner.trial_id(trial)
    taker.storage.set_trial_user_attr(trial_id, "status", "lost")  # the first write of taker.fail()
    assert owner.finish(trial_id, {"status": "completed", "val_acc": 0.5})
    assert not taker.fail(trial_id, "worker lost", status="lost")  # its state change comes too late
    state = taker.state(taker.trials_by_job()[jobs[0].id])
    assert state.status == "completed" and state.result is not None and state.result["val_acc"] == 0.5
