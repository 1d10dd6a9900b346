"""The sentences a report leads with: one per comparison that matters (`SweepReport.lead`),
with the difference, its interval, the verdict and, when undecided, the change that would decide
it."""

from __future__ import annotations

from reports.labels import label_text, p_text
from reports.rows import Lead, Row, SweepReport
from reports.verdict import Verdict
from trainer.jobdir import COLLAPSED

PILOT_SEEDS = 5  # what a report asks for when the seed spread is unknown


def _seeds_change(report: SweepReport, n: int) -> str:
    """The sweep file's `seeds:` with n seeds: the ones it ran, then the next integers."""
    seeds = list(report.seeds_used)
    k = max(seeds, default=-1) + 1
    while len(seeds) < n:
        seeds.append(k)
        k += 1
    seeds = seeds[:max(n, len(report.seeds_used))]
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    shown = ", ".join(map(str, seeds)) if len(seeds) <= 8 else (
        f"{seeds[0]}, {seeds[1]}, …, {seeds[-1]}" if contiguous else ", ".join(map(str, seeds[:4])) + f", … ({n} seeds)")
    return f"`seeds: [{shown}]`"


def _decide(report: SweepReport, v: Verdict) -> str:
    """What would decide an undecided comparison, as the change to make."""
    if v.seeds_needed is not None:
        return (f"about {v.seeds_needed} seeds a side would decide it at 80% power: set {_seeds_change(report, v.seeds_needed)} "
                "in the sweep file and run it again (finished jobs are not run again)")
    if not v.testable:
        return (f"run {PILOT_SEEDS} seeds of each to measure the seed spread: set {_seeds_change(report, PILOT_SEEDS)} in "
                "the sweep file and run it again (finished jobs are not run again)")
    if v.diff == 0:
        return "no difference was observed"
    return "more seeds alone would not decide a difference this small: the test set's own variance is larger"


def _means(row: Row, n: int) -> str:
    collapsed = sum(r.status == COLLAPSED for r in row.runs)
    return f"{n} run{'s' if n != 1 else ''}" + (f" ({collapsed} collapsed, counted as it scored)" if collapsed else "")


def lead_sentence(report: SweepReport, lead: Lead, *, markdown: bool = False) -> str:
    """One sentence: the difference with its interval, the verdict and, undecided, what would decide it."""
    v = lead.result
    a, b = report.rows[lead.a], report.rows[lead.b]
    strong = (lambda t: f"**{t}**") if markdown else (lambda t: t)
    what = {"best vs baseline": "the best configuration against the baseline",
            "runner-up vs best": "the runner-up against the best configuration (also the baseline)",
            "model best vs overall best": "this model's best configuration against the overall best"}[lead.kind]
    head = f"{label_text(report, b)} against {label_text(report, a)} ({what}): Δ test_acc {v.diff:+.4f}"
    if v.testable:
        head += f", 95% CI [{v.low:+.4f}, {v.high:+.4f}], p {p_text(v.p_value)}"
        if v.p_adjusted is not None and v.p_adjusted != v.p_value:
            head += f" ({p_text(v.p_adjusted)} after Holm over the comparisons made with it)"
    head += (f", over {_means(b, v.seeds[1])} against {_means(a, v.seeds[0])}"
             + ("" if v.examples else ", scores only (no per-example predictions: this test set's variance not counted)"))
    if lead.pooled is not None:
        head += (f"; one seed on a side, so the seed spread ({lead.pooled.sd:.4f}) is pooled from "
                 f"{lead.pooled.configurations} configuration(s) with several seeds")
    if v.winner is not None:
        winner = b if v.winner == "b" else a
        return f"{head}: {strong(label_text(report, winner) + ' is better')}."
    return f"{head}: {strong('cannot tell')}; {_decide(report, v)}."


def lead_sentences(report: SweepReport, *, markdown: bool = False) -> list[str]:
    return [lead_sentence(report, lead, markdown=markdown) for lead in report.lead]
