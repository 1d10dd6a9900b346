"""The training core's GPU path, stood in for at torch's boundary (issue #30): precision per card
generation, the out-of-memory retry's batches, host syncs per step, resuming where another set
of GPUs (or none) is visible. CPU only: torch.cuda's answers are monkeypatched."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import trainer.loop
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


# -- the out-of-memory retry ------------------------------------------------------------------------


def _rows_per_step(cfg_raw: dict, micro: int | None, job_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """The training rows of each optimizer step, in the order the micro-batches ran them."""
    import trainer.data

    steps: list[list[int]] = [[]]
    collate = trainer.data.collate
    step = torch.amp.GradScaler.step

    def spy_collate(split, rows, pad_id):  # type: ignore[no-untyped-def]
        if split is spied["train"]:
            steps[-1].extend(int(r) for r in rows)
        return collate(split, rows, pad_id)

    def spy_step(self, optimizer, *args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append([])
        return step(self, optimizer, *args, **kwargs)

    spied: dict = {}
    prepare = trainer.loop.setup.prepare

    def spy_prepare(*args, **kwargs):  # type: ignore[no-untyped-def]
        data = prepare(*args, **kwargs)
        spied["train"] = data.train
        return data

    with monkeypatch.context() as m:
        m.setattr(trainer.data, "collate", spy_collate)
        m.setattr(torch.amp.GradScaler, "step", spy_step)
        m.setattr(trainer.loop.setup, "prepare", spy_prepare)
        cfg = build_job(cfg_raw)
        run_job(cfg if micro is None else cfg.with_micro_batch(micro), job_dir)
    return steps[:-1]


def test_a_retried_job_sees_the_same_rows_in_the_same_steps(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trainer.loop")
    raw = tiny_job(tiny_models["bert"], tiny_data, epochs=1, batch_size=12, grad_accum=2)
    whole = _rows_per_step(raw, None, tmp_path / "whole", monkeypatch)
    assert len(whole) == 8 and sum(map(len, whole)) == 192  # 16 batches of 12 rows, 2 a step
    monkeypatch.setenv("SWEEP_ATTEMPT", "3")  # as the sweeper starts a retry
    monkeypatch.setenv("SWEEP_RETRY_REASON", "out of memory at micro-batch 4")
    for micro in (6, 4, 3, 1):  # the divisors an out-of-memory retry walks down through
        assert _rows_per_step(raw, micro, tmp_path / f"micro-{micro}", monkeypatch) == whole, micro
    result = json.loads((tmp_path / "micro-3" / "result.json").read_text())
    assert (result["micro_batch"], result["accumulation_steps"], result["attempt"], result["retry_reason"],
            result["effective_batch_size"]) == (3, 8, 3, "out of memory at micro-batch 4", 24)
    assert "batch 12 in micro-batches of 3 (x8 accumulation)" in caplog.text


def test_the_evaluation_batch_shrinks_with_the_micro_batch() -> None:
    from trainer.loop import eval_batch_size

    cfg = build_job({"model": "bert", "data": {"name": "x"}, "batch_size": 32})
    assert eval_batch_size(cfg) == 64  # unchanged for a job run whole
    assert [eval_batch_size(cfg.with_micro_batch(m)) for m in (16, 8, 1)] == [32, 16, 2]
    assert eval_batch_size(build_job({"model": "bert", "data": {"name": "x"}, "batch_size": 8})) == 64


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
])
def test_an_out_of_memory_error_from_the_step_is_recorded_as_one(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        error: Exception) -> None:
    from trainer.job import execute
    from trainer.jobdir import EXIT_FAILED
    from trainer.model import Classifier

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise error  # the first training step's forward

    monkeypatch.setattr(Classifier, "forward", forward)
    code, result = execute(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1)), tmp_path / "job")
    assert code == EXIT_FAILED and result is not None
    stored = json.loads((tmp_path / "job" / "result.json").read_text())
    assert stored["status"] == "failed" and stored["out_of_memory"] is True


def test_an_ordinary_error_is_not_taken_for_out_of_memory(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.job import execute
    from trainer.model import Classifier

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(Classifier, "forward", forward)
    execute(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1)), tmp_path / "job")
    assert json.loads((tmp_path / "job" / "result.json").read_text())["out_of_memory"] is False


# -- host syncs ---------------------------------------------------------------------------------------


SYNCS = ("__bool__", "item", "cpu", "tolist", "numpy", "__int__", "__float__")


def _same_length_data(directory: Path) -> Path:
    """Reviews of exactly ten words (one token each): no batch has padding."""
    import random

    import pandas as pd

    from tests.conftest import review

    rng = random.Random(3)
    directory.mkdir(parents=True)
    for name, n in (("train", 160), ("test", 40)):
        ys = [rng.randrange(2) for _ in range(n)]
        pd.DataFrame({"text": [review(rng, y, 10) for y in ys], "label": ys}).to_parquet(directory / f"{name}.parquet")
    return directory


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_a_training_epoch_syncs_with_the_host_once_per_logged_window(
        tiny_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str) -> None:
    """Every call that makes the host wait for the device (on a GPU) is counted during the
    training epochs: the loss of each LOG_EVERY-step window, the epoch's loss and accuracy. None
    per step (before: one or two `mask.all()` per forward in transformers' masking code)."""
    data = _same_length_data(tmp_path / "data")
    counted: dict[str, int] = dict.fromkeys(SYNCS, 0)
    active = [False]
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            if active[0]:
                counted[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    train_epoch = trainer.loop.run.train_epoch

    def counted_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        active[0] = True
        try:
            return train_epoch(*args, **kwargs)
        finally:
            active[0] = False

    monkeypatch.setattr(trainer.loop.run, "train_epoch", counted_epoch)
    result = run_job(build_job(tiny_job(tiny_models[arch], data, epochs=2, batch_size=8)), tmp_path / "job")
    steps_per_epoch = result["global_steps"] // 2
    windows = sum(1 for step in range(1, result["global_steps"] + 1)
                  if step % trainer.loop.LOG_EVERY == 0 or step % steps_per_epoch == 0)
    assert steps_per_epoch >= 2 * trainer.loop.LOG_EVERY  # enough steps for a per-step sync to show
    assert counted == {**dict.fromkeys(SYNCS, 0), "item": windows + 2 * 2}, counted


# -- resume anywhere ----------------------------------------------------------------------------------


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, *, gpus: int, restored: list) -> None:
    """torch.cuda as a process that sees `gpus` devices would answer (the RNG calls only)."""
    states = [torch.full((16,), i + 1, dtype=torch.uint8) for i in range(gpus)]

    def set_all(new_states: list) -> None:
        if len(new_states) != gpus:  # what torch does: one state per visible device, no more
            raise IndexError(f"{len(new_states)} states for {gpus} devices")
        restored.extend(new_states)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(states))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: states[0])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: restored.append(state))


@pytest.mark.parametrize("gpus_then", [1, 0])
def test_a_job_saved_where_two_gpus_were_visible_resumes_on_one_or_on_the_cpu(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, gpus_then: int) -> None:
    from trainer import checkpoint

    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1))
    s = trainer.loop.setup.set_up(cfg, tmp_path, None)  # built on the CPU; only the RNG calls stand in for CUDA
    with pytest.MonkeyPatch.context() as m:
        _fake_cuda(m, gpus=2, restored=[])
        checkpoint.save_state(tmp_path, s.model, s.optimizer, s.scheduler, s.scaler, {"epoch": 3})
    restored: list = []
    with pytest.MonkeyPatch.context() as m, caplog.at_level(logging.WARNING):
        _fake_cuda(m, gpus=gpus_then, restored=restored)
        progress = checkpoint.load_state(tmp_path, s.model, s.optimizer, s.scheduler, s.scaler)
    assert progress == {"epoch": 3}  # it continues from its last epoch, not from the start
    assert (tmp_path / "last.pt").exists() and not list(tmp_path.glob("last.pt.corrupt-*"))
    if gpus_then:
        assert len(restored) == 1 and restored[0].tolist() == [1] * 16  # the state of the GPU the job ran on
    else:
        assert restored == [] and "cannot be restored here" in caplog.text


# -- peak memory ----------------------------------------------------------------------------------------


def test_peak_memory_on_a_gpu_is_what_the_allocator_reserved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 3 * 2**30)
    assert trainer.loop.devices.peak_memory_mb(torch.device("cuda", 0)) == 3072


def test_peak_memory_of_a_resumed_job_is_the_highest_of_its_sessions(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer import checkpoint

    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=2))
    real_save = checkpoint.save_state

    def save_then_die(*args: object, **kwargs: object) -> None:
        real_save(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer.loop.devices, "peak_memory_mb", lambda device: 9000.0)  # the first session: a big peak
        m.setattr(checkpoint, "save_state", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg, tmp_path / "job")
    monkeypatch.setattr(trainer.loop.devices, "peak_memory_mb", lambda device: 100.0)
    result = run_job(cfg, tmp_path / "job")
    assert result["resumed"] is True and result["peak_memory_mb"] == 9000.0


def test_a_resume_state_written_before_peak_memory_was_kept_still_resumes() -> None:
    from dataclasses import asdict

    old = asdict(trainer.loop.LoopState(epoch=2))
    del old["peak_memory_mb"]
    assert trainer.loop.LoopState.from_dict(old).epoch == 2
    with pytest.raises(ValueError, match="holds"):
        trainer.loop.LoopState.from_dict({**old, "unknown": 1})


# -- predict in the job's evaluation precision ------------------------------------------------------


def test_predict_uses_the_precision_the_job_evaluated_in(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    from contextlib import nullcontext

    from tests.conftest import review
    from trainer import inference
    from trainer.data import encode_texts

    run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1, precision="bf16")), tmp_path / "job")
    assert inference.evaluation_dtype(tmp_path / "job") == torch.bfloat16
    model, tokenizer = inference.load(tmp_path / "job", device=torch.device("cpu"))
    import random

    rng = random.Random(0)
    texts = [review(rng, i % 2, 4 + i % 20) for i in range(40)]
    split = encode_texts(tokenizer, texts, 32, None)

    def evaluated(autocast: object) -> np.ndarray:  # as the job's own evaluation computes them
        return trainer.loop.evaluate(model, split, batch_size=64, pad_id=tokenizer.pad_token_id,
                                     device=torch.device("cpu"), autocast=autocast).probs

    in_bf16 = evaluated(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert not np.allclose(evaluated(nullcontext), in_bf16, atol=1e-4, rtol=0)  # the precision shows
    predicted = inference.predict(model, tokenizer, texts, max_len=32,
                                  dtype=inference.evaluation_dtype(tmp_path / "job")).probs
    np.testing.assert_allclose(predicted, in_bf16, atol=1e-6, rtol=0)
