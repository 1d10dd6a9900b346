"""The orchestrator reads each job's events.jsonl incrementally (issue #30, item 7): a poll
parses what was appended since the last one, not the whole file again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from sweeper.devices import make_slots
from sweeper.scheduler import Running, Scheduler
from sweeper.source import Progress
from trainer.io import append_jsonl


def _scheduler(tmp_path: Path) -> tuple[Scheduler, Running]:
    job = SimpleNamespace(id="j1")
    source = SimpleNamespace(name="g", progress={"j1": Progress(job)})  # type: ignore[arg-type]
    scheduler = Scheduler(source, runs_dir=tmp_path, slots=make_slots(gpus=None, jobs_per_gpu=1, parallel=1),  # type: ignore[arg-type]
                          retries=0, warm=False)
    return scheduler, Running(SimpleNamespace(job=job), scheduler.slots[0], None)  # type: ignore[arg-type]


def test_a_poll_reads_only_what_was_appended_since_the_last(tmp_path: Path) -> None:
    scheduler, run = _scheduler(tmp_path)
    events = tmp_path / "events.jsonl"
    append_jsonl(events, {"event": "start", "resumed_from_epoch": 0})
    for step in range(1, 6):
        append_jsonl(events, {"event": "step", "step": step, "epoch": step / 10})
    append_jsonl(events, {"event": "epoch", "epoch": 1, "val_acc": 0.5})
    assert [e["epoch"] for e in scheduler._watch(run, events)] == [1]
    # What was read is not read again: overwrite it in place (same size, same file) and it stays read.
    size = events.stat().st_size
    with open(events, "r+b") as f:
        f.write(b"x" * (size - 1))
    append_jsonl(events, {"event": "epoch", "epoch": 2, "val_acc": 0.75})
    assert [e["epoch"] for e in scheduler._watch(run, events)] == [1, 2]
    assert scheduler.progress["j1"].val_acc == 0.75


def test_a_line_being_written_waits_for_its_end_and_a_replaced_file_is_read_again(tmp_path: Path) -> None:
    scheduler, run = _scheduler(tmp_path)
    events = tmp_path / "events.jsonl"
    append_jsonl(events, {"event": "epoch", "epoch": 1, "val_acc": 0.5})
    line = json.dumps({"event": "epoch", "epoch": 2, "val_acc": 0.6}).encode()
    with open(events, "ab") as f:
        f.write(line[:10])  # half a line
    assert [e["epoch"] for e in scheduler._watch(run, events)] == [1]
    with open(events, "ab") as f:
        f.write(line[10:] + b"\n")
    assert [e["epoch"] for e in scheduler._watch(run, events)] == [1, 2]
    # a resumed run's start drops the epochs after the one it resumed from
    append_jsonl(events, {"event": "start", "resumed_from_epoch": 1})
    assert [e["epoch"] for e in scheduler._watch(run, events)] == [1]
    # the file replaced (a job directory started over): read from its start
    tmp = tmp_path / "new.jsonl"
    append_jsonl(tmp, {"event": "epoch", "epoch": 1, "val_acc": 0.9})
    os.replace(tmp, events)
    assert [e["val_acc"] for e in scheduler._watch(run, events)] == [0.9]
