"""`sweep compare`: is A better than B on my task? Equal tuning, seeds, the verdict
(reports/comparison.py does it; the plan is sweeper/experiment.py).

The layer below is imported inside the command, when it runs: it imports optuna, numpy and
matplotlib, which `sweep --help` and the other commands do without."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sweeper.cli.options import SLURM, WORKERS, LiveView, Overrides, sweep_options
from sweeper.cli.output import Terminal, run_sweep
from sweeper.options import SlurmRequest, Workers
from sweeper.sweepfile import read_sweep
from trainer.config import ConfigError


@sweep_options
def compare(
    space_file: Annotated[Path, typer.Argument(help="A grid, search-space or W&B sweep file: the space to tune each "
                                                    "value in.")],
    axis: Annotated[str, typer.Option("--axis", help="The parameter compared, e.g. model or pooling.")],
    budget: Annotated[int, typer.Option("--budget", min=1, help="Configurations of the rest of the space each value "
                                                                "is tuned on (K).")],
    values: Annotated[str | None, typer.Option("--values", help="Compare only these values, comma-separated "
                                                                "(default: every value the file lists).")] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds a side for each value's best configuration (N, its "
                                                       "tuning run one of them), or auto: a pilot of 3, then as many "
                                                       "as the verdict needs at 80% power.")] = "3",
    max_seeds: Annotated[int, typer.Option("--max-seeds", min=1, help="At most this many seeds a side with "
                                                                      "--seeds auto.")] = 10,
    target_diff: Annotated[float | None, typer.Option("--target-diff", help="The difference --seeds auto plans for "
                                                                            "(default: the observed one).")] = None,
    set_: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the three phases' plan; run nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Also write compare.json.")] = False,
    live: LiveView = True,
    workers: Workers = WORKERS,
    slurm: SlurmRequest = SLURM,
) -> None:
    """Is A better than B on my task? Tune each value of --axis equally, run each best on seeds, answer."""
    from reports.comparison import compare as run_comparison
    from sweeper.experiment import Options

    def run() -> int:
        if seeds != "auto" and not seeds.isdigit():
            raise ConfigError(f"--seeds: {seeds!r} is not allowed; expected a number of seeds (e.g. 3) or auto")
        loaded = read_sweep(space_file, set_ or [])
        options = Options(axis=axis, values=values.split(",") if values else None, budget=budget,
                          seeds=None if seeds == "auto" else int(seeds), max_seeds=max_seeds, target_diff=target_diff)
        return run_comparison(loaded, options=options, overrides=set_ or [], json_out=json_out, workers=workers,
                              request=slurm, dry_run=dry_run, screen=Terminal(live=live))

    run_sweep(workers.runs_dir, workers.cache_dir, dry_run=dry_run, run=run)
