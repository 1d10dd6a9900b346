"""Every data shape of issue #14 through `sweep run`, a grid and a study; predict and export of
string-label and pair jobs; the preflight before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from tests.conftest import tiny_job as _tiny_job
from tests.shapes import SHAPE_KEYS, SHAPES, write_shape


def tiny_job(model: Path, data: Path, *, data_keys: dict | None = None, **keys: object) -> dict:
    job = _tiny_job(model, data, **keys)
    job["data"].update(data_keys or {})
    return job


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def job_file(tmp_path: Path, job: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shapes")
    return {shape: write_shape(root / shape, shape) for shape in SHAPES}


@pytest.fixture(scope="module")
def finished(tiny_models: dict, shapes: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished `sweep run` job per shape."""
    root = tmp_path_factory.mktemp("jobs")
    out = {}
    for shape, directory in shapes.items():
        job = tiny_job(tiny_models["bert"], directory, lr=3e-3, data_keys=SHAPE_KEYS[shape])
        code, stdout, stderr = cli("run", str(job_file(root, job, f"{shape}.yaml")), "--out", str(root / shape),
                                   "--no-progress", "--cache-dir", str(root / "cache"))
        assert code == 0, (shape, stdout, stderr)
        out[shape] = root / shape
    return out


def result(job_dir: Path) -> dict:
    return json.loads((job_dir / "result.json").read_text())


def test_every_shape_runs_and_its_result_says_what_data_it_used(finished: dict) -> None:
    for shape, job_dir in finished.items():
        r = result(job_dir)
        assert r["status"] in ("completed", "collapsed"), (shape, r.get("error"))
        assert r["data"]["rows"] == r["rows"] and sum(r["data"]["dropped"].values()) == 0
    assert result(finished["strings"])["data"]["label_names"] == ["neg", "pos"]
    assert result(finished["strings"])["test_acc"] > 0.8  # the sentiment words carry the label
    assert result(finished["dev"])["data"]["splits"] == {"train": "train", "val": "dev", "test": "test"}
    three = result(finished["three"])
    assert three["num_labels"] == 3 and three["data"]["label_names"] == ["0", "1", "2"]
    assert result(finished["pairs"])["data"]["text_pair"] == "text_b"
    unlabelled = result(finished["unlabelled_test"])["data"]
    assert unlabelled["splits"] == {"train": "train", "val": "train (10% carved, data seed 42)", "test": "validation"}
    spec = json.loads((finished["strings"] / "model" / "classifier.json").read_text())
    assert spec["labels"] == ["neg", "pos"]


def test_predict_prints_label_names_and_classifies_pairs(finished: dict, tmp_path: Path) -> None:
    code, out, err = cli("predict", str(finished["strings"]), "good great wonderful", "bad awful boring",
                         "--format", "jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"] and set(rows[0]["probs"]) == {"neg", "pos"}

    pairs = finished["pairs"]
    code, out, err = cli("predict", str(pairs), "good great fun", "--pair", "bad awful dull", "--format", "jsonl")
    assert code == 0, err
    (one,) = [json.loads(line) for line in out.splitlines()]
    assert one["text_pair"] == "bad awful dull" and set(one["probs"]) == {"0", "1"}
    file = tmp_path / "pairs.csv"
    file.write_text("text,text_b\ngood great fun,bad awful dull\nsuperb,wonderful\n")
    code, out, err = cli("predict", str(pairs), "--file", str(file), "--format", "jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["probs"] == pytest.approx(one["probs"], abs=1e-5) and rows[1]["text_pair"] == "wonderful"
    code, _, err = cli("predict", str(pairs), "good great fun")
    assert code == 2 and "trained on sentence pairs" in err and "--pair" in err
    code, _, err = cli("predict", str(finished["strings"]), "good", "--pair", "bad")
    assert code == 2 and "trained on single texts" in err
    code, _, err = cli("predict", str(pairs), "--file", str(file), "--pair-column", "nope")
    assert code == 2 and "no column 'nope'" in err and "--pair-column" in err


def test_the_export_of_a_pair_job_classifies_text_and_text_pair_with_a_pipeline(finished: dict, tmp_path: Path) -> None:
    from transformers import pipeline

    out = tmp_path / "export"
    code, _, err = cli("export", str(finished["pairs"]), str(out))
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert (config["text_column"], config["text_pair_column"]) == ("text", "text_b")
    card = (out / "README.md").read_text()
    assert "`text` and `text_b` (sentence pairs)" in card and '"text_pair"' in card
    classify = pipeline("text-classification", model=str(out), trust_remote_code=True)
    got = classify({"text": "good great fun", "text_pair": "bad awful dull"}, top_k=None)
    probs = {g["label"]: g["score"] for g in got}
    _, line, _ = cli("predict", str(finished["pairs"]), "good great fun", "--pair", "bad awful dull", "--format",
                     "jsonl")
    assert probs == pytest.approx(json.loads(line)["probs"], abs=1e-5)
    strings = tmp_path / "strings"
    assert cli("export", str(finished["strings"]), str(strings))[0] == 0
    assert json.loads((strings / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}


def test_analyze_of_a_pair_job_runs_the_model_on_the_pairs(finished: dict, tmp_path: Path) -> None:
    """The t-SNE vectors and the attention come from the pairs (the re-run agrees with the saved
    predictions), and the tables show both texts."""
    out = tmp_path / "analysis"
    code, _, err = cli("analyze", str(finished["pairs"]), "--out", str(out), "--top", "3")
    assert code == 0, err
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["tsne"]["saved_vs_rerun_agreement"] == 1.0 and summary["tsne"]["max_prob_diff"] < 1e-4
    md = (out / "analysis.md").read_text()
    assert "| Row | True | Predicted | Probabilities | text | text_b |" in md  # each text in its own column
    from sweeper.jobs import finished as finished_job
    from sweeper.texts import excerpt
    from trainer.data import load_rows

    merged, _ = load_rows(finished_job(finished["pairs"]).config.data)
    for row in summary["boundary"]:
        line = next(x for x in md.splitlines() if x.startswith(f"| {row} |") and "/" in x)
        assert line.endswith(f"| {excerpt(merged[row]['text'])} | {excerpt(merged[row]['text_b'])} |"), line
    assert "> **text:** " in md and "> **text_b:** " in md  # the attention row, both texts
    from reports.analyze import Example, load_side
    from trainer import inference

    side = load_side(finished_job(finished["pairs"]))
    model, tokenizer = inference.load(side.job.dir, attention="eager")
    tokens, weights = inference.last_layer_attention(model, tokenizer, "good fun", pair="bad dull", max_len=32)
    assert tokens.count("[SEP]") == 2 and weights.shape == (len(tokens), len(tokens))
    assert Example("a", "b").shown() == "a ‖ b"


def test_a_grid_and_a_study_over_given_splits_and_pairs(tiny_models: dict, shapes: dict, tmp_path: Path) -> None:
    from tests.sweeper.test_scheduler import trials

    base = tiny_job(tiny_models["bert"], shapes["dev"], lr=3e-3, epochs=1, data_keys={"split": "given"})
    grid = {"name": "shapes", "base": base, "axes": {"data.name": [str(shapes["dev"]), str(shapes["three"])]},
            "seeds": [1]}
    runs = tmp_path / "runs"
    code, out, err = cli("grid", str(job_file(tmp_path, grid, "g.yaml")), "--runs-dir", str(runs), "--no-live",
                         "--parallel", "2")
    assert code == 0, out + err
    by_job = trials(runs, "shapes")
    assert len(by_job) == 2 and all(t[0].user_attrs["status"] in ("completed", "collapsed") for t in by_job.values())
    sources = sorted(result(runs / "shapes" / job_id)["data"]["splits"]["val"] for job_id in by_job)
    assert sources == ["dev", "validation"]

    base = tiny_job(tiny_models["bert"], shapes["pairs"], epochs=1, data_keys=SHAPE_KEYS["pairs"])
    # seed 2: the per-trial streams (sweeper/study.py) draw the two values in two trials
    space = {"name": "pairs", "base": base, "params": {"lr": {"values": [1e-3, 3e-3]}},
             "sampler": {"name": "random", "seed": 2}, "pruner": "none"}
    code, out, err = cli("optuna", "--trials", "2", "--space", str(job_file(tmp_path, space, "s.yaml")),
                         "--runs-dir", str(runs), "--no-live", "--parallel", "2")
    assert code == 0, out + err
    job_dirs = [d for d in (runs / "pairs").iterdir() if (d / "result.json").exists()]
    assert len(job_dirs) == 2 and all(result(d)["data"]["text_pair"] == "text_b" for d in job_dirs)


# -- preflight -----------------------------------------------------------------------------


def test_run_refuses_an_unlabelled_test_split_before_the_model_loads(tiny_models: dict, shapes: dict,
                                                                     tmp_path: Path) -> None:
    job = tiny_job(tmp_path / "no-such-model", shapes["unlabelled_test"], data_keys={"split": "given"})
    code, _, err = cli("run", str(job_file(tmp_path, job)), "--out", str(tmp_path / "out"))
    text = " ".join(err.split())
    assert code == 2 and "2 problems before any job started" in text
    assert "model: " in text and "no such directory" in text
    assert "the test split 'test'" in text and "data.split_names: {test: validation}" in text
    assert not (tmp_path / "out").exists()


def test_grid_preflight_errors_for_a_run_and_warnings_for_a_dry_run(tiny_models: dict, shapes: dict,
                                                                    tmp_path: Path) -> None:
    no_tokenizer = tmp_path / "bare"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((tiny_models["bert"] / "config.json").read_text())
    grid = {"name": "pf", "base": tiny_job(tiny_models["bert"], shapes["strings"], data_keys={"text": "review",
                                                                                         "label": "sentiment"}),
            "axes": {"model": [str(tiny_models["bert"]), str(no_tokenizer), "owner/not-cached", str(tmp_path / "x")]}}
    path = job_file(tmp_path, grid, "pf.yaml")
    runs = tmp_path / "runs"
    code, _, err = cli("grid", str(path), "--runs-dir", str(runs), "--no-live")
    text = " ".join(err.split())
    assert code == 2 and "3 problems before any job started" in text, text
    assert "holds no tokenizer" in text and "not in the local Hugging Face cache" in text and "HF_HUB_OFFLINE=1" in text
    assert "no such directory" in text and str(path) in text
    assert not runs.exists()
    code, out, err = cli("grid", str(path), "--dry-run")  # missing things warn; a broken directory still errs
    assert code == 2 and "holds no tokenizer" in " ".join(err.split())
    grid["axes"]["model"] = [str(tiny_models["bert"]), "owner/not-cached", str(tmp_path / "x")]
    code, out, err = cli("grid", str(job_file(tmp_path, grid, "pf.yaml")), "--dry-run")
    assert code == 0 and err.count("warning:") == 2 and "3 jobs" in out


def test_preflight_finds_a_cached_hub_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from trainer.config import build_job
    from trainer.preflight import check

    repo = Path(constants.HF_HUB_CACHE) / "models--owner--cached"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    data = write_shape(tmp_path / "d", "strings")
    jobs = [build_job({"model": m, "data": {"name": str(data), "text": "review", "label": "sentiment"}})
            for m in ("owner/cached", "owner/cached", "owner/other")]
    assert [w.split(":")[1].strip() for w in check(jobs, strict=False)] == ["'owner/other'"]
    with pytest.raises(Exception, match="model: 'owner/other'"):
        check(jobs, strict=True)
    bad = build_job({"model": "owner/cached", "data": {"name": str(data), "text": "review"}})
    with pytest.raises(Exception, match=r"data.label: column 'label' is not in .*; its columns are review, sentiment"):
        check([bad], strict=False)


def test_optuna_preflight_checks_every_categorical_model_and_data_set(tiny_models: dict, shapes: dict,
                                                                     tmp_path: Path) -> None:
    from sweeper.search import load_space
    from trainer.preflight import space_configs

    space = {"name": "pf", "base": tiny_job(tiny_models["bert"], shapes["dev"], data_keys={"split": "given"}),
             "params": {"model": {"values": [str(tiny_models["bert"]), str(tmp_path / "gone")]},
                        "data.name": {"values": [str(shapes["dev"]), str(shapes["strings"])]},
                        "lr": {"min": 1e-4, "max": 1e-3}}}
    path = job_file(tmp_path, space, "space.yaml")
    configs = space_configs(load_space(path))
    assert len(configs) == 4 and {c.data.name for c in configs} == {str(shapes["dev"]), str(shapes["strings"])}
    code, _, err = cli("optuna", "--trials", "2", "--space", str(path), "--runs-dir", str(tmp_path / "r"), "--no-live")
    text = " ".join(err.split())
    assert code == 2 and "2 problems before any job started" in text
    assert "gone" in text and "data.text: column 'text' is not in" in text  # the strings set names its text 'review'
    assert not (tmp_path / "r").exists()


def test_preflight_refuses_malformed_hub_ids_even_for_a_dry_run() -> None:
    from trainer.config import ConfigError, build_job
    from trainer.preflight import check

    with pytest.raises(ConfigError) as info:
        check([build_job({"model": "owner/na me", "data": {"name": "bad name/x y"}})], strict=False, source="j.yaml")
    message = str(info.value)
    assert message.startswith("2 problems before any job started")
    assert "j.yaml: model: 'owner/na me': not a well-formed Hub id" in message
    assert "j.yaml: data.name: 'bad name/x y': not a well-formed Hub id" in message
