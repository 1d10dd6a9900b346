"""Shared fixtures: tiny encoders built from config with a locally trained tokenizer, and a
small synthetic sentiment data set. No network, CPU only, seconds per test."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports huggingface_hub / datasets / wandb: no network, ever.
_HOME = tempfile.mkdtemp(prefix="sweep-tests-")
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HOME=os.path.join(_HOME, "hf"),
    WANDB_MODE="disabled",
    WANDB_SILENT="true",
    TOKENIZERS_PARALLELISM="false",
)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SWEEP_SHARED", REPO.parent / "shared"))

POSITIVE = "good great wonderful superb enjoyable brilliant moving fun delightful charming".split()  # noqa: SIM905
NEGATIVE = "bad awful boring terrible dull poor weak tedious clumsy annoying".split()  # noqa: SIM905
NEUTRAL = "the movie film plot actor scene story it was and with a of this director script".split()  # noqa: SIM905


def review(rng: random.Random, label: int, length: int) -> str:
    words = [rng.choice(NEUTRAL) for _ in range(length)]
    cues = POSITIVE if label == 1 else NEGATIVE
    for _ in range(max(1, length // 4)):
        words[rng.randrange(length)] = rng.choice(cues)
    return " ".join(words)


def write_dataset(directory: Path, *, n_train: int = 160, n_test: int = 80, seed: int = 0,
                  labels: list[int] | None = None, fmt: str = "parquet", signal: bool = True) -> Path:
    """train/test files of short reviews whose label is readable from their words (unless
    `signal` is False: then the words are drawn independently of the label)."""
    import pandas as pd

    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        ys = [rng.randrange(2) if labels is None else labels[rng.randrange(len(labels))] for _ in range(n)]
        texts = [review(rng, y if signal else rng.randrange(2), rng.randrange(4, 30)) for y in ys]
        frame = pd.DataFrame({"text": texts, "label": ys})
        if fmt == "parquet":
            frame.to_parquet(directory / f"{name}.parquet")
        elif fmt == "csv":
            frame.to_csv(directory / f"{name}.csv", index=False)
        else:
            frame.to_json(directory / f"{name}.jsonl", orient="records", lines=True)
    return directory


def build_tokenizer(max_len: int = 64):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # A fixed vocabulary (not a trained one: WordPiece training breaks ties differently from
    # run to run): special tokens, every word the synthetic reviews use, and single letters.
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + NEUTRAL))
    words += list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(dict.fromkeys(words))}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_len,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # BERT's: segments for pairs
    )


def build_tiny_model(arch: str, directory: Path) -> Path:
    """Save a 2-layer, 32-wide encoder of the given architecture with the local tokenizer."""
    from transformers import AutoModel, BertConfig, ModernBertConfig, RobertaConfig

    tokenizer = build_tokenizer()
    ids = {"pad_token_id": tokenizer.pad_token_id}
    specials = {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
                "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, **ids)
    config = {
        "bert": lambda: BertConfig(max_position_embeddings=80, **common),
        "roberta": lambda: RobertaConfig(max_position_embeddings=80, **common, **specials),
        "modernbert": lambda: ModernBertConfig(max_position_embeddings=80, **common, **specials),
    }[arch]()
    import torch

    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


ARCHS = ("bert", "roberta", "modernbert")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: build_tiny_model(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "reviews")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SWEEP_CACHE_DIR", str(cache))
    return cache


def sigint_like_a_terminal() -> None:
    """preexec_fn for a child that a test stops with Ctrl-C (SIGINT): a shell without job control
    (e.g. `sh -c '… &'`) starts background commands with SIGINT ignored, and Python keeps an
    ignored SIGINT ignored; a terminal's foreground process has the default disposition."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tiny_job(model: Path, data: Path, **overrides: object) -> dict:
    """A job mapping that trains a tiny model in a second or two."""
    job: dict = {"model": str(model), "max_len": 32, "batch_size": 16, "lr": 1e-3, "epochs": 2,
                 "data": {"name": str(data)}}
    for key, value in overrides.items():
        if key == "data":
            job["data"].update(value)  # type: ignore[arg-type]
        else:
            job[key] = value
    return job


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (bench/storage_scale.py's), one per test module that asks."""
    import shutil

    from bench.storage_scale import Postgres, pg_bin

    if not pg_bin("initdb") or not pg_bin("pg_ctl"):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs Debian's postgresql")
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))  # not pytest's tmp: the postgres user runs it
    server = Postgres(root)
    yield server.url
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
