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
    if not path.is_file():
        raise TextsError(f"--file: {path} does not exist")
    if path.suffix not in FORMATS:
        raise TextsError(f"--file: {path} has suffix {path.suffix or '(none)'!r}; expected one of {', '.join(FORMATS)}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TextsError(f"--file: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix == ".txt":
        texts = [line for line in raw.splitlines() if line.strip()]
    elif path.suffix == ".csv":
        texts = _csv(path, raw, column)
    else:
        texts = _jsonl(path, raw, column)
    if not texts:
        raise TextsError(f"--file: {path} holds no text")
    return texts


def _csv(path: Path, raw: str, column: str) -> list[str]:
    reader = csv.DictReader(raw.splitlines())
    if reader.fieldnames is None or column not in reader.fieldnames:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise TextsError(f"--file: {path} has no column {column!r} (its header has: {found}); "
                         "name the text column with --text-column")
    texts = []
    for row in reader:
        value = row[column]
        if value is None or not value.strip():
            raise TextsError(f"--file: {path}, line {reader.line_num}: column {column!r} is empty")
        texts.append(value)
    return texts


def _jsonl(path: Path, raw: str, column: str) -> list[str]:
    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextsError(f"--file: {path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or column not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise TextsError(f"--file: {path}, line {number}: no field {column!r} (found: {keys}); "
                             "name the text field with --text-column")
        value = record[column]
        if not isinstance(value, str) or not value.strip():
            raise TextsError(f"--file: {path}, line {number}: field {column!r} is {'empty' if value == '' else repr(value)}; "
                             "expected a non-empty string")
        texts.append(value)
    return texts
