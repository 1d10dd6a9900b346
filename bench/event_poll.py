"""Per-poll cost of watching one job's events.jsonl (issue 30, item 7): the orchestrator's read
before (the whole file parsed on every poll: `jobdir.read_event_stream`) and now (what was
appended since the last poll: `jobdir.EventTail`), with 1,000 and 100,000 step events already
in the file and 10 new ones appended before each poll (a GPU job between two 0.5 s polls).

    python bench/event_poll.py            # prints a JSON line per (file size, reader)

CPU-bound, no torch: a GPU machine adds nothing to it.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.io import append_jsonl  # noqa: E402
from trainer.jobdir import EventTail, read_event_stream  # noqa: E402

NEW_PER_POLL = 10


def step(i: int) -> dict:
    return {"event": "step", "time": 1765000000.123 + i, "step": i, "epoch": i / 1000, "loss": 0.6931,
            "lr": 2e-5}


def fill(path: Path, n: int) -> None:
    with open(path, "w") as f:
        f.write(json.dumps({"event": "start", "resumed_from_epoch": 0}) + "\n")
        for i in range(1, n + 1):
            f.write(json.dumps(step(i), separators=(",", ":")) + "\n")


def poll_full(path: Path) -> int:
    return len(read_event_stream(path))


def measure(n: int, reader: str, polls: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        fill(path, n)
        tail = EventTail(path)
        tail.read()  # the first poll reads what is there, once
        seconds = []
        for p in range(polls):
            for i in range(NEW_PER_POLL):
                append_jsonl(path, step(n + p * NEW_PER_POLL + i + 1))
            t0 = time.perf_counter()
            if reader == "whole file (before)":
                poll_full(path)
            else:
                tail.read()
            seconds.append(time.perf_counter() - t0)
    return {"events": n, "reader": reader, "polls": polls, "median_ms": round(statistics.median(seconds) * 1e3, 3),
            "max_ms": round(max(seconds) * 1e3, 3)}


def main() -> None:
    print(json.dumps({"python": platform.python_version(), "machine": platform.processor() or platform.machine()}))
    for n in (1_000, 100_000):
        for reader, polls in (("whole file (before)", 200 if n <= 1_000 else 10), ("incremental (now)", 200)):
            print(json.dumps(measure(n, reader, polls)), flush=True)


if __name__ == "__main__":
    main()
