"""Fine-tunes the real all-MiniLM-L6-v2 on the real IMDB data in ../shared (CPU, minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED
from trainer.config import build_job
from trainer.loop import run_job

MODEL = SHARED / "models" / "all-MiniLM-L6-v2"
DATA = SHARED / "data" / "imdb"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL.is_dir() and DATA.is_dir()), reason=f"no real model and data at {SHARED}"),
]


def test_minilm_on_imdb_reaches_70_percent_after_one_epoch(tmp_path: Path) -> None:
    cfg = build_job({"model": str(MODEL), "max_len": 128, "batch_size": 16, "lr": 5e-5, "epochs": 1,
                     "data": {"name": str(DATA), "limit": 2000, "eval_limit": 500}})
    result = run_job(cfg, tmp_path / "job")
    assert result["status"] == "completed"
    assert result["rows"] == {"train": 2000, "val": 500, "test": 500}
    assert result["val_acc"] >= 0.70, result["epochs"]
    assert result["test_acc"] >= 0.65
