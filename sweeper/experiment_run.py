"""`sweep compare`'s phases run (the plan is sweeper/experiment.py): equal tuning, then each
value's best on seeds, each phase's jobs run once by the one scheduler, whatever ran before on
this storage (a job another sweep finished is adopted, not run again)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from sweeper.experiment import Outcome, Plan, Tuned
from sweeper.grid_source import GridSource
from sweeper.samplers import open_study
from sweeper.spec import Grid, Job
from sweeper.storage import sweep_names
from sweeper.store import SweepStore
from sweeper.study import StudySource
from trainer.config import build_job
from trainer.jobdir import COLLAPSED, COMPLETED, FINISHED, METRICS, SURPLUS


def seed_list(first: int, n: int) -> list[int]:
    """n seeds: the tuning seed, then 0, 1, 2, ... (skipping it)."""
    out = [first]
    k = 0
    while len(out) < n:
        if k != first:
            out.append(k)
        k += 1
    return out


def better(a: float, b: float, metric: str) -> bool:
    return a < b if METRICS.get(metric, "maximize") == "minimize" else a > b


def pick_best(value: Any, runs: list[tuple[Job, dict[str, Any] | None]], metric: str) -> Tuned:
    """The value's tuning runs in budget order and its best one by the validation metric (the first
    of equals): a completed run where there is one, else a collapsed one (a value that no tuning
    run learned is still compared, as it is), never a diverged or failed one."""
    scored: list[tuple[str, float | None]] = []
    best: dict[str, tuple[Job, float]] = {}
    for job, result in runs:
        score = None
        if result is not None and result.get(metric) is not None:
            score = float(result[metric])
            status = str(result.get("status"))
            if status in (COMPLETED, COLLAPSED) and (status not in best or better(score, best[status][1], metric)):
                best[status] = (job, score)
        scored.append((job.id, score))
    chosen = best.get(COMPLETED) or best.get(COLLAPSED)
    return Tuned(value, scored, chosen[0] if chosen else None, chosen[1] if chosen else None)


def execute(p: Plan, *, backend: Any, runs_dir: Path, run_source: Callable[[Any], None],
            more_seeds: Callable[[Outcome], int], retries: int = 1,
            say: Callable[[str], None] = lambda line: None) -> Outcome:
    """Run the phases (each job once, whatever ran before on this storage) and return what they
    left. `run_source(source)` runs a scheduler over a job source to its end; `more_seeds(outcome)`
    says how many seeds a side the pilot's verdicts ask for (the reporter decides, not the sweeper)."""
    say(f"phase 1: {p.tuning_jobs()} tuning job(s)")
    tuned = _tune(p, backend=backend, runs_dir=runs_dir, run_source=run_source, retries=retries, say=say)
    for lab, t in tuned.items():
        if t.best_job is None:
            say(f"{p.axis}={lab}: no tuning run completed; it has no best configuration to run on seeds")
    store = SweepStore(backend, p.seeds_sweep, lock_dir=runs_dir)
    outcome = Outcome(p, tuned, {}, runs_dir)

    def run_seeds(n: int) -> None:
        to_run: list[Job] = []
        for lab, t in tuned.items():
            outcome.seeds[lab] = []
            if t.best_job is None:
                continue
            config = t.best_job.config.to_dict()
            for seed in seed_list(p.tuning_seed, n):
                job = Job(config=build_job({**config, "seed": seed}), point={**t.best_job.point, "seed": seed})
                if job.id == t.best_job.id:  # the tuning run is the pilot's first seed
                    outcome.seeds[lab].append((t.sweep, job.id))
                else:
                    outcome.seeds[lab].append((p.seeds_sweep, job.id))
                    to_run.append(job)
        if to_run:
            grid = Grid(name=p.seeds_sweep, description=f"sweep compare {p.axis}: each value's best on {n} seeds",
                        path=Path(p.seeds_sweep), axes={p.axis: p.values}, jobs=to_run)
            if reused := adopt(backend, store, to_run, runs_dir):
                say(f"phase 2: {len(reused)} seed job(s) finished in other sweeps of this storage, not run again")
            run_source(GridSource(grid, store, runs_dir=runs_dir))

    say(f"phase 2: each value's best on {p.pilot} seed(s)")
    run_seeds(p.pilot)
    if p.auto:
        n = min(p.max_seeds, max(p.pilot, more_seeds(outcome)))
        if n > p.pilot:
            say(f"phase 2: {n} seeds a side (what the pilot's verdicts ask for; at most {p.max_seeds})")
            outcome.extra = {lab: n - p.pilot for lab in tuned}
            run_seeds(n)
        else:
            say("phase 2: the pilot's seeds are what the verdicts ask for")
    return outcome


def adopt(backend: Any, store: Any, jobs: list[Job], runs_dir: Path) -> list[str]:
    """Jobs this sweep has not finished that another sweep on the storage has (the same job id is
    the same configuration): recorded here as finished with that run's result, their directory a
    link to the other sweep's, so that they are not run again. Returns the adopted job ids."""
    mine = store.trials_by_job()
    wanted = {j.id: j for j in jobs if store.state(mine.get(j.id, [])).status not in FINISHED}
    adopted: list[str] = []
    for other in sweep_names(backend):
        if not wanted or other == store.sweep:
            continue
        theirs = SweepStore(backend, other, create=False)
        by_job = theirs.trials_by_job()
        for job_id in [j for j in wanted if j in by_job]:
            state = theirs.state(by_job[job_id])
            source, target = runs_dir / other / job_id, runs_dir / store.sweep / job_id
            if state.status not in FINISHED or state.result is None or not source.is_dir() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(os.path.relpath(source, target.parent), target)
            except FileExistsError:  # another worker of this comparison adopts it now
                continue
            store.sync([wanted[job_id]])
            trial = store.canonical(store.trials_by_job()[job_id])
            if trial is None or not store.claim(trial):
                continue
            store.set_attr(store.trial_id(trial), "reused_from", other)
            store.finish(store.trial_id(trial), {**state.result, "status": state.status})
            adopted.append(job_id)
            del wanted[job_id]
    return adopted


def _tune(p: Plan, *, backend: Any, runs_dir: Path, run_source: Callable[[Any], None], retries: int,
          say: Callable[[str], None]) -> dict[str, Tuned]:
    if p.kind == "grid":
        jobs = [j for lab in p.labels for j in p.tuning[lab]]
        keys = [k for k in (p.rest[0] if p.rest else {})]
        axes = {p.axis: p.values, **{k: list({json.dumps(r[k], sort_keys=True): r[k] for r in p.rest}.values())
                                     for k in keys}}
        grid = Grid(name=p.name, description=f"sweep compare {p.axis}: equal tuning, {p.budget} point(s) a value",
                    path=Path(p.name), axes=axes, jobs=jobs)
        store = SweepStore(backend, p.name, lock_dir=runs_dir)
        if reused := adopt(backend, store, jobs, runs_dir):
            say(f"phase 1: {len(reused)} tuning job(s) finished in other sweeps of this storage, not run again")
        run_source(GridSource(grid, store, runs_dir=runs_dir))
        by_job = store.trials_by_job()
        return {lab: dataclasses.replace(pick_best(v, [(j, store.state(by_job.get(j.id, [])).result)
                                                       for j in p.tuning[lab]], p.metric), sweep=p.name)
                for v, lab in zip(p.values, p.labels, strict=True)}
    out = {}
    for v, lab in zip(p.values, p.labels, strict=True):
        name, space = p.studies[lab]
        store = open_study(space, backend, name)
        run_source(StudySource(space, store, runs_dir=runs_dir, trials=p.budget, retries=retries))
        runs = []
        for trial in sorted(store.study.get_trials(deepcopy=False), key=lambda t: t.number):
            config = trial.user_attrs.get("config")
            if not isinstance(config, dict) or trial.user_attrs.get("status") == SURPLUS:
                continue
            job = Job(config=build_job(config), point={**trial.user_attrs.get("point", {}), p.axis: v})
            runs.append((job, trial.user_attrs.get("result")))
        out[lab] = dataclasses.replace(pick_best(v, runs[:p.budget], p.metric), sweep=name)
    return out


def mean_runtime(backend: Any) -> float | None:
    """The mean runtime of the finished jobs of every sweep in a storage (None: none, or no storage)."""
    if backend is None:
        return None
    times = []
    for summary in optuna.get_all_study_summaries(backend, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=backend)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            result = trial.user_attrs.get("result")
            if isinstance(result, dict) and isinstance(result.get("runtime_s"), (int, float)):
                times.append(float(result["runtime_s"]))
    return sum(times) / len(times) if times else None
