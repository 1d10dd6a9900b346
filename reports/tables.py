"""A sweep's report as data (`build_report`) and as flat rows (`to_rows`, `to_csv`, `to_json`);
`reports.markdown`, `reports.html` and `reports.console` render it.

Pure functions: the same records and predictions give byte-identical output.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from typing import Any

from reports.budget import Curve, curves
from reports.cache import Cache
from reports.collect import Predictions, Record
from reports.compare import compare_rows
from reports.rows import DEFAULT_METRIC, Row, SweepReport
from reports.stats import mean_std
from trainer.jobdir import COLLAPSED, COMPLETED, DIVERGED, FAILED, FINISHED, METRICS, PENDING, PRUNED, RUNNING, STATUSES, WAITING

# column, header, which way is better (None: not a quality), decimals; optional columns are shown when present
COLUMNS: list[tuple[str, str, str | None, int]] = [
    ("val_acc", "val_acc", "max", 4),
    ("val_macro_f1", "val_macro_f1", "max", 4),
    ("val_loss", "val_loss", "min", 4),
    ("test_acc", "test_acc", "max", 4),
    ("test_macro_f1", "test_macro_f1", "max", 4),
    ("test_loss", "test_loss", "min", 4),
    ("test_ece", "test_ECE", "min", 4),
    ("best_epoch", "best epoch", None, 1),
    ("runtime_s", "runtime (s)", "min", 1),
    ("train_samples_per_s", "samples/s", "max", 1),
]
OPTIONAL = ("val_macro_f1", "val_loss", "test_macro_f1")




def _groups(records: list[Record]) -> list[list[Record]]:
    """The records by configuration (everything but the seed), in order of first appearance.
    Equal configurations stored with their keys in another order group together: the key is the
    sorted JSON, computed once per distinct `repr` (half the cost of one per record)."""
    canonical: dict[str, str] = {}
    groups: dict[str, list[Record]] = {}
    for record in records:
        config = {k: v for k, v in record.config.items() if k != "seed"}
        fast = repr(config)
        key = canonical.get(fast)
        if key is None:
            key = canonical[fast] = json.dumps(config, sort_keys=True)
        groups.setdefault(key, []).append(record)
    return list(groups.values())


def _label_value(record: Record, key: str) -> Any:
    if key in record.point:
        return record.point[key]
    value: Any = record.config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _hashable(value: Any) -> Any:
    """A value as a set member: scalars as (type, value) (1, 1.0 and True stay apart, as in JSON),
    the rest as sorted JSON."""
    if value is None or isinstance(value, (str, int, bool)) or (isinstance(value, float) and value == value):
        return (type(value), value)
    return json.dumps(value, sort_keys=True)


def _varied_keys(records: list[Record]) -> list[str]:
    keys = list(dict.fromkeys(k for r in records for k in r.point if k != "seed"))
    varied = [k for k in keys if len({_hashable(_label_value(r, k)) for r in records}) > 1]
    return ["model", *[k for k in varied if k != "model"]]


def _matches(label: dict[str, Any], spec: str) -> bool:
    wanted = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    return bool(wanted) and all(str(label.get(k)) == v for k, v in wanted.items())


def _metric(records: list[Record]) -> str:
    for r in records:
        if r.result and r.result.get("metric") in METRICS:
            return str(r.result["metric"])
    return DEFAULT_METRIC


def _stats(records: list[Record], column: str) -> tuple[float, float | None] | None:
    values = [r.result[column] for r in records if r.result and r.result.get(column) is not None]
    return mean_std(values) if values else None


def build_report(name: str, records: list[Record], *, states: dict[str, int],
                 predictions: Callable[[str], Predictions | None], baseline: str | None = None,
                 effect: float | None = None) -> SweepReport:
    """One row per configuration with every one of its runs counted, each row compared with the
    baseline across seeds, and the expected best validation score against the number of trials."""
    report = tabulate(name, records, states=states, baseline=baseline, effect=effect)
    compare_report(report, predictions)
    return report


def tabulate(name: str, records: list[Record], *, states: dict[str, int], baseline: str | None = None,
             effect: float | None = None) -> SweepReport:
    """The report without its comparisons: the rows and their statistics, the best row, the
    budget curves (all that the plots need); `compare_report` adds the comparisons.

    The design comes from every job the storage holds (a grid enqueues all of its jobs when it
    starts), not from the finished ones: a report taken mid-sweep shows every swept key, and
    every configuration is a row whatever became of its runs (failed, running, waiting)."""
    finished = [r for r in records if r.status in FINISHED and r.result is not None]
    keys = _varied_keys(records)
    rows = [Row(label={k: _label_value(runs[0], k) for k in keys}, runs=runs) for runs in _groups(records)]
    present = {c for c in OPTIONAL if any(r.result and r.result.get(c) is not None for r in finished)}
    columns = [c for c in COLUMNS if c[0] not in OPTIONAL or c[0] in present]
    metric = _metric(finished)
    for row in rows:
        scored = [r for r in row.runs if r.status in FINISHED and r.result is not None]
        completed = row.completed
        for column, *_ in columns:
            if (done := _stats(completed, column)) is not None:
                row.stats[column] = done
        if len(scored) == len(completed):  # every run with a result completed: the same statistics
            row.stats_all = dict(row.stats)
            continue
        for column, *_ in columns:
            if (every := _stats(scored, column)) is not None:
                row.stats_all[column] = every
    # the first row with a finished run: a row whose runs all failed or wait has nothing to compare against
    base = next((i for i, row in enumerate(rows) if any(r.status in FINISHED and r.result for r in row.runs)), 0)
    if baseline is not None:
        found = [i for i, row in enumerate(rows) if _matches(row.label, baseline)]
        if not found:
            raise ValueError(f"--baseline {baseline!r} matches no row; rows: "
                             + "; ".join(",".join(f"{k}={v}" for k, v in row.label.items()) for row in rows))
        base = found[0]
    report = SweepReport(
        name=name, keys=keys, rows=rows, baseline=base,
        excluded=[r for r in records if r.status not in (COMPLETED, *PENDING)],
        pending=[r for r in records if r.status in PENDING],
        states=states, several_seeds=any(len(row.runs) > 1 for row in rows), metric=metric, effect=effect,
        columns=columns,
    )
    report.best = _best_row(report)
    report.budget, report.budget_note = _budget(report, records)
    report.seeds_used = sorted({int(seed) for r in records
                                if isinstance(seed := r.point.get("seed", r.config.get("seed")), int)})
    return report




def job_counts(report: SweepReport) -> dict[str, int]:
    """Jobs by status (completed, failed, collapsed, running and waiting always; others when any)."""
    counts = dict.fromkeys((COMPLETED, FAILED, COLLAPSED, RUNNING, WAITING), 0)
    for row in report.rows:
        for run in row.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
    return {s: counts[s] for s in (*STATUSES, *sorted(set(counts) - set(STATUSES))) if s in counts}


def counts_text(report: SweepReport) -> str:
    counts = job_counts(report)
    return f"{sum(counts.values())} job(s): " + ", ".join(f"{n} {status}" for status, n in counts.items())


def compare_report(report: SweepReport, predictions: Callable[[str], Predictions | None], *,
                   cache: Cache | None = None) -> None:
    """Every row against the baseline, and the comparisons the report leads with (`reports.compare`)."""
    if len(report.rows) > 1:
        report.lead = compare_rows(report.rows, report.baseline, predictions, effect=report.effect,
                                   lead=lead_pairs(report), cache=cache)


def _rank(report: SweepReport, rows: list[int]) -> list[int]:
    """Row indices best first by the selection metric's mean over all runs (ties: the first row)."""
    sign = 1 if report.maximize else -1
    scored = [i for i in rows if report.metric in report.rows[i].stats_all]
    return sorted(scored, key=lambda i: (-sign * report.rows[i].stats_all[report.metric][0], i))


MAX_LEAD = 8  # model bests the report leads with; the rest are in the table


def lead_pairs(report: SweepReport) -> list[tuple[int, int, str]]:
    """(a, b, kind): the best configuration against the baseline (or, when the baseline is the
    best, the runner-up against it); in a sweep over `model`, each model's best against the
    overall best."""
    ranked = _rank(report, list(range(len(report.rows))))
    if not ranked:
        return []
    best, base = ranked[0], report.baseline
    pairs = [(base, best, "best vs baseline")] if best != base else (
        [(best, ranked[1], "runner-up vs best")] if len(ranked) > 1 else [])
    models: dict[str, int] = {}
    for i in ranked:
        models.setdefault(str(report.rows[i].label.get("model")), i)
    if len(models) > 1:
        pairs += [(best, i, "model best vs overall best") for i in list(models.values())[1:MAX_LEAD + 1]
                  if (best, i) not in {(a, b) for a, b, _ in pairs} and (i, best) not in {(a, b) for a, b, _ in pairs}]
    return pairs


def _best_row(report: SweepReport) -> int | None:
    ranked = _rank(report, list(range(len(report.rows))))
    return ranked[0] if ranked else None


def best_note(report: SweepReport) -> str:
    """What the best mark rests on, and what it hides."""
    if report.best is None:
        return ""
    row = report.rows[report.best]
    way = "highest" if report.maximize else "lowest"
    note = f"best: the {way} mean {report.metric} over all of a configuration's runs"
    bad = [f"{row.count(s)} {s}" for s in (COLLAPSED, DIVERGED, FAILED) if row.count(s)]
    if bad:
        note += f"; the best configuration had {' and '.join(bad)} of {len(row.runs)} runs"
    return note


LAUNCHED = (*FINISHED, FAILED, PRUNED)  # runs a budget curve counts


def _budget(report: SweepReport, records: list[Record]) -> tuple[list[Curve], str]:
    """Expected best validation score after k trials, per model where the sweep varies the model.
    Every launched run counts (Dodge et al. 2019): left out, a failed or diverged run would bias
    the curve up. A run without a score counts at the worst score any run of its curve reached."""
    launched = [r for r in records if r.status in LAUNCHED]
    models = {_hashable(_label_value(r, "model")) for r in launched}
    scored: dict[str, list[float]] = {}
    unscored: dict[str, int] = {}
    for r in launched:
        key = str(_label_value(r, "model")) if len(models) > 1 else "all"
        value = (r.result or {}).get(report.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            scored.setdefault(key, []).append(float(value))
        else:
            unscored[key] = unscored.get(key, 0) + 1
    values = {}
    for key in dict.fromkeys([*scored, *unscored]):
        got = scored.get(key, [])
        if got:
            worst = min(got) if report.maximize else max(got)
            values[key] = got + [worst] * unscored.get(key, 0)
    counts = {s: sum(r.status == s for r in launched) for s in LAUNCHED}
    note = "every launched run counts: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if sum(unscored.values()):
        note += (f"; {sum(unscored.values())} run(s) without a {report.metric} (failed, or diverged before "
                 "validating) at the worst score its curve's runs reached")
    return curves(values, maximize=report.maximize), note


def to_rows(report: SweepReport) -> list[dict[str, Any]]:
    """Flat rows for CSV and JSON."""
    rows = []
    for i, row in enumerate(report.rows):
        flat: dict[str, Any] = {"sweep": report.name, **row.label, COMPLETED: row.n, "runs": len(row.runs),
                                **{s: row.count(s) for s in (COLLAPSED, DIVERGED, FAILED)},
                                "baseline": i == report.baseline, "best": i == report.best}
        for column, *_ in report.columns:
            mean, std = row.stats.get(column, (None, None))
            flat[f"{column}_mean"], flat[f"{column}_std"] = mean, std
            mean, std = row.stats_all.get(column, (None, None))
            flat[f"{column}_mean_all_runs"], flat[f"{column}_std_all_runs"] = mean, std
        h = row.headline
        v = h.result if h else None
        flat.update({"diff_test_acc": v.diff if v else None, "ci_low": _num(v.low) if v else None,
                     "ci_high": _num(v.high) if v else None, "p_value": _num(v.p_value) if v else None,
                     "p_holm": v.p_adjusted if v else None, "winner": v.winner if v else None,
                     "reason": v.reason if v else None,
                     "aso_eps_row_over_baseline": h.aso.eps_a_over_b if h and h.aso else None,
                     "aso_eps_baseline_over_row": h.aso.eps_b_over_a if h and h.aso else None,
                     "p_row_better": h.p_better if h else None, "significant": h.significant if h else None,
                     "verdict": h.verdict if h else None, "seeds_compared": list(h.seeds) if h else None,
                     "scope": h.scope if h else None, "seeds_needed": v.seeds_needed if v else None,
                     "seeds_needed_at_effect": h.needed_effect if h else None})
        e = row.ensemble
        flat.update({"ensemble_diff_test_acc": e.diff if e else None, "ensemble_ci_low": e.low if e else None,
                     "ensemble_ci_high": e.high if e else None, "ensemble_mcnemar_p": e.p_value if e else None})
        rows.append(flat)
    return rows


def _num(x: float) -> float | None:
    """nan (nothing to test against) as null in JSON and empty in CSV."""
    return None if x != x else x


def to_csv(reports: list[SweepReport]) -> str:
    rows = [r for report in reports for r in to_rows(report)]
    if not rows:
        return ""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_json(reports: list[SweepReport]) -> str:
    payload = [{"sweep": r.name, "rows": to_rows(r),
                "excluded": [{"job": x.job_id, "point": x.point, "status": x.status, "reason": x.reason}
                             for x in r.excluded],
                "states": r.states, "study": r.study, "metric": r.metric,
                "budget": [{"label": c.label, "trials": c.n, "k": c.ks.tolist(), "expected_best": c.mean.tolist(),
                            "std": c.std.tolist()} for c in r.budget]} for r in reports]
    return json.dumps(payload, indent=2) + "\n"
