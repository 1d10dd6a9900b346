from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.wandb_params import job_key
from trainer.config import ConfigError, JobConfig, build_job
from trainer.jobfile import apply_overrides, load_job
from trainer.names import USER_NAMES


def test_defaults_are_the_users_protocol() -> None:
    cfg = build_job({})
    assert (cfg.model_path, cfg.pooling, cfg.dropout, cfg.max_len, cfg.batch_size) == (
        "bert-base-uncased", "cls", 0.1, 128, 16)
    assert (cfg.lr, cfg.optimizer, cfg.scheduler, cfg.epochs, cfg.seed) == (5e-5, "adam", "constant", 5, 42)
    assert cfg.data.name == "stanfordnlp/imdb" and cfg.data.split == (0.8, 0.1, 0.1)
    assert cfg == JobConfig()


def test_aliases_resolve() -> None:
    assert build_job({"model": "modernbert"}).model_path == "answerdotai/ModernBERT-base"
    assert build_job({"model": "roberta"}).model_path == "roberta-base"
    assert build_job({"model": "minilm"}).model_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert build_job({"model": "google-bert/bert-base-cased"}).model_path == "google-bert/bert-base-cased"


def test_job_id_is_stable_and_follows_the_configuration() -> None:
    a = build_job({"lr": 3e-5, "data": {"limit": 100}})
    assert a.job_id() == build_job({"data": {"limit": 100}, "lr": 3.0e-5}).job_id()
    assert a.job_id() != build_job({"lr": 3e-5, "data": {"limit": 101}}).job_id()
    assert a.job_id() != build_job({"lr": 3e-5, "data": {"limit": 100}, "seed": 1}).job_id()


BAD = [
    ({"learning_rate": 1e-5}, "learning_rate: unknown key; did you mean 'lr'?"),
    ({"data": {"limits": 5}}, "data.limits: unknown key; did you mean 'data.limit'?"),
    ({"lr": "fast"}, "lr: 'fast' (str) is not a number"),
    ({"batch_size": 16.5}, "batch_size: 16.5 (float) is not an integer"),
    ({"epochs": True}, "epochs: True (bool) is not an integer"),
    ({"dropout": 1.0}, "dropout: 1 is out of range; expected 0 <= dropout < 1"),
    ({"dropout": -0.1}, "dropout: -0.1 is out of range; expected 0 <= dropout < 1"),
    ({"lr": 0}, "lr: 0 is out of range; expected lr > 0"),
    ({"max_len": 4}, "max_len: 4 is out of range; expected 8 <= max_len"),
    ({"batch_size": 0}, "batch_size: 0 is out of range; expected batch_size >= 1"),
    ({"grad_accum": 0}, "grad_accum: 0 is out of range; expected grad_accum >= 1"),
    ({"epochs": 0}, "epochs: 0 is out of range; expected epochs >= 1"),
    ({"weight_decay": -0.01}, "weight_decay: -0.01 is out of range; expected weight_decay >= 0"),
    ({"clip": -1}, "clip: -1 is out of range; expected clip >= 0"),
    ({"warmup_ratio": 1.0}, "warmup_ratio: 1 is out of range; expected 0 <= warmup_ratio < 1"),
    ({"pooling": "max"}, "pooling: 'max' is not allowed; expected one of: cls, mean, pooler"),
    ({"pooling": "men"}, "pooling: 'men' is not allowed (did you mean 'mean'?)"),
    ({"optimizer": "sgd"}, "optimizer: 'sgd' is not allowed; expected one of: adam, adamw"),
    ({"scheduler": "step"}, "scheduler: 'step' is not allowed; expected one of: constant, linear, cosine"),
    ({"precision": "fp8"}, "precision: 'fp8' is not allowed; expected one of: auto, bf16, fp16, fp32"),
    ({"data": {"split": [0.8, 0.1, 0.2]}}, "data.split: [0.8, 0.1, 0.2] is not allowed; expected three fractions"),
    ({"data": {"split": [0.9, 0.1]}}, "data.split: [0.9, 0.1] is not three fractions"),
    ({"data": {"limit": 0}}, "data.limit: 0 is out of range; expected data.limit >= 1"),
    ({"data": {"eval_limit": "all"}}, "data.eval_limit: 'all' (str) is not an integer"),
    ({"model": "bret"}, "model: 'bret' is not an alias, Hub id or directory (did you mean 'bert'?)"),
    ({"model": 3}, "model: 3 (int) is not a non-empty string"),
    ({"data": "imdb"}, "data: 'imdb' is not a mapping"),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_configuration_is_refused_with_its_key_value_and_fix(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_job(raw, source="job.yaml")
    assert str(info.value).startswith("job.yaml: " + message), str(info.value)


@pytest.mark.parametrize(("raw", "message"), BAD[:6] + BAD[20:25])
def test_cli_refuses_bad_jobs_with_exit_2_before_any_work(tmp_path: Path, raw: dict, message: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(job), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message.split(";")[0] in " ".join(result.output.split())
    assert not out.exists()  # nothing was started


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("lr: 1e-5\npooling: [cls\n")
    with pytest.raises(ConfigError, match=r"job.yaml: line \d+: not valid YAML"):
        load_job(job)
    result = CliRunner().invoke(app, ["run", str(job), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_job(tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values_and_dotted_keys(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"lr": 1e-5, "data": {"name": "x/y"}}')
    cfg = load_job(job, ["lr=3e-5", "data.limit=200", "pooling=mean", "data.split=[0.6, 0.2, 0.2]"])
    assert (cfg.lr, cfg.data.limit, cfg.pooling, cfg.data.name) == (3e-5, 200, "mean", "x/y")
    assert cfg.data.split == (0.6, 0.2, 0.2)


@pytest.mark.parametrize(("item", "message"), [
    ("lr", "expected key=value"),
    ("learnrate=1", "learnrate: unknown key"),
    ("data.lmit=3", "did you mean 'data.limit'"),
])
def test_bad_overrides(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides({}, [item])


def test_job_yaml_files_shipped_in_jobs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "jobs"
    files = sorted(root.glob("*.yaml"))
    assert files
    for path in files:
        raw = yaml.safe_load(path.read_text())
        raw.pop("model", None), raw.get("data", {}).pop("name", None)  # ../shared paths may be absent
        build_job(raw, source=str(path))


def test_yaml_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    # PyYAML alone reads `3e-5` as a string; users write it that way.
    job = tmp_path / "job.yaml"
    job.write_text("lr: 3e-5\nweight_decay: 1e-2\n")
    cfg = load_job(job)
    assert (cfg.lr, cfg.weight_decay) == (3e-5, 0.01)


def test_metric_and_patience_keys() -> None:
    cfg = build_job({})
    assert (cfg.metric, cfg.patience) == ("val_acc", None)  # today's behaviour: accuracy, no early stop
    assert build_job({"metric": "val_acc", "patience": None}).job_id() == cfg.job_id()  # ids unchanged at defaults
    other = build_job({"metric": "val_loss", "patience": 2})
    assert (other.metric, other.patience) == ("val_loss", 2) and other.job_id() != cfg.job_id()
    assert build_job({"metric": "val_macro_f1"}).metric == "val_macro_f1"
    for raw, message in [
        ({"metric": "f1"}, "metric: 'f1' is not allowed; expected one of: val_acc, val_macro_f1, val_loss"),
        ({"metric": "val_los"}, "metric: 'val_los' is not allowed (did you mean 'val_loss'?)"),
        ({"patience": 0}, "patience: 0 is not allowed; expected an integer >= 1 (epochs without improvement "
                          "before stopping) or null (no early stopping)"),
        ({"patience": 1.5}, "patience: 1.5 is not allowed; expected an integer >= 1"),
        ({"patience": True}, "patience: True is not allowed"),
    ]:
        with pytest.raises(ConfigError) as info:
            build_job(raw, source="job.yaml")
        assert str(info.value).startswith(f"job.yaml: {message}"), str(info.value)
# -- eval_batch_size and warmup_steps (issue #15) -----------------------------------------------


def test_eval_batch_size_and_warmup_steps_default_to_todays_behaviour_and_keep_job_ids() -> None:
    cfg = build_job({})
    assert cfg.eval_batch_size is None and cfg.warmup_steps == 0
    assert cfg.job_id() == build_job({"eval_batch_size": None, "warmup_steps": 0}).job_id()
    assert build_job({"warmup_steps": 100}).job_id() != cfg.job_id()
    assert build_job({"eval_batch_size": 8}).eval_batch_size == 8


@pytest.mark.parametrize(("raw", "message"), [
    ({"eval_batch_size": 0}, "eval_batch_size: 0 is out of range; expected eval_batch_size >= 1"),
    ({"warmup_steps": -1}, "warmup_steps: -1 is out of range; expected warmup_steps >= 0"),
    ({"warmup_steps": 1.5}, "warmup_steps: 1.5 (float) is not an integer"),
    ({"warmup_steps": 10, "warmup_ratio": 0.1}, "warmup_steps: 10 with warmup_ratio 0.1: give one of the two"),
])
def test_bad_eval_batch_size_and_warmup_steps(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_job(raw)


def test_warmup_steps_drive_the_scheduler() -> None:
    import torch

    from trainer.loop import make_scheduler

    for raw, lrs in (({"warmup_steps": 4, "lr": 1.0}, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
                     ({"lr": 1.0}, [1.0] * 6)):
        cfg = build_job(raw)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
        scheduler = make_scheduler(cfg, optimizer, total_steps=6)
        seen = []
        for _ in range(6):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert seen == pytest.approx(lrs)


def test_hub_ids_from_before_owners_are_models() -> None:
    assert build_job({"model": "distilbert-base-uncased"}).model_path == "distilbert-base-uncased"
    with pytest.raises(ConfigError, match="is not an alias, Hub id or directory"):
        build_job({"model": "distilbert-base-uncasd"})


def test_a_job_with_warmup_steps_and_eval_batch_size_runs(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    from tests.conftest import tiny_job
    from trainer.loop import run_job

    cfg = build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1, warmup_steps=30, eval_batch_size=5))
    result = run_job(cfg, tmp_path / "job")
    assert result["status"] in ("completed", "collapsed")
    assert result["config"]["warmup_steps"] == 30 and result["config"]["eval_batch_size"] == 5
    steps = [e for e in map(json.loads, (tmp_path / "job" / "events.jsonl").read_text().splitlines())
             if e.get("event") == "step"]
    assert steps and steps[0]["lr"] == pytest.approx(cfg.lr * steps[0]["step"] / 30, rel=0.1)  # warming up


# -- one table of users' names (trainer/names.py): hints and W&B files agree (issue 27) -------------


@pytest.mark.parametrize(("name", "key"), sorted(USER_NAMES.items()))
def test_every_users_name_is_the_same_job_key_in_hints_and_in_wandb_files(name: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_job({name: 1})
    assert f"{name}: unknown key; did you mean '{key}'?" in str(info.value)
    assert job_key(name) == key


def test_a_bare_warmup_names_both_keys_it_could_mean() -> None:
    with pytest.raises(ConfigError) as info:
        build_job({"warmup": 0.1})
    assert "warmup: unknown key; did you mean 'warmup_ratio' or 'warmup_steps'?" in str(info.value)
    assert job_key("warmup") is None  # a W&B parameter named warmup is refused with its nearest key
