"""`sweep predict`, `sweep export`, `sweep analyze`: use a finished job's model.

The layers below are imported inside each command, when it runs: they import torch and
transformers, which `sweep --help` and the other commands do without."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sweeper.cli.options import RunsDir, Storage
from sweeper.cli.output import err, fail, warn
from sweeper.jobs import JobRefError, resolve
from sweeper.texts import TextsError
from trainer.config import ConfigError
from trainer.io import DestinationError
from trainer.jobdir import COMPLETED

JobRef = Annotated[str, typer.Argument(help="A job directory, a job id (under --runs-dir) or best:<sweep>.")]


def resolve_job(ref: str, runs_dir: Path, storage: str | None) -> Any:
    """The finished job JOB names (exit 2 if none); a warning if it did not complete."""
    try:
        job = resolve(ref, runs_dir=runs_dir, storage=storage)
    except JobRefError as exc:
        raise fail(exc) from None
    if job.result.get("status") != COMPLETED:
        warn(f"job {job.dir} finished as {job.result.get('status')}: its predictions are not to be trusted")
    return job


class PredictFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


def predict(
    job: JobRef,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify (or --file).", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Texts in a .txt (one per line), .csv or .jsonl file.")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Column (csv) or field (jsonl) holding the text (default: the job's data.text).")
    ] = None,
    pair_column: Annotated[
        str | None,
        typer.Option(help="Column (csv) or field (jsonl) holding a pair's second text (default: the job's "
                          "data.text_pair, for a job trained on pairs)."),
    ] = None,
    pair: Annotated[
        str | None, typer.Option("--pair", help="The second text of a pair, with one text argument.")
    ] = None,
    format_: Annotated[PredictFormat, typer.Option("--format", help="A table, or one JSON object per line.")] = (
        PredictFormat.table),
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 64,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Labels and probabilities from a finished job's best checkpoint (of texts, or of pairs)."""
    from sweeper import predict as predictions

    if bool(texts) == (file is not None):
        raise fail(ValueError("give the texts as arguments or with --file (one of the two)"))
    if pair is not None and (file is not None or len(texts or []) != 1):
        raise fail(ValueError("--pair: the second text of one pair goes with exactly one text argument "
                              "(for many pairs: --file with two columns)"))
    finished = resolve_job(job, runs_dir, storage)
    try:
        found = predictions.predict(finished, texts=texts or [], file=file, text_column=text_column,
                                    pair_column=pair_column, pair=pair, batch_size=batch_size)
    except (TextsError, ConfigError) as exc:
        raise fail(exc) from None
    if format_ == PredictFormat.jsonl:
        for line in predictions.to_jsonl(found):
            typer.echo(line)
    else:
        Console().print(predictions.to_table(found))


def export(
    job: JobRef,
    out: Annotated[Path, typer.Argument(help="Directory to write (replaced if it holds an earlier export).")],
    force: Annotated[bool, typer.Option("--force", help="Replace DIR even if it holds something else.")] = False,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """The job's best model in Hugging Face format, with its tokenizer and a model card."""
    from trainer.export import export as write_export

    finished = resolve_job(job, runs_dir, storage)
    try:
        check = write_export(finished.dir, finished.config, finished.result, out, force=force)
    except DestinationError as exc:
        raise fail(ValueError(f"DIR: {exc}")) from None
    err.print(f"exported job {finished.id} to {out}; loaded back with transformers alone, its probabilities "
              f"differ from the job's by at most {check['max_abs_diff']:.1e} on {check['texts']} texts",
              highlight=False, markup=False)


def analyze(
    job: JobRef,
    out: Annotated[Path, typer.Option("--out", help="Directory for analysis.md and its PNGs.")],
    against: Annotated[str | None, typer.Option(help="A second job (same forms as JOB) to compare with.")] = None,
    example: Annotated[
        int | None, typer.Option(help="Test row for the attention maps (default: the most confident error).")
    ] = None,
    limit: Annotated[int, typer.Option(min=4, help="Test rows in the t-SNE map (the first ones).")] = 2000,
    top: Annotated[int, typer.Option(min=1, help="Rows per listing (errors, boundary, disagreements).")] = 10,
    attention_tokens: Annotated[int, typer.Option(min=2, help="Tokens shown in an attention map.")] = 48,
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it holds something else.")] = False,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """t-SNE, confident errors, attention; with --against, where two jobs disagree."""
    from reports.analyze import AnalyzeError, load_side
    from reports.analyze import analyze as run_analysis

    job_a = resolve_job(job, runs_dir, storage)
    job_b = resolve_job(against, runs_dir, storage) if against is not None else None
    try:
        side_a, side_b = load_side(job_a), load_side(job_b) if job_b is not None else None
        summary = run_analysis(side_a, out, against=side_b, example=example, limit=limit, top=top,
                               attention_tokens=attention_tokens, force=force)
    except (JobRefError, AnalyzeError) as exc:
        raise fail(exc) from None
    except DestinationError as exc:
        raise fail(ValueError(f"--out: {exc}")) from None
    err.print(f"wrote {out / 'analysis.md'}: {summary['errors']['count']} errors in {summary['test_rows']} test rows"
              + (f"; {summary['against']['disagreements']} disagreements with {job_b.id}" if job_b else ""),
              highlight=False, markup=False)
