"""Many workers on one storage: is every job handed out, and completed exactly once, with 10, 100
or 1,000 workers, when a tenth of them are killed, the database restarts or the proxy does?

The bench starts what it needs in a temporary directory: a PostgreSQL server (`initdb`, `pg_ctl`,
default settings: 100 connections) for `postgres` and `proxy`, and for `proxy` the real
`sweep storage serve` in front of it; `journal` is the default journal file. N simulated workers
run through the real worker path: each has its own storage (`sweeper.storage.open_storage`: its own
connection pool, or its own gRPC channel), its own `SweepStore` and `GridSource` (the grid
source `sweep grid` uses), and loops as the scheduler does: tick (read the storage), take (claim a
job: WAITING -> RUNNING, owner, first heartbeat), heartbeat, finish (the result, COMPLETE). The job
itself is a sleep of --job-s, no torch and no subprocess, so the workers are threads: --procs
processes of N/procs threads each (each process a host of its own, SWEEP_HOST, as on a cluster:
a silent worker is judged by its heartbeat).

Faults, each once, mid-sweep:
- --kill-fraction F: F x N workers die: whole processes by SIGKILL (as long as one fits in what
  is left to kill), the rest as threads that stop right after a claim, holding it. Their jobs are
  handed out again once their heartbeat is older than --stale-s;
- --restart-db: `pg_ctl restart -m fast` (every connection dropped);
- --restart-proxy: the proxy SIGKILLed and started again on its port.
A worker that loses its storage waits with back-off and reconnects (ReconnectingStorage, in the
real code): one warning line per worker per outage, counted in `reconnect_warnings`.

Written to --json: workers, jobs, completed, completed_more_than_once, never_completed,
claims_per_s, claim_p50_s, claim_p99_s, db_connections_peak, killed_workers, db_restarts,
proxy_restarts, wall_s, memory_peak_gb (the worker processes' and the proxy's resident memory, summed,
at its highest), and what went wrong (worker_errors with the first messages; workers_died_unplanned:
worker processes that died of a signal the bench did not send, such as the kernel's OOM killer).

    python bench/storage_scale.py --backend proxy --workers 1000 --jobs 5000 --kill-fraction 0.1 --restart-db --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
THREADS_PER_PROC = 100
IDLE_MAX_S = 8.0  # a worker that found nothing to take looks again after --poll-s, doubling up to this


# -- services -------------------------------------------------------------------------------------


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def resident_gb(pid: int) -> float:
    """A process's resident memory (0 once it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1 in its own directory (run as the postgres user
    when we are root, as initdb refuses root), with PostgreSQL's default settings."""

    def __init__(self, root: Path) -> None:
        initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not self.pg_ctl:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl); apt-get install postgresql")
        self.root = root
        self.data = root / "pgdata"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self.port = free_port()
        init = subprocess.run([*self.as_user, initdb, "-D", str(self.data), "-U", "sweep", "--auth=trust", "-E", "UTF8"],
                              capture_output=True, text=True)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-300:]}")
        self._ctl("start")
        createdb = str(Path(self.pg_ctl).resolve().with_name("createdb"))
        subprocess.run([*self.as_user, createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", "sweep", "sweep"],
                       check=True, capture_output=True)
        self.url = f"postgresql://sweep@127.0.0.1:{self.port}/sweep"

    def _ctl(self, *action: str) -> None:
        assert self.pg_ctl is not None
        done = subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w",
                               "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root}", *action],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(action)} failed: {done.stderr.strip()[-300:]}")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        assert self.pg_ctl is not None
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], capture_output=True)

    def connections(self) -> Any:
        """A connection of our own for counting the others (kept open: it is made before the workers
        take every slot; `sweep` is a superuser, and superusers have 3 slots of their own)."""
        import psycopg

        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=sweep dbname=sweep", autocommit=True)


class Proxy:
    """`sweep storage serve` in front of a database, as a user runs it."""

    def __init__(self, database: str, root: Path, port: int | None = None) -> None:
        self.database = database
        self.port = port or free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.log = root / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout_s: float = 60) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "storage", "serve", "--storage",
                                          self.database, "--port", str(self.port)], cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self.proc.returncode}: {self.log.read_text()[-500:]}")
            if "listening on" in self.log.read_text():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the proxy did not listen within {timeout_s} s: {self.log.read_text()[-500:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# -- the sweep --------------------------------------------------------------------------------------


# The grid's axes, as a sweep file has them: a few values each, the seeds last; their product
# covers 10,000 jobs, and a bench of M jobs takes the first M points.
AXES = {"lr": [1e-5, 2e-5, 3e-5, 5e-5, 1e-4], "batch_size": [8, 16, 32, 64], "dropout": [0.0, 0.1, 0.2, 0.3, 0.4],
        "max_len": [64, 128, 256, 384, 512], "weight_decay": [0.0, 0.01, 0.1, 0.3], "seed": [1, 2, 3, 4, 5]}


def grid(jobs: int) -> Any:
    import itertools

    from sweeper.spec import Grid, Job
    from trainer.config import build_job

    points = [dict(zip(AXES, values, strict=True)) for values in itertools.islice(itertools.product(*AXES.values()), jobs)]
    if len(points) < jobs:
        raise ValueError(f"--jobs: at most {len(points)} (the product of the bench's axes)")
    return Grid(name="scale", description="", path=Path("scale.yaml"), axes=AXES,
                jobs=[Job(config=build_job(point), point=point) for point in points])


def worker_thread(index: int, args: argparse.Namespace, the_grid: Any, runs: Path, out: list[dict[str, Any]],
                  abandon: threading.Event, abandoning: list[int], lock: threading.Lock) -> None:
    """One worker: the scheduler's loop over GridSource with one slot and an instant job."""
    from sweeper.grid_source import GridSource
    from sweeper.storage import open_storage
    from sweeper.store import SweepStore

    record: dict[str, Any] = {"worker": f"{os.environ.get('SWEEP_HOST')}/{index}", "claims": [], "finished": 0,
                              "error": None, "reconnect_warnings": 0, "abandoned": False}
    out.append(record)
    rng = random.Random(index)
    try:
        storage = open_storage(args.storage)
        record["storage"] = storage
        store = SweepStore(storage, the_grid.name, lock_dir=runs if "://" not in args.storage else None)
        source = GridSource(the_grid, store, runs_dir=runs)
        idle = args.poll_s
        while True:
            started = time.perf_counter()
            source.tick()
            ticket = source.take()
            if ticket is None:
                if source.exhausted():
                    break
                time.sleep(idle * rng.uniform(0.5, 1.5))
                idle = min(idle * 2, IDLE_MAX_S)
                continue
            idle = args.poll_s
            record["claims"].append((ticket.job.id, time.perf_counter() - started, time.time()))
            if abandon.is_set():
                with lock:
                    mine = abandoning[0] > 0
                    abandoning[0] -= mine
                if mine:  # killed right after its claim: it never speaks to the storage again
                    record["abandoned"] = True
                    return
            left = args.job_s  # the claim wrote the first heartbeat; the next is due after --heartbeat-s
            while left > 0:
                time.sleep(min(left, args.heartbeat_s))
                left -= args.heartbeat_s
                if left > 0:
                    source.heartbeat(ticket)
            source.finish(ticket, {"status": "completed", "val_acc": 0.5, "test_acc": 0.5, "runtime_s": args.job_s})
            record["finished"] += 1
    except Exception as exc:  # counted and said: a worker must never die of its storage
        said = exc.details() if callable(getattr(exc, "details", None)) else str(exc)  # a gRPC error's own text
        record["error"] = f"{type(exc).__name__}: {(said or '').strip()[:300]}"
        logging.getLogger("bench").error("worker %d stopped", index, exc_info=True)


def worker_process(args: argparse.Namespace) -> None:
    """--procs of these, each with its share of the workers as threads."""
    counts: Counter[str] = Counter()

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "unreachable" in record.getMessage():
                counts[threading.current_thread().name] += 1

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {os.environ.get('SWEEP_HOST')} %(threadName)s "
                                                       "%(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("sweeper.store").addHandler(Count())
    the_grid = grid(args.jobs)
    runs = Path(args.runs)
    records: list[dict[str, Any]] = []
    abandon, lock, abandoning = threading.Event(), threading.Lock(), [args.abandon]
    threads = [threading.Thread(target=worker_thread, name=f"w{i}", daemon=True,
                                args=(i, args, the_grid, runs, records, abandon, abandoning, lock))
               for i in range(args.threads)]
    for t in threads:
        t.start()
    signal.signal(signal.SIGUSR1, lambda *_: abandon.set())
    for t in threads:
        while t.is_alive():
            t.join(1)
    for i, record in enumerate(records):
        record.pop("storage", None)
        record["reconnect_warnings"] = counts[f"w{i}"]
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, args.out)


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (i < n % parts) for i in range(parts)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from optuna.trial import TrialState

    from sweeper.grid_source import distributions
    from sweeper.storage import open_storage
    from sweeper.store import SweepStore

    root = Path(tempfile.mkdtemp(prefix="sweep-scale-"))
    pg = proxy = None
    workers: list[tuple[subprocess.Popen[bytes], Any]] = []
    try:
        runs = root / "runs"
        runs.mkdir()
        if args.backend == "journal":
            url = str(runs / "sweeps.journal")
        else:
            pg = Postgres(root)
            url = pg.url
            if args.backend == "proxy":
                proxy = Proxy(pg.url, root)
                url = proxy.url
        the_grid = grid(args.jobs)
        monitor = SweepStore(open_storage(url), the_grid.name, lock_dir=runs if "://" not in url else None)
        monitor.sync(the_grid.jobs, distributions(the_grid))  # enqueued once, so the workers' first sync only reads
        counter = pg.connections() if pg else None
        procs = args.procs or max(1, math.ceil(args.workers / THREADS_PER_PROC))
        sizes = split(args.workers, procs)
        to_kill = round(args.kill_fraction * args.workers)
        sigkill: list[int] = []
        for i in sorted(range(procs), key=lambda i: -sizes[i]):
            if sizes[i] <= to_kill - sum(sizes[j] for j in sigkill) and len(sigkill) < procs - 1:
                sigkill.append(i)
        abandon = split(to_kill - sum(sizes[i] for i in sigkill), max(1, procs - len(sigkill)))
        abandon_of = dict(zip([i for i in range(procs) if i not in sigkill], abandon, strict=False))
        env = {**os.environ, "SWEEP_STALE_S": str(args.stale_s), "SWEEP_HEARTBEAT_S": str(args.heartbeat_s),
               "SWEEP_STORAGE_RETRY_S": str(args.retry_s), "OMP_NUM_THREADS": "1"}
        for i, size in enumerate(sizes):
            cmd = [sys.executable, __file__, "--worker", "--storage", url, "--runs", str(runs), "--jobs", str(args.jobs),
                   "--threads", str(size), "--abandon", str(abandon_of.get(i, 0)), "--out", str(root / f"w{i}.json"),
                   "--job-s", str(args.job_s), "--poll-s", str(args.poll_s), "--heartbeat-s", str(args.heartbeat_s)]
            log = open(root / f"w{i}.log", "wb")  # noqa: SIM115 - closed with the process
            workers.append((subprocess.Popen(cmd, env={**env, "SWEEP_HOST": f"bench-host-{i}"}, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=REPO), log))
        started = time.time()
        peak, db_restarts, proxy_restarts, killed, events, memory_peak = 0, 0, 0, 0, [], 0.0
        faults = []
        if to_kill:
            faults.append((0.25, "kill"))
        if args.restart_db and pg:
            faults.append((0.5, "restart-db"))
        if args.restart_proxy and proxy:
            faults.append((0.7, "restart-proxy"))
        done = 0
        while any(p.poll() is None for p, _ in workers):
            if time.time() - started > args.timeout_s:
                events.append(f"{time.time() - started:.1f}s: timed out; workers stopped")
                for p, _ in workers:
                    p.kill()
                break
            rss = sum(resident_gb(p.pid) for p, _ in workers if p.poll() is None)
            memory_peak = max(memory_peak, rss + (resident_gb(proxy.proc.pid) if proxy and proxy.proc else 0.0))
            if counter is not None:
                row = counter.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
                peak = max(peak, int(row.fetchone()[0]) - 1)  # not our own
            if counter is not None:
                done = int(counter.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
            else:
                done = len(monitor.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            while faults and done >= faults[0][0] * args.jobs:
                _, fault = faults.pop(0)
                at = f"{time.time() - started:.1f}s, {done} done"
                if fault == "kill":
                    for i in sigkill:
                        workers[i][0].send_signal(signal.SIGKILL)
                    for i, p in enumerate(workers):
                        if abandon_of.get(i):
                            p[0].send_signal(signal.SIGUSR1)
                    killed = to_kill
                    events.append(f"{at}: SIGKILL to {len(sigkill)} process(es) of {sum(sizes[i] for i in sigkill)} "
                                  f"workers; {to_kill - sum(sizes[i] for i in sigkill)} worker thread(s) stop after "
                                  "their next claim")
                elif fault == "restart-db" and pg:
                    if counter is not None:
                        counter.close()
                    t0 = time.time()
                    pg.restart()
                    db_restarts += 1
                    counter = pg.connections()
                    events.append(f"{at}: pg_ctl restart -m fast ({time.time() - t0:.1f} s)")
                elif fault == "restart-proxy" and proxy:
                    t0 = time.time()
                    proxy.kill()
                    time.sleep(1)
                    proxy.start()
                    proxy_restarts += 1
                    events.append(f"{at}: proxy SIGKILLed and started again ({time.time() - t0:.1f} s)")
            time.sleep(0.5)
        wall = time.time() - started
        for p, log in workers:
            p.wait()
            log.close()
        records: list[dict[str, Any]] = []
        for i in range(procs):
            path = root / f"w{i}.json"
            if path.exists():
                records += json.loads(path.read_text())
        # What the storage holds: read with a fresh client (the proxy's, or the database's).
        final = SweepStore(open_storage(url), the_grid.name, create=False)
        completes = Counter(t.user_attrs.get("job_id") for t in final.study.get_trials(deepcopy=False)
                            if t.state == TrialState.COMPLETE)
        states = Counter(str(t.user_attrs.get("status") or t.state.name.lower()) for t in final.study.get_trials(deepcopy=False))
        latencies = sorted(c[1] for r in records for c in r["claims"])
        claims = Counter(c[0] for r in records for c in r["claims"])
        errors = [r["error"] for r in records if r["error"]]
        # A worker process that died of a signal the bench did not send (the kernel's OOM killer).
        unplanned = [(i, -p.returncode) for i, (p, _) in enumerate(workers) if i not in sigkill and (p.returncode or 0) < 0]
        tracebacks = sum(b"Traceback" in (root / f"w{i}.log").read_bytes() for i in range(procs))
        proxy_code = proxy.stop() if proxy else None
        return {
            "backend": args.backend, "workers": args.workers, "jobs": args.jobs, "processes": procs,
            "completed": sum(1 for job in the_grid.jobs if completes[job.id] >= 1),
            "completed_more_than_once": sum(1 for n in completes.values() if n > 1),
            "never_completed": sum(1 for job in the_grid.jobs if completes[job.id] == 0),
            "claims": sum(claims.values()), "claimed_more_than_once": sum(1 for n in claims.values() if n > 1),
            "claims_per_s": round(sum(claims.values()) / wall, 1),
            "claim_p50_s": round(statistics.median(latencies), 4) if latencies else None,
            "claim_p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 4) if latencies else None,
            "db_connections_peak": peak if pg else None,
            "killed_workers": killed, "db_restarts": db_restarts, "proxy_restarts": proxy_restarts,
            "workers_died_unplanned": sum(sizes[i] for i, _ in unplanned),
            "unplanned_deaths": [f"process {i} ({sizes[i]} workers): signal {sig}" for i, sig in unplanned],
            "memory_peak_gb": round(memory_peak, 1),
            "trial_states": dict(states),
            "reconnect_warnings": sum(r["reconnect_warnings"] for r in records),
            "workers_that_reconnected": sum(1 for r in records if r["reconnect_warnings"]),
            "workers_finished_cleanly": sum(1 for r in records if not r["error"] and not r["abandoned"]),
            "worker_errors": len(errors), "first_errors": sorted(Counter(errors).items(), key=lambda kv: -kv[1])[:3],
            "logs_with_traceback": tracebacks, "proxy_exit_code": proxy_code,
            "events": events, "wall_s": round(wall, 1), "job_s": args.job_s, "stale_s": args.stale_s,
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
        }
    finally:
        for p, _ in workers:  # stopped early (SIGTERM, an error): leave nothing running
            if p.poll() is None:
                p.kill()
                p.wait()
        if proxy:
            proxy.stop()
        if pg:
            pg.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["journal", "postgres", "proxy"], default="proxy")
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--procs", type=int, default=0, help=f"worker processes (default: one per {THREADS_PER_PROC} workers)")
    p.add_argument("--kill-fraction", type=float, default=0.0)
    p.add_argument("--restart-db", action="store_true")
    p.add_argument("--restart-proxy", action="store_true")
    p.add_argument("--job-s", type=float, default=0.05, help="how long a job runs (a sleep)")
    p.add_argument("--poll-s", type=float, default=1.0, help="a worker with nothing to take looks again after this "
                   f"(doubling while it finds nothing, up to {IDLE_MAX_S:.0f} s)")
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument("--stale-s", type=float, default=120.0, help="a silent worker's jobs are taken over after this "
                   "(sweep's own default)")
    p.add_argument("--retry-s", type=float, default=120.0, help="a worker gives up on an unreachable storage after this")
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    # A worker process (started by the bench itself).
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--storage", help=argparse.SUPPRESS)
    p.add_argument("--runs", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--abandon", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_process(args)
        return
    if not 0 <= args.kill_fraction < 1:
        p.error(f"--kill-fraction: {args.kill_fraction} is out of range; expected 0 <= F < 1")
    if args.restart_db and args.backend == "journal":
        p.error("--restart-db: the journal backend has no database to restart")
    if args.restart_proxy and args.backend != "proxy":
        p.error("--restart-proxy: only with --backend proxy")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
