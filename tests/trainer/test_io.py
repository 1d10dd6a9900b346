from __future__ import annotations

import errno
from pathlib import Path

import pytest

from trainer.io import append_jsonl, atomic_dir, atomic_write, is_temporary, remove_temporaries, write_json
from trainer.jobdir import read_event_stream


def test_a_temporary_is_named_after_its_file_and_recognisable(tmp_path: Path) -> None:
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("x")

    atomic_write(tmp_path / "result.json", write)
    assert seen[0].name.startswith(".result.json.tmp-") and is_temporary(seen[0])
    assert not is_temporary(tmp_path / "result.json") and not is_temporary(tmp_path / ".lock")
    with atomic_dir(tmp_path / "export") as tmp:
        assert tmp.name.startswith(".export.tmp-")


def test_what_a_kill_mid_write_leaves_is_removed(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "model").mkdir(parents=True)
    keep = [job / "result.json", job / ".lock", job / "events.jsonl", job / "model" / ".hidden", job / "x.tmp"]
    for path in keep:
        path.write_text("{}")
    left = [job / ".result.json.tmp-k2j3h4g5", job / ".last.pt.tmp-abc", job / "model" / ".classifier.json.tmp-q"]
    for path in left:
        path.write_bytes(b"")
    (job / ".model.tmp-dir1").mkdir()
    (job / ".model.tmp-dir1" / ".config.json.tmp-x").write_text("half")
    removed = remove_temporaries(job)
    assert set(removed) == {*left, job / ".model.tmp-dir1"}
    assert all(p.exists() for p in keep) and not any(p.exists() for p in left)
    assert not (job / ".model.tmp-dir1").exists()
    assert remove_temporaries(job) == []


def test_a_full_disk_names_the_file_and_leaves_the_old_one_whole(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json(path, {"status": "completed"})
    before = path.read_bytes()

    def fill_the_disk(tmp: Path) -> None:
        tmp.write_bytes(b'{"status": "fai')  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        atomic_write(path, fill_the_disk)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert str(path) in str(caught.value) and "No space left on device" in str(caught.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left


def test_an_interrupt_mid_write_leaves_no_temporary(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "best.safetensors", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_torn_event_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    append_jsonl(events, {"event": "start"})
    with open(events, "a") as f:
        f.write('{"event":"epoch","ep')  # a kill (or a full disk) mid-line
    append_jsonl(events, {"event": "end"})
    assert [e["event"] for e in read_event_stream(events)] == ["start", "end"]
    append_jsonl(events, {"event": "again"})
    assert events.read_text().count("\n") == 4
