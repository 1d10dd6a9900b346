"""Atomic file writes: a temporary file in the same directory, fsync, then rename.

A reader (or a job killed half-way through a write) sees the old file or the new one, never
a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then move the finished file over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, written with a single `write` so concurrent readers see whole lines."""
    with open(path, "a") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")
        f.flush()


class DestinationError(ValueError):
    """An output directory that must not be replaced (the message says why)."""


def check_output_dir(out: Path, *, marker: str, force: bool = False) -> None:
    """`out` may be (re)written as a whole: absent, empty, an earlier output (holds `marker`), or forced."""
    if out.exists() and not out.is_dir():
        raise DestinationError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).exists() and not force:
        raise DestinationError(f"{out} is not empty and holds no earlier output of this command ({marker}); "
                               "choose another directory, or pass --force to replace it")


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside `out`, renamed over it when the block ends without error;
    on error it is removed and `out` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.rename(out, old / "x")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
