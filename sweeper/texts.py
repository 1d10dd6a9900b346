"""Texts to classify, from the command line or a file (.txt, .csv, .jsonl), checked up front;
and texts shown in a table cell."""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

FORMATS = (".txt", ".csv", ".jsonl")


def excerpt(text: str, limit: int = 220) -> str:
    """One line of plain text for a markdown table cell."""
    text = re.sub(r"<br\s*/?>", " ", html.unescape(text))
    text = re.sub(r"\s+", " ", text).strip().replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class TextsError(ValueError):
    """Input texts that cannot be used (the message names the file, line or column)."""


def from_arguments(texts: list[str]) -> list[str]:
    for i, text in enumerate(texts, 1):
        if not text.strip():
            raise TextsError(f"TEXTS: text {i} of {len(texts)} is empty; every text needs at least one character")
    return texts


def from_file(path: Path, column: str) -> list[str]:
    """.txt: one text per non-empty line; .csv (with a header) and .jsonl: the `column` field."""
    return read_file(path, column)[0]


def read_file(path: Path, column: str, pair_column: str | None = None) -> tuple[list[str], list[str] | None]:
    """The texts (and, with `pair_column`, the second text of each pair) of a file; pairs
    need a .csv or .jsonl file (two columns or fields)."""
    if pair_column is not None and path.suffix == ".txt":
        raise TextsError(f"--file: {path} is a .txt file (one text per line); sentence pairs need a .csv or .jsonl "
                         f"file with columns {column!r} and {pair_column!r}")
    if not path.is_file():
        raise TextsError(f"--file: {path} does not exist")
    if path.suffix not in FORMATS:
        raise TextsError(f"--file: {path} has suffix {path.suffix or '(none)'!r}; expected one of {', '.join(FORMATS)}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TextsError(f"--file: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    columns = [(column, "--text-column")] + ([(pair_column, "--pair-column")] if pair_column else [])
    if path.suffix == ".txt":
        rows = [[line] for line in raw.splitlines() if line.strip()]
    elif path.suffix == ".csv":
        rows = _csv(path, raw, columns)
    else:
        rows = _jsonl(path, raw, columns)
    if not rows:
        raise TextsError(f"--file: {path} holds no text")
    return [r[0] for r in rows], [r[1] for r in rows] if pair_column else None


def _csv(path: Path, raw: str, columns: list[tuple[str, str]]) -> list[list[str]]:
    reader = csv.DictReader(raw.splitlines())
    for column, option in columns:
        if reader.fieldnames is None or column not in reader.fieldnames:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise TextsError(f"--file: {path} has no column {column!r} (its header has: {found}); "
                             f"name the column with {option}")
    rows = []
    for row in reader:
        values = []
        for column, _ in columns:
            value = row[column]
            if value is None or not value.strip():
                raise TextsError(f"--file: {path}, line {reader.line_num}: column {column!r} is empty")
            values.append(value)
        rows.append(values)
    return rows


def _jsonl(path: Path, raw: str, columns: list[tuple[str, str]]) -> list[list[str]]:
    rows = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextsError(f"--file: {path}, line {number}: not JSON ({exc.msg})") from None
        values = []
        for column, option in columns:
            if not isinstance(record, dict) or column not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise TextsError(f"--file: {path}, line {number}: no field {column!r} (found: {keys}); "
                                 f"name the field with {option}")
            value = record[column]
            if not isinstance(value, str) or not value.strip():
                raise TextsError(f"--file: {path}, line {number}: field {column!r} is "
                                 f"{'empty' if value == '' else repr(value)}; expected a non-empty string")
            values.append(value)
        rows.append(values)
    return rows
