"""A worker's reads at scale (issue 28): part of the trials, fresh from each storage; a bounded
sample per turn in a big sweep, yet every job run once; the proxy's shared reads."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from bench.storage_scale import free_port, grid
from sweeper import trial_view
from sweeper.grid_source import GridSource
from sweeper.storage import database, open_storage
from sweeper.store import WORKER_SKIPS, SweepStore
from sweeper.trial_reads import read_trials


def _ids(trials: list) -> list[int]:
    return [t._trial_id for t in trials]


@pytest.mark.parametrize("kind", ["journal", "sqlite", "sqlite-cached", "memory"])
def test_read_trials_gives_the_ids_asked_and_the_newer_ones(tmp_path: Path, kind: str) -> None:
    storage = {"journal": lambda: open_storage(str(tmp_path / "j.journal")),
               "sqlite": lambda: database(f"sqlite:///{tmp_path / 'db.sqlite'}"),
               "sqlite-cached": lambda: open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}"),
               "memory": optuna.storages.InMemoryStorage}[kind]()
    store = SweepStore(storage, "s")
    store.sync(grid(10).jobs)
    every = store.study.get_trials(deepcopy=False)
    ids = _ids(every)
    assert _ids(read_trials(storage, store.study_id, ids=(), newer_than=-1)) == ids
    got = read_trials(storage, store.study_id, ids=[ids[1], ids[3]], newer_than=ids[7])
    assert _ids(got) == [ids[1], ids[3], ids[8], ids[9]]
    assert [t.user_attrs["job_id"] for t in got] == [every[i].user_attrs["job_id"] for i in (1, 3, 8, 9)]
    slim = store.read([ids[0]], newer_than=ids[-1])  # what a worker reads: no configuration
    assert _ids(slim) == [ids[0]] and ("config" not in slim[0].user_attrs or kind in ("journal", "memory"))
    # A lean reading says of each trial what a whole one says, but what it leaves out.
    store.claim(every[1])
    store.finish(ids[1], {"status": "completed", "val_acc": 0.75})
    store.fail(ids[2], "broken")
    whole = {t._trial_id: t for t in read_trials(storage, store.study_id, ids=(), newer_than=-1)}
    for lean in store.read():
        full = whole[lean._trial_id]
        assert (lean.number, lean.state, lean.values, lean.datetime_start, lean.datetime_complete) == (
            full.number, full.state, full.values, full.datetime_start, full.datetime_complete)
        assert lean.user_attrs == {k: v for k, v in full.user_attrs.items() if k not in WORKER_SKIPS} or kind in (
            "journal", "memory")


def test_a_big_sweep_is_read_in_bounded_samples(tmp_path: Path) -> None:
    store = SweepStore(optuna.storages.InMemoryStorage(), "scale")
    jobs = grid(trial_view.READ_ALL + 200).jobs
    source = GridSource(grid(len(jobs)), store, runs_dir=tmp_path)
    asked: list[tuple[int, tuple[int, int] | None]] = []
    got: list[int] = []
    real = store.read

    def read(ids: tuple = (), newer_than: int = -1, open_sample: tuple[int, int] | None = None) -> list:
        asked.append((len(ids), open_sample))
        got.append(len(trials := real(ids, newer_than, open_sample)))
        return trials

    store.read = read  # type: ignore[method-assign]
    source.tick()  # the trials it enqueued itself are new to it: all read once
    asked.clear()
    got.clear()
    source.tick()
    # No id asked: the newest trials (ID_SLACK back) and an open sample of the storage's.
    assert [(n, s[1] if s else None) for n, s in asked] == [(0, trial_view.SAMPLE)]
    assert got[0] <= trial_view.SAMPLE + trial_view.ID_SLACK
    # Fresh: what was read; the worker may claim only those.
    assert len(source.view.fresh) <= trial_view.SAMPLE + trial_view.ID_SLACK < len(jobs)
    ticket = source.take()
    assert ticket is not None and ticket.job.id in source.view.fresh


def test_an_open_sample_is_what_is_open_now_from_a_point_on(tmp_path: Path) -> None:
    """The storage, not the worker's beliefs, says what is waiting and running: a finished trial is
    never in it; from `start` on, then from the lowest id; fewer than asked: all of them."""
    for storage in (optuna.storages.InMemoryStorage(), database(f"sqlite:///{tmp_path / 'db.sqlite'}")):
        store = SweepStore(storage, "s")
        store.sync(grid(12).jobs)
        ids = _ids(store.study.get_trials(deepcopy=False))
        store.claim(store.study.get_trials(deepcopy=False)[5])
        store.claim(store.study.get_trials(deepcopy=False)[9])
        for i in (6, 7):
            storage.set_trial_state_values(ids[i], TrialState.COMPLETE, [0.5])
        def sample(start: int, storage: optuna.storages.BaseStorage = storage, study: int = store.study_id,
                   ids: list[int] = ids) -> dict[TrialState, list[int]]:
            got = read_trials(storage, study, ids=(), newer_than=ids[-1], open_sample=(start, 3))
            return {s: sorted(t._trial_id for t in got if t.state == s) for s in (TrialState.WAITING, TrialState.RUNNING)}

        assert sample(ids[6]) == {TrialState.WAITING: [ids[8], ids[10], ids[11]],  # 6 and 7 finished
                                  TrialState.RUNNING: [ids[5], ids[9]]}  # fewer than asked: every one
        assert sample(ids[10])[TrialState.WAITING] == [ids[0], ids[10], ids[11]]  # then from the lowest


def test_two_workers_on_a_big_sweep_run_every_job_once(tmp_path: Path) -> None:
    """Sampled, stale views: each worker acts on what it read this turn, and claims are atomic, so
    each job runs once and both workers see the end."""
    storage = optuna.storages.InMemoryStorage()
    the_grid = grid(trial_view.READ_ALL + 150)
    workers = [GridSource(the_grid, SweepStore(storage, "scale"), runs_dir=tmp_path) for _ in range(2)]
    for i, w in enumerate(workers):
        w.view.rng = random.Random(i)
    held: list[tuple[GridSource, object]] = []
    ran: list[str] = []
    for turn in range(10_000):
        w = workers[turn % 2]
        w.tick()
        if w.exhausted() and all(x.exhausted() for x in workers) and not held:
            break
        ticket = w.take()
        if ticket is not None:
            held.append((w, ticket))
        if held and (ticket is None or len(held) > 3):  # finish the oldest: jobs overlap
            owner, done = held.pop(0)
            owner.finish(done, {"status": "completed", "val_acc": 0.5})  # type: ignore[arg-type]
            ran.append(done.job.id)  # type: ignore[attr-defined]
    assert sorted(ran) == sorted(job.id for job in the_grid.jobs)  # every job once
    assert all(w.exhausted() for w in workers)
    complete = [t for t in storage.get_all_trials(workers[0].store.study_id) if t.state == TrialState.COMPLETE]
    assert len(complete) == len(the_grid.jobs)


def test_a_finished_jobs_second_trial_ends_surplus_so_the_end_of_a_big_sweep_is_seen(tmp_path: Path) -> None:
    """Two workers that found a job's trial failed at once queue it twice; once the job has run, its
    second trial is ended SURPLUS (never run) by the next worker that reads it, so that WAITING
    leftovers do not fill every worker's open sample (whose count of fewer than SAMPLE is how a
    worker of a big sweep sees the end)."""
    storage = optuna.storages.InMemoryStorage()
    the_grid = grid(trial_view.READ_ALL + 50)
    store = SweepStore(storage, "scale")
    source = GridSource(the_grid, store, runs_dir=tmp_path)
    job = the_grid.jobs[7]
    for _ in range(trial_view.SAMPLE):
        store.enqueue(job)  # queued again and again: leftovers
    first = store.canonical(store.trials_by_job()[job.id])
    assert first is not None and store.claim(first)
    store.finish(store.trial_id(first), {"status": "completed", "val_acc": 0.5})
    source.tick()
    trials = store.trials_by_job()[job.id]
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * trial_view.SAMPLE
    assert {t.user_attrs["status"] for t in trials[1:]} == {"surplus"}
    assert source.progress[job.id].state == "completed"


def test_a_job_taken_over_is_queued_again_by_the_taker_alone(tmp_path: Path, monkeypatch) -> None:
    """A worker that reads a trial another worker has just failed as lost leaves its job to that
    worker to queue (a thousand idle workers queued one job fifty times); past REQUEUE_GRACE_S (the
    taker died in between) it queues and runs it itself."""
    from sweeper import store as store_module

    storage = optuna.storages.InMemoryStorage()
    the_grid = grid(4)
    store = SweepStore(storage, "s")
    store.sync(the_grid.jobs)
    lost = store.study.get_trials(deepcopy=False)[0]
    assert store.claim(lost) and store.fail(store.trial_id(lost), "worker x:1 lost", status="lost")
    other = GridSource(the_grid, SweepStore(storage, "s"), runs_dir=tmp_path)
    taken = []
    while (ticket := other.take()) is not None:
        taken.append(ticket.job.id)
    assert lost.user_attrs["job_id"] not in taken and len(store.study.get_trials(deepcopy=False)) == 4
    monkeypatch.setattr(store_module, "REQUEUE_GRACE_S", 0.0)
    other.tick()
    ticket = other.take()
    assert ticket is not None and ticket.job.id == lost.user_attrs["job_id"]
    assert len(store.study.get_trials(deepcopy=False)) == 5


# -- the proxy's side ---------------------------------------------------------------------------------


def test_the_proxy_cache_shares_reads_and_sees_every_earlier_write(tmp_path: Path, monkeypatch) -> None:
    from sweeper.proxy_service import ProxyCache

    cache = ProxyCache(database(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    store = SweepStore(cache, "s")
    store.sync(grid(20).jobs)
    reads = 0
    real = cache._backend._get_trials

    def slow(*args: object, **kwargs: object) -> list:
        nonlocal reads
        reads += 1
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache._backend, "_get_trials", slow)
    seen: list[int] = []
    threads = [threading.Thread(target=lambda: seen.append(len(cache.get_all_trials(store.study_id, deepcopy=False))))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [20] * 20 and reads <= 3  # twenty calls, one read running and at most two after it
    # A write made before a call is in what that call gets, even while another read runs.
    trial_id = store.trial_id(store.study.get_trials(deepcopy=False)[0])
    cache.set_trial_state_values(trial_id, TrialState.RUNNING)
    assert cache.get_all_trials(store.study_id, deepcopy=False)[0].state == TrialState.RUNNING


def test_a_restarted_proxy_records_a_parameter_of_a_trial_it_never_read(tmp_path: Path) -> None:
    from sweeper.proxy_service import ProxyCache

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = SweepStore(open_storage(url), "s")
    store.sync(grid(2).jobs)
    trial = store.study.get_trials(deepcopy=False)[0]
    fresh = ProxyCache(database(url))  # as a proxy started after the trial was made
    dist = CategoricalDistribution([0, 1])
    fresh.set_trial_param(store.trial_id(trial), "seed", dist.to_internal_repr(0), dist)
    assert fresh.get_trial(store.trial_id(trial)).params == {"seed": 0}


def test_a_worker_reads_part_of_the_trials_through_the_proxy(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    from tests.sweeper.test_storage_proxy import Served

    served = Served(f"sqlite:///{tmp_path / 'db.sqlite'}", free_port())
    served.start()
    try:
        store = SweepStore(open_storage(f"grpc://127.0.0.1:{served.port}"), "s")
        store.sync(grid(6).jobs)
        ids = [store.trial_id(t) for t in store.study.get_trials(deepcopy=False)]
        got = store.read([ids[0]], newer_than=ids[4])
        assert _ids(got) == [ids[0], ids[5]] and all("config" not in t.user_attrs for t in got)
        assert all(t.user_attrs["job_id"] for t in got)
        assert store.claim(store.study.get_trials(deepcopy=False)[2])
        sampled = store.read((), newer_than=ids[-1], open_sample=(ids[3], 2))  # the proxy adds it (OPEN_KEY)
        assert sorted((t.state.name, t._trial_id) for t in sampled) == [
            ("RUNNING", ids[2]), ("WAITING", ids[3]), ("WAITING", ids[4])]
        # A big request (the shared, cached reading) gives the same sample.
        shared = store.read(list(range(10**6, 10**6 + 600)), newer_than=ids[-1], open_sample=(ids[3], 2))
        assert _ids(shared) == _ids(sampled)
    finally:
        served.halt()
