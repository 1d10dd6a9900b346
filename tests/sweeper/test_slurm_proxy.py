"""--slurm-proxy (issue 28): one `sweep storage serve` job for the sweep, in front of its database,
shared by the SLURM workers; refused without a database storage; on the real one-node SLURM of
tests/slurm_cluster.py and a real PostgreSQL, a grid through it runs each job once and the proxy
job is gone when the workers are."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper import slurm
from sweeper.options import SlurmRequest, Workers
from sweeper.slurm_worker import Worker, proxy_address_file, read_record, wait_for_address
from tests import slurm_cluster
from tests.conftest import REPO
from tests.sweeper.test_slurm import cluster, drained, env, grid_file, long_data, queued, submitted, sweep, wait_for
from trainer.config import ConfigError

__all__ = ["cluster", "env", "long_data"]  # fixtures, shared with test_slurm.py

pytest.importorskip("grpc", reason="grpcio is not installed (pip install -e '.[dev]')")


def launch(path: Path, runs: Path, *, storage: str | None = None, proxy: bool | None = True) -> list[str]:
    return slurm.launch("g", path, ["grid", str(path)], workers=Workers(runs_dir=runs, storage=storage),
                        request=SlurmRequest(submit=True, proxy=proxy))


def test_a_proxy_is_refused_without_a_database_storage(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\n")
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"^--slurm-proxy: the storage is the journal file .*runs/sweeps.journal; "
                                          r"the proxy fronts a database only: give --storage postgresql://"):
        launch(path, runs)
    with pytest.raises(ConfigError, match=r"^--slurm-proxy: --storage grpc://127.0.0.1:1 is a proxy already; drop "
                                          r"--slurm-proxy, or give --storage postgresql://"):
        launch(path, runs, storage="grpc://127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"^--slurm-proxy: --storage sqlite:///x.db is not a database"):
        launch(path, runs, storage="sqlite:///x.db")
    path.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\nslurm: {proxy: true}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: slurm.proxy: true: the storage is the journal file"):
        launch(path, runs, proxy=None)
    assert not (runs / "g" / "slurm" / "workers.json").exists()  # nothing submitted
    path.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\nslurm: {proxy: 1}\n")
    with pytest.raises(ConfigError, match="line 4: slurm.proxy: 1 is not allowed; expected true or false"):
        launch(path, runs, proxy=None)
    path.write_text("name: g\nbase: {epochs: 1}\naxes: {lr: [0.001]}\n")
    done = subprocess.run([sys.executable, "-m", "sweeper.cli", "grid", str(path), "--slurm-proxy", "--runs-dir",
                           str(runs)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--slurm-proxy: only with --slurm" in done.stderr


def test_a_worker_runs_on_its_proxys_address_and_follows_it_when_it_moves(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No SLURM: the worker's orchestrator is a stand-in that prints its --storage and runs until stopped."""
    monkeypatch.setattr("sweeper.slurm_worker.PROXY_CHECK_S", 0.2)
    monkeypatch.setattr("sweeper.slurm_worker.SIGNAL_GRACE_S", 0.0)
    folder = tmp_path / "g" / "slurm"
    folder.mkdir(parents=True)
    address = proxy_address_file(folder, "7")
    stand_in = ("import sys, time; print('storage', sys.argv[sys.argv.index('--storage') + 1], flush=True); "
                "time.sleep(0 if 'b:2' in sys.argv[-1] else 60)")
    worker = Worker(command=[sys.executable, "-c", stand_in, "--storage", "postgresql://db/x"],
                    sweep_dir=tmp_path / "g", env={}, proxy_job="7")

    def proxy_moves() -> None:
        time.sleep(1)
        address.write_text(json.dumps({"host": "a", "port": 1}))
        wait_for("the worker's first orchestrator", lambda: '"a:1"' in (folder / "worker-local.json").read_text()
                 if (folder / "worker-local.json").exists() else False)
        address.write_text(json.dumps({"host": "b", "port": 2}))

    mover = threading.Thread(target=proxy_moves)
    mover.start()
    assert worker(0) == 0
    mover.join()
    out = capfd.readouterr().out
    assert "storage grpc://a:1" in out and "storage grpc://b:2" in out
    assert "the storage proxy moved from a:1 to b:2" in out
    rec = read_record(folder / "worker-local.json")
    assert rec is not None and (rec["state"], rec["proxy"]) == ("done", "b:2")
    with pytest.raises(RuntimeError, match=r"storage proxy \(SLURM job 8\) did not say where it listens .*"
                                           r"proxy-8-address.json is absent after 0 s"):
        wait_for_address(folder, "8", timeout_s=0.5)
    (folder / "proxy-8.json").write_text(json.dumps({"state": "failed"}))
    with pytest.raises(RuntimeError, match=r"storage proxy \(SLURM job 8\) has ended; see its log, .*/8_0_log.out"):
        wait_for_address(folder, "8")  # at once, not after PROXY_WAIT_S


# -- on a real one-node SLURM, with a real PostgreSQL ----------------------------------------------


def submit_with_proxy(env: dict[str, str], path: Path, runs: Path, database: str) -> tuple[str, str]:
    """`sweep grid FILE --slurm --slurm-proxy` on one slot; the worker array's id and the proxy job's."""
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--storage", database, "--slurm", "--slurm-proxy",
                 "--parallel", "1")
    assert done.returncode == 0, done.stderr
    return submitted(done.stdout), done.stdout.split("as SLURM job ")[-1].split(";")[0]


def test_a_grid_on_two_workers_through_the_sweeps_proxy_runs_each_job_once(
        cluster: slurm_cluster.Cluster, env: dict[str, str], postgres: str, tiny_models: dict, tiny_data: Path,
        tmp_path: Path) -> None:
    env = {**env, "SWEEP_PROXY_POLL_S": "1"}
    path = grid_file(tmp_path, tiny_models["bert"], tiny_data, epochs=1)
    runs = tmp_path / "runs"
    done = sweep(env, "grid", str(path), "--runs-dir", str(runs), "--storage", postgres, "--slurm", "--slurm-workers",
                 "2", "--slurm-proxy", "--parallel", "1")
    assert done.returncode == 0, done.stderr
    array = submitted(done.stdout)
    announced = re.search(r"and its storage proxy in front of (\S+) as SLURM job (\d+);", done.stdout)
    assert announced and announced[1] == postgres, done.stdout
    proxy = announced[2]
    folder = runs / "g" / "slurm"
    said: list[str] = []

    def status_shows_the_proxy() -> bool:
        shown = sweep(env, "status", "g", "--runs-dir", str(runs), "--storage", postgres)
        said.append(shown.stdout + shown.stderr)
        return f"{proxy} (proxy)" in shown.stdout and f"{array}_0" in shown.stdout

    try:
        wait_for("the proxy in sweep status", status_shows_the_proxy, timeout=60)
    except AssertionError:
        raise AssertionError(said[-1]) from None
    drained(env, array, runs, "g")
    wait_for("the proxy job to end", lambda: not queued(env, proxy), timeout=60)
    by_job: dict[str, list] = {}
    for t in optuna.load_study(study_name="g", storage=postgres).trials:
        by_job.setdefault(t.user_attrs["job_id"], []).append(t)
    assert len(by_job) == 4
    assert all([t.state for t in trials] == [TrialState.COMPLETE] for trials in by_job.values()), by_job
    for task in (f"{array}_0", f"{array}_1"):
        rec = json.loads((folder / f"worker-{task}.json").read_text())
        assert rec["state"] == "done" and rec["proxy"].startswith(f"{os.uname().nodename}:"), rec
        assert f"--storage grpc://{rec['proxy']}" in (folder / f"{task}_0_log.out").read_text()
    proxy_rec = json.loads((folder / f"proxy-{proxy}.json").read_text())
    assert (proxy_rec["state"], proxy_rec["exit_code"], proxy_rec["starts"]) == ("done", 0, 1)
    assert not proxy_address_file(folder, proxy).exists()  # removed when it stopped
    log = (folder / f"{proxy}_0_log.out").read_text() + (folder / f"{proxy}_0_log.err").read_text()
    assert "connected (1 so far)" in log and "are done; stopping" in log and "Traceback" not in log, log


def test_sweep_cancel_stops_the_proxy_with_its_workers(cluster: slurm_cluster.Cluster, env: dict[str, str],
                                                       postgres: str, tiny_models: dict, long_data: Path,
                                                       tmp_path: Path) -> None:
    env = {**env, "SWEEP_SLURM_GRACE_S": "1"}
    path = grid_file(tmp_path, tiny_models["bert"], long_data, epochs=3, lrs=(1e-3,), seeds=(1,), name="c")
    runs = tmp_path / "runs"
    array, proxy = submit_with_proxy(env, path, runs, postgres)
    worker = runs / "c" / "slurm" / f"worker-{array}.json"
    wait_for("the worker's orchestrator on the proxy", lambda: worker.exists() and '"proxy": "' in worker.read_text())
    cancelled = sweep(env, "cancel", "c", "--runs-dir", str(runs))
    assert cancelled.returncode == 0 and f"cancelled SLURM job array(s) {array}, {proxy}" in cancelled.stdout
    drained(env, array, runs, "c")
    wait_for("the proxy job to end", lambda: not queued(env, proxy), timeout=60)
    rec = json.loads((runs / "c" / "slurm" / f"proxy-{proxy}.json").read_text())
    assert (rec["state"], rec["starts"]) == ("cancelled", 1)
    assert not proxy_address_file(runs / "c" / "slurm", proxy).exists()


def test_a_proxy_that_dies_is_served_again_and_its_worker_follows_it(
        cluster: slurm_cluster.Cluster, env: dict[str, str], postgres: str, tiny_models: dict, long_data: Path,
        tmp_path: Path) -> None:
    """`sweep storage serve` killed under a running worker: the proxy job serves again on a new
    port, the worker restarts its orchestrator there, and the sweep finishes."""
    env = {**env, "SWEEP_PROXY_POLL_S": "1"}
    path = grid_file(tmp_path, tiny_models["bert"], long_data, epochs=3, lrs=(1e-3,), seeds=(1,), name="m")
    runs = tmp_path / "runs"
    array, proxy = submit_with_proxy(env, path, runs, postgres)
    folder = runs / "m" / "slurm"
    wait_for("the worker to reach the proxy", lambda: "connected (1 so far)" in (folder / f"{proxy}_0_log.err").read_text()
             if (folder / f"{proxy}_0_log.err").exists() else False)
    first = json.loads(proxy_address_file(folder, proxy).read_text())
    os.kill(first["pid"], signal.SIGKILL)
    drained(env, array, runs, "m")
    wait_for("the proxy job to end", lambda: not queued(env, proxy), timeout=60)
    rec = json.loads((folder / f"proxy-{proxy}.json").read_text())
    assert (rec["state"], rec["starts"]) == ("done", 1), rec
    assert "exited with code -9 while its workers run; starting it again (1 of 5)" in \
           (folder / f"{proxy}_0_log.out").read_text()
    worker = json.loads((folder / f"worker-{array}.json").read_text())
    assert worker["state"] == "done" and worker["proxy"] != f"{first['host']}:{first['port']}", worker
    assert f"storage proxy moved from {first['host']}:{first['port']} to {worker['proxy']}" in \
           (folder / f"{array}_0_log.out").read_text()
    trials = optuna.load_study(study_name="m", storage=postgres).trials
    assert [t.state for t in trials if t.state == TrialState.COMPLETE] == [TrialState.COMPLETE], trials
