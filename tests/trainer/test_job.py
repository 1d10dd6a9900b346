"""The job process's contract (trainer/job.py): a configuration in, an exit code out, and a
failure `result.json` that says why."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, tiny_job
from tests.trainer.test_checkpoint import _fail_at_write
from trainer.config import ConfigError, JobConfig, build_job
from trainer.io import write_json
from trainer.job import execute, read_config
from trainer.jobdir import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, FINISHED, JOB_FILE, RESULT_FILE, STATE_FILE


def test_a_full_disk_ends_the_job_failed_with_the_reason_and_the_rerun_completes(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=2))
    out = tmp_path / "job"
    out.mkdir()
    with monkeypatch.context() as m:
        _fail_at_write(m, out, STATE_FILE, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        code, failure = execute(cfg, out)
    assert code == EXIT_FAILED and failure is not None
    stored = json.loads((out / RESULT_FILE).read_text())
    assert stored["status"] == "failed" and "No space left on device" in stored["error"] and "last.pt" in stored["error"]
    code, result = execute(cfg, out)  # space is back
    assert code == EXIT_OK and result is not None and result["status"] in FINISHED and result["resumed"]


def test_the_job_process_exits_2_for_a_bad_configuration_naming_file_and_key(tiny_models: dict, tiny_data: Path,
                                                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**tiny_job(tiny_models["bert"], tiny_data), "dropout": 1.5}))
    done = subprocess.run([sys.executable, "-m", "trainer.job", str(bad), "--out", str(tmp_path / "o")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_CONFIG and "bad.yaml: line 4: dropout: 1.5 is out of range" in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("change", "said"), [
    ({"max_len": 100}, "max_len: 100 is out of range; expected 8 <= max_len <= 64, the maximum of model"),
    ({"data": {"text": "body"}}, "data.text: column 'body' is not in"),
])
def test_the_job_process_runs_the_preflight_before_any_work(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                            change: dict, said: str) -> None:
    """What `sweep run` refuses before any work, `python -m trainer.job` (the sweeper's job
    process) refuses too: exit 2, the message, no job directory."""
    job = tiny_job(tiny_models["bert"], tiny_data)
    job.update({k: {**job[k], **v} if isinstance(v, dict) else v for k, v in change.items()})
    bad = tmp_path / "job.yaml"
    bad.write_text(yaml.safe_dump(job))
    done = subprocess.run([sys.executable, "-m", "trainer.job", str(bad), "--out", str(tmp_path / "o")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_CONFIG and f"error: {bad}: {said}" in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()


# -- job.json: built and checked once, in the sweeper; the job process trusts it (issue 27) --------


def _job_dir(tmp_path: Path, cfg: JobConfig, name: str | None = None) -> Path:
    out = tmp_path / (name or cfg.job_id())
    out.mkdir()
    write_json(out / JOB_FILE, cfg.to_dict())
    return out


@pytest.mark.parametrize("raw", [
    {"lr": 3e-5, "micro_batch_size": 4, "data": {"limit": 50, "split": [0.7, 0.2, 0.1]}},
    {"data": {"name": "glue", "config": "sst2", "split": "given", "split_names": {"test": "validation"},
              "text_pair": "sentence2"}},
])
def test_the_sweepers_job_json_in_its_own_directory_is_taken_as_written(tmp_path: Path, raw: dict) -> None:
    cfg = build_job(raw)
    out = _job_dir(tmp_path, cfg)
    assert read_config(out / JOB_FILE, out, []) == cfg


def test_a_job_json_that_is_not_its_directorys_job_is_checked_with_every_problem(tmp_path: Path) -> None:
    out = _job_dir(tmp_path, build_job({}))
    stored = json.loads((out / JOB_FILE).read_text())
    (out / JOB_FILE).write_text(json.dumps({**stored, "lr": -1, "batch_size": 0, "epochs": 0}))  # edited by hand
    with pytest.raises(ConfigError) as info:
        read_config(out / JOB_FILE, out, [])
    message = str(info.value)
    assert "3 problems" in message
    for part in ("lr: -1 is out of range", "batch_size: 0 is out of range", "epochs: 0 is out of range"):
        assert part in message
    elsewhere = _job_dir(tmp_path, build_job({"dropout": 0.2}), name="not-its-id")
    assert read_config(elsewhere / JOB_FILE, elsewhere, []).dropout == 0.2  # checked, and right
