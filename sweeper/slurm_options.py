"""The SLURM options of a sweep: the `slurm:` block of its grid or space file and the
`--slurm-…` options over it, checked before anything is submitted, and the runs directory and
storage checked as the workers will see them (sweeper/slurm.py submits)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.spec import Reporter
from sweeper.storage import default_storage, open_storage
from trainer import yamlfile
from trainer.config import ConfigError
from trainer.names import nearest

SLURM_KEYS = ["partition", "gpus_per_task", "time", "workers", "proxy", "extra"]
DEFAULT_TIME_MIN = 60  # submitit's own default is 5 minutes; a worker requeues itself at its limit anyway
SIGNAL_DELAY_S = 90  # SIGTERM this long before the time limit: time to stop jobs at a safe point and requeue
# sbatch options the launcher sets itself: overriding them would break logs, arrays or requeueing.
RESERVED = {"array", "output", "error", "signal", "open-mode", "requeue", "no-requeue", "parsable", "wrap",
            "chdir", "export"}
EXTRA_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_task: int = 0
    time_min: int = DEFAULT_TIME_MIN
    workers: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    proxy: bool = False  # one `sweep storage serve` job in front of the database, shared by the workers


def parse_time(value: str) -> int | None:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes."""
    match = TIME.match(str(value).strip())
    if not match:
        return None
    days, a, b, c = (int(x) if x else None for x in match.groups())
    if days is None:
        parts = [x for x in (a, b, c) if x is not None]
        seconds = {1: lambda: parts[0] * 60, 2: lambda: parts[0] * 60 + parts[1],
                   3: lambda: parts[0] * 3600 + parts[1] * 60 + parts[2]}[len(parts)]()
    else:
        seconds = days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)
    return max(1, -(-seconds // 60)) if seconds > 0 else None


def _check(where: str, key: str, value: Any) -> Any:
    """One option's value, checked; `where` says where it came from (a file line, or --slurm-…)."""
    if key == "partition":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {value!r} is not a partition name")
        return value.strip()
    if key in ("gpus_per_task", "workers"):
        least = 0 if key == "gpus_per_task" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected an integer >= {least}")
        return value
    if key == "proxy":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not allowed; expected true or false")
        return value
    if key == "time":
        minutes = parse_time(str(value))
        if minutes is None or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not a SLURM time; expected minutes, HH:MM:SS or D-HH:MM:SS")
        if minutes * 60 <= SIGNAL_DELAY_S:
            raise ConfigError(f"{where}: {value!r} is too short; a worker is told to stop {SIGNAL_DELAY_S} s before "
                              "its time limit, so give it at least 2 minutes")
        return minutes
    raise AssertionError(key)


def _check_extra(where: str, key: Any, value: Any) -> tuple[str, str]:
    key = str(key).removeprefix("--").replace("_", "-")
    if not EXTRA_KEY.match(key):
        raise ConfigError(f"{where}: {key!r} is not an sbatch option name (e.g. account, qos, mem, cpus-per-task)")
    if key in RESERVED:
        raise ConfigError(f"{where}: {key} is set by the launcher itself and cannot be changed "
                          f"(reserved: {', '.join(sorted(RESERVED))})")
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{where}: {value!r} is not allowed; expected a single value for sbatch --{key}")
    return key, str(value).lower() if isinstance(value, bool) else str(value)


def file_options(path: Path) -> dict[str, Any]:
    """The `slurm:` block of a grid or space file, checked, with the file and line in every message."""
    doc = yamlfile.read(path)
    raw = doc.data
    block = raw.get("slurm") if isinstance(raw, dict) else None
    if block is None:
        return {}
    report = Reporter(doc)
    if not isinstance(block, dict):
        raise report.error(("slurm",), f"slurm: expected a mapping with keys {', '.join(SLURM_KEYS)}")
    found: dict[str, Any] = {}
    for key, value in block.items():
        where = ("slurm", str(key))
        if key not in SLURM_KEYS:
            raise report.error(where, f"slurm.{key}: unknown key; {nearest(str(key), SLURM_KEYS)}")
        try:
            if key == "extra":
                if not isinstance(value, dict):
                    raise ConfigError(f"slurm.extra: expected a mapping of sbatch option -> value, got {value!r}")
                found["extra"] = dict(_check_extra(f"slurm.extra.{k}", k, v) for k, v in value.items())
            else:
                found[key] = _check(f"slurm.{key}", key, value)
        except ConfigError as exc:
            raise report.error(where, str(exc)) from None
    return found


def resolve_options(path: Path, *, partition: str | None, gpus_per_task: int | None, time: str | None,
                    workers: int | None, extra: list[str] | None, proxy: bool | None = None) -> SlurmOptions:
    """The file's `slurm:` block, with the command line's --slurm-… options over it."""
    found = file_options(path)
    cli = {"partition": partition, "gpus_per_task": gpus_per_task, "time": time, "workers": workers, "proxy": proxy}
    for key, value in cli.items():
        if value is not None:
            found[key] = _check(f"--slurm-{key.replace('_', '-')}", key, value)
    extras = dict(found.get("extra", {}))
    for item in extra or []:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--slurm-extra: {item!r} is not KEY=VALUE (e.g. --slurm-extra account=mylab)")
        k, v = _check_extra(f"--slurm-extra {item}", key, value)
        extras[k] = v
    return SlurmOptions(partition=found.get("partition"), gpus_per_task=found.get("gpus_per_task", 0),
                        time_min=found.get("time", DEFAULT_TIME_MIN), workers=found.get("workers", 1), extra=extras,
                        proxy=found.get("proxy", False))


def check_proxy(where: str, url: str) -> None:
    """A proxy for the sweep (`where`: --slurm-proxy, or the file's slurm.proxy) needs a database
    storage it can front, and grpcio; ConfigError saying what to give otherwise."""
    fix = "give --storage postgresql://USER@HOST:PORT/DB (or mysql://…), reachable from the nodes"
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme is None:
        raise ConfigError(f"{where}: the storage is the journal file {url}; the proxy fronts a database only: {fix}")
    if scheme == "grpc":
        raise ConfigError(f"{where}: --storage {url} is a proxy already; drop {where}, or {fix}")
    if scheme not in ("postgresql", "postgres", "mysql"):
        raise ConfigError(f"{where}: --storage {url} is not a database the workers' proxy can front; {fix}")
    if importlib.util.find_spec("grpc") is None:
        raise ConfigError(f"{where}: the proxy and its workers need grpcio: pip install -e '.[cluster]'")


def check_reachable(runs_dir: Path, storage: str | None) -> tuple[Path, str]:
    """The runs directory and storage as the workers will see them: absolute, existing, writable
    from here. Raises ConfigError saying what is wrong."""
    runs = runs_dir.expanduser().absolute()
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--runs-dir: {runs} cannot be created ({exc.strerror})") from None
    _writable("--runs-dir", runs)
    url = storage or default_storage(runs)
    if "://" not in url:
        journal = Path(url.removeprefix("journal:")).expanduser().absolute()
        if not journal.parent.is_dir():
            raise ConfigError(f"--storage: {journal.parent} does not exist; the journal's directory must be on "
                              "a file system every node mounts at the same path")
        _writable("--storage", journal.parent)
        _clients()
        return runs, str(journal)
    if url.startswith("grpc://"):  # a `sweep storage serve` proxy (issue 28)
        try:
            open_storage(url, connect_timeout_s=10)
        except (ValueError, ConnectionError, ImportError) as exc:
            raise ConfigError(str(exc)) from None
        return runs, url
    if url.startswith("sqlite"):
        raise ConfigError(f"--storage: {url}: SQLite is not safe for several workers on a shared file system; use "
                          "the journal file (the default) or postgresql://")
    try:
        import sqlalchemy  # a database storage's engine and driver: imported only for one

        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as exc:  # any driver's error: say it and stop before submitting
        raise ConfigError(f"--storage: {url} cannot be reached from this host ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    _clients()
    return runs, url


def _clients() -> None:
    for command in ("sbatch", "squeue", "scancel", "scontrol", "srun"):  # submitit looks for srun too
        if shutil.which(command) is None:
            raise ConfigError(f"--slurm: {command} is not on PATH; submit from a host of the SLURM cluster")


def _writable(option: str, directory: Path) -> None:
    probe = directory / f".sweep-write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{option}: {directory} is not writable from this host ({exc.strerror})") from None
