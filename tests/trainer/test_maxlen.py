"""A max_len above what the model takes is refused with the model's maximum as a number and
where it was read: in the job file's checks, the pre-flight and the loaded model's check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import build_tokenizer
from trainer.config import ConfigError, build_job
from trainer.maxlen import known_max_len, local_max_len
from trainer.preflight import check


def test_a_max_len_no_encoder_takes_names_the_local_models_maximum(tiny_models: dict[str, Path]) -> None:
    model = str(tiny_models["bert"])  # 80 positions, a tokenizer of 64
    with pytest.raises(ConfigError) as raised:
        build_job({"model": model, "max_len": 100000}, source="job.yaml")
    assert str(raised.value) == ("job.yaml: max_len: 100000 is out of range; expected 8 <= max_len <= 64, the model's "
                                 "maximum (its tokenizer_config.json: model_max_length 64)")


def test_the_smaller_of_positions_and_tokenizer_limit_is_the_maximum(tmp_path: Path,
                                                                      tiny_models: dict[str, Path]) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert"], model)
    assert local_max_len(str(model)) == (64, "its tokenizer_config.json: model_max_length 64")
    tokenizer = json.loads((model / "tokenizer_config.json").read_text())
    tokenizer["model_max_length"] = int(1e30)  # a tokenizer's "no limit"
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    assert local_max_len(str(model)) == (80, "its config.json: max_position_embeddings 80")
    with pytest.raises(ConfigError, match=r"^max_len: 9000 is out of range; expected 8 <= max_len <= 80, the model's "
                                          r"maximum \(its config\.json: max_position_embeddings 80\)$"):
        build_job({"model": str(model), "max_len": 9000})


def test_without_the_models_files_the_message_gives_the_limit_it_has(tmp_path: Path) -> None:
    missing = "nobody-here/no-such-model"  # neither a directory nor in the Hugging Face cache
    assert known_max_len(missing) is None
    with pytest.raises(ConfigError) as raised:
        build_job({"model": missing, "max_len": 100000})
    assert str(raised.value) == ("max_len: 100000 is out of range; expected 8 <= max_len <= 8192, and at most the "
                                 "model's maximum (its max_position_embeddings)")
    with pytest.raises(ConfigError, match=r"max_len: 4 is out of range; expected 8 <= max_len <= 64, the model's"):
        build_job({"model": str(_model_dir(tmp_path)), "max_len": 4})


def _model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bare"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    build_tokenizer().save_pretrained(directory)  # model_max_length 64
    return directory


def test_the_preflight_names_the_model_and_its_maximum(tiny_models: dict[str, Path], tiny_data: Path) -> None:
    cfg = build_job({"model": str(tiny_models["bert"]), "max_len": 100, "data": {"name": str(tiny_data)}})
    with pytest.raises(ConfigError) as raised:
        check([cfg], strict=True, source="job.yaml")
    assert str(raised.value) == (f"job.yaml: max_len: 100 is out of range; expected 8 <= max_len <= 64, the maximum "
                                 f"of model {str(tiny_models['bert'])!r} (its tokenizer_config.json: model_max_length 64)")


def test_the_loaded_models_check_says_where_its_maximum_comes_from(tiny_models: dict[str, Path]) -> None:
    from trainer.model import check_encoder, load_encoder

    cfg = build_job({"model": str(tiny_models["bert"]), "max_len": 90})
    with pytest.raises(ConfigError) as raised:
        check_encoder(cfg, load_encoder(str(tiny_models["bert"])), build_tokenizer(max_len=1000))
    assert str(raised.value) == (f"max_len: 90 is out of range; expected 8 <= max_len <= 80, the maximum of model "
                                 f"{str(tiny_models['bert'])!r} (its config: max_position_embeddings 80)")
