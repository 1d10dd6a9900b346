"""`sweep predict`, `sweep export` and `sweep analyze` on tiny finished jobs."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from tests.conftest import REPO, review, tiny_job
from trainer.config import build_job
from trainer.loop import run_job

TEXTS = ["good great wonderful film", "bad awful boring plot", "the movie was and", "superb",
         "terrible dull weak tedious script with a director of the story"]


def write_labelled_dataset(directory: Path, n_train: int = 160, n_test: int = 80) -> Path:
    """Parquet files whose label column is a ClassLabel (neg/pos), as IMDB's on the Hub; one
    review in five carries the other class's words, so a model must make some errors."""
    import datasets

    rng = random.Random(3)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    directory.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        ys = [rng.randrange(2) for _ in range(n)]
        cues = [1 - y if rng.random() < 0.2 else y for y in ys]
        rows = {"text": [review(rng, c, rng.randrange(4, 30)) for c in cues], "label": ys}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(directory / f"{name}.parquet"))
    return directory


@pytest.fixture(scope="module")
def sweep_runs(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-job grid (tiny BERT and RoBERTa on the same labelled data)."""
    root = tmp_path_factory.mktemp("use")
    data = write_labelled_dataset(root / "data")
    grid = {"name": "g", "base": {"max_len": 32, "batch_size": 16, "lr": 3e-3, "epochs": 2, "pooling": "mean",
                                  "data": {"name": str(data)}},
            "axes": {"model": [str(tiny_models["bert"]), str(tiny_models["roberta"])]}, "seeds": [1]}
    (root / "g.yaml").write_text(yaml.safe_dump(grid))
    runs = root / "runs"
    result = CliRunner().invoke(app, ["grid", str(root / "g.yaml"), "--runs-dir", str(runs), "--parallel", "2",
                                      "--no-live", "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    return runs


def job_dirs(runs: Path) -> list[Path]:
    """The grid's job directories, BERT's first."""
    dirs = [d for d in (runs / "g").iterdir() if (d / "result.json").exists()]
    return sorted(dirs, key=lambda d: "roberta" in json.loads((d / "config.json").read_text())["model"])


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def direct_probs(job_dir: Path, texts: list[str]) -> np.ndarray:
    """One text at a time (no batching, no padding), through the training code's loader."""
    import torch

    from trainer.model import WEIGHTS_FILE, load_classifier

    model, tokenizer = load_classifier(job_dir / "model", job_dir / WEIGHTS_FILE)
    max_len = json.loads((job_dir / "config.json").read_text())["max_len"]
    out = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer([text], truncation=True, max_length=max_len, return_tensors="pt")
            out.append(model(enc["input_ids"], enc["attention_mask"]).softmax(-1)[0].numpy())
    return np.stack(out)


def same_predictions(a: list[dict], b: list[dict]) -> None:
    """Same texts and labels, probabilities equal to float32 rounding (padding differs with batching)."""
    assert [(r["text"], r["label"]) for r in a] == [(r["text"], r["label"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra["probs"] == pytest.approx(rb["probs"], abs=1e-6)


def predict_jsonl(*args: str) -> list[dict]:
    code, out, err = cli("predict", *args, "--format", "jsonl")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


# -- predict -------------------------------------------------------------------------------


def test_predict_texts_by_id_directory_and_best_of_sweep(sweep_runs: Path) -> None:
    bert, roberta = job_dirs(sweep_runs)
    rows = predict_jsonl(bert.name, *TEXTS, "--runs-dir", str(sweep_runs), "--batch-size", "2")
    assert [r["text"] for r in rows] == TEXTS
    probs = np.array([[r["probs"]["neg"], r["probs"]["pos"]] for r in rows])
    np.testing.assert_allclose(probs, direct_probs(bert, TEXTS), atol=1e-5)  # batching and padding change nothing
    assert [r["label"] for r in rows] == [["neg", "pos"][i] for i in probs.argmax(1)]
    same_predictions(predict_jsonl(str(bert), *TEXTS), rows)  # the directory names the same job
    best = min(job_dirs(sweep_runs), key=lambda d: (-json.loads((d / "result.json").read_text())["val_acc"], d.name))
    by_best = predict_jsonl("best:g", TEXTS[0], "--runs-dir", str(sweep_runs))
    same_predictions(by_best, predict_jsonl(str(best), TEXTS[0]))
    code, out, _ = cli("predict", str(roberta), *TEXTS)  # the table
    assert code == 0 and "p(neg)" in out and "p(pos)" in out and out.count("│ pos") + out.count("│ neg") == len(TEXTS)


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_predict_reads_txt_csv_and_jsonl_files(sweep_runs: Path, tmp_path: Path, suffix: str) -> None:
    bert = job_dirs(sweep_runs)[0]
    path = tmp_path / f"reviews{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(TEXTS[:3]) + "\n\n" + "\n".join(TEXTS[3:]) + "\n")  # blank lines are not texts
    elif suffix == ".csv":
        path.write_text("id,review\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS)))
    else:
        path.write_text("".join(json.dumps({"id": i, "review": t}) + "\n" for i, t in enumerate(TEXTS)))
    extra = [] if suffix == ".txt" else ["--text-column", "review"]
    rows = predict_jsonl(str(bert), "--file", str(path), *extra)
    assert [r["text"] for r in rows] == TEXTS
    same_predictions(rows, predict_jsonl(str(bert), *TEXTS))


def test_predict_bad_input_exits_2_with_a_message(sweep_runs: Path, tmp_path: Path) -> None:
    bert = job_dirs(sweep_runs)[0]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((bert / "config.json").read_text())
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "config.json").write_text((bert / "config.json").read_text())
    (failed / "result.json").write_text(json.dumps({"status": "failed"}))
    (tmp_path / "no_text.csv").write_text("id,review\n1,good\n")
    (tmp_path / "no_text.jsonl").write_text('{"text": "good"}\n{"review": "bad"}\n')
    (tmp_path / "empty_cell.csv").write_text('text\n"good"\n""\n')
    cases = {
        ("predict", "0123456789ab", "good", "--runs-dir", str(sweep_runs)): "no job '0123456789ab'",
        ("predict", "nonsense", "good"): "is not a job directory, a job id",
        ("predict", str(tmp_path), "good"): "is not a job directory (no config.json)",
        ("predict", str(unfinished), "good"): "has not finished (status: not started or still running)",
        ("predict", str(failed), "good"): "has not finished (status: failed)",
        ("predict", "best:nope", "good", "--runs-dir", str(sweep_runs)): "no sweep named 'nope'",
        ("predict", str(bert), "good", " "): "text 2 of 2 is empty",
        ("predict", str(bert)): "give the texts as arguments or with --file",
        ("predict", str(bert), "good", "--file", str(tmp_path / "no_text.csv")): "one of the two",
        ("predict", str(bert), "--file", str(tmp_path / "missing.txt")): "does not exist",
        ("predict", str(bert), "--file", str(tmp_path / "no_text.csv")): "has no column 'text' (its header has: id, review)",
        ("predict", str(bert), "--file", str(tmp_path / "no_text.jsonl")): "line 2: no field 'text' (found: review)",
        ("predict", str(bert), "--file", str(tmp_path / "empty_cell.csv")): "line 3: column 'text' is empty",
    }
    for args, message in cases.items():
        code, out, err = cli(*args)
        assert code == 2, (args, out, err)
        assert message in " ".join(err.split()), (args, err)
        assert out == "", args


# -- export --------------------------------------------------------------------------------

ROUNDTRIP = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
with torch.inference_mode():
    probs = model(**tok(texts, truncation=True, padding=True, return_tensors="pt")).logits.softmax(-1)
assert not [m for m in sys.modules if m.split(".")[0] in ("trainer", "sweeper", "reports")], "sweep code imported"
print(json.dumps({"probs": probs.tolist(), "labels": model.config.id2label, "max_len": tok.model_max_length}))
"""


@pytest.mark.parametrize("arch", ["bert", "roberta", "modernbert"])
def test_export_round_trip_gives_the_probabilities_of_predict(tiny_models: dict, tiny_data: Path, tmp_path: Path,
                                                             arch: str) -> None:
    job = tmp_path / "job"
    pooling = "pooler" if arch == "bert" else "mean" if arch == "roberta" else "cls"
    cfg = build_job(tiny_job(tiny_models[arch], tiny_data, pooling=pooling, lr=3e-3, epochs=3))
    assert run_job(cfg, job)["status"] == "completed"
    texts = [*TEXTS, " ".join(["good"] * 100)]  # the last is longer than max_len: truncation must match
    expected = np.array([[r["probs"]["0"], r["probs"]["1"]] for r in predict_jsonl(str(job), *texts)])
    out = tmp_path / "export"
    code, _, err = cli("export", str(job), str(out))
    assert code == 0, err
    assert "differ from the job's by at most" in err
    assert {"config.json", "model.safetensors", "modeling_sweep.py", "README.md", "tokenizer.json",
            "sweep_job.json"} <= {p.name for p in out.iterdir()}
    # A fresh interpreter, outside the repository, with transformers alone.
    proc = subprocess.run([sys.executable, "-c", ROUNDTRIP, str(out), json.dumps(texts)], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    np.testing.assert_allclose(np.array(loaded["probs"]), expected, atol=1e-5)
    assert loaded["labels"] == {"0": "0", "1": "1"} and loaded["max_len"] == 32
    card = (out / "README.md").read_text()
    cfg = json.loads((job / "config.json").read_text())
    result = json.loads((job / "result.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification")
    for fact in (f"| seed | {cfg['seed']} |", f"| pooling | {pooling} |", f"| lr | {cfg['lr']:.4f} |",
                 f"{result['test_acc']:.4f}", f"{result['val_acc']:.4f}", "split train / validation / test = 0.8 / 0.1 / 0.1",
                 "fixed data seed 42", f"sweep job `{job.name}`"):
        assert fact in card, fact


def test_export_replaces_an_earlier_export_but_never_other_files_or_half_written(sweep_runs: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bert, roberta = job_dirs(sweep_runs)
    out = tmp_path / "model"
    assert cli("export", str(bert), str(out))[0] == 0
    assert cli("export", str(roberta), str(out))[0] == 0  # an earlier export: replaced
    assert json.loads((out / "sweep_job.json").read_text())["job_id"] == roberta.name
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = cli("export", str(bert), str(other))
    assert code == 2 and "is not empty and holds no earlier output" in " ".join(err.split())
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    import trainer.export

    def broken(*_: object) -> dict:
        raise RuntimeError("the export's probabilities differ")

    monkeypatch.setattr(trainer.export, "roundtrip", broken)
    with pytest.raises(RuntimeError):
        trainer.export.export(bert, build_job(json.loads((bert / "config.json").read_text())), {}, tmp_path / "half")
    assert not (tmp_path / "half").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


# -- analyze -------------------------------------------------------------------------------


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the first table after the heading that starts with `heading`."""
    section = markdown.split(f"\n{heading}", 1)[1]
    rows = []
    for line in section.split("\n## ")[0].splitlines():
        if line.startswith("| ") and not line.startswith("| ---") and not line.startswith("| Row"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def valid_png(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_analyze_lists_the_saved_errors_and_counts_disagreements(sweep_runs: Path, tmp_path: Path) -> None:
    bert, roberta = job_dirs(sweep_runs)
    out = tmp_path / "analysis"
    code, _, err = cli("analyze", str(bert), "--against", str(roberta), "--out", str(out), "--top", "1000")
    assert code == 0, err
    for name in ("tsne.png", "attention.png", "attention_vs.png"):
        width, height = valid_png(out / name)
        assert width > 300 and height > 300, name
    md = (out / "analysis.md").read_text()

    a, b = np.load(bert / "test_predictions.npz"), np.load(roberta / "test_predictions.npz")
    assert (a["rows"] == b["rows"]).all() and (a["labels"] == b["labels"]).all()
    wrong = {int(r) for r, y, p in zip(a["rows"], a["labels"], a["probs"], strict=True) if p.argmax() != y}
    listed = table_rows(md, "## Most confident errors")
    assert 0 < len(wrong) < len(a["rows"])  # the tiny job makes some errors, so the listing is a real check
    assert {int(r[0]) for r in listed} == wrong  # --top 1000: every error the saved predictions hold
    confidence = [float(r[3]) for r in listed]
    assert confidence == sorted(confidence, reverse=True)
    for row in listed:  # true label, predicted label, probability as saved
        i = int(np.flatnonzero(a["rows"] == int(row[0]))[0])
        assert row[1] == ["neg", "pos"][a["labels"][i]] and row[2] == ["neg", "pos"][a["probs"][i].argmax()]
        assert float(row[3]) == pytest.approx(a["probs"][i].max(), abs=5e-5)

    # Disagreement counts, by hand.
    counts = {"both_right": 0, "only_a": 0, "only_b": 0, "both_wrong": 0}
    disagree = set()
    for r, y, pa, pb in zip(a["rows"], a["labels"], a["probs"], b["probs"], strict=True):
        ra, rb = pa.argmax() == y, pb.argmax() == y
        counts["both_right" if ra and rb else "only_a" if ra else "only_b" if rb else "both_wrong"] += 1
        if pa.argmax() != pb.argmax():
            disagree.add(int(r))
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["against"]["counts"] == counts
    assert summary["against"]["disagreements"] == len(disagree) > 0
    assert f"| **A right** | {counts['both_right']} | {counts['only_a']} |" in md
    assert f"| **A wrong** | {counts['only_b']} | {counts['both_wrong']} |" in md
    assert {int(r[0]) for r in table_rows(md, "### Where they disagree")} == disagree
    assert summary["tsne"]["saved_vs_rerun_agreement"] == 1.0
    assert summary["attention_row"] == (int(listed[0][0]) if listed else summary["boundary"][0])


def test_analyze_with_a_chosen_example_and_without_against(sweep_runs: Path, tmp_path: Path) -> None:
    bert = job_dirs(sweep_runs)[0]
    row = int(np.load(bert / "test_predictions.npz")["rows"][5])
    out = tmp_path / "one"
    code, _, err = cli("analyze", str(bert), "--out", str(out), "--example", str(row), "--top", "3")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "analysis.md", "attention.png", "tsne.png"]
    md = (out / "analysis.md").read_text()
    assert f"Row {row} (chosen with --example)" in md and "A against B" not in md
    assert len(table_rows(md, "## Nearest the decision boundary")) == 3
    again = cli("analyze", str(bert), "--out", str(out), "--example", str(row), "--top", "3")  # replaces its own output
    assert again[0] == 0 and (out / "analysis.md").read_text() == md


def test_analyze_bad_input_exits_2_and_writes_nothing(sweep_runs: Path, tiny_models: dict, tiny_data: Path,
                                                      tmp_path: Path) -> None:
    bert = job_dirs(sweep_runs)[0]
    other_data = tmp_path / "other"
    run_job(build_job(tiny_job(tiny_models["bert"], tiny_data, epochs=1)), other_data)  # finished; other data
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    out = tmp_path / "out"
    cases = {
        ("analyze", "fedcba987654", "--out", str(out), "--runs-dir", str(sweep_runs)): "no job 'fedcba987654'",
        ("analyze", str(bert), "--out", str(out), "--against", str(other_data)): "tested on different data (data.name",
        ("analyze", str(bert), "--out", str(out), "--example", "999999"): "--example: row 999999 is not among",
        ("analyze", str(bert), "--out", str(busy)): "is not empty and holds no earlier output",
        ("analyze", str(bert), "--out", str(out), "--against", "best:missing", "--runs-dir", str(sweep_runs)):
            "no sweep named 'missing'",
    }
    for args, message in cases.items():
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert message in " ".join(err.split()), (args, err)
    assert not out.exists() and [p.name for p in busy.iterdir()] == ["mine.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_readme_analysis_image_exists() -> None:
    """The README shows an analysis image made from a real minilm job (docs/images)."""
    readme = (REPO / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\((docs/images/[^)]+\.png)\)", readme)
    assert images, "README.md shows no analysis image"
    for image in images:
        valid_png(REPO / image)


def test_the_readme_pipeline_example_truncates_as_training_did() -> None:
    """Without truncation=True a pipeline feeds the whole text: probabilities unlike the job's, and
    an error past the encoder's positions (issue 32)."""
    readme = (REPO / "README.md").read_text()
    calls = re.findall(r"^classify\(.*$", readme, flags=re.MULTILINE)
    assert calls and all("truncation=True" in call for call in calls), calls
