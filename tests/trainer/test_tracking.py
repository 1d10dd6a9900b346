from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tiny_job
from trainer.config import build_job
from trainer.loop import run_job
from trainer.tracking import wandb_mode


class FakeRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init = kwargs
        self.metrics: dict[str, dict[str, Any]] = {}
        self.logged: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.exit_code: int | None = None

    def define_metric(self, name: str, **kwargs: Any) -> None:
        self.metrics[name] = kwargs

    def log(self, data: dict[str, Any]) -> None:
        self.logged.append(data)

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list[FakeRun]:
    runs: list[FakeRun] = []

    def init(**kwargs: Any) -> FakeRun:
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    module = types.SimpleNamespace(init=init, Settings=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return runs


def test_one_run_per_job_with_epoch_as_the_x_axis(fake_wandb: list[FakeRun], tiny_models: dict, tiny_data: Path,
                                                   tmp_path: Path) -> None:
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=2))
    result = run_job(cfg, tmp_path / "job")
    (run,) = fake_wandb
    assert run.init["id"] == cfg.job_id() and run.init["resume"] == "allow" and run.init["mode"] == "offline"
    assert run.init["config"] == cfg.to_dict() and run.init["dir"] == str(tmp_path / "job")
    assert run.metrics["val/*"] == {"step_metric": "epoch"}
    assert run.metrics["train/*"] == {"step_metric": "train/step"}
    epochs = [row for row in run.logged if "val/acc" in row]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert [row["val/acc"] for row in epochs] == [row["val_acc"] for row in result["epochs"]]
    assert [row["val/macro_f1"] for row in epochs] == [row["val_macro_f1"] for row in result["epochs"]]
    assert [row["val/loss"] for row in epochs] == [row["val_loss"] for row in result["epochs"]]
    assert run.metrics["val/macro_f1"] == {"step_metric": "epoch", "summary": "max"}
    steps = [row for row in run.logged if "train/loss" in row]
    assert steps and all("train/step" in row for row in steps)
    assert run.summary["test/acc"] == result["test_acc"] and run.summary["status"] == result["status"]
    assert run.summary["test/macro_f1"] == result["test_macro_f1"] and run.summary["metric"] == "val_acc"
    assert run.exit_code == 0


def test_wandb_disabled_creates_no_run(fake_wandb: list[FakeRun], tiny_models: dict, tiny_data: Path,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1)), tmp_path / "job")
    assert fake_wandb == []


def test_mode_offline_without_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password x\n")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_real_wandb_offline_run_is_kept_on_disk(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1))
    run_job(cfg, tmp_path / "job")
    runs = list((tmp_path / "job" / "wandb").glob(f"offline-run-*-{cfg.job_id()}"))
    assert len(runs) == 1 and (runs[0] / f"run-{cfg.job_id()}.wandb").stat().st_size > 0
