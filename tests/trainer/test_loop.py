from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from tests.conftest import REPO, tiny_job, write_dataset
from trainer import checkpoint
from trainer.config import build_job
from trainer.io import is_temporary
from trainer.loop import run_job
from trainer.model import WEIGHTS_FILE, load_classifier


def _comparable(result: dict) -> dict:
    keep = ("status", "best_epoch", "val_acc", "test_acc", "test_loss", "test_ece", "global_steps")
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result["epochs"]]
    return {**{k: result[k] for k in keep}, "epochs": rows}


def _assert_same_result(a: dict, b: dict) -> None:
    ca, cb = _comparable(a), _comparable(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if key == "status":
            assert ca[key] == cb[key]
        elif key == "epochs":
            for ra, rb in zip(ca[key], cb[key], strict=True):
                assert ra == pytest.approx(rb, rel=1e-5, abs=1e-6)
        else:
            assert ca[key] == pytest.approx(cb[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_a_job_trains_tests_and_writes_its_result(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                  arch: str) -> None:
    cfg = build_job(tiny_job(tiny_models[arch], tiny_data, pooling="mean", epochs=3))
    result = run_job(cfg, tmp_path / "job")
    assert result["status"] == "completed"
    stored = json.loads((tmp_path / "job" / "result.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert [row["epoch"] for row in result["epochs"]] == [1, 2, 3]
    assert result["best_epoch"] == max(result["epochs"], key=lambda r: r["val_acc"])["epoch"]
    assert result["val_acc"] == result["epochs"][result["best_epoch"] - 1]["val_acc"]
    assert result["rows"] == {"train": 192, "val": 24, "test": 24}
    for key in ("test_acc", "test_loss", "test_ece", "train_samples_per_s", "train_tokens_per_s", "peak_memory_mb"):
        assert isinstance(result[key], float) and result[key] >= 0, key
    assert result["config"] == cfg.to_dict() and result["job_id"] == cfg.job_id()
    assert set(result["versions"]) >= {"torch", "transformers", "datasets"}
    # per-example test probabilities, for paired tests in the report
    preds = np.load(tmp_path / "job" / checkpoint.PREDICTIONS_FILE)
    assert preds["probs"].shape == (24, 2) and np.allclose(preds["probs"].sum(1), 1, atol=1e-5)
    assert (preds["probs"].argmax(1) == preds["labels"]).mean() == pytest.approx(result["test_acc"])
    # the event stream: start, steps, one line per epoch, end
    events = [json.loads(line) for line in (tmp_path / "job" / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 3 and "step" in kinds
    assert not (tmp_path / "job" / checkpoint.STATE_FILE).exists()  # final: resume state removed
    # accuracy, macro-F1 and loss every epoch; F1 per class and the confusion matrix on test
    from sklearn.metrics import confusion_matrix, f1_score

    assert result["metric"] == "val_acc" and result["stopped_early"] is None
    assert all(0 <= row["val_macro_f1"] <= 1 for row in result["epochs"])
    best = result["epochs"][result["best_epoch"] - 1]
    assert (result["val_macro_f1"], result["val_loss"]) == (best["val_macro_f1"], best["val_loss"])
    assert [e["val_macro_f1"] for e in events if e["event"] == "epoch"] == [r["val_macro_f1"] for r in result["epochs"]]
    predicted = preds["probs"].argmax(1)
    assert result["test_macro_f1"] == pytest.approx(f1_score(preds["labels"], predicted, average="macro"))
    assert result["test_confusion"] == confusion_matrix(preds["labels"], predicted, labels=[0, 1]).tolist()
    assert result["label_names"] == ["0", "1"]  # the synthetic data's labels have no names
    assert [(c["label"], c["support"]) for c in result["test_per_class"]] == [
        ("0", int((preds["labels"] == 0).sum())), ("1", int((preds["labels"] == 1).sum()))]
    assert all(set(c) == {"label", "precision", "recall", "f1", "support"} for c in result["test_per_class"])


def test_the_saved_model_loads_again_for_inference(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1))
    run_job(cfg, tmp_path / "job")
    model, tokenizer = load_classifier(tmp_path / "job" / "model", tmp_path / "job" / WEIGHTS_FILE)
    enc = tokenizer(["a good and wonderful film"], return_tensors="pt")
    with torch.no_grad():
        probs = model(enc["input_ids"], enc["attention_mask"]).softmax(-1)
    assert probs.shape == (1, 2)
    # and with plain torch + transformers, as the README shows
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    weights = load_file(str(tmp_path / "job" / WEIGHTS_FILE))
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(tmp_path / "job" / "model"))
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")})
    encoder.eval()
    with torch.no_grad():
        hidden = encoder(**enc).last_hidden_state[:, 0]
        plain = (hidden @ weights["head.weight"].T + weights["head.bias"]).softmax(-1)
    torch.testing.assert_close(plain, probs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_checkpoint_saved_in_half_precision_trains_with_float32_weights(
        tiny_models: dict, tiny_data: Path, tmp_path: Path, dtype: torch.dtype) -> None:
    # transformers 5 loads a checkpoint in its stored dtype: float16 weights used to crash on
    # the float32 head, bfloat16 ones to train (and take Adam's updates) in bfloat16.
    import shutil

    from transformers import AutoModel

    from trainer.model import load_encoder

    half = tmp_path / "half"
    shutil.copytree(tiny_models["bert"], half)
    AutoModel.from_pretrained(half).to(dtype).save_pretrained(half)
    encoder = load_encoder(str(half))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    result = run_job(build_job(tiny_job(half, tiny_data)), tmp_path / "job")
    assert result["status"] == "completed"
    # the same as training from the float32 upcast of those half-precision weights
    upcast = tmp_path / "upcast"
    shutil.copytree(half, upcast)
    encoder.save_pretrained(upcast)
    _assert_same_result(result, run_job(build_job(tiny_job(upcast, tiny_data)), tmp_path / "job2"))
    # and the saved model loads again in float32
    model, _ = load_classifier(tmp_path / "job" / "model", tmp_path / "job" / WEIGHTS_FILE)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_finished_job_started_again_does_no_work(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1))
    first = run_job(cfg, tmp_path / "job")
    mtime = (tmp_path / "job" / "result.json").stat().st_mtime_ns
    import trainer.loop

    monkeypatch.setattr(trainer.loop.setup, "prepare", lambda *a, **k: pytest.fail("did work again"))
    assert run_job(cfg, tmp_path / "job") == json.loads(json.dumps(first))
    assert (tmp_path / "job" / "result.json").stat().st_mtime_ns == mtime


def test_a_directory_holding_another_job_is_refused(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    from trainer.config import ConfigError

    run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1)), tmp_path / "job")
    with pytest.raises(ConfigError, match="holds a job with another configuration .*lr"):
        run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1, lr=1e-4)), tmp_path / "job")


def test_resume_after_an_interruption_ends_with_the_same_result(
    tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=3, dropout=0.3))
    straight = run_job(cfg, tmp_path / "straight")

    real_save = checkpoint.save_state

    def save_then_die(*args: object, **kwargs: object) -> None:
        real_save(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # "killed" right after the first epoch's state is on disk

    monkeypatch.setattr(checkpoint, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "result.json").exists()
    monkeypatch.setattr(checkpoint, "save_state", real_save)
    resumed = run_job(cfg, tmp_path / "resumed")
    assert resumed["resumed"] is True
    _assert_same_result(resumed, straight)
    a = np.load(tmp_path / "straight" / checkpoint.PREDICTIONS_FILE)["probs"]
    b = np.load(tmp_path / "resumed" / checkpoint.PREDICTIONS_FILE)["probs"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_kill_9_mid_run_then_the_same_command_resumes(tiny_models: dict, tmp_path: Path) -> None:
    """The real thing: `sweep run` in a subprocess, SIGKILLed after its first epoch."""
    data = write_dataset(tmp_path / "data", n_train=1200, n_test=100, seed=3)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tiny_job(tiny_models["bert"], data, epochs=3, batch_size=8)))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sweeper.cli", "run", str(job), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / checkpoint.STATE_FILE).exists():  # the first epoch's state is on disk
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "result.json").exists(), "the job finished before it could be killed"
    assert (out / checkpoint.STATE_FILE).exists()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "result.json").read_text())
    straight = run_job(build_job(yaml.safe_load(job.read_text())), tmp_path / "straight")
    assert resumed["resumed"] is True
    _assert_same_result(resumed, straight)


@pytest.mark.parametrize("target", ["best", "state", "json"])
def test_an_interrupted_checkpoint_write_leaves_the_previous_one_usable(
    tiny_models: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1))
    out = tmp_path / "job"
    run_job(cfg, out)
    import safetensors.torch

    from trainer.io import write_json
    from trainer.model import Classifier, load_encoder

    model = Classifier(load_encoder(str(tiny_models["bert"])), num_labels=2, pooling="cls", dropout=0.1)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    checkpoint.save_state(out, model, optimizer, scheduler, scaler, {"epoch": 1})
    files = {"best": out / WEIGHTS_FILE, "state": out / checkpoint.STATE_FILE, "json": out / "result.json"}
    before = files[target].read_bytes()

    def torn(obj: object, path: object, *args: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    monkeypatch.setattr(torch, "save", torn)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: torn(None, self))
    with pytest.raises(OSError, match="disk full"):
        {"best": lambda: checkpoint.save_best(out, model),
         "state": lambda: checkpoint.save_state(out, model, optimizer, scheduler, scaler, {"epoch": 2}),
         "json": lambda: write_json(out / "result.json", {"status": "failed"})}[target]()
    monkeypatch.undo()
    assert files[target].read_bytes() == before
    assert not [p.name for p in out.iterdir() if is_temporary(p)]  # no temporary left
    if target == "best":
        checkpoint.load_best(out, model, torch.device("cpu"))
    elif target == "state":
        assert checkpoint.load_state(out, model, optimizer, scheduler, scaler) == {"epoch": 1}


def test_divergence_is_detected(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    result = run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, lr=1e4)), tmp_path / "job")
    assert result["status"] == "diverged"
    assert result["test_acc"] is None and result["epochs"] == []
    assert result["test_macro_f1"] is None and result["test_confusion"] is None and result["best_epoch"] is None
    events = (tmp_path / "job" / "events.jsonl").read_text()
    assert '"kind":"diverged"' in events


def test_a_run_stuck_at_chance_is_marked_collapsed(tiny_models: dict, tmp_path: Path) -> None:
    # 90% of the labels are 0 and the text carries no signal for the rest: the classifier
    # learns to answer 0 everywhere, i.e. the majority class, like the users' 0.5000 BERT runs.
    data = write_dataset(tmp_path / "skewed", labels=[0] * 9 + [1], n_train=300, n_test=100, seed=5,
                         signal=False)
    result = run_job(build_job(tiny_job(tiny_models["bert"], data, lr=1e-2, epochs=2)), tmp_path / "job")
    assert result["status"] == "collapsed", result["epochs"]
    assert result["epochs"][0]["val_acc"] <= result["majority_class_acc"] + 0.02
    assert '"kind":"at_chance"' in (tmp_path / "job" / "events.jsonl").read_text()


def test_grad_accum_and_schedulers_run(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    cfg = build_job(tiny_job(tiny_models["roberta"], tiny_data, batch_size=8, grad_accum=3, scheduler="linear",
                             warmup_ratio=0.2, optimizer="adamw", weight_decay=0.01, clip=1.0, epochs=1))
    result = run_job(cfg, tmp_path / "job")
    assert result["status"] in ("completed", "collapsed")
    assert result["effective_batch_size"] == 24 and result["global_steps"] == 8  # 24 batches / 3


def test_second_job_hits_the_tokenization_cache(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    first = run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1, seed=1)), tmp_path / "a")
    second = run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1, seed=2)), tmp_path / "b")
    assert (first["tokenization_cache_hit"], second["tokenization_cache_hit"]) == (False, True)


def test_cli_run_prints_the_result_and_reports_a_config_error_from_the_model(
    tiny_models: dict, tiny_data: Path, tmp_path: Path
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tiny_job(tiny_models["bert"], tiny_data, epochs=1)))
    ok = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "ok"), "--set", "pooling=mean"])
    assert ok.exit_code == 0, ok.output
    stored = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert f"job {stored['job_id']}: {stored['status']}" in ok.output and "test_acc" in ok.output
    bad = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "bad"), "--set", "max_len=100"])
    assert bad.exit_code == 2
    assert "max_len: 100 is out of range; expected 8 <= max_len <= 64" in " ".join(bad.output.split())
    pooler = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "p"), "--set",
                                      f"model={tiny_models['modernbert']}", "--set", "pooling=pooler"])
    assert pooler.exit_code == 2 and "'pooler' is not available" in pooler.output


@pytest.mark.parametrize("metric", ["val_loss", "val_macro_f1"])
def test_the_best_checkpoint_is_chosen_by_the_metric(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                     metric: str) -> None:
    from contextlib import nullcontext

    from trainer.data import prepare
    from trainer.loop import evaluate

    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=3, dropout=0.3, metric=metric))
    result = run_job(cfg, tmp_path / "job")
    rows = result["epochs"]
    best = (min if metric == "val_loss" else max)(rows, key=lambda r: r[metric])  # the first of equals
    assert result["metric"] == metric and result["best_epoch"] == best["epoch"]
    assert (result["val_acc"], result["val_macro_f1"], result["val_loss"]) == (
        best["val_acc"], best["val_macro_f1"], best["val_loss"])
    # best.safetensors holds that epoch's weights: they score that epoch's validation loss again
    model, tokenizer = load_classifier(tmp_path / "job" / "model", tmp_path / "job" / WEIGHTS_FILE)
    data = prepare(cfg.data, tokenizer, cfg.max_len)
    val = evaluate(model, data.val, batch_size=64, pad_id=tokenizer.pad_token_id, device=torch.device("cpu"),
                   autocast=nullcontext)
    assert val.loss == pytest.approx(best["val_loss"], rel=1e-5) and val.acc == best["val_acc"]


def test_patience_stops_early_and_a_resumed_job_keeps_the_count(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # So small a learning rate that no validation prediction changes: accuracy never improves
    # after epoch 1, and patience 2 stops the job after epoch 3 of 6.
    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=6, lr=1e-9, patience=2))
    straight = run_job(cfg, tmp_path / "straight")
    assert straight["stopped_early"] == {"epoch": 3, "patience": 2}
    assert [row["epoch"] for row in straight["epochs"]] == [1, 2, 3] and straight["best_epoch"] == 1
    assert json.loads((tmp_path / "straight" / "result.json").read_text())["stopped_early"] == {"epoch": 3,
                                                                                              "patience": 2}
    real_save = checkpoint.save_state
    for stop_after in (2, 3):  # one epoch counted; patience used up (the job must not train on)
        out = tmp_path / f"after{stop_after}"

        def save_then_die(*args: object, stop_after: int = stop_after, **kwargs: object) -> None:
            real_save(*args, **kwargs)  # type: ignore[arg-type]
            if args[-1]["epoch"] == stop_after:  # type: ignore[index]
                raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint, "save_state", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg, out)
        monkeypatch.setattr(checkpoint, "save_state", real_save)
        resumed = run_job(cfg, out)
        assert resumed["resumed"] is True and resumed["stopped_early"] == straight["stopped_early"]
        _assert_same_result(resumed, straight)


@pytest.mark.parametrize("eval_limit", [1, 2])
def test_a_perfect_job_on_a_tiny_validation_set_is_completed_not_collapsed(
    tiny_models: dict, tmp_path: Path, eval_limit: int
) -> None:
    # data seed 1: the first two validation rows share a label (as in the 4 of 4 jobs), so
    # the majority class is 1.0 and the old rule (val_acc <= majority + 0.02) called 1.0 at chance
    data = write_dataset(tmp_path / "reviews", seed=1)
    job = tiny_job(tiny_models["bert"], data, lr=3e-3, epochs=2)
    job["data"]["eval_limit"] = eval_limit
    result = run_job(build_job(job), tmp_path / "job")
    assert result["epochs"][-1]["val_acc"] == 1.0 and result["majority_class_acc"] == 1.0  # the premise
    assert result["status"] == "completed", result["collapse"]
    collapse = result["collapse"]  # the figures the rule used
    assert collapse["collapsed"] is False and collapse["val_rows"] == eval_limit and collapse["label_classes"] == 1
    assert collapse["epochs"]["last"]["val_top_share"] == result["epochs"][-1]["val_top_share"]
    assert '"kind":"at_chance"' not in (tmp_path / "job" / "events.jsonl").read_text()


def test_settings_that_cannot_work_as_written_are_warned_at_the_start(tiny_models: dict, tiny_data: Path,
                                                                      tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    # 40 training rows, batch 32 x 2: one optimizer step per epoch that sees 40 rows, not 64;
    # warmup 1000 steps on a 2-step run; 24 validation / test rows
    job = tiny_job(tiny_models["bert"], tiny_data, batch_size=32, grad_accum=2, warmup_steps=1000, epochs=2)
    job["data"]["limit"] = 40
    result = run_job(build_job(job), tmp_path / "job")
    kinds = [w["kind"] for w in result["warnings"]]
    assert kinds == ["warmup_longer_than_run", "batch_larger_than_data", "small_eval_set"]
    warmup = result["warnings"][0]
    assert (warmup["warmup_steps"], warmup["total_steps"]) == (1000, 2) and "at most 0.2% of lr" in warmup["message"]
    assert result["effective_batch_size"] == 40 and result["global_steps"] == 2  # before: 64
    events = [json.loads(line) for line in (tmp_path / "job" / "events.jsonl").read_text().splitlines()]
    warned = [e["kind"] for e in events if e["event"] == "warning"]
    assert warned[:3] == kinds and [e["event"] for e in events].index("warning") < [e["event"] for e in events].index("epoch")
    assert "warmup of 1000 optimizer steps is not shorter than the run's 2" in caplog.text


def test_a_job_whose_settings_work_has_no_warnings(tiny_models: dict, tmp_path: Path) -> None:
    from trainer.loop import start_warnings

    cfg = build_job(tiny_job(tiny_models["bert"], tmp_path, warmup_steps=5))
    assert start_warnings(cfg, train_rows=1000, val_rows=100, test_rows=100) == []
    assert [w["kind"] for w in start_warnings(cfg, train_rows=1000, val_rows=100, test_rows=99)] == ["small_eval_set"]
    assert [w["kind"] for w in start_warnings(cfg, train_rows=16, val_rows=500, test_rows=500)] == [
        "warmup_longer_than_run"]  # 1 step a epoch x 2 epochs <= 5
    assert [w["kind"] for w in start_warnings(cfg, train_rows=15, val_rows=500, test_rows=500)] == [
        "warmup_longer_than_run", "batch_larger_than_data"]


def test_cli_run_summary_shows_the_selection_metric_and_the_warnings(tiny_models: dict, tiny_data: Path,
                                                                     tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tiny_job(tiny_models["bert"], tiny_data, epochs=1, metric="val_loss")))
    ok = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "ok")], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    stored = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert "val_loss (chose best_epoch)" in ok.output  # before: val_acc alone, whatever chose the epoch
    assert f"{stored['val_loss']:.4f}" in ok.output
    assert "warning" in ok.output and "24 validation / 24 test rows" in ok.output
