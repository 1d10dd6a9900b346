from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, build_tokenizer, write_dataset
from trainer import data as data_mod
from trainer.config import DATA_SEED, ConfigError, DataConfig
from trainer.data import collate, eval_batches, prepare, split_indices, train_batches


def test_split_is_fixed_disjoint_and_matches_datasets_shuffle() -> None:
    import datasets

    train, val, test = split_indices(1000, (0.8, 0.1, 0.1))
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(1000))
    again = split_indices(1000, (0.8, 0.1, 0.1))
    assert all((a == b).all() for a, b in zip((train, val, test), again, strict=False))
    shuffled = datasets.Dataset.from_dict({"i": list(range(1000))}).shuffle(seed=DATA_SEED)
    assert shuffled["i"][:800] == train.tolist()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_local_directory_in_each_format(tmp_path: Path, fmt: str) -> None:
    directory = write_dataset(tmp_path / fmt, n_train=50, n_test=30, fmt=fmt)
    prepared = prepare(DataConfig(name=str(directory)), build_tokenizer(), 32, cache_dir=tmp_path / "c")
    assert (len(prepared.train), len(prepared.val), len(prepared.test)) == (64, 8, 8)
    assert prepared.num_labels == 2 and not prepared.cache_hit
    assert prepared.train.lengths.max() <= 32


def test_limits_cap_rows_without_moving_the_split(tiny_data: Path, tmp_path: Path) -> None:
    tok = build_tokenizer()
    full = prepare(DataConfig(name=str(tiny_data)), tok, 32, cache_dir=tmp_path)
    cut = prepare(DataConfig(name=str(tiny_data), limit=50, eval_limit=10), tok, 32, cache_dir=tmp_path)
    assert (len(cut.train), len(cut.val), len(cut.test)) == (50, 10, 10)
    assert (cut.train.rows == full.train.rows[:50]).all() and (cut.test.rows == full.test.rows[:10]).all()
    assert cut.cache_hit  # the full entry serves the smaller job


def test_a_larger_limit_extends_the_cache_once_and_smaller_ones_hit(tiny_data: Path, tmp_path: Path) -> None:
    tok = build_tokenizer()
    small = prepare(DataConfig(name=str(tiny_data), limit=40, eval_limit=5), tok, 32, cache_dir=tmp_path)
    big = prepare(DataConfig(name=str(tiny_data), limit=100), tok, 32, cache_dir=tmp_path)
    again = prepare(DataConfig(name=str(tiny_data), limit=70, eval_limit=8), tok, 32, cache_dir=tmp_path)
    assert (small.cache_hit, big.cache_hit, again.cache_hit) == (False, False, True)
    assert (len(again.train), len(again.val)) == (70, 8)
    assert (np.asarray(again.train.ids) == np.asarray(big.train.ids)[: int(again.train.offsets[-1])]).all()
    assert (np.asarray(small.train.rows) == np.asarray(again.train.rows)[:40]).all()
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_second_job_hits_the_cache_and_tokenizes_nothing(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DataConfig(name=str(tiny_data))
    first = prepare(cfg, build_tokenizer(), 32, cache_dir=tmp_path)

    def no_tokenizing(*args: object, **kwargs: object) -> None:
        raise AssertionError("tokenized again")

    monkeypatch.setattr(data_mod, "_tokenize", no_tokenizing)
    second = prepare(cfg, build_tokenizer(), 32, cache_dir=tmp_path)
    assert second.cache_hit and not first.cache_hit
    assert (np.asarray(second.train.ids) == first.train.ids).all()
    with pytest.raises(AssertionError, match="tokenized again"):  # another max_len is another entry
        prepare(cfg, build_tokenizer(), 24, cache_dir=tmp_path)


def test_two_jobs_starting_at_once_build_the_cache_once(tiny_data: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from tests.conftest import build_tokenizer; from trainer.data import prepare;"
        "from trainer.config import DataConfig; from pathlib import Path;"
        f"p = prepare(DataConfig(name={str(tiny_data)!r}), build_tokenizer(), 32, cache_dir=Path({str(tmp_path)!r}));"
        "print('HIT' if p.cache_hit else 'BUILT', len(p.train))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = sorted(p.communicate(timeout=120)[0].split()[-2] for p in procs)
    assert outputs == ["BUILT", "HIT"]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # one entry, no temporary left


def test_missing_train_file_and_column_are_config_errors(tmp_path: Path, tiny_data: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no train file"):
        prepare(DataConfig(name=str(tmp_path / "empty")), build_tokenizer(), 32, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.text: column 'review' is not in .*; its columns are text, label"):
        prepare(DataConfig(name=str(tiny_data), text="review"), build_tokenizer(), 32, cache_dir=tmp_path)


def test_training_batches_are_deterministic_complete_and_length_grouped(tiny_data: Path, tmp_path: Path) -> None:
    split = prepare(DataConfig(name=str(tiny_data)), build_tokenizer(), 32, cache_dir=tmp_path).train
    a = train_batches(split, 8, seed=1, epoch=1)
    assert [b.tolist() for b in a] == [b.tolist() for b in train_batches(split, 8, seed=1, epoch=1)]
    assert [b.tolist() for b in a] != [b.tolist() for b in train_batches(split, 8, seed=1, epoch=2)]
    assert sorted(np.concatenate(a).tolist()) == list(range(len(split)))
    lengths = split.lengths

    def padded(batches: list[np.ndarray]) -> int:
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(split)), len(a))
    assert padded(a) < 0.8 * padded(random_batches)
    assert int(lengths[a[0]].max()) == int(lengths.max())  # the longest batch first


def test_eval_batches_sorted_by_length_and_collate_pads_dynamically(tiny_data: Path, tmp_path: Path) -> None:
    split = prepare(DataConfig(name=str(tiny_data)), build_tokenizer(), 32, cache_dir=tmp_path).val
    batches = eval_batches(split, 5)
    widths = [int(split.lengths[b].max()) for b in batches]
    assert widths == sorted(widths, reverse=True)
    batch = collate(split, batches[-1], pad_id=0)
    assert batch["input_ids"].shape == (len(batches[-1]), widths[-1])
    assert batch["attention_mask"].sum(1).tolist() == split.lengths[batches[-1]].tolist()


def test_iterate_pins_batches_only_when_asked(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the training loop asks for pinned batches on a CUDA device (non-blocking copies); a CPU-only
    # torch cannot pin, so pin_memory is stood in for here
    import torch

    split = prepare(DataConfig(name=str(tiny_data)), build_tokenizer(), 32, cache_dir=tmp_path).val
    batches = eval_batches(split, 5)
    pinned: list[torch.Tensor] = []

    def fake_pin(self: torch.Tensor) -> torch.Tensor:
        copy = self.clone()
        pinned.append(copy)
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    plain = list(data_mod.iterate(split, batches, 0))
    assert not pinned
    pinned_batches = list(data_mod.iterate(split, batches, 0, pin=True))
    assert len(pinned) == 3 * len(batches)
    assert all(any(v is p for p in pinned) for b in pinned_batches for v in b.values())
    for a, b in zip(plain, pinned_batches, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
