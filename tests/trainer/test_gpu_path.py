"""The training core's GPU path, stood in for at torch's boundary (issue #30): precision per card
generation, the out-of-memory retry's batches, host syncs per step, resuming where another set
of GPUs (or none) is visible. CPU only: torch.cuda's answers are monkeypatched."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_job
from trainer.config import build_job
from trainer.loop import resolve_precision, run_job

# -- precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("capability", "precision", "dtype", "reason"), [
    ((7, 0), "auto", torch.float16, "auto: fp16 with loss scaling (compute capability 7.0 has no native bf16)"),  # V100
    ((7, 5), "auto", torch.float16, "auto: fp16 with loss scaling (compute capability 7.5 has no native bf16)"),  # T4
    ((8, 0), "auto", torch.bfloat16, "auto: bf16, native on compute capability 8.0"),  # A100
    ((8, 9), "auto", torch.bfloat16, "auto: bf16, native on compute capability 8.9"),  # L4, RTX 40xx
    ((9, 0), "auto", torch.bfloat16, "auto: bf16, native on compute capability 9.0"),  # H100
    ((9, 0), "fp32", torch.float32, "precision: fp32"),
    ((7, 5), "bf16", torch.bfloat16, "precision: bf16 (emulated: compute capability 7.5 has no native bf16)"),
])
def test_auto_precision_fits_the_card(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                      capability: tuple[int, int], precision: str, dtype: torch.dtype,
                                      reason: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    with caplog.at_level(logging.WARNING, logger="trainer.loop"):
        chosen = resolve_precision(precision)
    assert (chosen.device.type, chosen.dtype, chosen.reason) == ("cuda", dtype, reason)
    assert ("no native bf16" in caplog.text) == (precision == "bf16")  # allowed, with a warning


def test_auto_is_fp32_on_the_cpu_and_the_result_says_why(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    chosen = resolve_precision("auto")
    assert (chosen.device.type, chosen.dtype) == ("cpu", torch.float32)
    result = run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1)), tmp_path / "job")
    stored = json.loads((tmp_path / "job" / "result.json").read_text())
    assert (result["precision"], stored["precision_reason"], stored["tf32"]) == ("float32", "auto: fp32 on the CPU",
                                                                                 None)
