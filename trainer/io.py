"""Atomic file writes: a temporary file in the same directory, fsync, then rename.

A reader (or a job killed half-way through a write) sees the old file or the new one, never
a torn one. The temporaries are named `.NAME.tmp-XXXXXXXX`, so that what a kill (or a full
disk) leaves behind is recognisable: `remove_temporaries` deletes it when the job next starts.
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

TMP_MARK = ".tmp-"


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{TMP_MARK}"


def is_temporary(path: Path) -> bool:
    """Whether `path` is the temporary of an atomic write (`.NAME.tmp-XXXXXXXX`)."""
    return path.name.startswith(".") and TMP_MARK in path.name


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries that atomic writes killed mid-write left in `directory` and below;
    returns what was removed. Call it only while no one writes there (the job's lock held)."""
    removed = []
    for path in sorted(directory.rglob(f".*{TMP_MARK}*")):
        if not is_temporary(path) or not path.exists():
            continue  # inside a temporary directory removed a moment ago
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _named(exc: OSError, path: Path) -> OSError:
    """The same error with the file it was writing in its message (ENOSPC alone names none)."""
    if exc.errno is None or exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then move the finished file over `path`. On any failure (a full
    disk, an interrupt) the temporary is removed and `path` keeps its old content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone to read
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _named(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, written with a single `write` so concurrent readers see whole lines.

    A line torn by a kill or a full disk is ended first, so that it stays one unreadable line
    (which readers skip) instead of swallowing this record too."""
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    try:
        with open(path, "a+b") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
    except OSError as exc:
        raise _named(exc, path) from exc


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
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(out), dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(out)}old-", dir=out.parent))
            os.rename(out, old / "x")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Linux's limits: a path of at most PATH_MAX bytes, each name in it at most NAME_MAX.
PATH_MAX = 4096
NAME_MAX = 255


def check_dir_option(path: Path, option: str, *, write: bool = True) -> None:
    """A directory option (--out, --runs-dir, --cache-dir) checked before any work: a path the
    file system takes, not a file, and (with `write`) writable, or creatable in a writable
    directory. DestinationError names the option, the path and what is wrong."""
    text = str(path)
    shown = repr(text[:80] + ("..." if len(text) > 80 else ""))
    if "\0" in text:
        raise DestinationError(f"{option}: {shown} holds a NUL byte; expected a directory path")
    long = [p for p in path.parts if len(os.fsencode(p)) > NAME_MAX]
    if len(os.fsencode(text)) > PATH_MAX - NAME_MAX or long:
        what = f"the name {long[0][:40]!r}... is longer than {NAME_MAX} bytes" if long else (
            f"{len(os.fsencode(text)):,} bytes leaves no room for the files under it (at most {PATH_MAX - NAME_MAX:,})")
        raise DestinationError(f"{option}: {shown} is too long: {what}; expected a shorter directory path")
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            where = "is" if probe == path else f"is under {probe}, which is"
            raise DestinationError(f"{option}: {shown} {where} a file, not a directory; expected a directory "
                                   "(or a path where one can be made)")
    except OSError as exc:
        raise DestinationError(f"{option}: {shown} cannot be used ({exc.strerror})") from None
    if write and not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" ({probe}, where it would be made)"
        raise DestinationError(f"{option}: {shown}{where} is not writable; expected a directory this user can write")
