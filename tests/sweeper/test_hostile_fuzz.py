"""Property tests (Hypothesis): hostile job, grid, search-space and W&B files and `--set` values,
generated from valid files by replacing, adding or removing one key, or by damaging the bytes.

For every input: exit 0 or 2, no traceback, done within HANG_S, and, when refused, a message that
names the file (or the option) and the key that was changed. Dry runs (`sweep run`'s job is
stubbed), a model directory of a config.json and a vocabulary: nothing is trained or downloaded.

The example budget is fixed and the examples derandomized (the same inputs on every run, so CI
is reproducible); `HYPOTHESIS_PROFILE=deep` draws ten times as many, at random.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from sweeper.cli import app
from trainer.config import ALL_KEYS

settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=2000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HANG_S = 60  # far above any input's time (a fraction of a second); only a hang reaches it

HOSTILE_STRINGS = ["[/x]", "[bold red]", "[/]", ":smile:", "../escaped", "a/b", "/", ".", "..", "x" * 300, "ok\n",
                   "\x00", "\t", "é", "given", "cls", "bert", "tpe", "grid", "hyperband", "2024-01-01", ".nan", "-1",
                   "1e999", "", " ", "null", "~", "yes", "0x10", "=", "a=b", "{", "*x", "&a", "!!binary", "%"]
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**32, 2**32 - 1, 10**12, 300_000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-9, 1e308, -1e308, 5e-324]),
    st.text(max_size=20),
    st.sampled_from(HOSTILE_STRINGS),
)
KEY_NAMES = st.one_of(st.sampled_from(ALL_KEYS + ["name", "base", "axes", "seeds", "params", "parameters", "min",
                                                  "max", "values", "value", "q", "distribution", "method", "s"]),
                      st.text(min_size=1, max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEY_NAMES, inner, max_size=4),
                      max_leaves=8)


def invoke(args: list[str]) -> Result:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(result=CliRunner().invoke(app, args)), daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert "result" in box, f"sweep {' '.join(args)[:300]} still running after {HANG_S} s"
    return box["result"]


def check(result: Result, *, names: list[str]) -> None:
    """Exit 0 or 2, no traceback; refused with a message naming one of `names` (file, option, key)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback ({type(result.exception).__name__}): {result.exception}\n{result.output}")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error:" in result.output, result.output
        assert any(str(n) in result.output or repr(n) in result.output for n in names if str(n)), (
            f"none of {names} in:\n{result.output}")


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    (model / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return {"root": root, "model": str(model), "counter": itertools.count()}


def templates(model: str) -> dict[str, dict[str, Any]]:
    """One valid file of each kind (each exits 0 in a dry run; the job file reaches the data check)."""
    data = {"name": "./no-such-data"}
    return {
        "job": {"model": model, "data": dict(data), "epochs": 1, "lr": 1e-4, "seed": 1, "max_len": 64},
        "grid": {"name": "g", "description": "d", "base": {"model": model, "data": dict(data), "epochs": 1},
                 "axes": {"pooling": ["cls", "mean"], "data.limit": [10, 20]}, "seeds": [1, 2],
                 "include": [{"pooling": "mean", "data.limit": 30}], "exclude": [{"pooling": "mean", "data.limit": 10}]},
        "space": {"name": "s", "base": {"model": model, "data": dict(data)},
                  "params": {"lr": {"min": 1e-5, "max": 1e-3, "log": True}, "pooling": {"values": ["cls", "mean"]},
                             "epochs": {"min": 1, "max": 3}},
                  "metric": "val_acc", "target": 0.9, "seeds": [1, 2], "sampler": {"name": "tpe", "seed": 0},
                  "pruner": {"name": "median", "n_startup_trials": 1}},
        "wandb": {"name": "w", "method": "random", "metric": {"name": "eval/accuracy", "goal": "maximize"},
                  "parameters": {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
                                 "batch_size": {"values": [16, 32]}, "model_name": {"value": model},
                                 "warmup_ratio": {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.1},
                                 "num_train_epochs": {"distribution": "int_uniform", "min": 1, "max": 3}},
                  "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 3}, "run_cap": 3},
        "wandb_grid": {"name": "wg", "method": "grid",
                       "parameters": {"batch_size": {"distribution": "int_uniform", "min": 8, "max": 10},
                                      "warmup_ratio": {"distribution": "q_uniform", "min": 0.0, "max": 0.3, "q": 0.1},
                                      "model_name": {"value": model}, "seed": {"values": [1, 2]}}},
    }


def command(kind: str, path: Path, root: Path) -> list[str]:
    return {"job": ["run", str(path), "--out", str(root / "out")],
            "grid": ["grid", str(path), "--dry-run"],
            "space": ["optuna", "--space", str(path), "--dry-run"],
            "wandb": ["optuna", "--space", str(path), "--dry-run", "--set", "data.name=./no-such-data"],
            "wandb_grid": ["grid", str(path), "--dry-run", "--set", "data.name=./no-such-data"]}[kind]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path and list position in a template, the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


def run_file(where: dict[str, Any], kind: str, text: str | bytes) -> tuple[Result, Path]:
    path = where["root"] / f"{kind}-{next(where['counter'])}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return invoke(command(kind, path, where["root"])), path


@pytest.fixture(autouse=True)
def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """`sweep run` on a job that passes every check would train: never here."""
    import trainer.job

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fuzzed job reached training")

    monkeypatch.setattr(trainer.job, "execute", refuse)


KINDS = ["job", "grid", "space", "wandb", "wandb_grid"]


@given(kind=st.sampled_from(KINDS), pick=st.integers(min_value=0), action=st.sampled_from(["replace", "add", "remove"]),
       new_key=KEY_NAMES, value=VALUES)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
def test_one_key_changed_is_accepted_or_refused_naming_it(where: dict[str, Any], kind: str, pick: int, action: str,
                                                          new_key: str, value: Any) -> None:
    doc = copy.deepcopy(templates(where["model"])[kind])
    choices = paths(doc)
    key_path = choices[pick % len(choices)]
    parent: Any = doc
    for part in key_path[:-1]:
        parent = parent[part]
    if not key_path:
        doc, named = value, []
    elif action == "replace":
        parent[key_path[-1]] = value
        named = list(key_path)
    elif action == "remove":
        del parent[key_path[-1]]
        named = list(key_path[:-1]) + [key_path[-1]]
    else:  # add a key beside it (where the parent is a mapping)
        if isinstance(parent, dict):
            parent[new_key] = value
            named = [*key_path[:-1], new_key]
        else:
            parent.append(value)
            named = list(key_path[:-1])
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    result, path = run_file(where, kind, text)
    if kind == "job" and result.exit_code == 2 and "no such directory" in result.output and "data.name" in result.output:
        return  # valid: it reached the data check before any work (the data is deliberately not there)
    names = [str(n) for n in named if not isinstance(n, int)] + ([] if named else [str(path)])
    if kind in ("wandb", "wandb_grid"):
        names += ["--max-jobs", str(path)]  # a W&B file's size or summary line names the file
    if kind == "grid" or kind == "job":
        names += ["--max-jobs"]
    check(result, names=names or [str(path)])


DAMAGE = st.one_of(
    st.binary(min_size=1, max_size=8).map(lambda b: ("bytes", b)),
    st.sampled_from(["!!binary aGk=", "!!set {a}", "2024-01-01", "!!python/object:os.system x", "*x", "&a 1",
                     "!!timestamp 2001-12-14", "!foo bar", ".nan", "-.inf", "1e999", "9" * 200, "[" * 80, "{a: 1, a: 2}",
                     "'[/x]'", "\"\\0\"", "|\n  x"]).map(lambda t: ("value", t)),
    st.just(("duplicate", "")),
    st.just(("truncate", "")),
)


@given(kind=st.sampled_from(KINDS), at=st.integers(min_value=0), damage=DAMAGE)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
def test_damaged_files_are_refused_naming_the_file(where: dict[str, Any], kind: str, at: int,
                                                   damage: tuple[str, Any]) -> None:
    text = yaml.safe_dump(templates(where["model"])[kind], sort_keys=False)
    lines = text.splitlines(keepends=True)
    i = at % len(lines)
    how, what = damage
    data: str | bytes
    if how == "bytes":
        raw = text.encode()
        cut = at % len(raw)
        data = raw[:cut] + what + raw[cut:]
    elif how == "value":
        head, sep, _ = lines[i].partition(": ")
        lines[i] = f"{head}: {what}\n" if sep else lines[i]
        data = "".join(lines)
    elif how == "duplicate":
        data = "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])
    else:
        data = text[: at % len(text)]
    result, path = run_file(where, kind, data)
    if kind == "job" and result.exit_code == 2 and "no such directory" in result.output:
        return
    check(result, names=[str(path), "--max-jobs", "--set"])


SET_VALUES = st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE_STRINGS),
                       VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))


@given(key=st.one_of(st.sampled_from(ALL_KEYS), st.text(min_size=1, max_size=12)).filter(lambda k: "=" not in k),
       value=SET_VALUES, kind=st.sampled_from(["grid", "space"]))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
def test_set_values_are_accepted_or_refused_naming_the_key(where: dict[str, Any], key: str, value: str,
                                                           kind: str) -> None:
    path = where["root"] / f"set-{kind}.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(templates(where["model"])[kind], sort_keys=False))
    result = invoke([*command(kind, path, where["root"]), "--set", f"{key}={value}"])
    check(result, names=[key.split(".")[-1], "--set"])
