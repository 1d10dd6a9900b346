"""The answer of `sweep compare` (phase 3 of `sweeper.experiment`), and how many seeds its pilot
asks for: the pairwise verdicts (`reports.verdict`, Holm over the pairs when there are more than
two values), and P(A beats B) at every tuning budget k = 1..K (Dodge et al. 2019: the chance
that the best of k of A's tuning runs, drawn with replacement, beats the best of k of B's; ties
half), with a bootstrap band over the tuning runs.

`compare.md`, `compare.html`, `compare.json` and two plots in `runs/<name>/`, written atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reports.budget import expected_best
from reports.collect import load_predictions
from reports.html import to_html
from reports.pairs import predicted
from reports.verdict import ALPHA, Verdict, adjust, compare, seeds_needed
from sweeper.experiment import Outcome, label
from sweeper.store import SweepStore
from trainer.io import atomic_write
from trainer.jobdir import METRICS, SCORED

BAND_RESAMPLES = 1_000


@dataclass(frozen=True)
class SeedRuns:
    """A value's best configuration on its seeds: test scores, and right/wrong where every run kept predictions."""

    jobs: list[str]
    scores: list[float]
    correct: list[tuple[np.ndarray, np.ndarray]] | None  # (sorted rows, right/wrong) per seed


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    verdict: Verdict


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    seeds: dict[str, SeedRuns]
    pairs: list[Pair]
    ks: list[int]
    p_beats: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]  # (a, b) -> P(a beats b), band low, high
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # value -> expected best at each k, its sd


def _results(backend: Any, sweep: str) -> dict[str, dict[str, Any] | None]:
    store = SweepStore(backend, sweep, create=False)
    return {job: store.state(trials).result for job, trials in store.trials_by_job().items()}


def seed_runs(outcome: Outcome, backend: Any) -> dict[str, SeedRuns]:
    """Each value's completed or collapsed seed runs (a diverged run has no test score)."""
    results: dict[str, dict[str, dict[str, Any] | None]] = {}
    out = {}
    for lab, located in outcome.seeds.items():
        jobs, scores, correct = [], [], []
        for sweep, job in located:
            if sweep not in results:
                results[sweep] = _results(backend, sweep)
            result = results[sweep].get(job)
            if not result or result.get("status") not in SCORED or result.get("test_acc") is None:
                continue
            jobs.append(job)
            scores.append(float(result["test_acc"]))
            p = load_predictions(outcome.runs_dir / sweep / job)
            if p is not None:
                order = np.argsort(p.rows, kind="stable")
                correct.append((p.rows[order], (predicted(p.probs) == p.labels)[order]))
        out[lab] = SeedRuns(jobs, scores, correct if len(correct) == len(jobs) and jobs else None)
    return out


def _inputs(a: SeedRuns, b: SeedRuns) -> tuple[Any, Any]:
    """Right/wrong on the test rows every run shares when all kept predictions; else the scores."""
    if a.correct is not None and b.correct is not None:
        shared = a.correct[0][0]
        for rows, _ in a.correct[1:] + b.correct:
            if len(rows) != len(shared) or not np.array_equal(rows, shared):
                shared = np.intersect1d(shared, rows, assume_unique=True)
        if len(shared):
            def at(runs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
                return np.stack([c if len(r) == len(shared) else c[np.searchsorted(r, shared)] for r, c in runs])

            return at(a.correct), at(b.correct)
    return a.scores, b.scores


def pairs(seeds: dict[str, SeedRuns], labels: list[str]) -> list[Pair]:
    """Every pair of values (in the order given: a is the earlier), Holm over the pairs."""
    found = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if seeds[a].scores and seeds[b].scores:
                found.append(Pair(a, b, compare(*_inputs(seeds[a], seeds[b]))))
    adjusted = adjust([p.verdict for p in found]) if len(found) > 1 else [p.verdict for p in found]
    return [Pair(p.a, p.b, v) for p, v in zip(found, adjusted, strict=True)]


def more_seeds(outcome: Outcome, backend: Any) -> int:
    """Seeds a side the pilot's pairs ask for to decide the target difference (the observed one by
    default) at 80% power, Bonferroni over the pairs; the pilot's own count where none can tell."""
    p = outcome.plan
    found = pairs(seed_runs(outcome, backend), p.labels)
    m = max(1, len(found))
    needed = [p.pilot]
    for pair in found:
        v = pair.verdict
        if math.isnan(v.seed_vars[0]):
            needed.append(p.max_seeds)  # no spread to plan with: as many as allowed
            continue
        target = p.target_diff if p.target_diff is not None else v.diff
        n = seeds_needed(*v.seed_vars, v.test_sd**2, target, alpha=ALPHA / m)
        needed.append(p.max_seeds if n is None and target != 0 else (n or p.pilot))
    return max(needed)


def _tuning_scores(outcome: Outcome, lab: str) -> list[float]:
    """A value's tuning runs as the budget counts them: every launched run, one without a score at
    the worst score any tuning run of the experiment reached (Dodge et al. count every trial)."""
    metric = outcome.plan.metric
    every = [s for t in outcome.tuned.values() for _, s in t.runs if s is not None]
    worst = (min(every) if METRICS.get(metric, "maximize") == "maximize" else max(every)) if every else 0.0
    return [worst if s is None else s for _, s in outcome.tuned[lab].runs]


def p_beats(a: list[float], b: list[float], ks: np.ndarray, *, maximize: bool = True) -> np.ndarray:
    """P(best of k draws from a > best of k draws from b), ties half, for each k (exact)."""
    sign = 1.0 if maximize else -1.0
    va, vb = np.sort(sign * np.asarray(a, float)), np.sort(sign * np.asarray(b, float))
    grid = np.union1d(va, vb)
    fa_le = np.searchsorted(va, grid, side="right") / len(va)  # F_a(x)
    fa_lt = np.searchsorted(va, grid, side="left") / len(va)  # F_a(x-)
    fb_le = np.searchsorted(vb, grid, side="right") / len(vb)
    fb_lt = np.searchsorted(vb, grid, side="left") / len(vb)
    k = np.asarray(ks, float)[:, None]
    pa = fa_le[None] ** k - fa_lt[None] ** k  # P(max_k a = x)
    pb = fb_le[None] ** k - fb_lt[None] ** k
    return (pa * fb_lt[None] ** k).sum(1) + 0.5 * (pa * pb).sum(1)


def answer(outcome: Outcome, backend: Any) -> Answer:
    p = outcome.plan
    seeds = seed_runs(outcome, backend)
    found = pairs(seeds, p.labels)
    ks = list(range(1, p.budget + 1))
    maximize = METRICS.get(p.metric, "maximize") == "maximize"
    rng = np.random.default_rng(0)
    beats = {}
    for pair in found:
        a, b = _tuning_scores(outcome, pair.a), _tuning_scores(outcome, pair.b)
        if not a or not b:
            continue
        exact = p_beats(a, b, np.array(ks), maximize=maximize)
        boot = np.stack([p_beats(list(rng.choice(a, len(a))), list(rng.choice(b, len(b))), np.array(ks),
                                 maximize=maximize) for _ in range(BAND_RESAMPLES)])
        low, high = np.quantile(boot, [0.025, 0.975], axis=0)
        beats[(pair.a, pair.b)] = (exact, low, high)
    curves = {}
    for lab in p.labels:
        scores = _tuning_scores(outcome, lab)
        if scores:
            curves[lab] = expected_best(scores, maximize=maximize, ks=np.array(ks))
    return Answer(outcome, seeds, found, ks, beats, curves)


# -- rendering ---------------------------------------------------------------------------------------


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" if values else "–"


def paragraph(ans: Answer) -> str:
    """The answer in one paragraph: the winner or "cannot tell", by how much, on how many seeds,
    after how much tuning each."""
    p = ans.outcome.plan
    tuning = f"after equal tuning ({p.budget} configuration(s) of the rest of the space for each value)"
    if not ans.pairs:
        return (f"No answer: fewer than two values of {p.axis} have a best configuration with a test score "
                f"{tuning}; see the tuning runs below.")
    means = {lab: np.mean(ans.seeds[lab].scores) for lab in p.labels if ans.seeds[lab].scores}
    order = sorted(means, key=lambda lab: -means[lab])
    top = order[0]
    parts = []
    for pair in ans.pairs:
        if top not in (pair.a, pair.b) and len(p.labels) > 2:
            continue
        v = pair.verdict
        other = pair.b if pair.a == top else pair.a
        sign = 1 if pair.b == top else -1  # the difference as top minus other
        diff, low, high = sign * v.diff, *sorted((sign * v.low, sign * v.high))
        seeds = f"{len(ans.seeds[top].scores)} vs {len(ans.seeds[other].scores)} seeds"
        ci = f" (95% CI [{low:+.4f}, {high:+.4f}], p {v.p_adjusted if v.p_adjusted is not None else v.p_value:.3g})" \
            if v.testable else ""
        if v.winner is not None:
            winner = pair.b if v.winner == "b" else pair.a
            loser = pair.a if winner == pair.b else pair.b
            parts.append(f"**{p.axis}={winner} is better than {p.axis}={loser}**: test accuracy {abs(diff):.4f} higher"
                         f"{ci}, on {seeds}")
        else:
            needed = (f"; about {v.seeds_needed} seeds a side would decide it (--seeds auto runs up to --max-seeds "
                      f"of them, {p.max_seeds} here)") if v.seeds_needed else ""
            why = [part for part in v.reason.split("; ")[1:] if not part.startswith(("about ", "more seeds"))]
            parts.append(f"**cannot tell** {p.axis}={top} from {p.axis}={other}: {diff:+.4f}{ci} on {seeds}"
                         + (f" ({'; '.join(why)})" if why else "") + needed)
    return f"{'; '.join(parts)}; {tuning}, each value's best configuration by {p.metric} run on its seeds."


def to_markdown(ans: Answer) -> str:
    p = ans.outcome.plan
    out = [f"# sweep compare: {p.axis}", "", paragraph(ans), ""]
    out += ["## Pairwise verdicts", "",
            "| a | b | seeds | Δ test_acc (b − a) | 95% CI | p | p (Holm) | verdict | seeds needed |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for pair in ans.pairs:
        v = pair.verdict
        ci = f"[{v.low:+.4f}, {v.high:+.4f}]" if v.testable else "–"
        p_cell = f"{v.p_value:.3g}" if v.testable else "–"
        holm = f"{v.p_adjusted:.3g}" if v.p_adjusted is not None else p_cell
        word = {"b": f"{pair.b} better", "a": f"{pair.a} better"}.get(v.winner or "", "cannot tell")
        out.append(f"| {pair.a} | {pair.b} | {v.seeds[0]} vs {v.seeds[1]} | {v.diff:+.4f} | {ci} | {p_cell} | {holm} | "
                   f"{word} | {v.seeds_needed if v.seeds_needed is not None else '–'} |")
    out += ["", "Each verdict is `reports.verdict.compare` on the seeds' right/wrong over the shared test examples "
                "(their test scores where a run kept no predictions): the seeds' and the test set's variance, Student's "
                "t with Welch–Satterthwaite degrees of freedom" + ("; Holm–Bonferroni over the pairs" if len(ans.pairs) > 1
                                                                   else "") + ".", ""]
    if ans.p_beats:
        out += ["## P(A beats B) at every tuning budget", "",
                f"The chance that the best of k of A's tuning runs (drawn with replacement, by {p.metric}) beats the "
                "best of k of B's, ties half (Dodge et al. 2019's expected maximum, as a probability), with a 95% "
                f"bootstrap band over the tuning runs ({BAND_RESAMPLES:,} resamples). It says whether the answer "
                "depends on how much tuning one can afford.", ""]
        pairs_shown = list(ans.p_beats)
        out += ["| k | " + " | ".join(f"P({a} beats {b})" for a, b in pairs_shown) + " |",
                "| ---: | " + " | ".join("---:" for _ in pairs_shown) + " |"]
        for i, k in enumerate(ans.ks):
            cells = [f"{ans.p_beats[x][0][i]:.2f} [{ans.p_beats[x][1][i]:.2f}, {ans.p_beats[x][2][i]:.2f}]"
                     for x in pairs_shown]
            out.append(f"| {k} | " + " | ".join(cells) + " |")
        out += ["", "![P(A beats B) at every tuning budget](p_beats.png)", "",
                "![expected best validation score against the tuning budget](budget.png)", ""]
    out += ["## Tuning runs and seeds", "", f"| {p.axis} | tuning runs ({p.metric}) | best | seeds' test_acc | mean |",
            "| --- | --- | --- | --- | ---: |"]
    for lab in p.labels:
        t = ans.outcome.tuned[lab]
        runs = ", ".join(f"{job} {'–' if s is None else f'{s:.4f}'}" for job, s in t.runs)
        best = "none completed" if t.best_job is None else f"{t.best_job.id} ({t.best_score:.4f})"
        scores = ans.seeds[lab].scores
        out.append(f"| {lab} | {runs} | {best} | {', '.join(f'{s:.4f}' for s in scores) or '–'} | {_mean(scores)} |")
    return "\n".join(out) + "\n"


def to_json(ans: Answer) -> dict[str, Any]:
    p = ans.outcome.plan

    def num(x: float) -> float | None:
        return None if x != x else float(x)

    values = {}
    for lab in p.labels:
        t = ans.outcome.tuned[lab]
        values[lab] = {"value": t.value, "tuning_runs": [{"job": j, p.metric: s} for j, s in t.runs],
                       "best": None if t.best_job is None else {"job": t.best_job.id, p.metric: t.best_score,
                                                                "config": t.best_job.config.to_dict()},
                       "seeds": [{"job": j, "test_acc": s} for j, s in zip(ans.seeds[lab].jobs, ans.seeds[lab].scores,
                                                                           strict=True)]}
    return {"axis": p.axis, "values": [label(v) for v in p.values], "budget": p.budget, "metric": p.metric,
            "tuning_seed": p.tuning_seed, "by_value": values,
            "pairs": [{"a": x.a, "b": x.b, "diff": x.verdict.diff, "low": num(x.verdict.low), "high": num(x.verdict.high),
                       "p_value": num(x.verdict.p_value), "p_holm": x.verdict.p_adjusted,
                       "winner": None if x.verdict.winner is None else (x.b if x.verdict.winner == "b" else x.a),
                       "seeds_needed": x.verdict.seeds_needed, "reason": x.verdict.reason} for x in ans.pairs],
            "p_beats": [{"a": a, "b": b, "k": ans.ks, "p": v[0].tolist(), "low": v[1].tolist(), "high": v[2].tolist()}
                        for (a, b), v in ans.p_beats.items()],
            "answer": paragraph(ans)}


def _plots(ans: Answer, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = ans.outcome.plan

    def save(fig: Any, name: str) -> None:
        def write(tmp: Path) -> None:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")

        atomic_write(out / name, write)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (a, b), (mid, low, high) in ans.p_beats.items():
        ax.plot(ans.ks, mid, marker="o", label=f"P({a} beats {b})")
        ax.fill_between(ans.ks, low, high, alpha=0.2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="tuning budget k (configurations)", ylabel="probability", ylim=(0, 1),
           title=f"{p.axis}: P(A's best of k beats B's)")
    ax.set_xticks(ans.ks)
    ax.legend(fontsize=8)
    save(fig, "p_beats.png")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for lab, (mean, sd) in ans.curves.items():
        ax.plot(ans.ks, mean, marker="o", label=lab)
        ax.fill_between(ans.ks, mean - sd, mean + sd, alpha=0.2)
    ax.set(xlabel="tuning budget k (configurations)", ylabel=f"expected best {p.metric}",
           title=f"{p.axis}: expected best after k tuning runs")
    ax.set_xticks(ans.ks)
    ax.legend(fontsize=8)
    save(fig, "budget.png")


def write(ans: Answer, out: Path, *, with_json: bool = False, plots: bool = True) -> list[Path]:
    """compare.md, compare.html (self-contained), compare.json with `with_json`, and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    if plots and ans.p_beats:
        _plots(ans, out)
    markdown = to_markdown(ans)
    written = []
    files = {"compare.md": markdown, "compare.html": to_html(markdown, out, title=f"sweep compare {ans.outcome.plan.axis}")}
    if with_json:
        files["compare.json"] = json.dumps(to_json(ans), indent=2, default=str) + "\n"
    for name, text in files.items():
        def put(tmp: Path, text: str = text) -> None:
            tmp.write_text(text)

        atomic_write(out / name, put)
        written.append(out / name)
    return written
