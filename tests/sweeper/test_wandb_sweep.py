"""W&B sweep files: real ones (tests/data/wandb, see SOURCES) accepted and mapped, or refused
naming every foreign parameter at once; the W&B rules one by one; a W&B study end to end."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.search import Param, Space, suggest
from sweeper.spec import Grid
from sweeper.sweepfile import describe, load_sweep, read_sweep
from tests.conftest import REPO
from trainer.config import ConfigError
from trainer.jobdir import FINISHED, epoch_rows

DATA = REPO / "tests" / "data" / "wandb"


def dry_run(path: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["optuna", "--space", str(path), "--dry-run", *extra])
    return result.exit_code, result.output


# -- real files: the fine-tuning sweeps this tool runs ------------------------------------------


def params(space: Space) -> dict[str, Param]:
    return {p.name: p for p in space.params}


def test_emotion_classifier_is_accepted_and_mapped() -> None:
    space = load_sweep(DATA / "emotion_classifier.yaml")
    assert isinstance(space, Space)
    assert space.sampler == ("tpe", {}) and space.pruner == ("none", {})
    assert (space.metric, space.direction, space.target) == ("val_macro_f1", "maximize", None)
    assert (space.wandb_project, space.wandb_entity) == (
        "emotion-classifier-meld", "adnanfatawi-electronic-engineering-polytechnic-institute")
    p = params(space)
    assert list(p) == ["lr", "batch_size", "epochs", "model"]
    assert (p["lr"].low, p["lr"].high, p["lr"].log, p["lr"].integer) == (1e-5, 5e-4, False, False)
    assert p["batch_size"].values == [16, 32, 64]
    assert (p["epochs"].low, p["epochs"].high, p["epochs"].integer) == (3, 5, True)
    assert p["model"].values == ["roberta-base", "distilbert-base-uncased"]
    assert space.base == {} and space.run_cap is None
    code, out = dry_run(DATA / "emotion_classifier.yaml")
    assert code == 0
    assert "W&B's bayes is a Gaussian process; Optuna's TPE stands in" in out
    assert "metric: val_macro_f1, maximized (eval/f1 -> val_macro_f1" in out
    assert re.search(r"num_train_epochs\s+epochs\s+int_uniform\s+int uniform \[3, 5\]", out)
    assert "not used: program: train.py (sweep runs its own training core)" in out


def test_complaints_classifier_is_accepted_and_mapped() -> None:
    space = load_sweep(DATA / "complaints_classifier.yaml")
    assert isinstance(space, Space)
    assert space.sampler == ("random", {}) and space.metric == "val_macro_f1"  # f1_score
    assert space.base == {"batch_size": 16, "eval_batch_size": 16}  # train_batch_size, eval_batch_size
    p = params(space)
    assert p["warmup_steps"].values == [256, 512, 1024]
    assert p["model"].values == ["distilbert-base-uncased", "distilroberta-base", "microsoft/deberta-base-mnli"]
    assert (p["lr"].low, p["lr"].high, p["lr"].log) == (1e-5, 1e-3, True)
    assert p["seed"].values == [1, 2, 3]
    assert space.wandb_project == "wandb-week-2-complaints-classifier"
    code, out = dry_run(DATA / "complaints_classifier.yaml")
    assert code == 0 and "the best trial may be the luckiest seed" in out


def test_thesis_peft_is_accepted_and_mapped() -> None:
    space = load_sweep(DATA / "thesis_peft.yaml")
    assert isinstance(space, Space)
    assert space.sampler == ("random", {}) and space.metric == "val_macro_f1"  # target_validation/f1
    p = params(space)
    assert (p["lr"].low, p["lr"].high) == (1e-5, 5e-5)
    assert (p["weight_decay"].low, p["weight_decay"].high) == (0.01, 0.1)
    assert p["epochs"].values == [15, 20, 25] and p["batch_size"].values == [16, 32]
    assert dry_run(DATA / "thesis_peft.yaml")[0] == 0


# -- real files: sweeps of other programs, refused with every foreign name at once -----------------

REFUSED = {
    "sentiment_cnn.yaml": {7: "model_type", 9: "embedding_dim", 13: "dense_units", 21: "num_filters",
                           23: "kernel_size", 25: "lstm_units", 27: "optimizer"},
    "text_to_sql.yaml": {9: "metric.name", 15: "output_dir", 18: "source_lang",  # dataset_name: data.name
                         21: "target_lang", 33: "max_seq_length"},
    "vlm.yaml": {14: "embed_size", 16: "head_num", 18: "layer_num", 21: "vit_num_layers", 23: "vit_num_heads",
                 25: "image_embed_dim"},
    "repavit.yaml": {8: "opt", 14: "min_lr", 18: "warmup_epochs", 27: "drop_path", 31: "shortcut_gain"},
    # `dataset` is data.name in the one table of users' names (trainer/names.py), as in hints
    "docs_fine_tuning.yaml": {5: "metric.name", 15: "dropout_ratio", 23: "load_path",
                              25: "domain_adaptation_tasks", 27: "model_type", 29: "task"},
    "nlp_template_grid.yaml": {7: "wandb_run_name", 9: "data_dir", 11: "precision", 13: "workers", 15: "compile"},
    "curriculum.yaml": {5: "metric.name", 18: "start_fraction", 23: "inc", 28: "step_length",
                        33: "starting_portion"},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_sweeps_of_other_programs_are_refused_naming_every_foreign_parameter(name: str, tmp_path: Path) -> None:
    path = DATA / name
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    expected = REFUSED[name]
    assert message.startswith(f"{path}: W&B sweep file: {len(expected)} problems; nothing was run")
    found = re.findall(r"line (\d+): (metric\.name|parameters\.([\w.]+))", message)
    assert {int(line): (key if key == "metric.name" else param) for line, key, param in found} == expected
    for line in message.splitlines()[1:]:
        if "not a setting of sweep's training core" in line:
            assert re.search(r"nearest job key: [\w.]+$", line)
    code, _ = dry_run(path, "--runs-dir", str(tmp_path / "r"))
    assert code == 2 and not (tmp_path / "r").exists()
    result = CliRunner().invoke(app, ["grid", str(path), "--dry-run"])
    assert result.exit_code == 2


def test_foreign_names_come_with_their_nearest_job_key() -> None:
    message = str(pytest.raises(ConfigError, load_sweep, DATA / "repavit.yaml").value)
    assert "parameters.warmup_epochs: not a setting of sweep's training core" in message
    assert "nearest job key: warmup_steps" in message
    assert "line 14: parameters.min_lr: not a setting of sweep's training core (a parameter of another program?); " \
           "nearest job key: lr" in message


def test_every_real_file_is_listed_in_sources() -> None:
    sources = (DATA / "SOURCES").read_text()
    files = sorted(p.name for p in DATA.glob("*.yaml"))
    assert len(files) >= 10
    for name in files:
        row = next(line for line in sources.splitlines() if line.startswith(name + " "))
        assert re.search(r"\s[0-9a-f]{40}\s", row), row


# -- the W&B rules, one by one ------------------------------------------------------------------


def wandb_file(tmp_path: Path, parameters: dict, **top: object) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"method": top.pop("method", "random"), "parameters": parameters, **top},
                                   sort_keys=False))
    return path


def test_distributions_follow_wandbs_rules(tmp_path: Path) -> None:
    space = load_sweep(wandb_file(tmp_path, {
        "epochs": {"min": 1, "max": 4},  # int bounds, no distribution: int_uniform
        "dropout": {"min": 0.0, "max": 0.3},  # float bounds: uniform
        "lr": {"distribution": "log_uniform", "min": math.log(1e-5), "max": math.log(1e-3)},  # natural-log bounds
        "weight_decay": {"distribution": "inv_log_uniform_values", "min": 1e-4, "max": 1e-1},
        "warmup_steps": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 10},
        "batch_size": {"distribution": "q_log_uniform_values", "min": 8, "max": 64, "q": 8},
        "max_len": {"distribution": "constant", "value": 64},
        "pooling": {"values": ["cls", "mean"], "probabilities": [0.5, 0.5]},
    }))
    assert isinstance(space, Space)
    p = params(space)
    assert (p["epochs"].low, p["epochs"].high, p["epochs"].integer, p["epochs"].log) == (1, 4, True, False)
    assert (p["dropout"].low, p["dropout"].high, p["dropout"].integer) == (0.0, 0.3, False)
    assert p["lr"].log and p["lr"].low == pytest.approx(1e-5) and p["lr"].high == pytest.approx(1e-3)
    assert p["weight_decay"].log and (p["weight_decay"].low, p["weight_decay"].high) == (1e-4, 1e-1)
    assert (p["warmup_steps"].q, p["warmup_steps"].integer, p["warmup_steps"].log) == (10, True, False)
    assert (p["batch_size"].q, p["batch_size"].integer, p["batch_size"].log) == (8, True, True)
    assert space.base == {"max_len": 64} and p["pooling"].values == ["cls", "mean"]
    text = "\n".join(describe(read_sweep(tmp_path / "sweep.yaml")))
    assert "log_uniform bounds are natural logs" in text and "1/x log-uniform is x log-uniform" in text


def test_q_distributions_round_every_draw(tmp_path: Path) -> None:
    space = Space(name="s", description="", base={}, metric="val_acc", sampler=("random", {}), pruner=("none", {}),
                  params=[Param("batch_size", low=8, high=64, log=True, integer=True, q=8),
                          Param("lr", low=1e-5, high=1e-3, log=True, q=1e-5)])
    values = suggest(optuna.trial.FixedTrial({"batch_size": 21, "lr": 0.000123}), space)
    assert values == {"batch_size": 24, "lr": pytest.approx(0.00012)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        drawn = suggest(study.ask(), space)
        assert drawn["batch_size"] % 8 == 0 and 8 <= drawn["batch_size"] <= 64


BAD_PARAMETERS = [
    ({"lr": {"distribution": "normal", "mu": 0.0, "sigma": 1.0}}, "distribution normal is refused: it is unbounded"),
    ({"lr": {"distribution": "log_normal", "mu": 0.0, "sigma": 1.0}}, "distribution log_normal is refused"),
    ({"lr": {"distribution": "beta", "a": 1, "b": 2}}, "distribution beta is refused"),
    ({"lr": {"distribution": "gamma", "min": 1, "max": 2}}, "distribution 'gamma' is not a W&B distribution"),
    ({"pooling": {"values": ["cls", "mean"], "probabilities": [0.7, 0.3]}}, "cannot be honoured"),
    ({"lr": {"min": 1.0e-3, "max": 1.0e-5}}, "min 0.001, max 1e-05 is not allowed; expected finite numbers with min < max"),
    ({"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}, "log_uniform_values needs min > 0"),
    ({"dropout": {"values": [0.1, 1.5]}}, "parameters.dropout: dropout 1.5 is out of range"),
    ({"lr": {"values": [1e-5]}, "learning_rate": {"values": [1e-4]}}, "is lr, as parameters.lr already is"),
    ({"lr": {"value": 1e-5, "step": 2}}, "unknown field(s) step"),
]


@pytest.mark.parametrize(("parameters", "message"), BAD_PARAMETERS)
def test_bad_parameters_are_refused_with_their_line(tmp_path: Path, parameters: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_sweep(wandb_file(tmp_path, parameters))
    assert message in str(info.value) and re.search(r"line \d+: parameters\.", str(info.value))


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"channels_one": {"values": [1, 2]}, "lr": {"distribution": "normal"},
                                 "dropout": {"value": 2.0}},
                      metric={"name": "val_loss", "goal": "maximize"}, early_terminate={"type": "median"},
                      run_cap=0, sweeper="x")
    message = str(pytest.raises(ConfigError, load_sweep, path).value)
    assert "6 problems" in message  # and the key W&B ignores, said after them
    for part in ("sweeper: not a W&B sweep key, ignored", "parameters.channels_one: not a setting", "distribution normal",
                 "metric.goal: maximize disagrees with val_loss", "early_terminate: type 'median'",
                 "run_cap: 0 is not an integer >= 1", "parameters.dropout: dropout 2 is out of range"):
        assert part in message, part


def test_nested_parameters_and_dotted_names_map_by_their_last_part(tmp_path: Path) -> None:
    space = load_sweep(wandb_file(tmp_path, {
        "optimizer": {"parameters": {"learning_rate": {"values": [1e-5, 3e-5]}, "weight_decay": {"value": 0.01}}},
        "hyperparams.max_seq_length": {"value": 64},
        "data.limit": {"value": 100},
    }))
    assert isinstance(space, Space)
    assert params(space)["lr"].values == [1e-5, 3e-5]
    assert space.base == {"weight_decay": 0.01, "max_len": 64, "data.limit": 100}
    text = "\n".join(describe(read_sweep(tmp_path / "sweep.yaml")))
    assert re.search(r"optimizer\.learning_rate\s+lr\s+categorical", text)


def test_a_nested_foreign_parameter_is_named_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("method: bayes\nparameters:\n  model:\n    parameters:\n      lr: {values: [0.1]}\n"
                    "      channels_one: {values: [3]}\n")
    message = str(pytest.raises(ConfigError, load_sweep, path).value)
    assert "line 6: parameters.model.channels_one: not a setting" in message and "1 problem;" in message


METRIC_NAMES = [
    ("accuracy", "val_acc"), ("val_accuracy", "val_acc"), ("eval/accuracy", "val_acc"),
    ("best_validation_accuracy", "val_acc"), ("epoch/val_accuracy", "val_acc"), ("valid_acc", "val_acc"),
    ("f1", "val_macro_f1"), ("val_f1", "val_macro_f1"), ("eval/f1", "val_macro_f1"),
    ("loss", "val_loss"), ("val_loss", "val_loss"), ("eval/loss", "val_loss"), ("val/loss", "val_loss"),
]


@pytest.mark.parametrize(("name", "key"), METRIC_NAMES)
def test_metric_names_and_their_directions(tmp_path: Path, name: str, key: str) -> None:
    direction = "minimize" if key == "val_loss" else "maximize"
    space = load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5]}},
                                  metric={"name": name, "goal": direction, "target": 0.9}))
    assert isinstance(space, Space)
    assert (space.metric, space.direction, space.target) == (key, direction, 0.9)
    other = "maximize" if direction == "minimize" else "minimize"
    with pytest.raises(ConfigError, match=f"metric.goal: {other} disagrees with {re.escape(name)}"):
        load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5]}}, metric={"name": name, "goal": other}))


@pytest.mark.parametrize("name", ["test_acc", "train/loss", "eval/bleu", "best_w_f1"])
def test_metrics_the_jobs_do_not_report_or_must_not_steer_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=f"metric.name: '{re.escape(name)}'"):
        load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5]}}, metric={"name": name, "goal": "maximize"}))


def test_a_metric_without_goal_takes_the_metrics_direction_and_says_so(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"lr": {"values": [1e-5]}}, metric={"name": "accuracy"})
    space = load_sweep(path)
    assert isinstance(space, Space) and space.direction == "maximize"
    assert "the file gives no goal (W&B would minimise)" in "\n".join(describe(read_sweep(path)))


def test_hyperband_maps_to_optunas_pruner_on_epochs(tmp_path: Path) -> None:
    space = load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5]}, "epochs": {"value": 9}},
                                  early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3}))
    assert isinstance(space, Space)
    assert space.pruner == ("hyperband", {"max_resource": 9, "min_resource": 1, "reduction_factor": 3})
    assert isinstance(space.make_pruner(), optuna.pruners.HyperbandPruner)
    # max_iter with s: the lowest band is max_iter / eta**s, as W&B computes its bands
    space = load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5]}, "epochs": {"values": [3, 27]}},
                                  early_terminate={"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}))
    assert isinstance(space, Space)
    assert space.pruner == ("hyperband", {"max_resource": 27, "min_resource": 3, "reduction_factor": 3})
    code, out = dry_run(tmp_path / "sweep.yaml")
    assert code == 0
    assert "pruner: HyperbandPruner(max_resource=27, min_resource=3, reduction_factor=3), on epochs" in out
    with pytest.raises(ConfigError, match="max_iter needs s"):
        load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5]}},
                              early_terminate={"type": "hyperband", "max_iter": 27}))


def test_unused_keys_are_said_once_and_project_entity_kept(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"lr": {"values": [1e-5, 2e-5]}}, program="train.py",
                      command=["${env}", "python", "${program}", "${args}"], project="p", entity="e",
                      name="My sweep: GLUE", description="d")
    space = load_sweep(path)
    assert isinstance(space, Space)
    assert (space.name, space.description, space.wandb_project, space.wandb_entity) == ("My-sweep-GLUE", "d", "p", "e")
    code, out = dry_run(path)
    assert code == 0
    assert "not used: program: train.py (sweep runs its own training core)" in out
    assert "not used: command: ${env} python ${program} ${args} (sweep runs its own training core)" in out
    assert "W&B runs: project p, entity e" in out


def test_set_fixes_a_searched_parameter_and_says_so(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"model_name": {"values": ["roberta-base", "distilbert-base-uncased"]},
                                 "lr": {"values": [1e-5, 2e-5]}})
    loaded = read_sweep(path, [f"model={tmp_path}", "data.limit=50"])
    space = loaded.sweep
    assert isinstance(space, Space)
    assert [p.name for p in space.params] == ["lr"] and space.base == {"model": str(tmp_path), "data.limit": 50}
    assert any("replaces parameters.model_name" in line for line in describe(loaded))


def test_run_cap_is_the_default_trials_and_without_it_trials_are_needed(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"lr": {"values": [1e-5]}}, run_cap=7)
    space = load_sweep(path)
    assert isinstance(space, Space) and space.run_cap == 7
    assert "trials: 7 (run_cap; --trials overrides)" in dry_run(path)[1]
    path = wandb_file(tmp_path, {"lr": {"values": [1e-5]}})
    result = CliRunner().invoke(app, ["optuna", "--space", str(path), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--trials: needed" in result.output and not (tmp_path / "r").exists()


def test_sampler_seed_makes_the_draws_reproducible(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"lr": {"values": [1e-5]}}, method="bayes")
    code, out = dry_run(path, "--sampler-seed", "3")
    assert code == 0 and "sampler: TPESampler(seed=3)" in out


# -- method: grid ---------------------------------------------------------------------------------


def test_a_wandb_grid_is_the_grid_sweep_from_either_command(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"learning_rate": {"values": [1e-5, 2e-5, 2e-5]}, "epochs": {"min": 1, "max": 2},
                                 "warmup_steps": {"distribution": "q_uniform", "min": 0, "max": 20, "q": 10},
                                 "seed": {"values": [1, 2]}, "max_length": {"value": 64}},
                      method="grid", metric={"name": "eval/accuracy", "goal": "maximize"})
    grid = load_sweep(path)
    assert isinstance(grid, Grid)
    assert grid.axes == {"lr": [1e-5, 2e-5], "epochs": [1, 2], "warmup_steps": [0, 10]}  # q_uniform: max excluded
    assert len(grid.jobs) == 2 * 2 * 2 * 2 and len({j.id for j in grid.jobs}) == 16
    assert {j.point["seed"] for j in grid.jobs} == {1, 2} and {j.config.max_len for j in grid.jobs} == {64}
    for command in (["grid", str(path), "--dry-run"], ["optuna", "--space", str(path), "--dry-run"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "16 jobs, each run exactly once" in result.output
        assert "a value listed twice runs once" in result.output
    with pytest.raises(ConfigError, match="distribution uniform is not allowed with method: grid"):
        load_sweep(wandb_file(tmp_path, {"dropout": {"min": 0.0, "max": 0.3}}, method="grid"))


def test_run_cap_cuts_a_wandb_grid(tmp_path: Path) -> None:
    grid = load_sweep(wandb_file(tmp_path, {"lr": {"values": [1e-5, 2e-5, 3e-5]}}, method="grid", run_cap=2))
    assert isinstance(grid, Grid) and [j.config.lr for j in grid.jobs] == [1e-5, 2e-5]


def test_sweep_grid_refuses_a_search_space_pointing_at_optuna(tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"lr": {"min": 1e-5, "max": 1e-4}}, method="bayes")
    result = CliRunner().invoke(app, ["grid", str(path)])
    assert result.exit_code == 2 and "sweep optuna --space" in result.output


def test_the_tools_own_formats_still_load_through_load_sweep() -> None:
    assert isinstance(load_sweep(REPO / "grids" / "smoke.yaml"), Grid)
    space = load_sweep(REPO / "grids" / "optuna.yaml")
    assert isinstance(space, Space) and space.direction == "maximize" and space.metric == "val_acc"
    code, out = dry_run(REPO / "grids" / "optuna.yaml")
    assert code == 0 and "sampler: TPESampler()" in out and "pruner: MedianPruner()" in out


def test_own_space_takes_any_job_metric_with_its_direction(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nparams: {lr: {values: [1.0e-5]}}\nmetric: val_loss\ntarget: 0.2\n")
    space = load_sweep(path)
    assert isinstance(space, Space) and (space.metric, space.direction, space.target) == ("val_loss", "minimize", 0.2)


# -- end to end -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "key"), [("eval/f1", "val_macro_f1"), ("eval/loss", "val_loss")])
def test_a_wandb_study_runs_tiny_jobs_and_prunes_on_the_mapped_metric(tiny_models: dict, tiny_data: Path,
                                                                      tmp_path: Path, metric: str, key: str) -> None:
    direction = "minimize" if key == "val_loss" else "maximize"
    sweep = {
        "program": "train.py", "method": "random", "run_cap": 3,
        "metric": {"name": metric, "goal": direction},
        "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3},
        "parameters": {
            "learning_rate": {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-2},
            "model_name_or_path": {"values": [str(tiny_models["bert"]), str(tiny_models["roberta"])]},
            "max_seq_length": {"value": 32}, "per_device_train_batch_size": {"value": 16},
            "num_train_epochs": {"value": 3},
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "optuna", "--space", str(path), "--runs-dir", str(runs), "--no-live",
         "--parallel", "1", "--sampler-seed", "1", "--set", f"data.name={tiny_data}"],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ExperimentalWarning" not in proc.stderr
    study = optuna.load_study(study_name="sweep", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "sweeps.journal"))))
    assert study.direction.name.lower() == direction
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 3
    assert any(t.state == TrialState.PRUNED for t in done)
    for t in done:
        rows = epoch_rows(runs / "sweep" / t.user_attrs["job_id"] / "events.jsonl")
        # What the pruner saw is the mapped metric; until the jobs report val_macro_f1 (tasks-core),
        # the study falls back to val_acc for it.
        reported = sorted(t.intermediate_values)
        assert reported == [row["epoch"] for row in rows][: len(reported)]  # a pruned job may finish one more
        expected = [row.get(key, row["val_acc"]) for row in rows[: len(reported)]]
        assert [t.intermediate_values[e] for e in reported] == pytest.approx(expected)
        assert reported == ([1, 2] if t.state == TrialState.PRUNED else [1, 2, 3])  # hyperband's rung: epoch 2
        config = json.loads((runs / "sweep" / t.user_attrs["job_id"] / "config.json").read_text())
        assert config["model"] in {str(tiny_models["bert"]), str(tiny_models["roberta"])}


def test_a_json_wandb_file_is_read_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    path.write_text('{\n  "method": "random",\n  "parameters": {\n    "learning_rate": {"values": [1e-5]},\n'
                    '    "channels_one": {"values": [3]}\n  }\n}\n')
    message = str(pytest.raises(ConfigError, load_sweep, path).value)
    assert "line 5: parameters.channels_one: not a setting" in message


def test_optuna_runs_a_wandb_grid_as_the_grid_sweep(tiny_models: dict, tiny_data: Path, tmp_path: Path) -> None:
    path = wandb_file(tmp_path, {"learning_rate": {"values": [1e-3, 2e-3]}, "num_train_epochs": {"value": 1},
                                 "max_seq_length": {"value": 32}}, method="grid", name="wgrid")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "optuna", "--space", str(path), "--runs-dir", str(runs), "--no-live",
         "--set", f"model={tiny_models['bert']}", "--set", f"data.name={tiny_data}"],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = load_sweep(path, [f"model={tiny_models['bert']}", f"data.name={tiny_data}"])
    assert isinstance(grid, Grid) and len(grid.jobs) == 2
    for job in grid.jobs:  # the grid's own job directories, each finished (1 tiny epoch may be `collapsed`)
        result = json.loads((runs / "wgrid" / job.id / "result.json").read_text())
        assert result["status"] in FINISHED and result["config"]["lr"] == job.config.lr
