"""Damaged job files (a torn or planted `last.pt`, an unreadable `result.json`, a damaged best
checkpoint) are set aside with a warning and the job goes on from what is left, with the result
of an uninterrupted run; a pickle in `last.pt` is never run."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import tiny_job
from tests.trainer.test_loop import _assert_same_result
from trainer import checkpoint
from trainer.config import build_job
from trainer.jobdir import PREDICTIONS_FILE, RESULT_FILE, STATE_FILE, WEIGHTS_FILE
from trainer.loop import run_job


@pytest.fixture(scope="module")
def straight(tiny_models: dict, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """One uninterrupted 3-epoch job: its configuration, result and test probabilities."""
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, dropout=0.3, epochs=3))
    out = tmp_path_factory.mktemp("straight") / "job"
    result = run_job(cfg, out, cache_dir=out.parent / "cache")
    return cfg, result, np.load(out / PREDICTIONS_FILE)["probs"]


def _interrupted_after(cfg: object, out: Path, epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the job and stop it (KeyboardInterrupt) right after epoch `epoch`'s state is saved."""
    real = checkpoint.save_state

    def save_then_stop(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)  # type: ignore[arg-type]
        if args[-1]["epoch"] == epoch:  # type: ignore[index]
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save_state", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg, out)  # type: ignore[arg-type]
    assert (out / STATE_FILE).exists() and not (out / RESULT_FILE).exists()


def _assert_same_as(straight: tuple, result: dict, out: Path) -> None:
    _, expected, probs = straight
    assert result["status"] == "completed"
    _assert_same_result(result, expected)
    np.testing.assert_array_equal(np.load(out / PREDICTIONS_FILE)["probs"], probs)
    assert not (out / STATE_FILE).exists()


def _set_aside(out: Path, name: str) -> list[Path]:
    return sorted(out.glob(f"{name}.corrupt-*"))


class Payload:
    """What an attacker with write access to a shared runs directory would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_pickle_planted_in_last_pt_is_refused_never_run_and_the_job_completes(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = straight[0]
    out = tmp_path / "job"
    _interrupted_after(cfg, out, 1, monkeypatch)
    marker = tmp_path / "pwned"
    real = torch.load(out / STATE_FILE, weights_only=True)
    torch.save({**real, "progress": Payload(marker)}, out / STATE_FILE)  # a resume state, plus code
    planted = (out / STATE_FILE).read_bytes()
    # the plant is live: the loader this code used before runs it
    probe = tmp_path / "probe.pt"
    torch.save(Payload(tmp_path / "probe-ran"), probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-ran").exists()

    with caplog.at_level(logging.WARNING):
        result = run_job(cfg, out)
    assert not marker.exists(), "the planted pickle ran"
    (aside,) = _set_aside(out, STATE_FILE)
    assert aside.read_bytes() == planted  # kept for a look, not deleted
    assert "posix.system" in caplog.text and "set aside" in caplog.text
    assert result["resumed"] is False  # nothing usable was left: it started over
    _assert_same_as(straight, result, out)


def _truncated(blob: bytes, real: dict, path: Path) -> None:
    path.write_bytes(blob[: len(blob) // 2])


def _garbage(blob: bytes, real: dict, path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _empty(blob: bytes, real: dict, path: Path) -> None:
    path.write_bytes(b"")


def _foreign(blob: bytes, real: dict, path: Path) -> None:
    torch.save({"state_dict": real["model"]}, path)  # a loadable checkpoint of something else


def _other_model(blob: bytes, real: dict, path: Path) -> None:
    torch.save({**real, "model": {k: v[..., :1] for k, v in real["model"].items()}}, path)


def _bad_progress(blob: bytes, real: dict, path: Path) -> None:
    # readable, and its weights fit: refused only once they are loaded (the job is built again)
    torch.save({**real, "progress": {**real["progress"], "epoch": "1"}}, path)


@pytest.mark.parametrize("damage", [_truncated, _garbage, _empty, _foreign, _other_model, _bad_progress])
def test_an_unreadable_last_pt_is_set_aside_and_the_job_starts_over(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: object) -> None:
    cfg = straight[0]
    out = tmp_path / "job"
    _interrupted_after(cfg, out, 1, monkeypatch)
    damage(  # type: ignore[operator]
        (out / STATE_FILE).read_bytes(), torch.load(out / STATE_FILE, weights_only=True), out / STATE_FILE)
    result = run_job(cfg, out)
    assert len(_set_aside(out, STATE_FILE)) == 1
    assert result["resumed"] is False
    _assert_same_as(straight, result, out)


@pytest.mark.parametrize("content", [b'{"status": "compl', b"\x00\xff" * 64, b"[1, 2]", b""])
@pytest.mark.parametrize("left", ["finished", "interrupted"])
def test_an_unreadable_result_json_is_set_aside_and_the_job_resumes_or_reruns(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, left: str) -> None:
    cfg = straight[0]
    out = tmp_path / "job"
    if left == "finished":
        run_job(cfg, out)  # its last.pt is gone: the job runs again
    else:
        _interrupted_after(cfg, out, 1, monkeypatch)  # resumes from epoch 1
    (out / RESULT_FILE).write_bytes(content)
    result = run_job(cfg, out)
    (aside,) = _set_aside(out, RESULT_FILE)
    assert aside.read_bytes() == content
    assert result["resumed"] is (left == "interrupted")
    _assert_same_as(straight, result, out)
    assert json.loads((out / RESULT_FILE).read_text()) == json.loads(json.dumps(result))
    assert run_job(cfg, out) == json.loads(json.dumps(result))  # and now it is final


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, "half"])
def test_a_damaged_best_checkpoint_at_testing_is_set_aside_and_the_job_trains_again(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | str) -> None:
    cfg = straight[0]
    out = tmp_path / "job"
    _interrupted_after(cfg, out, 3, monkeypatch)  # every epoch done; only the test is left
    best = out / WEIGHTS_FILE
    best.write_bytes(best.read_bytes()[:1000] if content == "half" else content)  # type: ignore[arg-type]
    damaged = best.read_bytes()
    result = run_job(cfg, out)
    (aside,) = _set_aside(out, WEIGHTS_FILE)
    assert aside.read_bytes() == damaged
    _assert_same_as(straight, result, out)


def test_temporaries_left_by_a_kill_are_removed_when_the_job_starts_again(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = straight[0]
    out = tmp_path / "job"
    _interrupted_after(cfg, out, 1, monkeypatch)
    left = [out / ".last.pt.tmp-a1b2c3d4", out / ".best.safetensors.tmp-x", out / f".{RESULT_FILE}.tmp-y",
            out / "model" / ".classifier.json.tmp-z"]
    for path in left:
        path.write_bytes(b"half a file")
    result = run_job(cfg, out)
    assert not any(path.exists() for path in left)
    assert result["resumed"] is True
    _assert_same_as(straight, result, out)


def test_a_state_of_the_earlier_pickled_format_is_set_aside(straight: tuple, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`last.pt` files written before weights-only loading (numpy RNG state as an array) are not
    loaded: the job starts over, with the same result."""
    cfg = straight[0]
    out = tmp_path / "job"
    _interrupted_after(cfg, out, 1, monkeypatch)
    real = torch.load(out / STATE_FILE, weights_only=True)
    torch.save({**real, "rng": {**real["rng"], "numpy": np.random.get_state()}}, out / STATE_FILE)
    result = run_job(cfg, out)
    assert len(_set_aside(out, STATE_FILE)) == 1 and result["resumed"] is False
    _assert_same_as(straight, result, out)
    shutil.rmtree(out)


# -- a full disk, an interrupt: the error is raised, nothing written is damaged, a rerun completes --


class Terminated(KeyboardInterrupt):
    """Like trainer.job's: SIGTERM (preemption, a time limit) turned into an interrupt."""


def _fail_at_write(monkeypatch: pytest.MonkeyPatch, out: Path, name: str, nth: int, exc: BaseException) -> dict:
    """Make the `nth` atomic write of `out/name` fail as its data is flushed (os.fsync), as a
    full disk does; returns a snapshot of the directory's files taken at that moment."""
    real_fsync = os.fsync
    seen: dict = {"n": 0, "files": None}

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if target.parent == out and target.name.startswith(f".{name}.tmp-"):
            seen["n"] += 1
            if seen["n"] == nth:
                seen["files"] = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name[0] != "."}
                raise exc
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _fail_at_epoch_event(monkeypatch: pytest.MonkeyPatch, out: Path, name: str, epoch: int, exc: BaseException) -> dict:
    """The `epoch` event of `epoch` is half written to `out/name` (events.jsonl), then the disk is full."""
    import builtins

    import trainer.io
    import trainer.tracking

    real_append, real_open = trainer.tracking.append_jsonl, builtins.open
    seen: dict = {"files": None, "armed": False}

    class FullDisk:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *args: object) -> None:
            self.f.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def write(self, data: bytes) -> None:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise exc

    def open_(path: Any, *args: Any, **kwargs: Any) -> Any:
        f = real_open(path, *args, **kwargs)
        return FullDisk(f) if seen["armed"] and Path(path) == out / name else f

    def append(path: Path, record: dict) -> None:
        if record["event"] == "epoch" and record["epoch"] == epoch:
            seen["files"] = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name[0] != "."}
            seen["armed"] = True
        real_append(path, record)

    monkeypatch.setattr(trainer.tracking, "append_jsonl", append)
    monkeypatch.setattr(trainer.io, "open", open_, raising=False)
    return seen


ENOSPC = [(STATE_FILE, 2, True), (WEIGHTS_FILE, 1, False), (RESULT_FILE, 1, True), (PREDICTIONS_FILE, 1, True),
          ("events.jsonl", 2, True)]


@pytest.mark.parametrize(("name", "nth", "resumes"), ENOSPC, ids=[f"{n}-{i}" for n, i, _ in ENOSPC])
def test_a_full_disk_fails_the_job_clearly_damages_nothing_and_the_rerun_completes(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, nth: int, resumes: bool) -> None:
    import errno

    from trainer.io import is_temporary
    from trainer.jobdir import read_event_stream

    cfg = straight[0]
    out = tmp_path / "job"
    out.mkdir()
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with monkeypatch.context() as m:
        fail = _fail_at_epoch_event if name == "events.jsonl" else _fail_at_write
        seen = fail(m, out, name, nth, full)
        with pytest.raises(OSError) as caught:
            run_job(cfg, out)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out / name)
    assert f"No space left on device: '{out / name}'" in str(caught.value)  # what the failure result will say
    # nothing already written was damaged: every file as it was when the disk filled up
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name[0] != "."}
    if name == "events.jsonl":
        assert files.pop(name).startswith(seen["files"].pop(name))  # plus the torn line
        files = {k: v for k, v in files.items() if k != "train.log"}
    assert files == {k: v for k, v in seen["files"].items() if k != "train.log"}
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    if (out / STATE_FILE).exists():
        assert torch.load(out / STATE_FILE, weights_only=True)["progress"]["epoch"] >= 1
    # space is back: the same command completes, as an uninterrupted run
    result = run_job(cfg, out)
    assert result["resumed"] is resumes
    _assert_same_as(straight, result, out)
    from trainer.jobdir import epoch_rows

    assert [row["epoch"] for row in epoch_rows(out / "events.jsonl")] == [1, 2, 3]
    assert read_event_stream(out / "events.jsonl")[-1]["event"] == "end"


@pytest.mark.parametrize("where", ["mid-epoch", "mid-write"])
def test_an_interrupt_stops_at_the_last_finished_epoch_and_the_rerun_resumes(
        straight: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    from trainer.io import is_temporary
    from trainer.tracking import Tracker

    cfg = straight[0]
    out = tmp_path / "job"
    out.mkdir()
    with monkeypatch.context() as m:
        if where == "mid-write":  # while epoch 2's state is being written
            _fail_at_write(m, out, STATE_FILE, 2, Terminated())
        else:  # during epoch 2's optimizer steps
            real_step = Tracker.step

            def step(self: Tracker, **kw: object) -> None:
                if kw["epoch"] > 1.2:  # type: ignore[operator]
                    raise Terminated
                real_step(self, **kw)  # type: ignore[arg-type]

            m.setattr(Tracker, "step", step)
        with pytest.raises(Terminated):
            run_job(cfg, out)
    assert not [p for p in out.rglob("*") if is_temporary(p)] and not (out / RESULT_FILE).exists()
    assert torch.load(out / STATE_FILE, weights_only=True)["progress"]["epoch"] == 1
    result = run_job(cfg, out)
    assert result["resumed"] is True
    _assert_same_as(straight, result, out)
