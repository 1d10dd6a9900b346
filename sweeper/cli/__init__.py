"""The `sweep` command line: one module per command family, each command parsing its options,
calling one function of the layer below and printing what comes back.

- sweeper/cli/job.py: `run`;
- sweeper/cli/sweeps.py: `grid`, `optuna`, `status`, `cancel`;
- sweeper/cli/compare.py: `compare`;
- sweeper/cli/report.py: `report`;
- sweeper/cli/models.py: `predict`, `export`, `analyze`;
- sweeper/cli/storage.py: `storage serve`;
- sweeper/cli/options.py: the options several commands share; sweeper/cli/output.py: how they print.
"""

from __future__ import annotations

import typer

from sweeper.cli import compare, job, models, report, storage, sweeps

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hyperparameter sweeps for encoder classifiers.")


@app.callback()
def main() -> None:
    """Hyperparameter sweeps for fine-tuning transformer encoders on text classification."""


for command in (job.run, sweeps.grid, sweeps.status, sweeps.optuna, compare.compare, sweeps.cancel, report.report,
                models.predict, models.export, models.analyze):
    app.command()(command)
app.add_typer(storage.app, name="storage")
