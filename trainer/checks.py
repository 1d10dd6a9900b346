"""Checks of one value of a user's file, each raising ConfigError that names the key, the value and
what is allowed (`trainer.config.build_job` is made of them)."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from trainer.yamlfile import ConfigError

# An integer seed as numpy and torch take it.
SEED_RANGE = (0, 2**32)


def shown(value: Any, limit: int = 80) -> str:
    """A user's value in a message: its repr, cut to `limit` characters (with its full length)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def key_text(key: Any) -> str:
    """A user's key as written; repr'd where it would not show (a line break, spaces around, not a string)."""
    if isinstance(key, str) and key and key.isprintable() and key.strip() == key and len(key) <= 80:
        return key
    return shown(key)


def typename(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def where(source: str, key: str) -> str:
    return f"{source}: {key}" if source else key


def integer(source: str, key: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where(source, key)}: {shown(value)} ({typename(value)}) is not an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where(source, key)}: {value} is out of range; expected {key} >= {minimum}")
    return value


def number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where(source, key)}: {shown(value)} ({typename(value)}) is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{where(source, key)}: {value!r} is not a finite number; NaN and infinity are not allowed")
    return number


def is_dir(value: str) -> bool:
    """Whether a user's string names a directory (a name too long for the file system names none)."""
    try:
        return Path(value).expanduser().is_dir()
    except (OSError, ValueError):  # ENAMETOOLONG, a NUL byte
        return False


# A Hub id has at most 96 characters; a local path at most the file system's PATH_MAX.
MAX_NAME_CHARS = 4096


def name(source: str, key: str, value: Any) -> str:
    """A non-empty string short enough for a path, without NUL bytes or line breaks."""
    value = string(source, key, value)
    if len(value) > MAX_NAME_CHARS or any(c in value for c in "\0\n\r"):
        raise ConfigError(f"{where(source, key)}: {shown(value)} is not allowed; expected a "
                          f"name of at most {MAX_NAME_CHARS} characters without NUL bytes or line breaks")
    return value


def seed(source: str, key: str, value: Any) -> int:
    """A seed numpy, torch and Python's random all take: an integer in [0, 2**32)."""
    value = integer(source, key, value)
    low, high = SEED_RANGE
    if not low <= value < high:
        raise ConfigError(f"{where(source, key)}: {value} is out of range; expected an integer {low} <= {key} < 2**32 "
                          f"({high})")
    return value


def choice(source: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.7)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{where(source, key)}: {shown(value)} is not allowed{hint}; expected one of: {', '.join(allowed)}"
        )
    return str(value)


def string(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where(source, key)}: {shown(value)} ({typename(value)}) is not a non-empty string")
    return value
