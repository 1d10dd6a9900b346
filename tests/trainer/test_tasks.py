"""Data sets of every shape (issue #14) through `trainer.tasks` / `trainer.data`, and the
default IMDB protocol pinned: same rows, same cache key, same result as before the change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHARED, build_tiny_model, build_tokenizer, write_dataset
from tests.shapes import SHAPE_KEYS, write_shape
from trainer import tasks
from trainer.config import ConfigError, DataConfig, build_job
from trainer.data import cache_key, collate, eval_batches, prepare


def data_cfg(directory: Path, shape: str, **extra: object) -> DataConfig:
    return build_job({"data": {"name": str(directory), **SHAPE_KEYS[shape], **extra}}).data


# -- the default protocol, pinned at commit 6c1277a (before issue #14) --------------------


def test_default_protocol_rows_and_cache_key_are_unchanged(tmp_path: Path) -> None:
    # computed with the data.py of 6c1277a: the same rows and labels, the same cache entry
    assert cache_key(DataConfig(), "TOK", 128, "DATA") == "11a32d45beaac880d03a8a9c"
    directory = write_dataset(tmp_path / "d", n_train=160, n_test=80, seed=7)
    p = prepare(DataConfig(name=str(directory)), build_tokenizer(), 32, cache_dir=tmp_path / "c")
    assert p.test.rows[:10].tolist() == [49, 6, 102, 175, 139, 222, 41, 110, 22, 19]
    assert p.test.labels[:10].tolist() == [0, 1, 1, 0, 0, 1, 1, 0, 0, 0]
    assert p.val.rows[:5].tolist() == [237, 23, 164, 204, 15]
    assert p.train.rows[:5].tolist() == [235, 107, 135, 70, 106]
    assert (int(np.asarray(p.train.ids).sum()), int(np.asarray(p.test.ids).sum())) == (74578, 8474)
    assert p.train.types is None and "token_type_ids" not in collate(p.train, np.arange(4), 0)
    assert build_job({"model": "minilm", "data": {"limit": 2000, "eval_limit": 500}}).job_id() == "718b1c6bb04c"


def test_default_protocol_tiny_job_result_is_unchanged(tmp_path: Path) -> None:
    from trainer.loop import run_job

    directory = write_dataset(tmp_path / "d", n_train=160, n_test=80, seed=7)
    model = build_tiny_model("bert", tmp_path / "bert")
    cfg = build_job({"model": str(model), "max_len": 32, "batch_size": 16, "lr": 1e-3, "epochs": 2,
                     "data": {"name": str(directory)}})
    result = run_job(cfg, tmp_path / "job", cache_dir=tmp_path / "c")
    # 6c1277a: val_acc 1.0, test_acc 23/24, test_loss 0.66886 on this job
    assert (result["val_acc"], result["test_acc"], result["best_epoch"]) == (1.0, 23 / 24, 2)
    assert result["test_loss"] == pytest.approx(0.6688556671142578, abs=1e-6)
    assert result["data"]["splits"] == {"train": "train+test", "val": "train+test", "test": "train+test"}


@pytest.mark.skipif(not (SHARED / "data" / "imdb").is_dir(), reason="needs ../shared/data/imdb")
def test_imdb_split_rows_are_unchanged() -> None:
    task = tasks.load(DataConfig(name=str(SHARED / "data" / "imdb")))
    assert [len(p.rows) for p in task.parts.values()] == [40000, 5000, 5000]
    assert task.parts["test"].rows[:8].tolist() == [42947, 33367, 31588, 680, 5705, 21207, 6900, 2173]
    assert task.parts["val"].rows[:5].tolist() == [16455, 22746, 979, 34123, 41869]
    assert task.parts["train"].rows[:5].tolist() == [712, 24774, 45142, 27119, 21139]
    assert task.num_labels == 2 and task.label_names is None


# -- shapes --------------------------------------------------------------------------------


def test_string_labels_are_numbered_in_sorted_order(tmp_path: Path) -> None:
    cfg = data_cfg(write_shape(tmp_path / "s", "strings"), "strings")
    task = tasks.load(cfg)
    assert task.label_names == ["neg", "pos"] and task.num_labels == 2
    frame = pd.read_csv(tmp_path / "s" / "train.csv")
    merged = list(frame["sentiment"]) + list(pd.read_csv(tmp_path / "s" / "test.csv")["sentiment"])
    part = task.parts["train"]
    assert [("neg", "pos")[y] for y in part.labels[:20]] == [merged[r] for r in part.rows[:20]]


def test_unseen_validation_label_is_named(tmp_path: Path) -> None:
    directory = write_shape(tmp_path / "s", "dev")
    frame = pd.read_json(directory / "dev.jsonl", lines=True)
    frame.loc[3, "label"] = 7
    frame.to_json(directory / "dev.jsonl", orient="records", lines=True)
    with pytest.raises(ConfigError, match=r"data.label: split 'dev' of .* has the label 7 \(1 rows\), never seen in "
                                          r"training; the training labels are 0, 1"):
        tasks.load(data_cfg(directory, "dev"))
    strings = write_shape(tmp_path / "t", "strings")
    frame = pd.read_csv(strings / "test.csv")
    frame.loc[0, "sentiment"] = "neutral"
    frame.to_csv(strings / "test.csv", index=False)
    cfg = build_job({"data": {"name": str(strings), "split": "given", "split_names": {"val": "test"},
                              "text": "review", "label": "sentiment"}}).data
    with pytest.raises(ConfigError, match="has the label 'neutral'.*the training labels are neg, pos"):
        tasks.load(cfg)


def test_given_splits_use_the_dev_file_and_shuffle_with_the_data_seed(tmp_path: Path) -> None:
    directory = write_shape(tmp_path / "d", "dev", n_train=100, n_eval=30)
    task = tasks.load(data_cfg(directory, "dev"))
    assert {r: p.source for r, p in task.parts.items()} == {"train": "train", "val": "dev", "test": "test"}
    assert [len(p.rows) for p in task.parts.values()] == [100, 30, 30]
    assert sorted(task.parts["test"].rows.tolist()) == list(range(30)) and task.parts["test"].rows[0] != 0
    dev = pd.read_json(directory / "dev.jsonl", lines=True)
    assert task.parts["val"].labels.tolist() == dev["label"].to_numpy()[task.parts["val"].rows].tolist()
    s = prepare(task.cfg, build_tokenizer(), 32, cache_dir=tmp_path / "c", task=task).summary()
    assert s["rows"] == {"train": 100, "val": 30, "test": 30} and s["split"] == "given"


def test_unlabelled_test_split_is_refused_with_the_fix(tmp_path: Path) -> None:
    directory = write_shape(tmp_path / "u", "unlabelled_test", n_train=100, n_eval=20)
    with pytest.raises(ConfigError, match=r"data.split: the test split 'test' of .* has no labels \(20 rows, all "
                                          r"missing.*data.split_names: \{test: validation\}"):
        tasks.load(build_job({"data": {"name": str(directory), "split": "given"}}).data)
    task = tasks.load(data_cfg(directory, "unlabelled_test"))  # the suggested fix: val carved from train
    assert task.parts["test"].source == "validation" and task.parts["val"].carved
    assert (len(task.parts["train"].rows), len(task.parts["val"].rows)) == (90, 10)
    assert not set(task.parts["train"].rows.tolist()) & set(task.parts["val"].rows.tolist())
    assert task.summary()["splits"]["val"] == "train (10% carved, data seed 42)"


def test_missing_training_labels_are_dropped_and_counted(tmp_path: Path) -> None:
    directory = write_shape(tmp_path / "d", "three", n_train=100, n_eval=30)
    frame = pd.read_parquet(directory / "train.parquet")
    frame["label"] = frame["label"].astype("Int64")
    frame.loc[[1, 5, 9], "label"] = pd.NA
    frame.to_parquet(directory / "train.parquet")
    p = prepare(data_cfg(directory, "three"), build_tokenizer(), 32, cache_dir=tmp_path / "c")
    assert p.summary()["dropped"] == {"train": 3, "val": 0, "test": 0}
    assert len(p.train) == 97 and not {1, 5, 9} & set(p.train.rows.tolist())
    assert p.num_labels == 3 and p.summary()["label_names"] == ["0", "1", "2"]


def test_pairs_are_tokenized_as_pairs_with_segments_and_their_own_cache_entry(tmp_path: Path) -> None:
    directory = write_shape(tmp_path / "p", "pairs")
    tok = build_tokenizer()
    single = prepare(build_job({"data": {"name": str(directory)}}).data, tok, 24, cache_dir=tmp_path / "c")
    pairs = prepare(data_cfg(directory, "pairs"), tok, 24, cache_dir=tmp_path / "c")
    assert len([d for d in (tmp_path / "c").iterdir() if d.is_dir()]) == 2  # keyed by both columns
    assert single.train.types is None and pairs.pairs
    assert int(pairs.train.lengths.max()) <= 24  # longest_first truncation to max_len
    row = 0
    a, b = pairs.task.texts("train", 1)  # type: ignore[union-attr]
    want = tok(a[0], b[0], truncation="longest_first", max_length=24)
    s, e = pairs.train.offsets[row], pairs.train.offsets[row + 1]
    assert pairs.train.ids[s:e].tolist() == want["input_ids"]
    assert pairs.train.types[s:e].tolist() == want["token_type_ids"] and 1 in want["token_type_ids"]  # type: ignore[index]
    batch = collate(pairs.val, eval_batches(pairs.val, 8)[0], tok.pad_token_id)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert (batch["token_type_ids"][batch["attention_mask"] == 0] == 0).all()


BAD = [
    ({"config": "sst2"}, r"data.config: 'sst2' is not allowed with the local directory"),
    ({"split": "given", "split_names": {"test": "nope"}}, r"data.split_names.test: .* has no split 'nope' \(its "
                                                           r"splits: test, train\)"),
    ({"split_names": {"test": "validation"}}, r"data.split_names: only used with data.split: given"),
    ({"split": "given", "split_names": {"dev": "x"}}, r"data.split_names.dev: unknown split"),
    ({"split": "random"}, r"data.split: 'random' is not three fractions .* or 'given'"),
    ({"text_pair": "text"}, r"data.text_pair: 'text' is data.text itself"),
    ({"text_pair": "other"}, r"data.text_pair: column 'other' is not in .*; its columns are text, label"),
]


@pytest.mark.parametrize(("keys", "message"), BAD)
def test_bad_data_keys_are_named(tiny_data: Path, keys: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tasks.load(build_job({"data": {"name": str(tiny_data), **keys}}).data)


def test_label_kinds(tmp_path: Path) -> None:
    texts = ["good film", "bad film", "great", "awful", "fun", "dull"] * 5
    for values, names in (([True, False] * 15, ["False", "True"]), ([2, 0, 1] * 10, None)):
        directory = tmp_path / ("bools" if names else "ints")
        directory.mkdir()
        pd.DataFrame({"text": texts, "label": values}).to_parquet(directory / "train.parquet")
        task = tasks.load(DataConfig(name=str(directory)))
        assert task.label_names == names and task.num_labels == (2 if names else 3)
    bad = tmp_path / "floats"
    bad.mkdir()
    pd.DataFrame({"text": texts, "label": [0.5, 1.0] * 15}).to_parquet(bad / "train.parquet")
    with pytest.raises(ConfigError, match="holds fractional numbers"):
        tasks.load(DataConfig(name=str(bad)))
