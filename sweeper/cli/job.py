"""`sweep run`: one job in the foreground (trainer.job.execute), its result printed.

trainer.job is imported inside the command, when it runs: it imports torch and transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sweeper.cli.output import check_dirs, err, fail, rich_handler, say, warn
from trainer.config import ConfigError
from trainer.jobdir import (
    COLLAPSED,
    COMPLETED,
    DIVERGED,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    LOG_FILE,
)
from trainer.jobfile import load_job
from trainer.preflight import check


def run(
    job: Annotated[Path, typer.Argument(help="Job configuration file (YAML or JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: checkpoints, events, result.json.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key, e.g. --set lr=3e-5 --set data.limit=2000.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Tokenization cache shared by jobs (default: env SWEEP_CACHE_DIR, else "
                          "~/.cache/sweep/tokenized)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per epoch (on a terminal).")] = True,
) -> None:
    """Run one job in the foreground; started again on the same --out, it resumes or reports."""
    check_dirs(("--out", out), ("--cache-dir", cache_dir))
    try:
        cfg = load_job(job, set_ or [])
        for warning in check([cfg], strict=True, source=str(job)):
            warn(warning)
    except ConfigError as exc:
        raise fail(exc) from None
    from trainer.job import execute, setup_logging  # torch and transformers: imported once the input is good

    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out / LOG_FILE, rich_handler(show_time=True))
    try:
        code, result = execute(cfg, out, cache_dir=cache_dir, progress=progress and err.is_terminal)
    except ConfigError as exc:
        raise fail(exc) from None
    if code == EXIT_BUSY:
        say("busy:", "yellow", f"{out}: another process is running this job; not starting it twice")
    elif code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        err.print("stopped: run the same command again to resume from the last finished epoch")
    if result is not None and code in (EXIT_OK, EXIT_FAILED) and "best_epoch" in result:
        Console().print(result_table(result))
    if code != EXIT_OK:
        raise typer.Exit(code=code)


def result_table(result: dict[str, Any]) -> Table:
    """A finished job's result.json: its metric, best epoch, scores, runtime and warnings."""
    colour = {COMPLETED: "green", COLLAPSED: "red", DIVERGED: "red"}.get(result["status"], "yellow")
    table = Table(title=f"job {result['job_id']}: [{colour}]{result['status']}[/]", show_header=False)
    metric = str(result.get("metric") or "val_acc")
    table.add_row("metric", f"{metric} (chose best_epoch)")
    for key in ("best_epoch", *dict.fromkeys((metric, "val_acc")), "test_acc", "test_loss", "test_ece", "runtime_s",
                "train_samples_per_s"):
        value = result.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    if result.get("status") == COLLAPSED and (result.get("collapse") or {}).get("reason"):
        table.add_row(COLLAPSED, str(result["collapse"]["reason"]))
    for warning in result.get("warnings") or []:
        table.add_row("warning", str(warning.get("message")))
    return table
