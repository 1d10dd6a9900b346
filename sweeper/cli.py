"""The `sweep` command line: each command parses its options and calls into the packages."""

from __future__ import annotations

import logging
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from trainer.config import ConfigError, load_job

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hyperparameter sweeps for encoder classifiers.")
err = Console(stderr=True)
EXIT_BUSY = 75  # EX_TEMPFAIL: the job directory is being run by another live process


@app.callback()
def main() -> None:
    """Hyperparameter sweeps for fine-tuning transformer encoders on text classification."""


def _preflight(jobs: list[Any], *, strict: bool, source: str) -> None:
    """Every distinct model and data set checked before any work (trainer/preflight.py)."""
    from trainer.preflight import check

    for warning in check(jobs, strict=strict, source=source):
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _fail(exc: Exception) -> typer.Exit:
    """Bad input: the message on stderr, exit 2."""
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
        typer.Option(help="Tokenization cache shared by jobs (env SWEEP_CACHE_DIR; default ~/.cache/sweep/tokenized)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per epoch (on a terminal).")] = True,
) -> None:
    """Run one job in the foreground; started again on the same --out, it resumes or reports."""
    try:
        cfg = load_job(job, set_ or [])
        _preflight([cfg], strict=True, source=str(job))
    except ConfigError as exc:
        raise _fail(exc) from None
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out / "train.log")
    from trainer.checkpoint import JobBusy
    from trainer.io import write_json
    from trainer.loop import FINISHED, run_job

    try:
        result = run_job(cfg, out, cache_dir=cache_dir, progress=progress and err.is_terminal)
    except ConfigError as exc:
        raise _fail(exc) from None
    except JobBusy as exc:
        err.print(f"[yellow]busy:[/] {exc}", highlight=False)
        raise typer.Exit(code=EXIT_BUSY) from None
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


RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar="SWEEP_RUNS_DIR", help="Where job directories live.")]
Storage = Annotated[
    str | None,
    typer.Option("--storage", envvar="SWEEP_STORAGE",
                 help="Optuna storage URL (postgresql://…, sqlite:///…) or journal file (default: RUNS_DIR/sweeps.journal)."),
]


Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override a base key, e.g. --set model=/models/x.")]
Gpus = Annotated[str | None, typer.Option(help="GPU ids, e.g. 0,1 (default: every visible GPU; none: the CPU).")]
JobsPerGpu = Annotated[int, typer.Option(min=1, help="Jobs sharing one GPU.")]
Parallel = Annotated[
    int | None,
    typer.Option(min=1, help="Jobs at once on the CPU (no GPU), sharing its cores [default: 2 on 2 or more cores, "
                             "1.15x faster than 1 on 2 cores: docs/benchmarks.md]."),
]
Retries = Annotated[int, typer.Option(min=0, help="Retries of a failed job.")]
CacheDir = Annotated[Path | None, typer.Option(help="Tokenization cache (env SWEEP_CACHE_DIR).")]
LiveView = Annotated[bool, typer.Option(help="Live table while it runs (on a terminal).")]
WarmStart = Annotated[
    bool,
    typer.Option(help="Start each slot's next job process while its current job runs, so the imports are done "
                      "when the slot frees (sweeper/process.py; measured in docs/benchmarks.md)."),
]


@app.command()
def grid(
    grid_file: Annotated[Path, typer.Argument(help="Grid file (grids/NAME.yaml).")],
    set_: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    gpus: Gpus = None,
    jobs_per_gpu: JobsPerGpu = 1,
    parallel: Parallel = None,
    retries: Retries = 1,
    cache_dir: CacheDir = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the expanded jobs; run nothing.")] = False,
    live: LiveView = True,
    warm_start: WarmStart = True,
) -> None:
    """Run every point of a grid as its own job; the same command again resumes the sweep."""
    from sweeper.spec import load_grid

    try:
        spec = load_grid(grid_file, set_ or [])
        _preflight([j.config for j in spec.jobs], strict=not dry_run, source=str(grid_file))
    except ConfigError as exc:
        raise _fail(exc) from None
    from sweeper import view

    if dry_run:
        Console().print(view.jobs_table(spec))
        return
    from sweeper.runner import Orchestrator
    from sweeper.store import SweepStore, default_storage, open_storage

    slots = _slots(gpus, jobs_per_gpu, parallel)
    store = SweepStore(open_storage(storage or default_storage(runs_dir)), spec.name, lock_dir=runs_dir)
    orchestrator = Orchestrator(spec, store, runs_dir=runs_dir, slots=slots, retries=retries, cache_dir=cache_dir,
                                warm=warm_start)
    keys = spec.varied

    def table() -> Any:
        return view.progress_table(spec.name, keys, list(orchestrator.progress.values()), slots=len(slots))

    err.print(f"{spec.name}: {len(spec.jobs)} jobs on {len(slots)} slot(s) ({', '.join(s.name for s in slots)}); "
              f"runs in {runs_dir / spec.name}", highlight=False)
    _run_with_view(orchestrator.run, table, live=live,
                   interrupted="jobs stopped; run the same command again to continue the sweep")
    Console().print(table())
    failed = [p for p in orchestrator.progress.values() if p.state == "failed"]
    for p in failed:
        err.print(f"[red]failed[/] {p.job.id} {p.job.point}: {p.note} (log: {runs_dir / spec.name / p.job.id / 'job.log'})")
    if failed:
        raise typer.Exit(code=1)


@app.command()
def status(
    sweep: Annotated[str | None, typer.Argument(help="Sweep name (default: every sweep in the storage).")] = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Print each sweep's jobs and states from the storage, from any shell, at any time."""
    from sweeper import view
    from sweeper.store import SweepStore, default_storage, missing_storage, open_storage, sweep_names

    url = storage or default_storage(runs_dir)
    if why := missing_storage(url):
        raise _fail(ValueError(why))
    backend = open_storage(url)
    names = sweep_names(backend)
    if sweep is not None and sweep not in names:
        raise _fail(ValueError(f"no sweep named {sweep!r} in {url}; sweeps: {', '.join(names) or 'none'}"))
    for name in [sweep] if sweep else names:
        store = SweepStore(backend, name)
        keys, rows = view.status_rows(store, runs_dir)
        Console().print(view.progress_table(name, keys, rows))


@app.command()
def optuna(
    trials: Annotated[int, typer.Option(min=1, help="The study's total of finished (complete or pruned) trials.")],
    space_file: Annotated[Path, typer.Option("--space", help="Search space file.")] = Path("grids/optuna.yaml"),
    study: Annotated[str | None, typer.Option(help="Study name (default: the space's name).")] = None,
    set_: Overrides = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    gpus: Gpus = None,
    jobs_per_gpu: JobsPerGpu = 1,
    parallel: Parallel = None,
    retries: Retries = 1,
    cache_dir: CacheDir = None,
    live: LiveView = True,
    warm_start: WarmStart = True,
) -> None:
    """Search a space with an Optuna study; the same command on other machines shares the study."""
    import optuna as _optuna

    from reports.collect import study_summary
    from sweeper import view
    from sweeper.search import load_space
    from sweeper.store import SweepStore, default_storage
    from sweeper.study import StudyRunner, open_study_storage
    from trainer.preflight import space_configs

    try:
        space = load_space(space_file, set_ or [])
        _preflight(space_configs(space), strict=True, source=str(space_file))
    except ConfigError as exc:
        raise _fail(exc) from None
    name = study or space.name
    slots = _slots(gpus, jobs_per_gpu, parallel)
    backend = open_study_storage(storage or default_storage(runs_dir), retries=retries)
    the_study = _optuna.create_study(study_name=name, storage=backend, sampler=space.make_sampler(),
                                     pruner=space.make_pruner(), direction="maximize", load_if_exists=True)
    the_study.set_user_attr("description", space.description)
    runner = StudyRunner(space, the_study, runs_dir=runs_dir, slots=slots, trials=trials, retries=retries,
                         cache_dir=cache_dir, warm=warm_start)
    keys = [p.name for p in space.params]

    def table() -> Any:
        rows = [runner.progress[n] for n in sorted(runner.progress)]
        return view.progress_table(f"{name} ({runner.finished()}/{trials} finished)", keys, rows, slots=len(slots))

    err.print(f"{name}: {runner.finished()} of {trials} trials finished; {len(slots)} slot(s); runs in {runs_dir / name}",
              highlight=False)
    _run_with_view(runner.run, table, live=live,
                   interrupted="trials stopped and queued again; run the same command to continue the study")
    Console().print(view.study_summary_table(name, study_summary(SweepStore(backend, name)), the_study))


class ReportFormat(str, Enum):
    md = "md"
    csv = "csv"
    json = "json"


@app.command()
def report(
    sweeps: Annotated[list[str] | None, typer.Argument(help="Sweep names (default: every sweep in the storage).")] = None,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
    baseline: Annotated[
        str | None, typer.Option(help="Baseline row, e.g. model=bert,pooling=cls (default: the first row).")
    ] = None,
    format_: Annotated[
        ReportFormat, typer.Option("--format", help="Also write and print report.csv or report.json.")
    ] = ReportFormat.md,
    plots: Annotated[bool, typer.Option(help="Write the PNG plots.")] = True,
) -> None:
    """Result tables, paired comparisons and plots: runs/<sweep>/report.md and runs/REPORT.md."""
    from reports import tables
    from reports.build import generate
    from sweeper.store import default_storage, missing_storage

    url = storage or default_storage(runs_dir)
    if why := missing_storage(url):
        raise _fail(ValueError(why))
    try:
        reports = generate(storage=url, runs_dir=runs_dir, sweeps=sweeps or None, baseline=baseline,
                           fmt=format_.value, plots=plots)
    except ValueError as exc:
        raise _fail(exc) from None
    if format_ == ReportFormat.csv:
        typer.echo(tables.to_csv(reports), nl=False)
    elif format_ == ReportFormat.json:
        typer.echo(tables.to_json(reports), nl=False)
    else:
        from rich.markdown import Markdown

        for r in reports:
            Console().print(Markdown(tables.to_markdown(r)))
    err.print(f"wrote {runs_dir / 'REPORT.md'} and " + ", ".join(str(runs_dir / r.name / "report.md") for r in reports),
              highlight=False)


JobRef = Annotated[str, typer.Argument(help="A job directory, a job id (under --runs-dir) or best:<sweep>.")]


def _resolve_job(ref: str, runs_dir: Path, storage: str | None) -> Any:
    from sweeper.jobs import JobRefError, resolve

    try:
        job = resolve(ref, runs_dir=runs_dir, storage=storage)
    except JobRefError as exc:
        raise _fail(exc) from None
    if job.result.get("status") != "completed":
        err.print(f"[yellow]warning:[/] job {job.dir} finished as {job.result.get('status')}: "
                  f"its predictions are not to be trusted", highlight=False)
    return job


class PredictFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


@app.command()
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
    import json

    from sweeper.texts import TextsError, excerpt, from_arguments, read_file

    if bool(texts) == (file is not None):
        raise _fail(ValueError("give the texts as arguments or with --file (one of the two)"))
    if pair is not None and (file is not None or len(texts or []) != 1):
        raise _fail(ValueError("--pair: the second text of one pair goes with exactly one text argument "
                               "(for many pairs: --file with two columns)"))
    finished = _resolve_job(job, runs_dir, storage)
    data = finished.config.data
    trained_on = data.text_pair
    try:
        if file:
            inputs, pairs = read_file(file, text_column or data.text, pair_column or trained_on)
        else:
            inputs = from_arguments(texts or [])
            pairs = from_arguments([pair]) if pair is not None else None
    except TextsError as exc:
        raise _fail(exc) from None
    if trained_on and pairs is None:
        raise _fail(ValueError(f"job {finished.id} was trained on sentence pairs (columns {data.text!r} and "
                               f"{trained_on!r}): give the second text with --pair TEXT, or a --file with both columns"))
    if not trained_on and pairs is not None:
        raise _fail(ValueError(f"job {finished.id} was trained on single texts (column {data.text!r}), not pairs: "
                               "leave out --pair / --pair-column"))
    from trainer import inference
    from trainer.model import label_names

    model, tokenizer = inference.load(finished.dir)
    probs = inference.predict(model, tokenizer, inputs, max_len=finished.config.max_len, batch_size=batch_size,
                              pairs=pairs).probs
    names = label_names(finished.model_dir)
    seconds: list[str | None] = list(pairs) if pairs else [None] * len(inputs)
    if format_ == PredictFormat.jsonl:
        for text, second, p in zip(inputs, seconds, probs, strict=True):
            record: dict[str, Any] = {"text": text} if second is None else {"text": text, "text_pair": second}
            typer.echo(json.dumps({**record, "label": names[int(p.argmax())],
                                   "probs": {n: float(v) for n, v in zip(names, p, strict=True)}}))
        return
    from rich.table import Table

    table = Table(title=f"job {finished.id} ({finished.config.model_path}, {finished.config.pooling})")
    table.add_column("#", justify="right")
    table.add_column("label")
    for n in names:
        table.add_column(f"p({n})", justify="right")
    table.add_column("text", overflow="fold")
    if pairs:
        table.add_column("text_pair", overflow="fold")
    for i, (text, second, p) in enumerate(zip(inputs, seconds, probs, strict=True), 1):
        cells = [excerpt(text, 120)] + ([excerpt(second, 120)] if second is not None else [])
        table.add_row(str(i), names[int(p.argmax())], *(f"{v:.4f}" for v in p), *cells)
    Console().print(table)


@app.command()
def export(
    job: JobRef,
    out: Annotated[Path, typer.Argument(help="Directory to write (replaced if it holds an earlier export).")],
    force: Annotated[bool, typer.Option("--force", help="Replace DIR even if it holds something else.")] = False,
    runs_dir: RunsDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """The job's best model in Hugging Face format, with its tokenizer and a model card."""
    from trainer.export import export as write_export
    from trainer.io import DestinationError

    finished = _resolve_job(job, runs_dir, storage)
    try:
        check = write_export(finished.dir, finished.config, finished.result, out, force=force)
    except DestinationError as exc:
        raise _fail(ValueError(f"DIR: {exc}")) from None
    err.print(f"exported job {finished.id} to {out}; loaded back with transformers alone, its probabilities "
              f"differ from the job's by at most {check['max_abs_diff']:.1e} on {check['texts']} texts", highlight=False)


@app.command()
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
    from sweeper.jobs import JobRefError
    from trainer.io import DestinationError

    job_a = _resolve_job(job, runs_dir, storage)
    job_b = _resolve_job(against, runs_dir, storage) if against is not None else None
    try:
        side_a, side_b = load_side(job_a), load_side(job_b) if job_b is not None else None
        summary = run_analysis(side_a, out, against=side_b, example=example, limit=limit, top=top,
                               attention_tokens=attention_tokens, force=force)
    except (JobRefError, AnalyzeError) as exc:
        raise _fail(exc) from None
    except DestinationError as exc:
        raise _fail(ValueError(f"--out: {exc}")) from None
    err.print(f"wrote {out / 'analysis.md'}: {summary['errors']['count']} errors in {summary['test_rows']} test rows"
              + (f"; {summary['against']['disagreements']} disagreements with {job_b.id}" if job_b else ""),
              highlight=False)


def _slots(gpus: str | None, jobs_per_gpu: int, parallel: int | None) -> list[Any]:
    """Where jobs run (and the orchestrator's logging, which both sweep commands share)."""
    import os

    from sweeper.runner import make_slots, visible_gpus

    if parallel is None:  # measured: two one-thread jobs beat one two-thread job on 2 cores
        parallel = 2 if (os.cpu_count() or 1) >= 2 else 1

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[_rich_handler()])
    gpu_ids = [int(g) for g in gpus.split(",") if g.strip()] if gpus else visible_gpus()
    return make_slots(gpus=gpu_ids, jobs_per_gpu=jobs_per_gpu, parallel=parallel)


def _run_with_view(run: Any, table: Any, *, live: bool, interrupted: str) -> None:
    """Run an orchestrator loop under a live table (on a terminal); Ctrl-C exits 130."""
    try:
        if live and err.is_terminal:
            with Live(table(), console=err, refresh_per_second=2) as screen:
                run(on_tick=lambda _: screen.update(table()))
        else:
            run()
    except KeyboardInterrupt:
        err.print(f"interrupted: {interrupted}")
        raise typer.Exit(code=130) from None


def _rich_handler() -> logging.Handler:
    from rich.logging import RichHandler

    return RichHandler(console=err, show_path=False, show_time=False)


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
