"""Issue 31's reproductions, one test per class: inputs that ended in a traceback, hung, were
accepted and did the wrong thing, or were refused with an unclear message. Each now exits 2
within a bound, with a message naming the file, the key and the value (or, where the input is
valid, is accepted and does what the README says). Dry runs and a model directory holding only a
config.json and a vocabulary: no torch, no network, nothing trained."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from sweeper.cli import app

# Far above what any of these takes (well under a second each); only a hang reaches it.
HANG_S = 60


def invoke(args: list[str], limit: float = HANG_S) -> Result:
    """`sweep ARGS` in-process; fails (instead of hanging the suite) if it takes longer than `limit`."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(result=CliRunner().invoke(app, args)), daemon=True)
    thread.start()
    thread.join(limit)
    assert "result" in box, f"sweep {' '.join(args)[:200]} still running after {limit} s"
    return box["result"]


def refused(result: Result, *fragments: str) -> str:
    """Exit 2, no traceback, and every fragment in the message."""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"traceback: {result.exception!r}\n{result.output}")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in:\n{result.output}"
    return result.output


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A local model directory as preflight reads it: config.json (512 positions) and a tokenizer file."""
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    (directory / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return directory


def base(model: Path) -> str:
    """A grid/space `base` whose model is local and whose data is a path that is not there (a dry-run warning)."""
    return f"{{model: '{model}', data: {{name: ./no-such-data}}}}"


def write(tmp_path: Path, text: str | bytes, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# -- tracebacks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "data", "fragment"), [
    ("run", b"model: bert\ndescription: caf\xe9\n", "line 2: byte 28 (0xe9) is not UTF-8"),
    ("run", "model: bert\n".encode("utf-16"), "byte 0 (0xff) is not UTF-8"),
    ("grid", b"name: g\x00\xff\xfe\n", "is not UTF-8"),
    ("optuna", b"name: s\ndescription: caf\xe9\n", "byte 24 (0xe9) is not UTF-8"),
])
def test_bytes_that_are_not_utf8_are_refused_with_their_offset(tmp_path: Path, command: str, data: bytes,
                                                              fragment: str) -> None:
    path = write(tmp_path, data)
    args = {"run": ["run", str(path), "--out", str(tmp_path / "out")], "grid": ["grid", str(path), "--dry-run"],
            "optuna": ["optuna", "--space", str(path), "--dry-run"]}[command]
    refused(invoke(args), str(path), fragment)


def test_markup_in_values_keys_and_paths_is_printed_as_written(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"model: '{model}'\npooling: '[/x]'\n")
    refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]), "pooling: '[/x]' is not allowed")
    path = write(tmp_path, f"model: '{model}'\n'[/bold]': 1\n")
    refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]), "[/bold]: unknown key")
    odd = write(tmp_path, "name: [/x]\n", name="a[/b]/f.yaml")
    refused(invoke(["grid", str(odd), "--dry-run"]), str(odd), "name: ['/x'] is not allowed")
    split = write(tmp_path, f"model: '{model}'\ndata: {{split: [0.5, 0.5]}}\n")
    refused(invoke(["run", str(split), "--out", str(tmp_path / "o")]),
            "data.split: [0.5, 0.5] is not three fractions [train, val, test] or 'given'")


@pytest.mark.parametrize(("text", "fragments"), [
    ("method: [grid]\nparameters: {lr: {min: 1.0e-5, max: 1.0e-3}}\n", ["method: ['grid'] is not allowed"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\nsampler: [tpe]\n", ["sampler: ['tpe'] is not allowed"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\npruner: {name: {a: 1}}\n",
     ["pruner: {'a': 1} is not allowed"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\nseeds: [[1]]\n", ["seeds: [[1]] is not allowed"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\nsampler: {name: tpe, seed: -1}\n",
     ["sampler.seed: -1 is not allowed; expected an integer 0 <= seed < 2**32"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\nsampler: {name: random, seed: 1099511627776}\n",
     ["sampler.seed: 1099511627776 is not allowed"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\npruner: {name: median, n_startup_trials: -1}\n",
     ["pruner.n_startup_trials: -1 is not allowed; expected an integer >= 0"]),
    ("name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\npruner: {name: median, interval_steps: 0}\n",
     ["pruner.interval_steps: 0 is not allowed; expected an integer >= 1"]),
    ("method: random\nparameters: {lr: {distribution: log_uniform, min: -1000, max: 1000}}\n",
     ["parameters.lr: log_uniform bounds are natural logs", "min -1000, max 1000"]),
])
def test_unhashable_values_and_optuna_arguments_are_refused_with_key_and_value(tmp_path: Path, model: Path, text: str,
                                                                                fragments: list[str]) -> None:
    path = write(tmp_path, text.replace("BASE", base(model)))
    refused(invoke(["optuna", "--space", str(path), "--dry-run"]), str(path), *fragments)


def test_devices_dates_binaries_sets_and_wrong_kinds_are_refused(tmp_path: Path, model: Path) -> None:
    refused(invoke(["run", "/dev/zero", "--out", str(tmp_path / "o")]), "/dev/zero: is a device; expected a regular file")
    refused(invoke(["grid", str(tmp_path), "--dry-run"]), f"{tmp_path}: is a directory")
    big = write(tmp_path, "name: g\ndescription: " + "x" * 70_000 + "\n", name="big.yaml")
    refused(invoke(["grid", str(big), "--dry-run"]), "70,022 bytes is too large", "at most 65,536 bytes")
    many = write(tmp_path, "method: random\nparameters: {batch_size: {values: [" + ",".join(["1"] * 5000) + "]}}\n")
    refused(invoke(["optuna", "--space", str(many), "--dry-run"]), "parameters.batch_size.values: 5,000 values is too many")
    out = str(tmp_path / "o")
    path = write(tmp_path, "description: 2024-01-01\nlr: !!binary aGk=\npooling: !!set {cls}\n"
                           "model: !!python/object:os.system x\n")
    refused(invoke(["run", str(path), "--out", out]), "4 problems", "line 1: description: a date",
            "line 2: lr: !!binary is not plain data", "line 3: pooling: !!set", "line 4: model: the tag !!python/object")
    for data in ("5", "[1, 2]", "null"):
        path = write(tmp_path, f"model: '{model}'\ndata: {data}\n")
        refused(invoke(["run", str(path), "--out", out, "--set", "data.limit=10"]), "--set data.limit: data is",
                "not a mapping of data keys")
    grid = write(tmp_path, f"name: g\nbase: {{model: '{model}', data: 5}}\n")
    refused(invoke(["grid", str(grid), "--dry-run"]), "line 2: base.data: 5 (int) is not allowed; expected a mapping")


def test_long_names_and_paths_are_refused_before_any_work(tmp_path: Path, model: Path) -> None:
    out = str(tmp_path / "o")
    path = write(tmp_path, f"model: '{'m' * 300}'\n")
    refused(invoke(["run", str(path), "--out", out]), "model: 'mmmm", "(302 characters)")
    path = write(tmp_path, f"model: '{model}'\ndata: {{name: './{'d' * 300}'}}\n")
    assert invoke(["run", str(path), "--out", out]).exit_code == 2
    grid = write(tmp_path, f"name: {'g' * 300}\nbase: {base(model)}\n")
    refused(invoke(["grid", str(grid), "--dry-run"]), "name: 'gggg", "expected a name of 1 to 100")
    a_file = write(tmp_path, "x", name="a_file")
    job = write(tmp_path, f"model: '{model}'\n", name="job.yaml")
    refused(invoke(["run", str(job), "--out", str(a_file)]), "--out:", "is a file, not a directory")
    refused(invoke(["run", str(job), "--out", str(tmp_path / ("x" * 300))]), "--out:", "is too long")
    refused(invoke(["run", str(job), "--out", out, "--cache-dir", str(a_file / "c")]), "--cache-dir:",
            "is under", "which is a file")
    grid = write(tmp_path, f"name: g\nbase: {base(model)}\n", name="g.yaml")
    refused(invoke(["grid", str(grid), "--runs-dir", str(a_file)]), "--runs-dir:", "is a file")
    refused(invoke(["optuna", "--space", str(grid), "--runs-dir", "r" * 5000, "--dry-run"]), "--runs-dir:", "too long")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_runs_dir_that_is_not_writable_is_refused(tmp_path: Path, model: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    grid = write(tmp_path, f"name: g\nbase: {base(model)}\n")
    refused(invoke(["grid", str(grid), "--runs-dir", str(locked / "runs")]), "--runs-dir:", "is not writable")


def test_a_negative_seed_is_refused_before_the_job(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"model: '{model}'\nseed: -1\n")
    refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]),
            "seed: -1 is out of range; expected an integer 0 <= seed < 2**32")


# -- hangs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("parameters", "fragment"), [
    ("batch_size: {distribution: int_uniform, min: 1, max: 300000}", "the grid has 300,000 jobs"),
    ("batch_size: {distribution: int_uniform, min: 1, max: 1000000000000}", "the grid has 1,000,000,000,000 jobs"),
    ("dropout: {distribution: q_uniform, min: 0, max: 0.5, q: 1.0e-9}", "the grid has 500,000,000 jobs"),
])
def test_a_huge_wandb_grid_is_refused_by_its_size_before_it_is_listed(tmp_path: Path, parameters: str,
                                                                      fragment: str) -> None:
    path = write(tmp_path, f"method: grid\nrun_cap: 5\nparameters:\n  {parameters}\n")
    refused(invoke(["grid", str(path), "--dry-run"], limit=20), fragment, "--max-jobs 10,000")


def test_early_terminate_exponents_and_fifos_do_not_hang(tmp_path: Path) -> None:
    path = write(tmp_path, "method: bayes\nearly_terminate: {type: hyperband, max_iter: 27, s: 1000000000}\n"
                           "parameters: {lr: {min: 1.0e-5, max: 1.0e-3}}\n")
    refused(invoke(["optuna", "--space", str(path), "--dry-run"], limit=20),
            "early_terminate.s: 1000000000 is not allowed; expected an integer 1 <= s <= 64")
    fifo = tmp_path / "grid.yaml"
    os.mkfifo(fifo)
    refused(invoke(["grid", str(fifo), "--dry-run"], limit=20), f"{fifo}: is a FIFO; expected a regular file")


# -- accepted, and wrong ------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "text", "fragment"), [
    ("run", "model: MODEL\nweight_decay: .nan\n", "line 2: weight_decay: .nan is not a finite number"),
    ("run", "model: MODEL\nlr: .inf\n", "line 2: lr: .inf is not a finite number"),
    ("run", "model: MODEL\nlr: 1e999\n", "line 2: lr: 1e999 is not a finite number"),
    ("optuna", "name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: .inf}}\n", "params.lr.max: .inf is not a finite"),
    ("optuna", "name: s\nbase: BASE\nparams: {lr: {min: 1.0e-5, max: 1.0e-3}}\ntarget: .nan\n", "target: .nan is not a"),
    ("optuna", "method: grid\nparameters: {dropout: {distribution: q_uniform, min: 0, max: 0.5, q: .inf}}\n",
     "parameters.dropout.q: .inf is not a finite number"),
    ("grid", "name: g\nbase: BASE\nseeds: [-1, 4294967296]\n", "seeds: -1 is out of range"),
    ("grid", "name: g\nbase: BASE\nseeds: [1, 4294967296]\n", "seeds: 4294967296 is out of range"),
])
def test_nan_infinity_and_seeds_out_of_range_are_refused(tmp_path: Path, model: Path, command: str, text: str,
                                                         fragment: str) -> None:
    path = write(tmp_path, text.replace("MODEL", f"'{model}'").replace("BASE", base(model)))
    args = {"run": ["run", str(path), "--out", str(tmp_path / "o")], "grid": ["grid", str(path), "--dry-run"],
            "optuna": ["optuna", "--space", str(path), "--dry-run"]}[command]
    refused(invoke(args), str(path), fragment)


def test_names_are_matched_whole_and_never_a_path(tmp_path: Path, model: Path) -> None:
    space = write(tmp_path, f"name: s\nbase: {base(model)}\nparams: {{lr: {{min: 1.0e-5, max: 1.0e-3}}}}\n")
    for study in ("../escaped", "a/b", "x" * 101, "ok\n", "a..b"):
        refused(invoke(["optuna", "--space", str(space), "--study", study, "--dry-run"]), "--study:", "is not allowed")
    for name in ('"g\\n"', "g" * 60_000, "../up"):
        grid = write(tmp_path, f"name: {name}\nbase: {base(model)}\n")
        refused(invoke(["grid", str(grid), "--dry-run"]), "line 1: name:", "is not allowed")
    grid = write(tmp_path, f"name: {'g' * 100_000}\nbase: {base(model)}\n")  # larger than a sweep file may be
    refused(invoke(["grid", str(grid), "--dry-run"]), "bytes is too large")
    wandb = write(tmp_path, f"name: '{'w' * 500}'\nmethod: random\nparameters: {{lr: {{min: 1.0e-5, max: 1.0e-3}}}}\n")
    result = invoke(["optuna", "--space", str(wandb), "--dry-run"])
    assert result.exit_code == 0 and f"study {'w' * 100} " in result.output


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"name: g\nbase: {base(model)}\naxes: {{pooling: [cls, mean]}}\naxes: {{dropout: [0.1]}}\n"
                           "name: h\n")
    refused(invoke(["grid", str(path), "--dry-run"]), "2 problems", "line 4: axes: duplicate key (first at line 3, again "
            "at line 4)", "line 5: name: duplicate key (first at line 1")
    job = write(tmp_path, f"model: '{model}'\ndata: {{name: x, name: y}}\n")
    refused(invoke(["run", str(job), "--out", str(tmp_path / "o")]), "line 2: data.name: duplicate key")


@pytest.mark.parametrize("section", ["axes: []", "axes: 0", "axes: false", "axes:", "base: 0", "include: 0", "exclude: {}"])
def test_empty_or_mistyped_sections_are_refused(tmp_path: Path, model: Path, section: str) -> None:
    text = f"name: g\nbase: {base(model)}\n{section}\n"
    if section.startswith("base"):
        text = f"name: g\n{section}\n"
    path = write(tmp_path, text)
    key = section.split(":")[0]
    refused(invoke(["grid", str(path), "--dry-run"]), f"{key}:", "is not allowed")


def test_exclude_entries_that_match_nothing_are_said(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"name: g\nbase: {base(model)}\naxes: {{pooling: [cls, mean]}}\n"
                           "exclude: [{pooling: maen}, {lr: 0.1}, {seed: 1}, {pooling: mean}]\n")
    result = invoke(["grid", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    for fragment in ("exclude[0]: {'pooling': 'maen'} matches no point", "pooling: 'maen' is not one of the axis' values",
                     "exclude[1]: {'lr': 0.1} matches no point", "lr is not an axis or an include key",
                     "exclude[2]: {'seed': 1} matches no point"):
        assert fragment in result.output, result.output
    assert "exclude[3]" not in result.output and "g: 1 jobs" in result.output


def test_max_len_above_a_local_models_positions_is_refused_in_a_dry_run(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"name: g\nbase: {{model: '{model}', data: {{name: ./nd}}, max_len: 1024}}\n")
    refused(invoke(["grid", str(path), "--dry-run"]),
            "max_len: 1024 is out of range; expected 8 <= max_len <= 512", "max_position_embeddings 512")
    ok = write(tmp_path, f"name: g\nbase: {{model: '{model}', data: {{name: ./nd}}, max_len: 512}}\n")
    assert invoke(["grid", str(ok), "--dry-run"]).exit_code == 0


def test_unchecked_optuna_arguments_are_refused(tmp_path: Path, model: Path) -> None:
    head = f"name: s\nbase: {base(model)}\nparams: {{lr: {{min: 1.0e-5, max: 1.0e-3}}}}\n"
    path = write(tmp_path, head + "sampler: {name: tpe, gamma: 5}\n")
    refused(invoke(["optuna", "--space", str(path), "--dry-run"]), "sampler.gamma: not an argument sweep passes to "
            "TPESampler")
    path = write(tmp_path, head + "pruner: {name: hyperband, reduction_factor: 1}\n")
    refused(invoke(["optuna", "--space", str(path), "--dry-run"]), "pruner.reduction_factor: 1 is not allowed; expected "
            "an integer >= 2")
    path = write(tmp_path, head + "pruner: {name: none, a: 1}\n")
    refused(invoke(["optuna", "--space", str(path), "--dry-run"]), "pruner.a: not an argument", "its arguments: none")


def test_a_grid_given_to_optuna_runs_as_a_grid_and_says_so(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"name: g\nbase: {base(model)}\naxes: {{pooling: [cls, mean]}}\n")
    refused(invoke(["optuna", "--space", str(path), "--trials", "3", "--dry-run"]),
            "--trials:", "is a grid (every point runs once, no sampler)")
    result = invoke(["optuna", "--space", str(path), "--dry-run"])
    assert result.exit_code == 0 and "is a grid, not a search space: each of its 2 jobs runs once" in result.output


# -- unclear ------------------------------------------------------------------------------------------

def test_messages_keep_bracketed_text_and_name_the_key(tmp_path: Path, model: Path) -> None:
    grid = write(tmp_path, f"name: g\nbase: {base(model)}\nseeds: [.nan]\n")
    refused(invoke(["grid", str(grid), "--dry-run"]), "line 3: seeds.0: .nan is not a finite number")
    space = write(tmp_path, f"name: s\nbase: {base(model)}\nsampler: tpe\n")
    refused(invoke(["optuna", "--space", str(space), "--dry-run"]), "params: expected a mapping")
    described = write(tmp_path, f"name: g\ndescription: '[/oops] [red]x'\nbase: {base(model)}\n"
                                "axes: {data.text: ['[/x]', 'b']}\n")
    result = invoke(["grid", str(described), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "[/oops] [red]x" in result.output and "[/x]" in result.output


def test_every_problem_of_a_job_file_in_one_message(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"model: '{model}'\nlr: -1\nmicro_batch_size: 32\nbatch_size: 0\nepochs: 0\n")
    refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]), f"{path}: 3 problems",
            "line 2: lr: -1 is out of range", "line 4: batch_size: 0 is out of range", "line 5: epochs: 0 is out of range")
    path = write(tmp_path, f"model: '{model}'\nmicro_batch_size: 32\nbatch_size: 64\nlr: 0\n")  # order does not matter
    output = refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]), "lr: 0 is out of range")
    assert "micro_batch_size" not in output


def test_every_problem_of_a_grid_file_in_one_message(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"name: g\nbase: {{model: '{model}', data: {{name: ./nd}}, lr: -1}}\naxes:\n"
                           "  dropout: [0.1, 1.5]\n  batch_size: [0, 16]\nseeds: [1, 2]\n")
    refused(invoke(["grid", str(path), "--dry-run"]), f"{path}: 3 problems", "line 2: base.lr: -1 is out of range",
            "line 4: axes.dropout: 1.5 is out of range", "line 5: axes.batch_size: 0 is out of range")
    # a rule between two axes is judged on the product, not on each value alone
    path = write(tmp_path, f"name: g\nbase: {base(model)}\naxes: {{micro_batch_size: [32], batch_size: [64, 128]}}\n")
    assert invoke(["grid", str(path), "--dry-run"]).exit_code == 0


def test_every_problem_of_a_search_space_in_one_message(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"name: s\nbase: {{model: '{model}', data: {{name: ./nd}}, lr: -1}}\nparams:\n"
                           "  dropout: {min: 0, max: 2}\n  pooling: {values: [cls, x]}\nmetric: acc\n"
                           "sampler: {name: tpe, seed: -1}\npruner: {name: median, interval_steps: 0}\n")
    refused(invoke(["optuna", "--space", str(path), "--dry-run"]), f"{path}: 6 problems", "line 2: base.lr: -1",
            "line 4: params.dropout: 2 is out of range", "line 5: params.pooling: 'x' is not allowed",
            "line 6: metric: 'acc' is not allowed", "line 7: sampler.seed: -1", "line 8: pruner.interval_steps: 0")


# -- issue 27: every problem at once, in every kind of file ------------------------------------------


@pytest.mark.parametrize("kind", ["grid", "space", "wandb"])
def test_lr_batch_size_and_epochs_wrong_at_once_give_three_problems_and_run_nothing(tmp_path: Path, model: Path,
                                                                                    kind: str) -> None:
    runs = tmp_path / "runs"
    if kind == "wandb":
        path = write(tmp_path, f"method: random\nparameters:\n  model: {{value: '{model}'}}\n  lr: {{value: -1}}\n"
                               "  batch_size: {value: 0}\n  epochs: {value: 0}\n  dropout: {min: 0.0, max: 0.3}\n")
        lines = ("line 4: parameters.lr: lr -1 is out of range", "line 5: parameters.batch_size: batch_size 0 is out",
                 "line 6: parameters.epochs: epochs 0 is out of range")
    else:
        searched = "axes: {dropout: [0.1]}" if kind == "grid" else "params: {dropout: {min: 0.0, max: 0.3}}"
        path = write(tmp_path, f"name: g\nbase:\n  model: '{model}'\n  lr: -1\n  batch_size: 0\n  epochs: 0\n{searched}\n")
        lines = ("line 4: base.lr: -1 is out of range; expected lr > 0", "line 5: base.batch_size: 0 is out of range",
                 "line 6: base.epochs: 0 is out of range; expected epochs >= 1")
    command = ["grid", str(path)] if kind == "grid" else ["optuna", "--space", str(path), "--trials", "1"]
    refused(invoke([*command, "--runs-dir", str(runs)]), "3 problems", *lines)
    assert not runs.exists()  # nothing run, nothing written


def test_duplicate_keys_are_refused_in_space_wandb_and_json_files(tmp_path: Path, model: Path) -> None:
    space = write(tmp_path, f"name: s\nbase: {base(model)}\nparams:\n  lr: {{min: 1.0e-5, max: 1.0e-4}}\n"
                            "  lr: {min: 2.0e-5, max: 1.0e-4}\n", name="space.yaml")
    refused(invoke(["optuna", "--space", str(space), "--dry-run"]), "line 5: params.lr: duplicate key (first at line 4, "
            "again at line 5)")
    wandb = write(tmp_path, "method: random\nparameters:\n  lr:\n    min: 1.0e-5\n    max: 1.0e-4\n    max: 1.0e-3\n",
                  name="wandb.yaml")
    refused(invoke(["optuna", "--space", str(wandb), "--dry-run"]), "line 6: parameters.lr.max: duplicate key (first "
            "at line 5, again at line 6)")
    job = write(tmp_path, f'{{"model": "{model}",\n "lr": 1e-5,\n "lr": 2e-5}}\n', name="job.json")
    refused(invoke(["run", str(job), "--out", str(tmp_path / "o")]), "line 3: lr: duplicate key (first at line 2, "
            "again at line 3)")


def test_unknown_top_level_keys_of_a_wandb_file_are_warned_about_and_ignored(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"method: random\ngroup: ablations\nrun_cap: 2\nparameters:\n  model: {{value: '{model}'}}\n"
                           "  learning_rate: {min: 1.0e-5, max: 1.0e-4}\n")
    result = invoke(["optuna", "--space", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "line 2: group: not a W&B sweep key, ignored (as W&B does)" in result.output
    assert "study f (W&B sweep file" in result.output and "lr: log-uniform" not in result.output
    bad = write(tmp_path, "method: random\nparameter:\n  lr: {min: 1.0e-5, max: 1.0e-4}\n", name="bad.yaml")
    refused(invoke(["optuna", "--space", str(bad), "--dry-run"]), "1 problem", "parameters: expected a mapping",
            "line 2: parameter: not a W&B sweep key, ignored (as W&B does); did you mean 'parameters'?")


def test_the_dry_run_shows_the_trials_that_will_run(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"method: random\nrun_cap: 10\nparameters:\n  model: {{value: '{model}'}}\n"
                           "  lr: {min: 1.0e-5, max: 1.0e-4}\n")
    result = invoke(["optuna", "--space", str(path), "--trials", "3", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "trials: 3 (--trials); the file's run_cap 10 is not used" in result.output
    assert "trials: 10" not in result.output
    assert "trials: 10 (run_cap; --trials overrides)" in invoke(["optuna", "--space", str(path), "--dry-run"]).output


def test_max_len_out_of_range_gives_the_numbers(tmp_path: Path, model: Path) -> None:
    path = write(tmp_path, f"model: '{model}'\nmax_len: 100000\n")
    refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]),
            "line 2: max_len: 100000 is out of range; expected 8 <= max_len <= 512, the model's maximum")
    path = write(tmp_path, f"model: '{model}'\nmax_len: 1024\n")  # within 8192, beyond the model's 512 positions
    refused(invoke(["run", str(path), "--out", str(tmp_path / "o")]), "max_len: 1024 is out of range", "512")
