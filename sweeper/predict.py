"""`sweep predict`: a finished job's labels and probabilities for texts (or sentence pairs), from
the command line or a file, checked against what the job was trained on; as a table or JSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from sweeper.jobs import FinishedJob
from sweeper.texts import excerpt, from_arguments, read_file
from trainer.config import ConfigError


@dataclass
class Predictions:
    job: FinishedJob
    names: list[str]  # the classes, in the model's order
    texts: list[str]
    pairs: list[str] | None  # each text's second text, for a job trained on pairs
    probs: Any  # (texts, classes)


def predict(job: FinishedJob, *, texts: list[str], file: Path | None, text_column: str | None,
            pair_column: str | None, pair: str | None, batch_size: int) -> Predictions:
    """The job's predictions for `texts` (and `pair`), or for the texts of `file` (its
    `text_column`, `pair_column`: the job's data.text, data.text_pair by default). Raises
    TextsError or ConfigError for texts that cannot be used, before loading the model."""
    data = job.config.data
    trained_on = data.text_pair
    if file:
        inputs, pairs = read_file(file, text_column or data.text, pair_column or trained_on)
    else:
        inputs = from_arguments(texts)
        pairs = from_arguments([pair]) if pair is not None else None
    if trained_on and pairs is None:
        raise ConfigError(f"job {job.id} was trained on sentence pairs (columns {data.text!r} and {trained_on!r}): "
                          "give the second text with --pair TEXT, or a --file with both columns")
    if not trained_on and pairs is not None:
        raise ConfigError(f"job {job.id} was trained on single texts (column {data.text!r}), not pairs: leave out "
                          "--pair / --pair-column")
    # torch and transformers, imported once the input is good
    from trainer import inference
    from trainer.model import label_names

    model, tokenizer = inference.load(job.dir)
    probs = inference.predict(model, tokenizer, inputs, max_len=job.config.max_len, batch_size=batch_size,
                              pairs=pairs, dtype=inference.evaluation_dtype(job.dir)).probs
    return Predictions(job, label_names(job.model_dir), inputs, pairs, probs)


def _rows(p: Predictions) -> Any:
    return zip(p.texts, list(p.pairs) if p.pairs else [None] * len(p.texts), p.probs, strict=True)


def to_jsonl(p: Predictions) -> list[str]:
    """One JSON object a text: the text (and its pair), the label, each class's probability."""
    lines = []
    for text, second, probs in _rows(p):
        record: dict[str, Any] = {"text": text} if second is None else {"text": text, "text_pair": second}
        lines.append(json.dumps({**record, "label": p.names[int(probs.argmax())],
                                 "probs": {n: float(v) for n, v in zip(p.names, probs, strict=True)}}))
    return lines


def to_table(p: Predictions) -> Table:
    """A row a text: its label, each class's probability, the text (and its pair) cut to 120 characters."""
    table = Table(title=f"job {p.job.id} ({p.job.config.model_path}, {p.job.config.pooling})")
    table.add_column("#", justify="right")
    table.add_column("label")
    for n in p.names:
        table.add_column(f"p({n})", justify="right")
    table.add_column("text", overflow="fold")
    if p.pairs:
        table.add_column("text_pair", overflow="fold")
    for i, (text, second, probs) in enumerate(_rows(p), 1):
        cells = [excerpt(text, 120)] + ([excerpt(second, 120)] if second is not None else [])
        table.add_row(str(i), p.names[int(probs.argmax())], *(f"{v:.4f}" for v in probs), *cells)
    return table
