"""`sweep compare` from its read file to its answer: the plan, checked and printed
(sweeper.launch), the phases run here, then the verdicts written (reports.experiment). It lives
in reports/, above sweeper/, because the verdicts decide how many seeds `--seeds auto` runs."""

from __future__ import annotations

from reports import experiment as answer
from sweeper import launch
from sweeper.experiment import Options
from sweeper.options import Screen, SlurmRequest, Workers
from sweeper.sweepfile import Loaded


def compare(loaded: Loaded, *, options: Options, overrides: list[str], json_out: bool, workers: Workers,
            request: SlurmRequest, dry_run: bool, screen: Screen) -> int:
    """Tune each value of the axis equally, run each best on seeds, write and print the answer
    (compare.md, compare.html, with `json_out` compare.json). Returns the exit code."""
    planned = launch.plan_comparison(loaded, options=options, overrides=overrides, json_out=json_out, workers=workers,
                                     request=request, dry_run=dry_run, screen=screen)
    if planned is None:  # submitted to SLURM, or a dry run
        return 0
    plan, where = planned
    backend = launch.storage(workers)
    outcome = launch.run_comparison(plan, where, backend=backend, workers=workers, screen=screen,
                                    more_seeds=lambda o: answer.more_seeds(o, backend))
    result = answer.answer(outcome, backend)
    written = answer.write(result, workers.runs_dir / plan.name, with_json=json_out)
    screen.echo(answer.paragraph(result).replace("**", ""))
    screen.echo("Written: " + ", ".join(str(p) for p in written))
    return 0
