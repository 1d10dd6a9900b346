"""The `sweep` command line: each command parses its options and calls into the packages."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from trainer.config import ConfigError, load_job

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hyperparameter sweeps for encoder classifiers.")
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """Hyperparameter sweeps for fine-tuning transformer encoders on text classification."""


def _fail_config(exc: ConfigError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _setup_logging(log_file: Path) -> None:
    from rich.logging import RichHandler

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(RichHandler(console=err, show_path=False, rich_tracebacks=False))
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="Job configuration file (YAML or JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory: checkpoints, events, result.json.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key, e.g. --set lr=3e-5 --set data.limit=2000.")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Tokenization cache shared by jobs [env SWEEP_CACHE_DIR; default ~/.cache/sweep/tokenized]."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per epoch (on a terminal).")] = True,
) -> None:
    """Run one job in the foreground; started again on the same --out, it resumes or reports."""
    try:
        cfg = load_job(job, set_ or [])
    except ConfigError as exc:
        raise _fail_config(exc) from None
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out / "train.log")
    from trainer.io import write_json
    from trainer.loop import FINISHED, run_job

    try:
        result = run_job(cfg, out, cache_dir=cache_dir, progress=progress and err.is_terminal)
    except ConfigError as exc:
        raise _fail_config(exc) from None
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume from the last finished epoch")
        raise typer.Exit(code=130) from None
    except Exception as exc:
        result_path = out / "result.json"
        tail = traceback.format_exc().splitlines()[-30:]
        if not result_path.exists() or '"failed"' in result_path.read_text():
            write_json(result_path, {"status": "failed", "job_id": cfg.job_id(), "config": cfg.to_dict(),
                                     "error": f"{type(exc).__name__}: {exc}", "traceback": tail})
        logging.getLogger("sweep").exception("job failed")
        raise typer.Exit(code=1) from None
    _print_result(result)
    if result["status"] not in FINISHED:
        raise typer.Exit(code=1)


def _print_result(result: dict) -> None:
    from rich.table import Table

    colour = {"completed": "green", "collapsed": "red", "diverged": "red"}.get(result["status"], "yellow")
    table = Table(title=f"job {result['job_id']}: [{colour}]{result['status']}[/]", show_header=False)
    for key in ("best_epoch", "val_acc", "test_acc", "test_loss", "test_ece", "runtime_s", "train_samples_per_s"):
        value = result.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


if __name__ == "__main__":
    sys.exit(app())
