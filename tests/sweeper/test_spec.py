from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.spec import load_grid
from trainer.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return path


def test_product_seeds_include_exclude_and_dotted_keys(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path, """
name: t
base: {model: bert, epochs: 2, data: {limit: 100}}
axes:
  pooling: [cls, mean]
  data.eval_limit: [10, 20]
seeds: [1, 2]
include:
  - {pooling: pooler, data.eval_limit: 30}
exclude:
  - {pooling: mean, data.eval_limit: 20}
"""))
    points = [(j.point["pooling"], j.point["data.eval_limit"], j.point["seed"]) for j in grid.jobs]
    assert points == [("cls", 10, 1), ("cls", 10, 2), ("cls", 20, 1), ("cls", 20, 2), ("mean", 10, 1),
                      ("mean", 10, 2), ("pooler", 30, 1), ("pooler", 30, 2)]
    job = grid.jobs[0]
    assert (job.config.data.eval_limit, job.config.data.limit, job.config.epochs, job.config.seed) == (10, 100, 2, 1)
    assert grid.varied == ["pooling", "data.eval_limit", "seed"]


def test_job_ids_are_stable_and_unique(tmp_path: Path) -> None:
    text = "name: t\naxes: {lr: [1.0e-5, 2.0e-5]}\nseeds: [1, 2]\n"
    a, b = load_grid(write(tmp_path, text)), load_grid(write(tmp_path, text))
    assert [j.id for j in a.jobs] == [j.id for j in b.jobs]
    assert len({j.id for j in a.jobs}) == 4
    # the id is the resolved configuration's: the same job from another grid has the same id
    same = load_grid(write(tmp_path, "name: other\nbase: {lr: 1.0e-5}\nseeds: [1]\n"))
    assert same.jobs[0].id == a.jobs[0].id


def test_set_overrides_base_keys(tmp_path: Path) -> None:
    grid = load_grid(write(tmp_path, "name: t\nbase: {model: bert}\naxes: {dropout: [0.1, 0.3]}\n"),
                     ["model=roberta", "data.limit=50"])
    assert {j.config.model for j in grid.jobs} == {"roberta"} and grid.jobs[0].config.data.limit == 50


BAD = [
    ("name: t\naxes: {pooling: [cls, mean}\n", r"g.yaml: line 2: not valid YAML"),
    ("name: t\nbase: {lr: 1.0e-5}\naxis: {pooling: [cls]}\n", r"g.yaml: line 3: axis: unknown key; did you mean 'axes'"),
    ("name: t\nbase:\n  learning_rate: 1.0e-5\n", r"g.yaml: line 3: base.learning_rate: unknown key; did you mean 'lr'"),
    ("name: t\naxes:\n  pooling: []\n", r"g.yaml: line 3: axes.pooling: \[\] is not a non-empty list"),
    ("name: t\naxes:\n  pooling: cls\n", r"g.yaml: line 3: axes.pooling: 'cls' is not a non-empty list"),
    ("name: t\naxes:\n  dropuot: [0.1]\n", r"g.yaml: line 3: axes.dropuot: unknown key; did you mean 'dropout'"),
    ("name: t\naxes:\n  dropout: [0.1,\n            1.5]\n",
     r"g.yaml: line 4: axes.dropout: 1.5 is out of range; expected 0 <= dropout < 1"),
    ("name: t\naxes:\n  batch_size: [16, '32']\n", r"g.yaml: line 3: axes.batch_size: '32' \(str\) is not an integer"),
    ("name: t\nbase:\n  data:\n    split: [0.5, 0.5, 0.5]\n", r"g.yaml: line 4: base.data.split: .* summing to 1"),
    ("name: t\nbase: {model: bret}\n", r"g.yaml: line 2: base.model: 'bret' is not an alias"),
    ("name: t\naxes:\n  pooling: [cls, cls]\n", r"g.yaml: line 3: axes.pooling\[1\]: duplicate point"),
    ("name: t\naxes: {pooling: [cls]}\ninclude:\n  - {pooling: cls}\n", r"g.yaml: line 4: include.0: duplicate point"),
    ("name: t\nseeds: [1, 1]\n", r"g.yaml: line 2: seeds: \[1, 1\] lists a seed twice"),
    ("name: t\nseeds: [one]\n", r"g.yaml: line 2: seeds: \['one'\] is not a non-empty list of integers"),
    ("name: 'a b'\n", r"g.yaml: line 1: name: 'a b' is not allowed"),
    ("name: t\naxes: {pooling: [cls]}\nexclude:\n  - {pooling: cls}\n", r"exclude: drops every point"),
    ("- 1\n- 2\n", r"g.yaml: expected a mapping"),
]


@pytest.mark.parametrize(("text", "pattern"), BAD)
def test_bad_grids_are_refused_naming_file_line_key_and_reason(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern):
        load_grid(path)
    result = CliRunner().invoke(app, ["grid", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "runs").exists()  # refused before any job started


GRIDS = sorted(p for p in (REPO / "grids").glob("*.yaml") if p.name != "optuna.yaml")  # optuna.yaml: a search space


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_every_shipped_grid_validates_and_dry_runs(path: Path) -> None:
    grid = load_grid(path)
    assert grid.jobs and grid.name == path.stem
    result = CliRunner().invoke(app, ["grid", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert all(job.id in result.output for job in grid.jobs)


def test_shipped_grids_reproduce_what_the_users_compared() -> None:
    def grid(name: str):  # type: ignore[no-untyped-def]
        return load_grid(REPO / "grids" / f"{name}.yaml")

    models = {"bert", "modernbert", "roberta"}
    assert {j.config.model for j in grid("models").jobs} == models
    assert {j.config.batch_size for j in grid("batch_size").jobs} == {16, 32, 64}
    assert {j.config.pooling for j in grid("pooling").jobs} == {"cls", "mean"}
    assert {j.config.dropout for j in grid("dropout").jobs} == {0.1, 0.3}
    assert {j.config.max_len for j in grid("max_len").jobs} == {128, 256, 512}
    assert {(j.config.weight_decay, j.config.clip) for j in grid("regularization").jobs} == {
        (0.0, 0.0), (0.01, 0.0), (0.0, 1.0), (0.01, 1.0)}
    for name in ("batch_size", "pooling", "dropout", "max_len", "regularization"):
        assert {j.config.model for j in grid(name).jobs} == models, name
    assert all(len({j.config.seed for j in grid(n).jobs}) >= 3 for n in ("models", "pooling"))
